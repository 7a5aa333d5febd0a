"""The database's derived tables: can a task tell the candidates apart, how the chosen
mixture compares with each other candidate item by item, and whether the regression's
predicted ranking of the candidates transfers to the large models."""

from __future__ import annotations

import numpy as np
import pandas as pd

from regmix.candidates import RANDOM_NAME
from regmix.collect.tables import ROW_TABLES

BOOTSTRAP = 1000  # resamples of every bootstrap CI in the database


def _aligned(items: pd.DataFrame) -> pd.DataFrame:
    """(shots, doc_id) x candidate scores of one task, items every candidate was scored on."""
    return items.pivot_table(index=["shots", "doc_id"], columns="candidate", values="score").dropna()


def _oriented(frame: pd.DataFrame, higher: bool) -> pd.DataFrame:
    return frame if higher else -frame


def task_power(items: pd.DataFrame) -> pd.DataFrame:
    """Per task: can it tell the candidates apart? Each candidate's mean score and stderr,
    the spread between best and worst, and for every pair of candidates the paired
    per-item difference; a task tells candidates apart when some pair differs by more
    than 2 stderr of their paired difference."""
    rows = []
    for (task, metric), part in items.groupby(["task", "metric"], sort=True):
        higher = bool(part["higher_is_better"].iloc[0])
        table = _aligned(part)
        n = len(table)
        means = table.mean()
        stderr = table.std(ddof=1) / np.sqrt(n) if n > 1 else means * np.nan
        ranked = _oriented(means, higher).sort_values(ascending=False)
        best_z, pairs_apart, pairs = 0.0, 0, 0
        names = list(table.columns)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                diff = table[a] - table[b]
                se = diff.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
                pairs += 1
                z = abs(diff.mean()) / se if se and np.isfinite(se) and se > 0 else 0.0
                best_z = max(best_z, z)
                pairs_apart += int(z > 2)
        rows.append(
            {
                "task": task,
                "metric": metric,
                "higher_is_better": higher,
                "items": n,
                "candidates": len(names),
                "best": ranked.index[0] if len(ranked) else None,
                "worst": ranked.index[-1] if len(ranked) else None,
                "spread": float(abs(means[ranked.index[0]] - means[ranked.index[-1]])) if len(ranked) else None,
                "mean_stderr": float(stderr.mean()) if n > 1 else None,
                "max_pair_z": float(best_z),
                "pairs_apart": pairs_apart,
                "pairs": pairs,
                "can_tell_apart": pairs_apart > 0,
            }
        )
    return pd.DataFrame(rows, columns=list(ROW_TABLES["task_power"])).astype(ROW_TABLES["task_power"])


def paired_comparisons(items: pd.DataFrame, reference: str = "regmix", seed: int = 0) -> pd.DataFrame:
    """`reference` against every other candidate on every task, item by item: the mean
    per-item difference (positive = the reference is better, whichever way the metric
    runs) with a 95% percentile bootstrap CI over items; better / worse when the CI
    excludes 0, n.s. otherwise."""
    rows = []
    rng = np.random.default_rng(seed)
    for (task, metric), part in items.groupby(["task", "metric"], sort=True):
        higher = bool(part["higher_is_better"].iloc[0])
        table = _aligned(part)
        if reference not in table.columns or len(table) == 0:
            continue
        for other in [c for c in table.columns if c != reference]:
            diff = _oriented(table[reference] - table[other], higher).to_numpy()
            draws = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(axis=1)
            low, high = np.percentile(draws, [2.5, 97.5])
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "reference": reference,
                    "other": other,
                    "items": len(diff),
                    "reference_score": float(table[reference].mean()),
                    "other_score": float(table[other].mean()),
                    "mean_difference": float(diff.mean()),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "verdict": "better" if low > 0 else "worse" if high < 0 else "n.s.",
                }
            )
    return pd.DataFrame(rows, columns=list(ROW_TABLES["paired_comparisons"])).astype(ROW_TABLES["paired_comparisons"])


def candidate_kind(name: str, baselines: tuple[str, ...] = ("prior", "uniform")) -> str:
    if name == "regmix":
        return "regmix"
    if name in baselines:
        return "baseline"
    return "random" if RANDOM_NAME.match(name) else "named"


def spearman_ci(x, y, seed: int = 0, bootstrap: int = BOOTSTRAP) -> tuple[float, float, float, int]:
    """Spearman rho of x and y, its 95% percentile bootstrap CI over pairs, and the number of
    resamples used (those where x or y is constant have no rho and are skipped)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        rows = rng.integers(0, len(x), len(x))
        if np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0:
            draws.append(spearmanr(x[rows], y[rows]).statistic)
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"), float("nan"))
    return rho, float(low), float(high), len(draws)


def transfer_tables(
    runs: pd.DataFrame, predictions: pd.DataFrame, target_label: str, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's central test: the regression's predicted target (from the proxies) against
    the target each large model achieved, per candidate, and their rank correlation over all
    candidates with a bootstrap CI, and where regmix ranks."""
    table = runs[["candidate", "achieved_target"]].merge(predictions, on="candidate", validate="one_to_one")
    table.insert(1, "kind", [candidate_kind(c) for c in table["candidate"]])
    table["predicted_rank"] = table["predicted_target"].rank(method="min").astype("int64")
    table["achieved_rank"] = table["achieved_target"].rank(method="min").astype("int64")
    table = table.sort_values(["achieved_rank", "candidate"]).reset_index(drop=True)
    rho, low, high, used = spearman_ci(table["predicted_target"], table["achieved_target"], seed)
    regmix = table[table.candidate == "regmix"]
    summary = {
        "target": target_label,
        "candidates": len(table),
        "spearman": rho,
        "ci_low": low,
        "ci_high": high,
        "bootstrap": used,
        "regmix_achieved_rank": int(regmix["achieved_rank"].iloc[0]) if len(regmix) else None,
        "regmix_predicted_rank": int(regmix["predicted_rank"].iloc[0]) if len(regmix) else None,
        "best_candidate": table["candidate"].iloc[0] if len(table) else None,
    }
    transfer = table[list(ROW_TABLES["transfer"])].astype(ROW_TABLES["transfer"])
    return transfer, pd.DataFrame([summary]).astype(ROW_TABLES["transfer_summary"])
