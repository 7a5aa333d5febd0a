#!/usr/bin/env python3
"""Check an installed environment against requirements.lock, then import every
dependency the project declares and run `regmix --help`.

Run by the containers at build time (%test / RUN) and by the tests on the host:

    python containers/verify_install.py [--lock requirements.lock] [--pyproject pyproject.toml]

Exit status 1 names every distribution whose installed version differs from the lock,
every declared dependency that does not import, or a failing `regmix --help`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_DIR = Path(__file__).resolve().parent.parent


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def version_mismatches(pins: dict[str, str]) -> list[str]:
    problems = []
    for name, want in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: locked {want}, not installed")
            continue
        # the lock drops local labels (torch 2.13.0+cpu / +cu128 both satisfy 2.13.0)
        if Version(have).public != want:
            problems.append(f"{name}: locked {want}, installed {have}")
    return problems


def import_names(dist_name: str, owners: dict[str, list[str]]) -> list[str]:
    """Modules to import for a distribution: the one named like it (duckdb, not its
    optional adbc_driver_duckdb), else every public top-level module it installs
    (scikit-learn -> sklearn, PyYAML -> yaml)."""
    wanted = canonicalize_name(dist_name)
    modules = sorted(
        mod
        for mod, dists in owners.items()
        if wanted in {canonicalize_name(d) for d in dists} and not mod.startswith("_")
    )
    same_name = [mod for mod in modules if canonicalize_name(mod) == wanted]
    return same_name or modules


def import_failures(pyproject: Path) -> tuple[list[str], list[str]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = [Requirement(r).name for r in project["dependencies"]]
    owners = metadata.packages_distributions()
    imported, problems = [], []
    for dist in declared:
        modules = import_names(dist, owners)
        if not modules:
            problems.append(f"{dist}: no importable module found in its installed files")
        for module in modules:
            try:
                importlib.import_module(module)
                imported.append(module)
            except Exception as err:  # any import-time failure is what we are looking for
                problems.append(f"{dist}: import {module} failed: {type(err).__name__}: {err}")
    return imported, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check an environment against requirements.lock.")
    parser.add_argument("--lock", type=Path, default=REPO_DIR / "requirements.lock")
    parser.add_argument("--pyproject", type=Path, default=REPO_DIR / "pyproject.toml")
    args = parser.parse_args(argv)
    pins = read_lock(args.lock)
    problems = version_mismatches(pins)
    imported, import_problems = import_failures(args.pyproject)
    problems += import_problems
    help_run = subprocess.run(["regmix", "--help"], capture_output=True, text=True)
    if help_run.returncode != 0 or "usage: regmix" not in help_run.stdout:
        problems.append(f"regmix --help exited {help_run.returncode}: {help_run.stderr.strip()[-500:]}")
    for line in problems:
        print(f"verify_install: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"verify_install: {len(pins)} locked versions match; imported {', '.join(imported)}; regmix --help ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
