"""Rerun tracking: each stage's code files are the import closure of its command's module."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from regmix import tracking
from regmix.cli import COMMANDS

PACKAGE_DIR = Path(tracking.__file__).resolve().parent


def write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def toy_package(tmp_path) -> Path:
    """regmix/ with a subpackage, relative imports and a function-level import."""
    root = tmp_path / "regmix"
    write(root / "__init__.py")
    write(root / "shared.py")
    write(root / "unused.py")
    write(root / "stage.py", "from regmix.pkg import sub\n\ndef main():\n    from regmix import late\n")
    write(root / "late.py", "import regmix.shared\n")
    write(root / "pkg" / "__init__.py")
    write(root / "pkg" / "sub.py", "from . import helper\nfrom .deep.leaf import x\n")
    write(root / "pkg" / "helper.py", "from ..shared import y\n")
    write(root / "pkg" / "other.py")
    write(root / "pkg" / "deep" / "__init__.py")
    write(root / "pkg" / "deep" / "leaf.py")
    return root


def names(paths: list[str], root: Path) -> set[str]:
    return {Path(p).relative_to(root).as_posix() for p in paths}


def test_closure_follows_packages_relative_and_function_level_imports(toy_package):
    closure = names(tracking.module_closure("regmix.stage", toy_package), toy_package)
    assert closure == {
        "__init__.py",
        "stage.py",
        "late.py",  # imported inside a function: still the stage's code
        "shared.py",
        "pkg/__init__.py",  # importing a module of a package runs the package first
        "pkg/sub.py",
        "pkg/helper.py",
        "pkg/deep/__init__.py",
        "pkg/deep/leaf.py",
    }


def test_a_package_as_command_module_tracks_its_init_and_what_it_imports(toy_package):
    write(toy_package / "pkg" / "__init__.py", "from regmix.pkg.other import z\n")
    closure = names(tracking.module_closure("regmix.pkg", toy_package), toy_package)
    assert closure == {"__init__.py", "pkg/__init__.py", "pkg/other.py"}


def test_unknown_stage_and_missing_module_are_named(toy_package):
    with pytest.raises(KeyError, match="no_such_stage"):
        tracking.code_files("no_such_stage")
    with pytest.raises(KeyError, match="regmix.absent"):
        tracking.module_closure("regmix.absent", toy_package)


def test_every_command_module_belongs_to_a_stage_or_is_not_a_pipeline_step():
    command_modules = {target.split(":")[0] for target, _ in COMMANDS.values()}
    # commands no rule runs: a user's config check, prediction and archive verification
    not_rules = {"regmix.config"}
    assert command_modules - not_rules <= set(tracking.STAGE_COMMANDS.values())


def test_every_regmix_import_in_the_package_resolves_to_a_file():
    """A `regmix` import the closure cannot resolve would silently drop a dependency."""
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for module in tracking.imported_modules(path):
            if tracking.module_file(module) is None:
                # `from regmix.x import name` also yields regmix.x.name; only a real miss counts
                parent = module.rpartition(".")[0]
                assert tracking.module_file(parent) is not None, f"{path.name}: cannot resolve {module}"
                assert _defines(tracking.module_file(parent), module.rpartition(".")[2]), f"{path}: {module}"


def _defines(path: Path, name: str) -> bool:
    """Whether a module binds `name` (a function, class, assignment or import)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name) == name for a in node.names):
                return True
    return False


_IMPORTED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values())
      if (m.__name__ == "regmix" or m.__name__.startswith("regmix.")) and getattr(m, "__file__", None))))
"""


@pytest.mark.parametrize("module", sorted(set(tracking.STAGE_COMMANDS.values())))
def test_a_stage_imports_no_module_it_does_not_track(module):
    """What Python really loads when a stage's command module is imported is tracked."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTED, module],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PACKAGE_DIR.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = {str(Path(p).resolve()) for p in json.loads(proc.stdout.splitlines()[-1])}
    tracked = set(tracking.module_closure(module))
    assert loaded <= tracked, f"{module} imports untracked {sorted(loaded - tracked)}"


def test_each_stage_tracks_its_own_module_and_the_shared_ones():
    for stage, module in tracking.STAGE_COMMANDS.items():
        files = {Path(p).name for p in tracking.code_files(stage)}
        assert {"__init__.py", "files.py"} <= files, stage
        assert str(tracking.module_file(module)) in tracking.code_files(stage)
    # a change to the trainer reruns no tokenization, a change to evaluation no training
    assert str(PACKAGE_DIR / "train.py") not in tracking.code_files("tokenize")
    assert str(PACKAGE_DIR / "evaluate.py") not in tracking.code_files("proxy")


def test_the_two_collect_commands_do_not_track_each_other():
    """The proxies' CSV collector and the database builder share only the collect package's
    empty __init__.py, so a change to the builder (or its statistics) leaves the CSVs alone."""
    proxies = set(tracking.code_files("collect_proxies"))
    database = set(tracking.code_files("collect"))
    collect_dir = PACKAGE_DIR / "collect"
    assert str(collect_dir / "proxies.py") in proxies and str(collect_dir / "proxies.py") not in database
    for name in ("database.py", "rows.py", "statistics.py", "tables.py"):
        assert str(collect_dir / name) in database and str(collect_dir / name) not in proxies, name
    init = ast.parse((collect_dir / "__init__.py").read_text())
    assert not [n for n in ast.walk(init) if isinstance(n, (ast.Import, ast.ImportFrom))], "collect/__init__.py"
