"""The report's figures, drawn from the results database.

Every figure is a PNG with labelled axes and units; each carries the provenance record
(code version, settings, database fingerprint) in its PNG text metadata, and the output
directory gets the same record as `provenance.json`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.settings import parse_settings
from regmix.settings.outputs import ResultsSettings
from regmix.targets import study_target

# file name -> (report category, caption file under report/); the Snakemake rule wraps
# each in report(...) so the HTML report shows it in its stage's category
FIGURES: dict[str, tuple[str, str]] = {
    "mixture_weights.png": ("Mixtures", "mixture_weights.rst"),
    "proxy_loss_vs_weight.png": ("Proxy models", "proxy_loss_vs_weight.rst"),
    "cv_pred_vs_true.png": ("Regression", "cv_pred_vs_true.rst"),
    "candidate_mixtures.png": ("Chosen mixture", "candidate_mixtures.rst"),
    "predicted_vs_achieved.png": ("Large models", "predicted_vs_achieved.rst"),
    "large_training_curves.png": ("Large models", "large_training_curves.rst"),
    "downstream_scores.png": ("Downstream evaluation", "downstream_scores.rst"),
}
LOSS_UNIT = "nats/token"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _candidate_colors(candidates: list[str]) -> dict[str, str]:
    cycle = [
        "#d62728",
        "#1f77b4",
        "#7f7f7f",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#8c564b",
        "#e377c2",
        "#17becf",
        "#bcbd22",
    ]
    return {c: cycle[i % len(cycle)] for i, c in enumerate(candidates)}


def _target_label(settings: ResultsSettings) -> str:
    target = study_target(settings)
    if len(target.sets) == 1:
        return f"validation loss on '{target.label}'"
    return f"validation loss, {target.label}"


def mixture_weights(data: dict, settings: ResultsSettings, plt):
    domains = list(settings.domains)
    mixtures, prior = data["mixtures"], data["prior"].set_index("domain")["weight"]
    fig, ax = plt.subplots(figsize=(1.3 * len(domains) + 3, 4.2))
    values = [mixtures.loc[mixtures.domain == d, "weight"].to_numpy() for d in domains]
    ax.boxplot(values, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for i, v in enumerate(values, 1):
        ax.scatter(
            i + rng.uniform(-0.15, 0.15, len(v)),
            v,
            s=12,
            alpha=0.6,
            color="#1f77b4",
            label="proxy mixture" if i == 1 else None,
        )
    ax.scatter(
        range(1, len(domains) + 1),
        [prior[d] for d in domains],
        marker="D",
        color="#d62728",
        s=40,
        zorder=3,
        label="prior (token share)",
    )
    ax.set_xticks(range(1, len(domains) + 1), domains)
    ax.set_xlabel("domain")
    ax.set_ylabel("weight (fraction of training tokens)")
    ax.set_title(f"Sampled proxy mixtures (n = {mixtures.mix_id.nunique()})")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def proxy_loss_vs_weight(data: dict, settings: ResultsSettings, plt):
    domains, target_sets = list(settings.domains), study_target(settings).sets
    merged = data["mixtures"].merge(data["proxy_losses"], on=["mix_id", "domain"])
    rows, cols = _grid(len(domains))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        part = merged[merged.domain == domain]
        is_target = domain in target_sets
        ax.scatter(part["weight"], part["loss"], s=14, color="#d62728" if is_target else "#1f77b4")
        ax.set_title(f"{domain}{' (regression target)' if is_target else ''}", fontsize=10)
        ax.set_xlabel(f"weight of '{domain}' in the mixture")
        ax.set_ylabel(f"proxy validation loss on '{domain}' ({LOSS_UNIT})", fontsize=8)
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    fig.suptitle("Proxy models: each domain's validation loss against its weight")
    return fig


def cv_pred_vs_true(data: dict, settings: ResultsSettings, plt):
    from scipy.stats import spearmanr

    rows = data["regression_cv_predictions"]
    true, pred = rows["true"].to_numpy(float), rows["predicted"].to_numpy(float)
    rho = spearmanr(true, pred).statistic if len(rows) > 2 else float("nan")
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.scatter(true, pred, s=16, color="#1f77b4")
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linestyle="--", linewidth=1, label="y = x")
    target = _target_label(settings)
    ax.set_xlabel(f"true {target} ({LOSS_UNIT})", fontsize=9)
    ax.set_ylabel(f"predicted ({LOSS_UNIT})")
    ax.set_title(f"Held-out cross-validation rows: Spearman ρ = {rho:.3f} (n = {len(rows)})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _named_candidates(settings: ResultsSettings) -> list[str]:
    return [c for c in settings.candidates if not c.startswith("random_")]


def candidate_mixtures(data: dict, settings: ResultsSettings, plt):
    domains = list(settings.domains)
    names = _named_candidates(settings)
    weights = data["candidates"].pivot(index="candidate", columns="domain", values="weight")
    colors = _candidate_colors(names)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.4 * len(domains) + 3, 4.2))
    x = np.arange(len(domains))
    for i, cand in enumerate(names):
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            [weights.loc[cand, d] for d in domains],
            width,
            label=cand,
            color=colors[cand],
        )
    ax.set_xticks(x, domains)
    ax.set_xlabel("domain")
    ax.set_ylabel("weight (fraction of training tokens)")
    ax.set_title("RegMix's chosen mixture against the prior and the named baselines")
    ax.legend(fontsize=8)
    return fig


def predicted_vs_achieved(data: dict, settings: ResultsSettings, plt):
    """Every large candidate's predicted against achieved target, named, with the
    database's transfer Spearman and its bootstrap CI in the title."""
    rows, summary = data["transfer"], data["transfer_summary"]
    if rows.empty:
        raise ValueError("the database holds no transfer rows (no large model was scored)")
    colors = {"regmix": "#d62728", "baseline": "#7f7f7f", "named": "#2ca02c", "random": "#1f77b4"}
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    for kind, part in rows.groupby("kind", sort=True):
        ax.scatter(part["predicted_target"], part["achieved_target"], color=colors.get(kind, "black"), s=32, label=kind)
    for r in rows.itertuples():
        ax.annotate(
            r.candidate, (r.predicted_target, r.achieved_target), fontsize=7, xytext=(4, 2), textcoords="offset points"
        )
    ax.margins(x=0.18, y=0.12)  # room for the names at the edges
    ax.set_xlabel(f"predicted by the regression ({LOSS_UNIT})")
    ax.set_ylabel(f"achieved by the large model ({LOSS_UNIT})")
    t = summary.iloc[0] if len(summary) else None
    if t is None or pd.isna(t.spearman):
        stat = "Spearman ρ undefined"
    else:
        stat = f"Spearman ρ = {t.spearman:.2f} (95% bootstrap CI {t.ci_low:.2f} .. {t.ci_high:.2f})"
    ax.set_title(
        f"Proxies to large models, {len(rows)} candidates\ntarget: {_target_label(settings)}\n{stat}", fontsize=9
    )
    ax.legend(fontsize=7, loc="best")
    return fig


def large_training_curves(data: dict, settings: ResultsSettings, plt):
    train, valid, target = data["large_train_log"], data["large_val_log"], study_target(settings)
    colors = _candidate_colors(list(settings.candidates))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for cand in settings.candidates:
        part = train[train.candidate == cand].sort_values("step")
        left.plot(part["step"], part["loss"], label=cand, color=colors[cand], linewidth=1.2)
        # the target at each validated step (the log holds every scored set: domains and
        # validation-only sets); a step missing a set of the target is left out
        val = valid[valid.candidate == cand].pivot_table(index="step", columns="domain", values="loss")
        val = val.dropna(subset=[s for s in target.sets if s in val.columns])
        curve = target.values(val, f"large_val_log of {cand}") if len(val) else np.array([])
        right.plot(val.index, curve, marker="o", markersize=3, label=cand, color=colors[cand], linewidth=1.2)
    left.set_xlabel("optimizer step")
    left.set_ylabel(f"training loss ({LOSS_UNIT})")
    left.set_title("Training loss (mixture batches)", fontsize=10)
    right.set_xlabel("optimizer step")
    right.set_ylabel(f"{_target_label(settings)} ({LOSS_UNIT})", fontsize=9)
    right.set_title("Validation loss on the regression target", fontsize=10)
    left.legend(fontsize=8)
    return fig


def downstream_scores(data: dict, settings: ResultsSettings, plt):
    scores = data["task_ranking"]
    tasks = sorted(scores["task"].unique())
    if not tasks:
        raise ValueError("the database holds no downstream scores (eval_results is empty)")
    names = list(settings.candidates)
    colors = _candidate_colors(names)
    rows, cols = _grid(len(tasks), 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        part = scores[scores.task == task].set_index("candidate")
        metric = part["metric"].iloc[0]
        values = [part["value"].get(c, np.nan) for c in names]
        errors = [0.0 if pd.isna(part["stderr"].get(c)) else part["stderr"].get(c) for c in names]
        ax.bar(range(len(names)), values, yerr=errors, capsize=3, color=[colors[c] for c in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        unit = (
            " (bits/byte, lower is better)"
            if metric == "bits_per_byte"
            else " (accuracy, higher is better)"
            if metric.startswith("acc")
            else ""
        )
        ax.set_ylabel(f"{metric}{unit}", fontsize=8)
        ax.set_title(task, fontsize=9)
        finite = [v for v in values if not pd.isna(v)]
        if finite and metric.startswith("acc"):
            ax.set_ylim(0, min(1.0, max(finite) + max(errors) + 0.1))
        elif finite:
            spread = max(finite) - min(finite) or abs(max(finite)) * 0.05 or 1.0
            ax.set_ylim(max(0.0, min(finite) - 2 * spread), max(finite) + 2 * spread)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    fig.suptitle("Downstream scores per candidate (mean over shot counts; error bars: ±1 stderr)")
    return fig


DRAWERS = {
    "mixture_weights.png": mixture_weights,
    "proxy_loss_vs_weight.png": proxy_loss_vs_weight,
    "cv_pred_vs_true.png": cv_pred_vs_true,
    "candidate_mixtures.png": candidate_mixtures,
    "predicted_vs_achieved.png": predicted_vs_achieved,
    "large_training_curves.png": large_training_curves,
    "downstream_scores.png": downstream_scores,
}
TABLES = (
    "mixtures",
    "prior",
    "proxy_losses",
    "regression_cv_predictions",
    "candidates",
    "transfer",
    "transfer_summary",
    "large_train_log",
    "large_val_log",
    "task_ranking",
)


def draw_all(settings: ResultsSettings, db: str | Path, out_dir: str | Path) -> list[Path]:
    """Draw every figure of FIGURES from the database into `out_dir`."""
    import duckdb

    db, out_dir = Path(db), Path(out_dir)
    if not db.is_file():
        raise FileNotFoundError(f"results database not found: {db}")
    con = duckdb.connect(str(db), read_only=True)
    try:
        data = {name: con.execute(f'SELECT * FROM "{name}"').df() for name in TABLES}
    finally:
        con.close()
    record = files.provenance(settings.raw, [db])
    plt = _plt()
    written = []
    for name, draw in DRAWERS.items():
        fig = draw(data, settings, plt)
        fig.tight_layout()
        path = out_dir / name
        with files.atomic_path(path) as tmp:
            fig.savefig(
                tmp, format="png", dpi=110, metadata={"Title": name, "Description": json.dumps(record, sort_keys=True)}
            )
        plt.close(fig)
        written.append(path)
    files.write_json(out_dir / "provenance.json", {**record, "figures": [p.name for p in written]})
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix plots", description=draw_all.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'plots')")
    parser.add_argument("--db", required=True, help="results database (R/regmix.duckdb)")
    parser.add_argument("--out-dir", required=True, help="figure directory (R/figures)")
    args = parser.parse_args(argv)
    settings = ResultsSettings.from_json(parse_settings(args.settings), "plots")
    for path in draw_all(settings, args.db, args.out_dir):
        print(path)
    return 0
