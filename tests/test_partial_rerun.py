"""After a finished micro run, a change behind one stage reruns exactly that stage and
what depends on it, never anything upstream: `snakemake -n`, reading its reasons.

Uses conftest's session-wide `micro_run` (the finished micro pipeline in a temporary
directory). Code changes are made to that copy's regmix/ files and undone byte for
byte (and mtime) afterwards; config changes come as an overlay config file.
"""

import contextlib
import os
from pathlib import Path

import pytest
import yaml

from tests.cluster import by_rule, parse_dry_run
from tests.conftest import run_snakemake

pytestmark = pytest.mark.slow

CANDIDATES = {"regmix", "prior", "uniform", "prose_heavy"}
UPSTREAM_OF_PROXIES = {"build_corpus", "train_tokenizer", "tokenize_domain", "compute_prior", "synthesize_mixtures"}


@contextlib.contextmanager
def edited(path: Path):
    """Append a comment to a module (a real content change), then restore it exactly."""
    original, stat = path.read_bytes(), path.stat()
    path.write_bytes(original + b"\n# a change for test_partial_rerun\n")
    try:
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def dry_run(workdir: Path, overlay: dict | None = None):
    configs = ["config/micro.yaml"]
    if overlay:
        (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        configs.append("overlay.yaml")
    proc = run_snakemake(workdir, "-n", "-p", "--configfile", *configs, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    jobs = [job for job in parse_dry_run(proc.stdout + proc.stderr) if job.rule != "all"]
    return by_rule(jobs)


def candidates_of(jobs, rule):
    return {job.wildcards["candidate"] for job in jobs.get(rule, [])}


def assert_untouched(jobs, rules):
    reran = sorted(set(jobs) & set(rules))
    assert not reran, f"reran upstream stages: {reran}"


def test_nothing_reruns_without_a_change(micro_run):
    assert dry_run(micro_run) == {}


def test_regression_code_change_refits_but_retrains_no_proxy(micro_run):
    with edited(micro_run / "regmix" / "regression.py"):
        jobs = dry_run(micro_run)
    (fit,) = jobs["fit_regression"]
    assert "regression.py" in fit.reason and "Updated input files" in fit.reason
    assert {"fit_regression", "choose_mixture", "summarize", "build_database"} <= set(jobs)
    assert not any(rule.startswith("train_proxies_pack_") for rule in jobs)
    assert_untouched(jobs, UPSTREAM_OF_PROXIES | {"collect_proxy_results", "make_eval_tasks"})
    # only the candidate that the regression chooses is retrained and re-evaluated
    assert candidates_of(jobs, "train_large") == {"regmix"}
    assert candidates_of(jobs, "evaluate_candidate") == {"regmix"}


def test_proxy_learning_rate_retrains_proxies_but_does_not_retokenize(micro_run):
    jobs = dry_run(micro_run, {"proxy": {"lr": 0.001}})
    packs = [rule for rule in jobs if rule.startswith("train_proxies_pack_")]
    assert len(packs) == 2  # every pack of the micro config
    for rule in packs:
        assert "Params have changed" in jobs[rule][0].reason, jobs[rule][0].reason
    assert {"collect_proxy_results", "fit_regression", "choose_mixture"} <= set(jobs)
    assert_untouched(jobs, UPSTREAM_OF_PROXIES | {"make_eval_tasks"})
    assert candidates_of(jobs, "train_large") == {"regmix"}


def test_large_model_learning_rate_retrains_every_candidate_and_no_proxy(micro_run):
    jobs = dry_run(micro_run, {"large": {"lr": 0.001}})
    assert candidates_of(jobs, "train_large") == CANDIDATES
    assert all("Params have changed" in job.reason for job in jobs["train_large"])
    assert candidates_of(jobs, "evaluate_candidate") == CANDIDATES
    assert not any(rule.startswith("train_proxies_pack_") for rule in jobs)
    assert_untouched(
        jobs, UPSTREAM_OF_PROXIES | {"collect_proxy_results", "fit_regression", "choose_mixture", "write_candidate"}
    )


def test_tokenization_code_change_retokenizes_but_keeps_corpus_and_tokenizer(micro_run):
    with edited(micro_run / "regmix" / "tokenization.py"):
        jobs = dry_run(micro_run)
    assert len(jobs["tokenize_domain"]) == 12  # 6 domains x 2 splits
    assert all("tokenization.py" in job.reason for job in jobs["tokenize_domain"])
    assert {"compute_prior", "synthesize_mixtures", "train_proxies_pack_0000", "fit_regression"} <= set(jobs)
    assert_untouched(jobs, {"build_corpus", "train_tokenizer"})


def test_evaluation_code_change_reevaluates_without_retraining(micro_run):
    with edited(micro_run / "regmix" / "evaluate.py"):
        jobs = dry_run(micro_run)
    assert candidates_of(jobs, "evaluate_candidate") == CANDIDATES
    assert "make_eval_tasks" in jobs
    assert not any(rule.startswith("train_") for rule in jobs)
    assert_untouched(jobs, UPSTREAM_OF_PROXIES | {"fit_regression", "choose_mixture", "write_candidate"})
