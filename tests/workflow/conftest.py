"""Fixtures of the workflow tests: runs of the pipeline shared by several test modules."""

from pathlib import Path

import pytest

from tests.helpers import copy_workflow, run_snakemake


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> Path:
    """The whole pipeline on config/micro.yaml, run once per test session."""
    workdir = copy_workflow(tmp_path_factory.mktemp("micro") / "workflow")
    proc = run_snakemake(workdir, "--cores", "2", "--configfile", "config/micro.yaml")
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "results" / "logs").rglob("*.log"))
        )
        pytest.fail(f"micro pipeline failed ({proc.returncode}):\n{proc.stderr[-5000:]}\n{logs[-8000:]}")
    return workdir
