"""Shared fixtures. Tests never touch a hub: offline variables are set for every test."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_DIR = Path(__file__).resolve().parents[1]
PAPER_DATA = Path(os.environ.get("REGMIX_PAPER_DATA", REPO_DIR.parent / "shared" / "paper-data"))


@pytest.fixture
def repo_dir() -> Path:
    return REPO_DIR


@pytest.fixture
def paper_data() -> Path:
    if not (PAPER_DATA / "train_mixture_1m.csv").is_file():
        pytest.skip(f"paper data not found at {PAPER_DATA}")
    return PAPER_DATA


WORKFLOW_PARTS = ["Snakefile", "rules", "config", "report", "regmix"]


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (and the package files rules track) in `dest`."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO_DIR / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 600):
    """Run snakemake as a user would; killed (not just terminated) past `timeout`."""
    import subprocess

    cmd = ["timeout", "-s", "KILL", str(timeout), "snakemake", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)


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
