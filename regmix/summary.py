"""The ranked summary of a run, read from the results database's views.

Candidates are ranked on the target loss (the large model's validation loss on the
regression target) next to the regression's prediction for the same mixture, and on
every downstream task's primary metric averaged over shot counts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from regmix import files
from regmix.settings import parse_settings
from regmix.settings.outputs import ResultsSettings
from regmix.targets import MEAN, study_target


def _query(db: Path, sql: str) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def summary_table(
    db: str | Path, candidates: list[str], validation_sets: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str]]:
    """One row per candidate, best target loss first; and the task column names. Each
    validation-only set adds a column `validation:<set>`: the large model's loss on it."""
    db = Path(db)
    if not db.is_file():
        raise FileNotFoundError(f"results database not found: {db}")
    target = _query(db, "SELECT * FROM target_loss").set_index("candidate")
    missing = [c for c in candidates if c not in target.index]
    if missing:
        raise ValueError(f"{db}: no target loss for candidate(s) {missing}")
    ranking = _query(db, "SELECT * FROM task_ranking")
    average = _query(db, "SELECT candidate, mean_task_rank, rank FROM average_ranking").set_index("candidate")
    table = pd.DataFrame(
        {
            "candidate": candidates,
            "target_rank": [int(target.loc[c, "achieved_rank"]) for c in candidates],
            "achieved_target": [target.loc[c, "achieved_target"] for c in candidates],
            "predicted_target": [target.loc[c, "predicted_target"] for c in candidates],
            "predicted_rank": [int(target.loc[c, "predicted_rank"]) for c in candidates],
        }
    )
    if validation_sets:
        held_out = _query(db, "SELECT candidate, domain, loss FROM large_losses")
        held_out = held_out[held_out.domain.isin(validation_sets)].pivot(
            index="candidate", columns="domain", values="loss"
        )
        for name in validation_sets:
            if name not in held_out.columns or held_out[name].reindex(candidates).isna().any():
                raise ValueError(f"{db}: no large-model loss on validation set {name!r} for every candidate")
            table[f"validation:{name}"] = [held_out.loc[c, name] for c in candidates]
    task_columns = []
    for (task, metric), rows in ranking.groupby(["task", "metric"], sort=True):
        rows = rows.set_index("candidate")
        column = f"{task}:{metric}"
        task_columns.append(column)
        table[column] = [rows["value"].get(c) for c in candidates]
        table[f"{column}:stderr"] = [rows["stderr"].get(c) for c in candidates]
        table[f"{column}:rank"] = [rows["rank"].get(c) for c in candidates]
    table["mean_task_rank"] = [average["mean_task_rank"].get(c) for c in candidates]
    table["task_rank"] = [average["rank"].get(c) for c in candidates]
    return table.sort_values(["target_rank", "candidate"]).reset_index(drop=True), task_columns


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _rank_agreement(table: pd.DataFrame) -> float | None:
    from scipy.stats import spearmanr

    rows = table.dropna(subset=["achieved_target", "mean_task_rank"])
    if len(rows) < 3 or rows["achieved_target"].nunique() < 2 or rows["mean_task_rank"].nunique() < 2:
        return None
    return float(spearmanr(rows["achieved_target"], rows["mean_task_rank"]).statistic)


def _evidence_sections(db: Path) -> list[str]:
    """Transfer from proxies to large models, task power and regmix's paired comparisons."""
    parts = []
    transfer = _query(db, "SELECT * FROM transfer_summary")
    if len(transfer):
        t = transfer.iloc[0]
        parts += [
            "",
            "## Transfer from proxies to large models",
            "",
            f"Spearman ρ between the regression's predicted target and the large models' achieved target over "
            f"{int(t.candidates)} candidates: {_fmt(t.spearman, 2)} (95% bootstrap CI {_fmt(t.ci_low, 2)} .. "
            f"{_fmt(t.ci_high, 2)}). `regmix` ranks {_fmt(t.regmix_achieved_rank, 0)} of {int(t.candidates)} on "
            f"the achieved target (predicted rank {_fmt(t.regmix_predicted_rank, 0)}).",
        ]
    power = _query(db, "SELECT * FROM task_power ORDER BY task")
    if len(power):
        parts += [
            "",
            "## Which downstream tasks can tell the candidates apart",
            "",
            "Spread: best minus worst candidate's mean score; a task tells candidates apart when some pair's "
            "paired per-item difference exceeds 2 of its stderr.",
            "",
            _markdown_table(
                ["task", "metric", "items", "spread", "mean stderr", "max pair z", "pairs apart", "tells apart"],
                [
                    [
                        f"`{r.task}`",
                        r.metric,
                        str(r.items),
                        _fmt(r.spread),
                        _fmt(r.mean_stderr),
                        _fmt(r.max_pair_z, 1),
                        f"{r.pairs_apart}/{r.pairs}",
                        "yes" if r.can_tell_apart else "no",
                    ]
                    for r in power.itertuples()
                ],
            ),
        ]
    paired = _query(db, "SELECT * FROM paired_comparisons ORDER BY task, other")
    if len(paired):
        parts += [
            "",
            "## `regmix` against each candidate, item by item",
            "",
            "Mean per-item difference (positive: regmix better), 95% bootstrap CI over items.",
            "",
            _markdown_table(
                ["task", "against", "items", "difference", "95% CI", "verdict"],
                [
                    [
                        f"`{r.task}`",
                        f"`{r.other}`",
                        str(r.items),
                        f"{r.mean_difference:+.4f}",
                        f"{r.ci_low:+.4f} .. {r.ci_high:+.4f}",
                        r.verdict,
                    ]
                    for r in paired.itertuples()
                ],
            ),
        ]
    return parts


def render_markdown(
    table: pd.DataFrame,
    task_columns: list[str],
    settings: ResultsSettings,
    db: Path,
    shots: list[int],
    cv: dict[str, dict[str, float]],
    record: dict,
) -> str:
    target, validation_sets = study_target(settings), list(settings.validation_sets)
    if settings.regression.target == MEAN:
        what = "the mean validation loss over all domains"
    elif len(target.sets) == 1:
        kind = "validation-only set" if target.label in validation_sets else "domain"
        what = f"the validation loss on {kind} `{target.label}`"
    else:
        what = f"the weighted validation loss `{target.label}`"
    parts = [
        "# RegMix run summary",
        "",
        f"Target: {what} (nats per token) of each large model. *Predicted* is the regression's prediction "
        "for the candidate's mixture, *achieved* the large model's loss. Lower is better.",
        "",
        "## Candidates ranked on the target loss",
        "",
        _markdown_table(
            ["rank", "candidate", "achieved", "predicted", "predicted rank"],
            [
                [
                    str(r.target_rank),
                    f"`{r.candidate}`",
                    _fmt(r.achieved_target),
                    _fmt(r.predicted_target),
                    str(r.predicted_rank),
                ]
                for r in table.itertuples()
            ],
        ),
    ]
    if validation_sets:
        order = table.sort_values(["target_rank", "candidate"])
        parts += [
            "",
            "## Validation-only sets (scored, never trained on)",
            "",
            "Each large model's validation loss (nats per token) on every validation-only set, with its rank "
            "among candidates (lower loss first).",
            "",
            _markdown_table(
                ["candidate", *[f"`{n}`" for n in validation_sets]],
                [
                    [
                        f"`{row.candidate}`",
                        *[
                            f"{_fmt(row[f'validation:{n}'])} ({int(order[f'validation:{n}'].rank(method='min')[i])})"
                            for n in validation_sets
                        ],
                    ]
                    for i, row in order.iterrows()
                ],
            ),
        ]
    if task_columns:
        shots_text = ", ".join(map(str, shots))
        order = table.sort_values(["task_rank", "candidate"])
        rows = [
            [
                f"`{c.split(':')[0]}`",
                c.split(":")[1],
                *[
                    f"{_fmt(row[c])} ± {_fmt(row[c + ':stderr'])} ({_fmt(row[c + ':rank'], 0)})"
                    for _, row in order.iterrows()
                ],
            ]
            for c in task_columns
        ]
        rows.append(
            ["**mean task rank**", "", *[f"**{_fmt(row['mean_task_rank'], 2)}**" for _, row in order.iterrows()]]
        )
        parts += [
            "",
            f"## Downstream tasks (lm-evaluation-harness; mean over {shots_text}-shot runs)",
            "",
            "Each cell: value ± stderr (rank among candidates). Perplexity tasks (bits per byte, lower is "
            "better) have no shots and run once; choice tasks (accuracy, higher is better) run at every "
            "shot count. Candidates are ordered by mean task rank.",
            "",
            _markdown_table(["task", "metric", *[f"`{c}`" for c in order["candidate"]]], rows),
        ]
        agreement = _rank_agreement(table)
        if agreement is not None:
            parts += [
                "",
                f"Does the mixture that wins on loss also win downstream? Spearman ρ between the "
                f"target loss and the mean task rank over {len(table)} candidates: {agreement:+.2f} "
                "(+1: same order).",
            ]
    parts += _evidence_sections(db)
    if cv:
        parts += [
            "",
            "## Regression cross-validation (held-out folds; Spearman and Pearson x100)",
            "",
            _markdown_table(
                ["metric", "value", "95% bootstrap CI"],
                [
                    [name, _fmt(v.get("value")), f"{_fmt(v.get('ci_low'))} .. {_fmt(v.get('ci_high'))}"]
                    for name, v in cv.items()
                ],
            ),
        ]
    parts += [
        "",
        "## Provenance",
        "",
        f"- database: `{db.name}` sha256 `{record['inputs'][str(db)]}`",
        f"- code version: `{record['code_version']}`",
        f"- settings fingerprint: `{record['settings_fingerprint']}`",
        "",
    ]
    return "\n".join(parts)


def summarize(settings: ResultsSettings, db: str | Path, out_md: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """Write summary.md and summary.csv (plus a provenance sidecar) from the database."""
    db = Path(db)
    table, task_columns = summary_table(db, list(settings.candidates), list(settings.validation_sets))
    shots = sorted(_query(db, "SELECT DISTINCT shots FROM eval_results")["shots"].astype(int))
    cv_rows = _query(db, "SELECT key, value FROM regression_cv WHERE value IS NOT NULL")
    cv: dict[str, dict[str, float]] = {}
    for key, value in zip(cv_rows["key"], cv_rows["value"], strict=False):
        name, _, part = key.partition(".")  # regression writes {metric: {value, ci_low, ci_high}}
        if name in ("spearman", "pearson", "rmse"):
            cv.setdefault(name, {})[part or "value"] = value
    record = files.provenance(settings.raw, [db])
    files.write_text(out_md, render_markdown(table, task_columns, settings, db, shots, cv, record))
    files.write_text(out_csv, table.to_csv(index=False))
    files.write_json(files.provenance_sidecar(out_csv), {**record, "outputs": [str(out_md), str(out_csv)]})
    return table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix summary", description=summarize.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'summary')")
    parser.add_argument("--db", required=True, help="results database (R/regmix.duckdb)")
    parser.add_argument("--out-md", required=True, help="R/summary.md")
    parser.add_argument("--out-csv", required=True, help="R/summary.csv")
    args = parser.parse_args(argv)
    settings = ResultsSettings.from_json(parse_settings(args.settings), "summary")
    table = summarize(settings, args.db, args.out_md, args.out_csv)
    print(table[["target_rank", "candidate", "achieved_target", "predicted_target"]].to_string(index=False))
    return 0
