"""The whole Snakefile on the micro config: every stage ran and wrote sane contents."""

import csv
import json
import math

import duckdb
import pytest
import yaml

from regmix.config import candidate_names, load_config
from tests.conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.slow


def _read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_micro_pipeline_outputs(micro_run):
    results = micro_run / "results"
    config = yaml.safe_load((micro_run / "config" / "micro.yaml").read_text())
    domains, count = config["domains"], config["mixtures"]["count"]

    # mixtures: the configured number, each a distribution over every domain
    table = _read_csv(results / "mixtures" / "mixtures.csv")
    assert len(table) == count
    for row in table:
        assert math.isclose(sum(float(row[d]) for d in domains), 1.0, abs_tol=1e-6)

    # proxies: a finite validation loss for every domain of every mixture, below the
    # loss of a uniform guess over the vocabulary (training did something)
    for mix in range(count):
        losses = json.loads((results / "proxies" / f"mix_{mix:04d}" / "losses.json").read_text())
        assert set(losses["val_loss"]) == set(domains)
        assert all(0 < v < math.log(config["tokenizer"]["vocab_size"]) + 0.5 for v in losses["val_loss"].values())

    # regression: cross-validated metrics on training rows
    cv = json.loads((results / "regression" / "cv.json").read_text())
    assert json.dumps(cv).lower().count("spearman") >= 1

    # the chosen mixture is a distribution over the domains
    chosen = yaml.safe_load((results / "chosen" / "regmix.yaml").read_text())
    assert set(chosen["weights"]) == set(domains)
    assert math.isclose(sum(chosen["weights"].values()), 1.0, abs_tol=1e-6)

    # every candidate trained, evaluated and ranked
    candidates = candidate_names(load_config(micro_run / "config" / "micro.yaml"))
    assert {"regmix", "prior", "uniform", "prose_heavy", "random_000", "random_001"} <= set(candidates)
    summary = _read_csv(results / "summary.csv")
    assert {row["candidate"] for row in summary} == set(candidates)
    for name in candidates:
        runs = json.loads((results / "eval" / f"{name}.json").read_text())["runs"]
        tasks = {task for run in runs.values() for task in run["results"]}
        assert {f"regmix_ppl_{d}" for d in domains} <= tasks, name
    assert "regmix" in (results / "summary.md").read_text()

    # the database holds one row per mixture and domain, and per proxy and domain
    with duckdb.connect(str(results / "regmix.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from mixtures").fetchone()[0] == count * len(domains)
        assert con.execute("select count(*) from proxy_losses").fetchone()[0] == count * len(domains)
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
