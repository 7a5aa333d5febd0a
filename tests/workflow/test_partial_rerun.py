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

from regmix import tracking
from regmix.config import candidate_names, load_config
from tests.helpers import REPO_DIR, run_snakemake
from tests.helpers.cluster import by_rule, parse_dry_run

pytestmark = pytest.mark.slow

# the micro config's candidates, built-in and random ones included
MICRO = load_config(REPO_DIR / "config" / "micro.yaml")
CANDIDATES = set(candidate_names(MICRO))
UPSTREAM_OF_PROXIES = {"build_corpus", "train_tokenizer", "tokenize_domain", "compute_prior", "synthesize_mixtures"}
# the rules of each stage that regmix.tracking names (a pack rule stands for all packs)
STAGE_RULES = {
    "corpus": {"build_corpus", "build_validation_set"},
    "tokenizer": {"train_tokenizer"},
    "tokenize": {"tokenize_domain", "tokenize_validation_set", "compute_prior"},
    "mixtures": {"synthesize_mixtures"},
    "proxy": {"train_proxies_pack"},
    "large": {"train_large"},
    "collect_proxies": {"collect_proxy_results"},
    "regression": {"fit_regression"},
    "choose": {"choose_mixture"},
    "candidates": {"write_candidate"},
    "eval_tasks": {"make_eval_tasks"},
    "evaluate": {"evaluate_candidate"},
    "summary": {"summarize"},
    "collect": {"build_database"},
    "plots": {"plot_figures"},
}


def stage_module(workdir: Path, stage: str) -> Path:
    """The file of a stage's command module in the workflow copy (a package's __init__.py
    when the module is a package), found through regmix.tracking, not a fixed path."""
    path = tracking.module_file(tracking.STAGE_COMMANDS[stage], workdir / "regmix")
    assert path is not None, f"no module for stage {stage!r} in {workdir / 'regmix'}"
    return path


def rules_tracking(workdir: Path, path: Path) -> set[str]:
    """The rules whose code inputs include `path` (by the import closure)."""
    package = workdir / "regmix"
    return {
        rule
        for stage, rules in STAGE_RULES.items()
        if str(path.resolve()) in tracking.code_files(stage, package)
        for rule in rules
    }


def rule_family(rule: str) -> str:
    return "train_proxies_pack" if rule.startswith("train_proxies_pack_") else rule


def assert_code_reruns_exactly_its_stages(jobs, workdir: Path, path: Path):
    """Every rule of a stage tracking the changed file reruns, and only those name it as
    their reason (Snakemake gives one reason: a job whose upstream also reruns may say
    "updated by another job" instead)."""
    shown = f"{path.parent.name}/{path.name}"  # reasons list the changed inputs by path
    tracked = rules_tracking(workdir, path)
    named = {rule_family(r) for r, js in jobs.items() if any(shown in j.reason for j in js)}
    assert tracked <= {rule_family(r) for r in jobs}, f"not rerun: {sorted(tracked - set(map(rule_family, jobs)))}"
    assert named <= tracked, f"rerun for an untracked file: {sorted(named - tracked)}"


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
    module = stage_module(micro_run, "regression")
    with edited(module):
        jobs = dry_run(micro_run)
    (fit,) = jobs["fit_regression"]
    if "collect_proxy_results" not in rules_tracking(micro_run, module):  # else it reruns first
        assert module.name in fit.reason and "Updated input files" in fit.reason
    assert {"fit_regression", "choose_mixture", "summarize", "build_database"} <= set(jobs)
    assert not any(rule.startswith("train_proxies_pack_") for rule in jobs)
    assert_code_reruns_exactly_its_stages(jobs, micro_run, module)
    # the proxies' CSV collector reruns only while it shares a module with the database builder
    keep = {"make_eval_tasks"} | ({"collect_proxy_results"} - rules_tracking(micro_run, module))
    assert_untouched(jobs, UPSTREAM_OF_PROXIES | keep)
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
    module = stage_module(micro_run, "tokenize")
    with edited(module):
        jobs = dry_run(micro_run)
    assert len(jobs["tokenize_domain"]) == 2 * len(MICRO["domains"])  # every domain, both splits
    assert len(jobs["tokenize_validation_set"]) == len(MICRO["validation_sets"])
    assert all(module.name in job.reason for job in jobs["tokenize_domain"])
    assert_code_reruns_exactly_its_stages(jobs, micro_run, module)
    assert {"compute_prior", "synthesize_mixtures", "train_proxies_pack_0000", "fit_regression"} <= set(jobs)
    assert_untouched(jobs, {"build_corpus", "train_tokenizer"})


def test_adding_a_validation_set_scores_it_without_rebuilding_the_domains(micro_run):
    """A new validation-only set is tokenized on its own and every model is rescored on
    it (validation runs inside training, so proxies and large models rerun); the domains'
    corpus, tokenizer, tokens, prior, mixtures and the other set stay as they are."""
    notes = micro_run / "extra_notes"
    notes.mkdir(exist_ok=True)
    for i in range(40):
        (notes / f"{i:02d}.txt").write_text(f"Note {i}: a held-out text no mixture trains on. " * 12)
    overlay = {"validation_sets": {**MICRO["validation_sets"], "notes": {"kind": "text", "files": "extra_notes/*.txt"}}}
    jobs = dry_run(micro_run, overlay)
    assert [job.wildcards["vset"] for job in jobs["tokenize_validation_set"]] == ["notes"]
    assert "build_validation_set" not in jobs  # the demo set already built is kept
    assert_untouched(jobs, UPSTREAM_OF_PROXIES)
    assert len([r for r in jobs if r.startswith("train_proxies_pack_")]) == 2
    assert candidates_of(jobs, "train_large") == CANDIDATES
    assert {"collect_proxy_results", "fit_regression", "build_database", "summarize", "plot_figures"} <= set(jobs)


def test_evaluation_code_change_reevaluates_without_retraining(micro_run):
    module = stage_module(micro_run, "evaluate")
    with edited(module):
        jobs = dry_run(micro_run)
    assert candidates_of(jobs, "evaluate_candidate") == CANDIDATES
    assert_code_reruns_exactly_its_stages(jobs, micro_run, module)
    assert "make_eval_tasks" in jobs
    assert not any(rule.startswith("train_") for rule in jobs)
    assert_untouched(jobs, UPSTREAM_OF_PROXIES | {"fit_regression", "choose_mixture", "write_candidate"})


def test_model_code_change_retrains_proxies_and_large_models_only(micro_run):
    module = micro_run / "regmix" / "model.py"
    with edited(module):
        jobs = dry_run(micro_run)
    assert_code_reruns_exactly_its_stages(jobs, micro_run, module)
    assert len([r for r in jobs if r.startswith("train_proxies_pack_")]) == 2
    assert candidates_of(jobs, "train_large") == CANDIDATES
    # only the chosen mixture's candidate file is rewritten (the retrained proxies choose it)
    assert candidates_of(jobs, "write_candidate") == {"regmix"}
    assert_untouched(jobs, UPSTREAM_OF_PROXIES | {"make_eval_tasks"})


def test_shared_module_change_reruns_every_stage_that_imports_it(micro_run):
    """regmix/files.py (atomic writes, provenance) is imported by every command: a change
    to it reruns every stage, as DESIGN.md says."""
    module = micro_run / "regmix" / "files.py"
    with edited(module):
        jobs = dry_run(micro_run)
    assert_code_reruns_exactly_its_stages(jobs, micro_run, module)
    assert {"build_corpus", "train_tokenizer", "fit_regression", "build_database"} <= set(jobs)
