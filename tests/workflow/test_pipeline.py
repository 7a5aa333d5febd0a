"""The whole Snakefile on the micro config: every stage ran and wrote sane contents."""

import csv
import json
import math

import duckdb
import pytest
import yaml

from regmix.config import candidate_names, load_config
from tests.helpers import copy_workflow, run_snakemake

pytestmark = pytest.mark.slow


def _read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_micro_pipeline_outputs(micro_run):
    results = micro_run / "results"
    config = yaml.safe_load((micro_run / "config" / "micro.yaml").read_text())
    domains, count = config["domains"], config["mixtures"]["count"]
    (held,) = config["validation_sets"]  # the micro config's one validation-only set
    scored = [*domains, held]

    # mixtures: the configured number, each a distribution over every domain
    table = _read_csv(results / "mixtures" / "mixtures.csv")
    assert len(table) == count
    for row in table:
        assert math.isclose(sum(float(row[d]) for d in domains), 1.0, abs_tol=1e-6)

    # proxies: a finite validation loss for every domain and the validation-only set of every
    # mixture, below the loss of a uniform guess over the vocabulary (training did something);
    # the set is in no mixture
    for mix in range(count):
        losses = json.loads((results / "proxies" / f"mix_{mix:04d}" / "losses.json").read_text())
        assert set(losses["val_loss"]) == set(scored) and set(losses["weights"]) == set(domains)
        assert all(0 < v < math.log(config["tokenizer"]["vocab_size"]) + 0.5 for v in losses["val_loss"].values())
    sidecar = json.loads((results / "data" / held / "valid.json").read_text())
    assert sidecar["validation_set"] and sidecar["documents"] > 0
    assert not (results / "data" / held / "train.bin").exists()
    proxy_table = _read_csv(results / "proxies" / "losses.csv")
    assert list(proxy_table[0]) == ["index", *scored, "mean"]
    for row in proxy_table:  # the mean is over the domains alone
        assert math.isclose(float(row["mean"]), sum(float(row[d]) for d in domains) / len(domains), rel_tol=1e-9)
    assert held not in _read_csv(results / "proxies" / "mixtures.csv")[0]
    assert held not in yaml.safe_load((results / "data" / "prior.yaml").read_text())

    # regression: cross-validated metrics on training rows, fitted on the weighted objective
    # over the domain and the validation-only set
    cv = json.loads((results / "regression" / "cv.json").read_text())
    assert json.dumps(cv).lower().count("spearman") >= 1
    assert cv["target"] == config["regression"]["target"] and held in cv["target"]
    cv_rows = {int(r["index"]): float(r["true"]) for r in _read_csv(results / "regression" / "cv_predictions.csv")}
    weights = config["regression"]["target"]
    for row in proxy_table:
        expected = sum(w * float(row[s]) for s, w in weights.items()) / sum(weights.values())
        assert math.isclose(cv_rows[int(row["index"])], expected, rel_tol=1e-9)

    # the chosen mixture is a distribution over the domains
    chosen = yaml.safe_load((results / "chosen" / "regmix.yaml").read_text())
    assert set(chosen["weights"]) == set(domains)
    assert math.isclose(sum(chosen["weights"].values()), 1.0, abs_tol=1e-6)

    # every candidate trained, evaluated and ranked; every large model scored the set
    candidates = candidate_names(load_config(micro_run / "config" / "micro.yaml"))
    assert {"regmix", "prior", "uniform", "prose_heavy", "random_000", "random_001"} <= set(candidates)
    summary = _read_csv(results / "summary.csv")
    assert {row["candidate"] for row in summary} == set(candidates)
    large_held = {}
    for name in candidates:
        large = json.loads((results / "large" / name / "losses.json").read_text())
        assert set(large["val_loss"]) == set(scored), name
        large_held[name] = large["val_loss"][held]
    for row in summary:
        assert math.isclose(float(row[f"validation:{held}"]), large_held[row["candidate"]], rel_tol=1e-9)
    assert f"`{held}`" in (results / "summary.md").read_text()
    for name in candidates:
        runs = json.loads((results / "eval" / f"{name}.json").read_text())["runs"]
        tasks = {task for run in runs.values() for task in run["results"]}
        assert {f"regmix_ppl_{d}" for d in domains} <= tasks, name
    assert "regmix" in (results / "summary.md").read_text()

    # the database holds one row per mixture and domain, and per proxy and domain
    with duckdb.connect(str(results / "regmix.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from mixtures").fetchone()[0] == count * len(domains)
        assert con.execute("select count(*) from proxy_losses").fetchone()[0] == count * len(scored)
        assert con.execute(f"select count(*) from mixtures where domain = '{held}'").fetchone()[0] == 0
        assert con.execute("select name from validation_sets").fetchall() == [(held,)]
        # the large models' achieved target is the weighted objective of their own losses
        achieved = dict(con.execute("select candidate, achieved_target from large_runs").fetchall())
        losses = con.execute("select candidate, domain, loss from large_losses").df()
        for name in candidates:
            own = losses[losses.candidate == name].set_index("domain")["loss"]
            expected = sum(w * own[s] for s, w in weights.items()) / sum(weights.values())
            assert math.isclose(achieved[name], expected, rel_tol=1e-9), name
        # transfer: every candidate once, ranks a permutation, the Spearman inside its CI
        transfer = con.execute("select * from transfer").df()
        assert sorted(transfer.candidate) == sorted(candidates)
        assert sorted(transfer.achieved_rank) == list(range(1, len(candidates) + 1))
        summary_row = con.execute("select * from transfer_summary").df().iloc[0]
        assert summary_row.candidates == len(candidates)
        assert -1 <= summary_row.ci_low <= summary_row.spearman <= summary_row.ci_high <= 1
        # paired comparisons: regmix against every other candidate, verdicts follow the CI
        paired = con.execute("select * from paired_comparisons").df()
        assert set(paired.reference) == {"regmix"}
        assert set(paired.other) == set(candidates) - {"regmix"}
        assert (paired.ci_low <= paired.mean_difference + 1e-12).all()
        assert (paired.mean_difference <= paired.ci_high + 1e-12).all()
        for row in paired.itertuples():
            expected = "better" if row.ci_low > 0 else "worse" if row.ci_high < 0 else "n.s."
            assert row.verdict == expected, row
        power = con.execute("select * from task_power").df()
        assert (power.spread >= 0).all() and set(power.candidates) == {len(candidates)}


def test_a_validation_set_alone_is_a_target_the_fit_takes(micro_run, tmp_path):
    """`regmix fit` on the micro run's tables with the validation-only set as the target."""
    import subprocess

    results = micro_run / "results"
    (held,) = yaml.safe_load((micro_run / "config" / "micro.yaml").read_text())["validation_sets"]
    proc = subprocess.run(
        [
            "regmix",
            "fit",
            "--mixtures",
            str(results / "proxies" / "mixtures.csv"),
            "--losses",
            str(results / "proxies" / "losses.csv"),
            "--target",
            held,
            "--regressor",
            "linear",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=micro_run,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "cv.json").read_text())["target"] == held
    true = {int(r["index"]): float(r["true"]) for r in _read_csv(tmp_path / "cv_predictions.csv")}
    assert true == {int(r["index"]): float(r[held]) for r in _read_csv(results / "proxies" / "losses.csv")}


def test_rerun_does_nothing_when_nothing_changed(micro_run):
    proc = run_snakemake(micro_run, "-n", "--configfile", "config/micro.yaml", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_stops_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "config" / "bad.yaml").write_text("large:\n  named:\n    mine: {code: 0.7, atlantis: 0.3}\n")
    proc = run_snakemake(workdir, "--cores", "1", "--configfile", "config/bad.yaml", timeout=120)
    assert proc.returncode != 0
    assert "atlantis" in proc.stderr and "large.named.mine" in proc.stderr
    assert not (workdir / "results").exists()


def test_report_shows_every_figure_and_the_archive_verifies(micro_run):
    from regmix.plots import FIGURES

    report = micro_run / "results" / "report.html"
    proc = run_snakemake(micro_run, "--configfile", "config/micro.yaml", "--report", str(report), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = report.read_text(errors="replace")
    for name, (category, _) in FIGURES.items():
        assert name in html, name
        assert category in html, category

    proc = run_snakemake(micro_run, "archive", "--cores", "1", "--configfile", "config/micro.yaml", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    archive = micro_run / "results" / "archive" / "regmix-run.tar.gz"
    import subprocess
    import tarfile

    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("report.html") for n in names)
    assert any(n.endswith("regmix.duckdb") for n in names)
    assert any(n.endswith("MANIFEST.sha256") for n in names)
    verify = subprocess.run(["regmix", "verify-archive", str(archive)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
