"""`regmix collect`: one DuckDB database (plus Parquet copies) that holds every number the
run produced, read from the files at the paths of `regmix.layout.Layout`.

The database is rebuilt from the files each time (built under a temporary name and
renamed into place), so it is never the only copy of anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from regmix import files
from regmix.collect import rows
from regmix.collect.statistics import paired_comparisons, task_power, transfer_tables
from regmix.collect.tables import ROW_TABLES, VIEWS
from regmix.layout import Layout, ParquetDir
from regmix.settings import parse_settings
from regmix.settings.outputs import ResultsSettings
from regmix.targets import Target, parse_target, study_target, target_slug


def _relative_to(path: str | Path, root: str | Path) -> Path:
    """`path` relative to `root` where it lies under it, else as given."""
    path, root = Path(path), Path(root)
    return path.relative_to(root) if path.is_relative_to(root) else path


def load_regressor(model_dir: Path) -> Any:
    """The fitted regression model (owned by regmix.regression)."""
    from regmix import regression

    return regression.load_model(model_dir)


class _Reader:
    """Reads the run's files by their paths relative to the results folder (`Layout("")`),
    remembering each one for the provenance record."""

    def __init__(self, results: Path):
        self.results = results
        self.inputs: list[Path] = []

    def where(self, relative: str) -> str:
        """The file's full path, as errors name it."""
        return str(self.results / relative)

    def optional_path(self, relative: str) -> Path | None:
        path = self.results / relative
        if not path.is_file():
            return None
        self.inputs.append(path)
        return path

    def path(self, relative: str) -> Path:
        path = self.optional_path(relative)
        if path is None:
            raise FileNotFoundError(f"results file not found: {self.results / relative}")
        return path

    def json(self, relative: str) -> Any:
        path = self.path(relative)
        try:
            return files.read_json(path)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None

    def yaml(self, relative: str) -> dict:
        data = files.read_yaml(self.path(relative))
        if not isinstance(data, dict):
            raise ValueError(f"{self.results / relative}: expected a mapping")
        return data

    def jsonl(self, relative: str) -> list[dict]:
        path = self.path(relative)
        records = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
        return records

    def csv(self, relative: str) -> pd.DataFrame:
        return pd.read_csv(self.path(relative))

    def optional_csv(self, relative: str) -> pd.DataFrame | None:
        path = self.optional_path(relative)
        return None if path is None else pd.read_csv(path)


_REL = Layout("")  # paths relative to the results folder
Rows = dict[str, list[dict]]  # table name -> rows, for the tables of ROW_TABLES


def _data_rows(read: _Reader, settings: ResultsSettings, t: Rows) -> None:
    """The prior, the token counts and the validation-only sets' sizes."""
    domains = list(settings.domains)
    prior = read.yaml(_REL.prior)
    t["prior"] = [{"domain": d, "weight": float(prior[d])} for d in domains if d in prior]
    if len(t["prior"]) != len(domains):
        raise ValueError(f"{read.where(_REL.prior)}: no share for domain(s) {[d for d in domains if d not in prior]}")
    counts = read.json(_REL.token_counts)
    t["token_counts"] = [
        {"domain": d, "split": s, "tokens": int(n)} for d in domains for s, n in counts.get(d, {}).items()
    ]
    for name in settings.validation_sets:
        sidecar = read.json(_REL.data.sidecar(name, "valid"))
        t["validation_sets"].append(
            {"name": name, "documents": sidecar["documents"], "tokens": sidecar["tokens"], "bytes": sidecar["bytes"]}
        )


def _proxy_rows(read: _Reader, settings: ResultsSettings, scored: list[str], t: Rows) -> None:
    """Each proxy's mixture, losses, run metadata and logs."""
    for mix in settings.mixture_ids:
        where = _REL.mixture(mix)
        for d, w in rows.weights_of(read.yaml(where), list(settings.domains), read.where(where)).items():
            t["mixtures"].append({"mix_id": mix, "domain": d, "weight": w})
        run = _REL.proxy(mix)
        data = read.json(run.losses)
        t["proxy_losses"] += [
            {"mix_id": mix, "domain": d, "loss": v} for d, v in rows.val_losses_of(data, scored, run.losses).items()
        ]
        t["proxy_runs"].append(rows.run_row("mix_id", mix, data, run.losses))
        train, valid = rows.log_rows("mix_id", mix, read.jsonl(run.train_log), run.train_log, data)
        t["proxy_train_log"] += train
        t["proxy_val_log"] += valid


def _swarm_rows(read: _Reader, settings: ResultsSettings, t: Rows) -> None:
    """The imported swarms' weights and losses, long."""
    for name in settings.regression.swarms:
        swarm = _REL.swarm(name)
        for table, relative, value in (
            ("imported_mixtures", swarm.mixtures, "weight"),
            ("imported_losses", swarm.losses, "loss"),
        ):
            wide = read.csv(relative).set_index("index")
            long = wide.rename_axis(columns="domain").stack().rename(value).reset_index()
            t[table] += [
                {"source": name, "mix_id": str(r["index"]), "domain": r["domain"], value: float(r[value])}
                for r in long.to_dict("records")
            ]


def _regression_rows(read: _Reader, settings: ResultsSettings, target: Target, t: Rows) -> pd.DataFrame:
    """Every fitted target's CV scores and the main fit's settings; returns its CV predictions."""
    domains, sets = list(settings.domains), settings.validation_sets
    fits = [(target_slug(settings.regression.target), target.label, True, _REL.regression("cv.json"))]
    for spec in settings.regression.targets:
        slug = target_slug(spec)
        label = parse_target(spec, domains, validation_sets=sets).label
        fits.append((slug, label, False, _REL.regression_target(slug, "cv.json")))
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
    t["regression_cv"] = rows.flatten(read.json(_REL.regression("cv.json")))
    t["regression_settings"] = rows.flatten(read.json(_REL.regression("settings.json")))
    where = _REL.regression("cv_predictions.csv")
    cv_pred = read.csv(where)
    missing = [c for c in ("index", "true", "predicted") if c not in cv_pred.columns]
    if missing:
        raise ValueError(f"{read.where(where)}: missing column(s) {missing}")
    return cv_pred


def _chosen_rows(read: _Reader, settings: ResultsSettings, t: Rows) -> pd.DataFrame:
    """The chosen mixture; returns the top-k table (empty when choose did not write one)."""
    domains = list(settings.domains)
    chosen = read.yaml(_REL.chosen)
    epochs = chosen.get("epochs")
    if not isinstance(epochs, dict):
        epochs = {}
    t["chosen_mixture"] = [
        {"domain": d, "weight": w, "epochs": epochs.get(d), "predicted_target": chosen.get("predicted_target")}
        for d, w in rows.weights_of(chosen, domains, read.where(_REL.chosen)).items()
    ]
    # choose writes the top-k table only when asked (--topk-out): the one optional piece
    topk = read.optional_csv(_REL.topk)
    if topk is None:
        topk = pd.DataFrame({"rank": pd.Series(dtype="int64"), **{d: pd.Series(dtype="float64") for d in domains}})
    elif "rank" not in topk.columns:
        topk.insert(0, "rank", range(1, len(topk) + 1))
    return topk


def _candidate_rows(
    read: _Reader, settings: ResultsSettings, scored: list[str], target: Target, t: Rows
) -> dict[str, dict[str, float]]:
    """Each candidate's mixture, its large model's losses, run and logs, and its evaluation;
    returns the candidates' weights."""
    domains = list(settings.domains)
    candidate_weights = {}
    for cand in settings.candidates:
        where = _REL.candidate(cand)
        candidate_weights[cand] = rows.weights_of(read.yaml(where), domains, read.where(where))
        t["candidates"] += [{"candidate": cand, "domain": d, "weight": w} for d, w in candidate_weights[cand].items()]
        run = _REL.large(cand)
        data = read.json(run.losses)
        losses = rows.val_losses_of(data, scored, run.losses)
        t["large_losses"] += [{"candidate": cand, "domain": d, "loss": v} for d, v in losses.items()]
        achieved = target.value(losses, read.where(run.losses))
        t["large_runs"].append({**rows.run_row("candidate", cand, data, run.losses), "achieved_target": achieved})
        train, valid = rows.log_rows("candidate", cand, read.jsonl(run.train_log), run.train_log, data)
        t["large_train_log"] += train
        t["large_val_log"] += valid
        where = _REL.eval(cand)
        results_rows = rows.eval_rows(cand, read.json(where), read.where(where))
        t["eval_results"] += results_rows
        if settings.log_samples:
            primary = {
                r["task"]: (r["metric"], r["filter"], r["higher_is_better"]) for r in results_rows if r["is_primary"]
            }
            where = _REL.eval_samples(cand)
            t["eval_items"] += rows.item_rows(cand, read.jsonl(where), primary, read.where(where))
    return candidate_weights


# computed from the other tables once they are read
DERIVED = ("task_power", "paired_comparisons", "transfer", "transfer_summary")


def gather_tables(
    settings: ResultsSettings, results: str | Path, regressor_loader: Callable[[Path], Any] = load_regressor
) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """Every table of the database, read from the run's files; and the files read."""
    read = _Reader(Path(results))
    target = study_target(settings)
    # the loss tables hold a row per scored set: the domains, then the validation-only sets
    scored = [*settings.domains, *settings.validation_sets]
    t: Rows = {name: [] for name in ROW_TABLES}
    _data_rows(read, settings, t)
    _proxy_rows(read, settings, scored, t)
    _swarm_rows(read, settings, t)
    cv_predictions = _regression_rows(read, settings, target, t)
    topk = _chosen_rows(read, settings, t)
    candidate_weights = _candidate_rows(read, settings, scored, target, t)

    read.path(_REL.regression("model.pkl"))
    frame = pd.DataFrame([candidate_weights[c] for c in settings.candidates], columns=list(settings.domains))
    predicted = regressor_loader(read.results / _REL.regression_dir).predict_frame(frame, "candidates")
    t["candidate_predictions"] = [
        {"candidate": c, "predicted_target": float(p)} for c, p in zip(settings.candidates, predicted, strict=False)
    ]
    tables = {
        name: pd.DataFrame(rows_of, columns=list(ROW_TABLES[name])).astype(ROW_TABLES[name])
        for name, rows_of in t.items()
        if name not in DERIVED
    }
    tables["regression_cv_predictions"] = cv_predictions
    tables["topk"] = topk
    tables["task_power"] = task_power(tables["eval_items"])
    tables["paired_comparisons"] = paired_comparisons(tables["eval_items"], "regmix", settings.seed)
    tables["transfer"], tables["transfer_summary"] = transfer_tables(
        tables["large_runs"], tables["candidate_predictions"], target.label, settings.seed
    )
    return tables, read.inputs


def _write_parquet(con: Any, tables: list[str], parquet_dir: str | Path) -> None:
    """One Parquet file per table and view, swapped in for the folder only when all are written."""
    with files.atomic_dir(parquet_dir) as staging:
        copies = ParquetDir(str(staging))
        for name in tables:
            con.execute(f"COPY \"{name}\" TO '{copies.table(name)}' (FORMAT parquet)")
        for name in VIEWS:
            con.execute(f"COPY (SELECT * FROM \"{name}\") TO '{copies.table(name)}' (FORMAT parquet)")


def build_database(
    settings: ResultsSettings,
    results: str | Path,
    out: str | Path,
    parquet_dir: str | Path | None = None,
    regressor_loader: Callable[[Path], Any] = load_regressor,
) -> dict[str, int]:
    """Rebuild the DuckDB database (and Parquet copies) from the run's files."""
    import duckdb

    tables, inputs = gather_tables(settings, results, regressor_loader)
    record = files.provenance(settings.raw, inputs)
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
                _write_parquet(con, list(tables), parquet_dir)
        finally:
            con.close()
    return {name: len(frame) for name, frame in tables.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix collect", description=build_database.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'collect')")
    parser.add_argument("--results", required=True, help="results directory R")
    parser.add_argument("--out", required=True, help="database file (R/regmix.duckdb)")
    parser.add_argument("--parquet-dir", help="directory for one Parquet file per table and view (R/db)")
    args = parser.parse_args(argv)
    settings = ResultsSettings.from_json(parse_settings(args.settings), "collect")
    counts = build_database(settings, args.results, args.out, args.parquet_dir)
    for name, count in counts.items():
        print(f"{name:28s} {count:8d} rows")
    return 0
