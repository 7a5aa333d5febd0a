"""Gather the pipeline's files into tables: RegMix CSVs for the regression, and one
DuckDB database (plus Parquet copies) that holds every number the run produced.

The database is rebuilt from the files each time (built under a temporary name and
renamed into place), so it is never the only copy of anything.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regmix import files
from regmix.candidates import RANDOM_NAME
from regmix.config import parse_settings
from regmix.layout import Layout, TokenDir
from regmix.targets import parse_target, study_target, target_slug

# Which metric stands for a task when candidates are ranked across tasks, in order of
# preference: length-normalised accuracy for choice tasks, bits per byte for perplexity.
PRIMARY_METRICS = ("acc_norm", "acc", "bits_per_byte", "word_perplexity", "exact_match", "f1", "mcc")


# -------------------------------------------------------------------- proxy CSVs


def _relative_to(path: str | Path, root: str | Path) -> Path:
    """`path` relative to `root` where it lies under it, else as given."""
    path, root = Path(path), Path(root)
    return path.relative_to(root) if path.is_relative_to(root) else path


def _read_losses(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"proxy losses not found: {path}")
    data = files.read_json(path)
    for key in ("mix_id", "weights", "val_loss"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    return data


def _mix_index(mix_id: str, path: Path) -> int:
    prefix, _, number = mix_id.rpartition("_")
    if prefix != "mix" or not number.isdigit():
        raise ValueError(f"{path}: mix_id {mix_id!r} is not of the form mix_NNNN")
    return int(number)


def collect_proxies(losses_paths: list[str | Path], out_mixtures: str | Path, out_losses: str | Path) -> pd.DataFrame:
    """Proxy losses.json files -> `index,<domain>...` weights and `index,<domain>...,<set>...,mean`
    losses: a column per domain, then one per validation-only set (a loss no mixture weighs),
    and `mean`, the mean over the domains alone."""
    if not losses_paths:
        raise ValueError("no proxy losses.json files given")
    domains: list[str] | None = None
    sets: list[str] | None = None
    weight_rows, loss_rows = [], []
    for path in map(Path, losses_paths):
        data = _read_losses(path)
        if domains is None:
            domains = list(data["weights"])
            sets = [name for name in data["val_loss"] if name not in domains]
        if set(data["weights"]) != set(domains):
            raise ValueError(
                f"{path}: weights domains {sorted(data['weights'])} differ from {sorted(domains)} "
                f"(first file: {losses_paths[0]})"
            )
        if set(data["val_loss"]) != set(domains) | set(sets):
            raise ValueError(
                f"{path}: val_loss sets {sorted(data['val_loss'])} differ from {sorted([*domains, *sets])} "
                f"(first file: {losses_paths[0]})"
            )
        for domain, loss in data["val_loss"].items():
            if not isinstance(loss, (int, float)) or not math.isfinite(loss):
                raise ValueError(f"{path}: val_loss of {domain!r} is {loss!r}, not a finite number")
        index = _mix_index(data["mix_id"], path)
        weight_rows.append({"index": index, **{d: float(data["weights"][d]) for d in domains}})
        losses = {d: float(data["val_loss"][d]) for d in domains}
        held_out = {name: float(data["val_loss"][name]) for name in sets}
        loss_rows.append({"index": index, **losses, **held_out, "mean": sum(losses.values()) / len(losses)})
    weights = pd.DataFrame(weight_rows).sort_values("index")
    losses = pd.DataFrame(loss_rows).sort_values("index")
    if weights["index"].duplicated().any():
        raise ValueError(
            f"duplicate mix_id among proxy losses: {sorted(weights['index'][weights['index'].duplicated()])}"
        )
    files.write_text(out_mixtures, weights.to_csv(index=False))
    files.write_text(out_losses, losses.to_csv(index=False))
    files.write_json(
        files.provenance_sidecar(out_losses),
        files.provenance({"outputs": [str(out_mixtures), str(out_losses)]}, losses_paths),
    )
    return losses


def proxies_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix collect-proxies", description=collect_proxies.__doc__)
    parser.add_argument("--losses", nargs="+", required=True, help="R/proxies/<mix>/losses.json files")
    parser.add_argument("--out-mixtures", required=True, help="weights CSV (R/proxies/mixtures.csv)")
    parser.add_argument("--out-losses", required=True, help="losses CSV (R/proxies/losses.csv)")
    args = parser.parse_args(argv)
    losses = collect_proxies(args.losses, args.out_mixtures, args.out_losses)
    print(f"collected {len(losses)} proxies into {args.out_mixtures} and {args.out_losses}")
    return 0


# ----------------------------------------------------------------------- database


def load_regressor(model_dir: Path):
    """The fitted regression model (owned by regmix.regression)."""
    from regmix import regression

    return regression.load_model(model_dir)


class _Reader:
    """Reads the run's files, remembering each one for the provenance record."""

    def __init__(self, results: Path):
        self.results = results
        self.inputs: list[Path] = []

    def path(self, relative: str, required: bool = True) -> Path | None:
        path = self.results / relative
        if not path.is_file():
            if required:
                raise FileNotFoundError(f"results file not found: {path}")
            return None
        self.inputs.append(path)
        return path

    def json(self, relative: str) -> Any:
        path = self.path(relative)
        try:
            return files.read_json(path)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None

    def yaml(self, relative: str) -> Any:
        data = files.read_yaml(self.path(relative))
        if not isinstance(data, dict):
            raise ValueError(f"{self.results / relative}: expected a mapping")
        return data

    def jsonl(self, relative: str) -> list[dict]:
        path = self.path(relative)
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
        return rows

    def csv(self, relative: str, required: bool = True) -> pd.DataFrame | None:
        path = self.path(relative, required)
        return None if path is None else pd.read_csv(path)


def _weights(data: dict, domains: list[str], where: str) -> dict[str, float]:
    weights = data.get("weights")
    if not isinstance(weights, dict):
        raise ValueError(f"{where}: missing 'weights' mapping")
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"{where}: unknown domain(s) {unknown} (domains: {domains})")
    return {d: float(weights.get(d, 0.0)) for d in domains}


def _val_losses(data: dict, sets: list[str], where: str) -> dict[str, float]:
    """The loss of every scored set: the domains, then the validation-only sets."""
    losses = data.get("val_loss")
    if not isinstance(losses, dict):
        raise ValueError(f"{where}: missing 'val_loss' mapping")
    missing = [d for d in sets if d not in losses]
    if missing:
        raise ValueError(f"{where}: no validation loss for domain(s) or validation set(s) {missing}")
    return {d: float(losses[d]) for d in sets}


RUN_FIELDS = ("seed", "steps", "tokens_seen", "seconds", "tokens_per_second", "code_version", "config_fingerprint")


def _run_row(key: str, name: str, data: dict, where: str) -> dict:
    missing = [f for f in RUN_FIELDS if f not in data]
    if missing:
        raise ValueError(f"{where}: missing run metadata {missing}")
    return {
        key: name,
        **{f: data[f] for f in RUN_FIELDS},
        # recorded by the trainer but not required of every writer of losses.json
        **{f: data.get(f) for f in ("train_loss", "device", "world_size")},
        "model": json.dumps(data.get("model", {}), sort_keys=True),
    }


def _log_tables(key: str, name: str, records: list[dict], where: str, final: dict) -> tuple[list[dict], list[dict]]:
    """Split a train_log.jsonl into training rows and (step, domain, loss) validation rows.

    The final validation lives in losses.json (`final`), not in the log: it is added as
    the last validation step so curves end where the reported loss is.
    """
    train, valid = [], []
    for number, rec in enumerate(records, 1):
        if "step" not in rec:
            raise ValueError(f"{where}:{number}: log record without 'step'")
        if isinstance(rec.get("val_loss"), dict):
            valid += [
                {key: name, "step": rec["step"], "domain": d, "loss": float(v)} for d, v in rec["val_loss"].items()
            ]
        if "loss" in rec:
            train.append(
                {
                    key: name,
                    "step": int(rec["step"]),
                    "loss": float(rec["loss"]),
                    "lr": float(rec["lr"]) if rec.get("lr") is not None else None,
                    "tokens_per_second": float(rec["tokens_per_second"])
                    if rec.get("tokens_per_second") is not None
                    else None,
                    "tokens_seen": int(rec["tokens_seen"]) if rec.get("tokens_seen") is not None else None,
                    "grad_norm": float(rec["grad_norm"]) if rec.get("grad_norm") is not None else None,
                    "elapsed": float(rec["elapsed"]) if rec.get("elapsed") is not None else None,
                }
            )
    if not any(row["step"] == final["steps"] for row in valid):
        valid += [
            {key: name, "step": final["steps"], "domain": d, "loss": float(v)} for d, v in final["val_loss"].items()
        ]
    return train, valid


def _flatten(obj: Any, prefix: str = "") -> list[dict]:
    rows = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            rows += _flatten(v, f"{prefix}[{i}]")
    elif isinstance(obj, bool) or not isinstance(obj, (int, float)):
        rows.append({"key": prefix, "value": None, "text": None if obj is None else str(obj)})
    else:
        rows.append({"key": prefix, "value": float(obj), "text": None})
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # lm-eval writes "N/A" where it computed no stderr
    return float(value) if math.isfinite(value) else None


def eval_rows(candidate: str, data: dict, where: str) -> list[dict]:
    """lm-eval result dicts (one per shot count) -> long rows (candidate, task, shots, metric, ...)."""
    runs = data.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise ValueError(f"{where}: no 'runs' (lm-eval results per shot count)")
    rows = []
    for shots, run in runs.items():
        higher = run.get("higher_is_better", {})
        for task, metrics in run.get("results", {}).items():
            keys = sorted(
                tuple(k.split(",", 1))
                for k in metrics
                if "," in k and not k.split(",")[0].endswith("_stderr") and _number(metrics[k]) is not None
            )
            names = {m for m, _ in keys}
            metric_name = next((m for m in PRIMARY_METRICS if m in names), min(names) if names else None)
            # one (metric, filter) per task stands for it: the unfiltered one when there is one
            filters = [f for m, f in keys if m == metric_name]
            primary = (metric_name, "none" if "none" in filters else (filters[0] if filters else None))
            for key, value in metrics.items():
                if "," not in key:
                    continue
                metric, filt = key.split(",", 1)
                if metric.endswith("_stderr") or _number(value) is None:
                    continue
                rows.append(
                    {
                        "candidate": candidate,
                        "task": task,
                        "shots": int(shots),
                        "metric": metric,
                        "filter": filt,
                        "value": _number(value),
                        "stderr": _number(metrics.get(f"{metric}_stderr,{filt}")),
                        "higher_is_better": bool(
                            higher.get(task, {}).get(
                                metric, metric not in ("bits_per_byte", "word_perplexity", "byte_perplexity")
                            )
                        ),
                        "is_primary": (metric, filt) == primary,
                    }
                )
    if not rows:
        raise ValueError(f"{where}: lm-eval results hold no numeric metric")
    return rows


# ------------------------------------------------- per-item scores and their statistics

BOOTSTRAP = 1000  # resamples of every bootstrap CI in the database


def item_rows(candidate: str, samples: list[dict], primary: dict[str, tuple[str, str, bool]], where: str) -> list[dict]:
    """lm-eval per-sample log rows -> one score per (task, shots, item) on the task's primary
    metric. A choice task's sample holds 0/1 accuracies; a perplexity task's sample holds
    (log-likelihood, bytes), from which the item's bits per byte."""
    rows = []
    for number, sample in enumerate(samples, 1):
        task = sample.get("task")
        if task not in primary:
            continue
        metric, filt, higher = primary[task]
        if sample.get("filter", "none") != filt:
            continue
        value = sample.get(metric)
        if metric == "bits_per_byte" and isinstance(value, list) and len(value) == 2:
            loglik, n_bytes = value
            score = -float(loglik) / (float(n_bytes) * math.log(2)) if n_bytes else None
        else:
            score = _number(value)
        if score is None or "doc_id" not in sample or "shots" not in sample:
            raise ValueError(f"{where}:{number}: sample of task {task!r} has no doc_id, shots or numeric {metric!r}")
        rows.append(
            {
                "candidate": candidate,
                "task": task,
                "shots": int(sample["shots"]),
                "doc_id": int(sample["doc_id"]),
                "metric": metric,
                "score": score,
                "higher_is_better": higher,
            }
        )
    return rows


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


# Column types of the tables built from rows, so that a table with no rows (a run that
# never validated mid-training, say) still has its columns.
_F, _I, _S, _B = "float64", "Int64", "string", "boolean"
_RUN = {
    "seed": _I,
    "steps": _I,
    "tokens_seen": _I,
    "seconds": _F,
    "tokens_per_second": _F,
    "code_version": _S,
    "config_fingerprint": _S,
    "train_loss": _F,
    "device": _S,
    "world_size": _I,
    "model": _S,
}
_TRAIN_LOG = {
    "step": _I,
    "loss": _F,
    "lr": _F,
    "tokens_per_second": _F,
    "tokens_seen": _I,
    "grad_norm": _F,
    "elapsed": _F,
}
ROW_TABLES: dict[str, dict[str, str]] = {
    "prior": {"domain": _S, "weight": _F},
    "token_counts": {"domain": _S, "split": _S, "tokens": _I},
    "mixtures": {"mix_id": _S, "domain": _S, "weight": _F},
    "proxy_losses": {"mix_id": _S, "domain": _S, "loss": _F},
    "proxy_runs": {"mix_id": _S, **_RUN},
    "proxy_train_log": {"mix_id": _S, **_TRAIN_LOG},
    "proxy_val_log": {"mix_id": _S, "step": _I, "domain": _S, "loss": _F},
    "imported_mixtures": {"source": _S, "mix_id": _S, "domain": _S, "weight": _F},
    "imported_losses": {"source": _S, "mix_id": _S, "domain": _S, "loss": _F},
    "regression_targets": {
        "target": _S,
        "label": _S,
        "main": _B,
        "regressor": _S,
        "rows": _I,
        "spearman": _F,
        "spearman_ci_low": _F,
        "spearman_ci_high": _F,
        "pearson": _F,
        "rmse": _F,
    },
    "regression_cv": {"key": _S, "value": _F, "text": _S},
    "regression_settings": {"key": _S, "value": _F, "text": _S},
    "chosen_mixture": {"domain": _S, "weight": _F, "epochs": _F, "predicted_target": _F},
    "candidates": {"candidate": _S, "domain": _S, "weight": _F},
    "candidate_predictions": {"candidate": _S, "predicted_target": _F},
    "large_losses": {"candidate": _S, "domain": _S, "loss": _F},
    "validation_sets": {"name": _S, "documents": _I, "tokens": _I, "bytes": _I},
    "large_runs": {"candidate": _S, **_RUN, "achieved_target": _F},
    "large_train_log": {"candidate": _S, **_TRAIN_LOG},
    "large_val_log": {"candidate": _S, "step": _I, "domain": _S, "loss": _F},
    "eval_items": {
        "candidate": _S,
        "task": _S,
        "shots": _I,
        "doc_id": _I,
        "metric": _S,
        "score": _F,
        "higher_is_better": _B,
    },
    "task_power": {
        "task": _S,
        "metric": _S,
        "higher_is_better": _B,
        "items": _I,
        "candidates": _I,
        "best": _S,
        "worst": _S,
        "spread": _F,
        "mean_stderr": _F,
        "max_pair_z": _F,
        "pairs_apart": _I,
        "pairs": _I,
        "can_tell_apart": _B,
    },
    "paired_comparisons": {
        "task": _S,
        "metric": _S,
        "reference": _S,
        "other": _S,
        "items": _I,
        "reference_score": _F,
        "other_score": _F,
        "mean_difference": _F,
        "ci_low": _F,
        "ci_high": _F,
        "verdict": _S,
    },
    "transfer": {
        "candidate": _S,
        "kind": _S,
        "predicted_target": _F,
        "achieved_target": _F,
        "predicted_rank": _I,
        "achieved_rank": _I,
    },
    "transfer_summary": {
        "target": _S,
        "candidates": _I,
        "spearman": _F,
        "ci_low": _F,
        "ci_high": _F,
        "bootstrap": _I,
        "regmix_achieved_rank": _I,
        "regmix_predicted_rank": _I,
        "best_candidate": _S,
    },
    "eval_results": {
        "candidate": _S,
        "task": _S,
        "shots": _I,
        "metric": _S,
        "filter": _S,
        "value": _F,
        "stderr": _F,
        "higher_is_better": _B,
        "is_primary": _B,
    },
}


_REL = Layout("")  # paths relative to the results folder


def gather_tables(
    settings: dict, results: str | Path, regressor_loader: Callable[[Path], Any] = load_regressor
) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """Every table of the database, read from the run's files; and the files read."""
    read = _Reader(Path(results))
    domains, target = settings["domains"], study_target(settings)
    # the loss tables hold a row per scored set: the domains, then the validation-only sets
    held_out = list(settings.get("validation_sets", []))
    scored = [*domains, *held_out]
    t: dict[str, list[dict] | pd.DataFrame] = {name: [] for name in ROW_TABLES}

    prior = read.yaml("data/prior.yaml")
    t["prior"] = [{"domain": d, "weight": float(prior[d])} for d in domains if d in prior]
    if len(t["prior"]) != len(domains):
        raise ValueError(
            f"{read.results / 'data/prior.yaml'}: no share for domain(s) {[d for d in domains if d not in prior]}"
        )
    counts = read.json("data/token_counts.json")
    t["token_counts"] = [
        {"domain": d, "split": s, "tokens": int(n)} for d in domains for s, n in counts.get(d, {}).items()
    ]

    for name in held_out:
        sidecar = read.json(TokenDir("data").sidecar(name, "valid"))
        t["validation_sets"].append(
            {"name": name, "documents": sidecar["documents"], "tokens": sidecar["tokens"], "bytes": sidecar["bytes"]}
        )

    for mix in settings["mixture_ids"]:
        where = f"mixtures/{mix}.yaml"
        for d, w in _weights(read.yaml(where), domains, str(read.results / where)).items():
            t["mixtures"].append({"mix_id": mix, "domain": d, "weight": w})
        where = f"proxies/{mix}/losses.json"
        data = read.json(where)
        t["proxy_losses"] += [
            {"mix_id": mix, "domain": d, "loss": v} for d, v in _val_losses(data, scored, where).items()
        ]
        t["proxy_runs"].append(_run_row("mix_id", mix, data, where))
        train, valid = _log_tables(
            "mix_id", mix, read.jsonl(f"proxies/{mix}/train_log.jsonl"), f"proxies/{mix}/train_log.jsonl", data
        )
        t["proxy_train_log"] += train
        t["proxy_val_log"] += valid

    for entry in settings["regression"].get("extra_swarms", []):
        swarm = _REL.swarm(entry["name"])
        for table, relative, value in (
            ("imported_mixtures", swarm.mixtures, "weight"),
            ("imported_losses", swarm.losses, "loss"),
        ):
            wide = read.csv(relative).set_index("index")
            long = wide.rename_axis(columns="domain").stack().rename(value).reset_index()
            t[table] += [
                {"source": entry["name"], "mix_id": str(r["index"]), "domain": r["domain"], value: float(r[value])}
                for r in long.to_dict("records")
            ]
    sets = settings.get("validation_sets", ())
    fits = [(target_slug(settings["regression"]["target"]), target.label, True, "regression/cv.json")]
    for spec in settings["regression"].get("targets", []):
        slug = target_slug(spec)
        fits.append(
            (
                slug,
                parse_target(spec, domains, validation_sets=sets).label,
                False,
                _REL.regression_target(slug, "cv.json"),
            )
        )
    for slug, label, main, relative in fits:
        cv = read.json(relative)
        t["regression_targets"].append(
            {
                "target": slug,
                "label": label,
                "main": main,
                "regressor": cv["regressor"],
                "rows": cv["rows"],
                **{f"spearman_{k}": cv["spearman"][k] for k in ("ci_low", "ci_high")},
                **{m: cv[m]["value"] for m in ("spearman", "pearson", "rmse")},
            }
        )
    t["regression_cv"] = _flatten(read.json("regression/cv.json"))
    t["regression_settings"] = _flatten(read.json("regression/settings.json"))
    cv_pred = read.csv("regression/cv_predictions.csv")
    missing = [c for c in ("index", "true", "predicted") if c not in cv_pred.columns]
    if missing:
        raise ValueError(f"{read.results / 'regression/cv_predictions.csv'}: missing column(s) {missing}")
    t["regression_cv_predictions"] = cv_pred

    chosen = read.yaml("chosen/regmix.yaml")
    epochs = chosen.get("epochs") if isinstance(chosen.get("epochs"), dict) else {}
    t["chosen_mixture"] = [
        {"domain": d, "weight": w, "epochs": epochs.get(d), "predicted_target": chosen.get("predicted_target")}
        for d, w in _weights(chosen, domains, str(read.results / "chosen/regmix.yaml")).items()
    ]
    # choose writes the top-k table only when asked (--topk-out): the one optional piece
    topk = read.csv("chosen/topk.csv", required=False)
    if topk is None:
        topk = pd.DataFrame({"rank": pd.Series(dtype="int64"), **{d: pd.Series(dtype="float64") for d in domains}})
    elif "rank" not in topk.columns:
        topk.insert(0, "rank", range(1, len(topk) + 1))
    t["topk"] = topk

    candidate_weights = {}
    for cand in settings["candidates"]:
        where = f"candidates/{cand}.yaml"
        candidate_weights[cand] = _weights(read.yaml(where), domains, str(read.results / where))
        t["candidates"] += [{"candidate": cand, "domain": d, "weight": w} for d, w in candidate_weights[cand].items()]
        where = f"large/{cand}/losses.json"
        data = read.json(where)
        losses = _val_losses(data, scored, where)
        t["large_losses"] += [{"candidate": cand, "domain": d, "loss": v} for d, v in losses.items()]
        achieved = target.value(losses, str(read.results / where))
        t["large_runs"].append({**_run_row("candidate", cand, data, where), "achieved_target": achieved})
        train, valid = _log_tables(
            "candidate", cand, read.jsonl(f"large/{cand}/train_log.jsonl"), f"large/{cand}/train_log.jsonl", data
        )
        t["large_train_log"] += train
        t["large_val_log"] += valid
        where = f"eval/{cand}.json"
        results_rows = eval_rows(cand, read.json(where), str(read.results / where))
        t["eval_results"] += results_rows
        if settings["log_samples"]:
            primary = {
                r["task"]: (r["metric"], r["filter"], r["higher_is_better"]) for r in results_rows if r["is_primary"]
            }
            where = f"eval/{cand}.samples.jsonl"
            t["eval_items"] += item_rows(cand, read.jsonl(where), primary, str(read.results / where))

    model_dir = read.results / "regression"
    read.path("regression/model.pkl")
    frame = pd.DataFrame([candidate_weights[c] for c in settings["candidates"]], columns=domains)
    predicted = regressor_loader(model_dir).predict_frame(frame, "candidates")
    t["candidate_predictions"] = [
        {"candidate": c, "predicted_target": float(p)} for c, p in zip(settings["candidates"], predicted, strict=False)
    ]
    derived = ("task_power", "paired_comparisons", "transfer", "transfer_summary")
    tables = {
        name: rows
        if isinstance(rows, pd.DataFrame)
        else pd.DataFrame(rows, columns=list(ROW_TABLES[name])).astype(ROW_TABLES[name])
        for name, rows in t.items()
        if name not in derived
    }
    tables["task_power"] = task_power(tables["eval_items"])
    tables["paired_comparisons"] = paired_comparisons(tables["eval_items"], "regmix", settings["seed"])
    tables["transfer"], tables["transfer_summary"] = transfer_tables(
        tables["large_runs"], tables["candidate_predictions"], target.label, settings["seed"]
    )
    return tables, read.inputs


VIEWS = {
    # predicted (regression on the candidate's weights) vs achieved (large model) target loss
    "target_loss": """
        SELECT r.candidate, p.predicted_target, r.achieved_target,
               r.achieved_target - p.predicted_target AS error,
               rank() OVER (ORDER BY p.predicted_target) AS predicted_rank,
               rank() OVER (ORDER BY r.achieved_target) AS achieved_rank
        FROM large_runs r JOIN candidate_predictions p USING (candidate)
        ORDER BY achieved_rank, r.candidate""",
    # scores averaged over shot counts (the paper reports 0-5 shots averaged)
    "eval_scores": """
        SELECT candidate, task, metric, filter, any_value(higher_is_better) AS higher_is_better,
               bool_or(is_primary) AS is_primary, avg(value) AS value,
               sqrt(sum(stderr * stderr)) / count(stderr) AS stderr, count(*) AS shot_counts
        FROM eval_results
        GROUP BY candidate, task, metric, filter""",
    # one primary metric per task (acc_norm / acc for choice tasks, bits per byte for perplexity)
    "task_ranking": """
        SELECT candidate, task, metric, filter, value, stderr,
               rank() OVER (PARTITION BY task, metric, filter
                            ORDER BY CASE WHEN higher_is_better THEN -value ELSE value END) AS rank
        FROM eval_scores WHERE is_primary
        ORDER BY task, rank, candidate""",
    "average_ranking": """
        SELECT k.candidate, avg(k.rank) AS mean_task_rank, count(*) AS tasks, t.achieved_rank AS target_rank,
               rank() OVER (ORDER BY avg(k.rank)) AS rank
        FROM task_ranking k LEFT JOIN target_loss t USING (candidate)
        GROUP BY k.candidate, t.achieved_rank
        ORDER BY rank, k.candidate""",
}


def build_database(
    settings: dict,
    results: str | Path,
    out: str | Path,
    parquet_dir: str | Path | None = None,
    regressor_loader: Callable[[Path], Any] = load_regressor,
) -> dict[str, int]:
    """Rebuild the DuckDB database (and Parquet copies) from the run's files."""
    import duckdb

    tables, inputs = gather_tables(settings, results, regressor_loader)
    record = files.provenance(settings, inputs)
    tables["provenance"] = pd.DataFrame(
        [
            {"key": "code_version", "value": record["code_version"]},
            {"key": "settings", "value": json.dumps(record["settings"], sort_keys=True)},
            {"key": "settings_fingerprint", "value": record["settings_fingerprint"]},
            *(
                {
                    "key": f"input:{_relative_to(p, results)}",
                    "value": h,
                }
                for p, h in record["inputs"].items()
            ),
        ]
    )
    out = Path(out)
    with files.atomic_path(out) as tmp:
        tmp.unlink()  # duckdb refuses to open an empty file as a database
        con = duckdb.connect(str(tmp))
        try:
            for name, frame in tables.items():
                con.register("frame", frame)
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
                con.unregister("frame")
            for name, sql in VIEWS.items():
                con.execute(f'CREATE VIEW "{name}" AS {sql}')
            if parquet_dir is not None:
                parquet_dir = Path(parquet_dir)
                parquet_dir.parent.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(dir=parquet_dir.parent, prefix=f".{parquet_dir.name}."))
                try:
                    for name in tables:
                        con.execute(f"COPY \"{name}\" TO '{staging / (name + '.parquet')}' (FORMAT parquet)")
                    for name in VIEWS:
                        con.execute(
                            f"COPY (SELECT * FROM \"{name}\") TO '{staging / (name + '.parquet')}' (FORMAT parquet)"
                        )
                except BaseException:
                    shutil.rmtree(staging)
                    raise
        finally:
            con.close()
        if parquet_dir is not None:
            files.replace_dir(staging, parquet_dir)
    return {name: len(frame) for name, frame in tables.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix collect", description=build_database.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'collect')")
    parser.add_argument("--results", required=True, help="results directory R")
    parser.add_argument("--out", required=True, help="database file (R/regmix.duckdb)")
    parser.add_argument("--parquet-dir", help="directory for one Parquet file per table and view (R/db)")
    args = parser.parse_args(argv)
    counts = build_database(parse_settings(args.settings), args.results, args.out, args.parquet_dir)
    for name, rows in counts.items():
        print(f"{name:28s} {rows:8d} rows")
    return 0
