"""Helpers of the cluster tests: a workflow copy that includes the Slurm profile, and a
reader of Snakemake's dry-run job listing."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.helpers import REPO_DIR, copy_workflow

# Apptainer cannot be installed here, and with the profile's `--sdm apptainer` and the
# Snakefile's `container:` even a dry run needs it. The rules declare no env modules,
# so this deployment method replaces the profile's with one that changes nothing.
NO_CONTAINER = ("--sdm", "env-modules")

GPU_RULE = re.compile(r"^(train_proxies_pack_\d+|train_large|evaluate_candidate)$")


def copy_cluster_workflow(dest: Path) -> Path:
    """The workflow copy of conftest plus the Slurm profile and the conda env files."""
    copy_workflow(dest)
    for part in ("slurm", "envs"):
        shutil.copytree(REPO_DIR / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def profile() -> dict:
    return yaml.safe_load((REPO_DIR / "slurm" / "config.yaml").read_text())


@dataclass
class DryRunJob:
    rule: str
    resources: dict[str, str] = field(default_factory=dict)
    wildcards: dict[str, str] = field(default_factory=dict)
    shell: str = ""
    reason: str = ""
    group: str | None = None


_RULE_LINE = re.compile(r"^(\s*)(?:local)?rule (\S+):$")
_GROUP_LINE = re.compile(r"Group job (\S+) \(jobs in")


def _pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(", ") if "=" in item)


def parse_dry_run(output: str) -> list[DryRunJob]:
    """Every job of `snakemake -n` output, with its resources, wildcards, reason and shell
    command (the command follows the job as a `Shell command:` line with -p)."""
    jobs: list[DryRunJob] = []
    group = None
    for line in output.splitlines():
        if match := _GROUP_LINE.search(line):
            group = match.group(1)
            continue
        if match := _RULE_LINE.match(line):
            indent, rule = match.groups()
            jobs.append(DryRunJob(rule=rule, group=group if indent else None))
            if not indent:
                group = None
            continue
        if not jobs:
            continue
        stripped = line.strip()
        if stripped.startswith("resources: "):
            jobs[-1].resources = _pairs(stripped[len("resources: ") :])
        elif stripped.startswith("wildcards: "):
            jobs[-1].wildcards = _pairs(stripped[len("wildcards: ") :])
        elif stripped.startswith("reason: "):
            jobs[-1].reason = stripped[len("reason: ") :]
        elif stripped.startswith("Shell command: "):
            jobs[-1].shell = stripped[len("Shell command: ") :]
    return jobs


def by_rule(jobs: list[DryRunJob]) -> dict[str, list[DryRunJob]]:
    table: dict[str, list[DryRunJob]] = {}
    for job in jobs:
        table.setdefault(job.rule, []).append(job)
    return table
