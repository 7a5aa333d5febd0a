"""The workflow is lint-clean as the Snakemake workflow catalog expects, and the typed part
of regmix type-checks."""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest

from tests.helpers import REPO_DIR, copy_workflow


def test_snakemake_lint_exits_zero(tmp_path):
    # `--lint` exits 1 on any suggestion; run in a copy so no .snakemake/ lands in the checkout
    workdir = copy_workflow(tmp_path / "workflow")
    proc = subprocess.run(
        ["snakemake", "--lint", "--configfile", "config/micro.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_snakefmt_check_passes():
    if shutil.which("snakefmt") is None:
        pytest.skip("snakefmt is not installed (a test dependency in pyproject.toml)")
    proc = subprocess.run(
        ["snakefmt", "--check", "Snakefile", "rules"], cwd=REPO_DIR, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["ruff-check", "ruff-format"])
def test_ruff_passes(command):
    # pyproject.toml's [tool.ruff] is the configuration; CI runs it through this test
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (a test dependency in pyproject.toml)")
    proc = subprocess.run(
        ["ruff", *command, "regmix", "tests", "benchmarks", "tools"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_mypy_passes_on_the_typed_modules():
    # the list of checked modules is pyproject.toml's [tool.mypy] files, and only there: run
    # without paths so mypy reads it, and check that it names modules that exist
    if shutil.which("mypy") is None:
        pytest.skip("mypy is not installed (a test dependency in pyproject.toml)")
    checked = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    missing = [path for path in checked if not (REPO_DIR / path).exists()]
    assert checked and not missing, f"[tool.mypy] files names what does not exist: {missing}"
    proc = subprocess.run(["mypy"], cwd=REPO_DIR, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
