"""Helpers shared by unit and workflow tests (fixtures live in the conftest files)."""

import os
import shutil
import subprocess
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
PAPER_DATA = Path(os.environ.get("REGMIX_PAPER_DATA", REPO_DIR.parent / "shared" / "paper-data"))
WORKFLOW_PARTS = ["Snakefile", "rules", "config", "report", "regmix"]


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (and the package files rules track) in `dest`."""
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
    cmd = ["timeout", "-s", "KILL", str(timeout), "snakemake", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)


def assert_one_line(err: str, command: str, *named: str) -> None:
    """`err` is one line `regmix COMMAND: ...` naming each of `named`, and no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"regmix {command}: "), err
    for part in named:
        assert part in lines[0], (part, err)
