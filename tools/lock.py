#!/usr/bin/env python3
"""Write requirements.lock and envs/regmix.yaml from the installed environment.

The lock is the exact version of every distribution in the project's dependency
closure: the `dependencies` of pyproject.toml plus its `test` extra, followed
recursively through each installed distribution's requirements (markers evaluated for
this interpreter and the extras asked for). The conda environment is written from the
same list, so the lock, envs/ and the containers (which install the lock file itself)
cannot disagree.

    python tools/lock.py            # rewrite requirements.lock and envs/regmix.yaml
    python tools/lock.py --check    # exit 1 if either file differs from what it would write

Deliberately independent of the `regmix` package: it must work before the project is
installed and must not import the code it locks.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import platform
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_DIR = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_DIR / "pyproject.toml"
LOCK_PATH = REPO_DIR / "requirements.lock"
CONDA_ENV_PATH = REPO_DIR / "envs" / "regmix.yaml"
LOCKED_EXTRAS = ("test",)


def root_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(r) for r in reqs]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    # a requirement guarded by `extra == "x"` applies when x was asked for
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""}))


def locked_version(dist: metadata.Distribution) -> str:
    """Public version: torch's local label (+cpu, +cu124) is dropped, because the same
    public pin installs the CUDA build from PyPI on a GPU cluster."""
    return Version(dist.version).public


def resolve(roots: list[Requirement]) -> dict[str, str]:
    """Canonical name -> installed version for the whole closure of `roots`."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[Requirement, set[str]]] = [(r, set()) for r in roots]
    while queue:
        req, parent_extras = queue.pop()
        if not _applies(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"lock: {req.name} (required as {req}) is not installed; install the project first"
            ) from None
        version = locked_version(dist)
        # every requirement is checked, not just the first seen for a name: a later
        # `packaging<26` must refuse an installed 26.4 that an earlier `packaging` let in
        if not req.specifier.contains(version, prereleases=True):
            raise SystemExit(f"lock: installed {req.name}=={version} does not satisfy {req}")
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        pinned[name] = version
        queue += [(Requirement(sub), set(req.extras)) for sub in dist.requires or []]
    return dict(sorted(pinned.items()))


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def lock_text(pins: dict[str, str]) -> str:
    header = [
        "# Exact versions of regmix-pipeline's dependency closure (pyproject.toml dependencies",
        f"# + extras {list(LOCKED_EXTRAS)}), resolved from an installed environment.",
        "# Used by containers/, envs/ and CI. Regenerate: python tools/lock.py",
        f"# python {python_minor()} on {platform.system().lower()} {platform.machine()}",
    ]
    return "\n".join(header + [f"{name}=={version}" for name, version in pins.items()]) + "\n"


def conda_env_text(pins: dict[str, str]) -> str:
    lines = [
        "# Written by tools/lock.py from requirements.lock: do not edit by hand.",
        "# For `snakemake --sdm conda`; envs/regmix.post-deploy.sh installs the project itself.",
        "name: regmix",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - python={python_minor()}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={version}" for name, version in pins.items()]
    return "\n".join(lines) + "\n"


def parse_lock(text: str) -> dict[str, str]:
    """The pins of a lock file (comments and blank lines skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"requirements.lock: not an exact pin: {line!r}")
        pins[canonicalize_name(name)] = version
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file would change")
    args = parser.parse_args(argv)
    pins = resolve(root_requirements())
    wanted = {LOCK_PATH: lock_text(pins), CONDA_ENV_PATH: conda_env_text(pins)}
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"lock: {path.relative_to(REPO_DIR)} is out of date (run python tools/lock.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(
        f"lock: {len(pins)} distributions -> {LOCK_PATH.relative_to(REPO_DIR)}, {CONDA_ENV_PATH.relative_to(REPO_DIR)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
