"""Which package files each stage's code is: the import closure of its command's module.

Rules list `code_files(stage)` as inputs, so a change to a module reruns exactly the
stages whose command imports it (directly or through other `regmix` modules) and what
depends on them. The closure is read from the source with `ast` (nothing is imported):
every `import regmix.x`, `from regmix import x`, `from regmix.x import y` and relative
import, at any depth of the file (function-level imports count too). Importing a
package tracks its `__init__.py`; importing a module of a package also tracks the
package's `__init__.py` (Python runs it first).

A module every stage imports (`regmix/__init__.py`, `config.py`, `files.py`) is in every
closure, so changing it reruns the whole pipeline: that is the honest answer, since any
stage's result could depend on it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "regmix"
PACKAGE_DIR = Path(__file__).resolve().parent

# stage -> the module its `regmix` sub-command lives in (regmix.cli.COMMANDS names the
# functions; several stages share a module)
STAGE_COMMANDS: dict[str, str] = {
    "corpus": "regmix.corpus",
    "tokenizer": "regmix.tokenizer",
    "tokenize": "regmix.tokenization",
    "mixtures": "regmix.mixtures",
    "proxy": "regmix.train",
    "large": "regmix.train",
    "collect_proxies": "regmix.collect.proxies",
    "import_swarm": "regmix.regression.swarm_import",
    "regression": "regmix.regression",
    "choose": "regmix.choose",
    "candidates": "regmix.candidates",
    "eval_tasks": "regmix.evaluate",
    "evaluate": "regmix.evaluate",
    "summary": "regmix.summary",
    "collect": "regmix.collect.database",
    "plots": "regmix.plots",
    "archive": "regmix.archive",
}


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The file of `regmix.a.b` under `package_dir` (a module or a package's __init__)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, package_dir: Path) -> str:
    relative = path.relative_to(package_dir).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(path: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The `regmix` modules one file imports (each candidate name; callers keep those that exist)."""
    name = _module_name(path, package_dir)
    # the package a relative import is relative to
    here = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from regmix import train` imports the module regmix.train
            found.update(f"{module}.{alias.name}" for alias in node.names)
    result: set[str] = set()
    for module in found:
        if module != PACKAGE and not module.startswith(PACKAGE + "."):
            continue
        # a module of a package runs every enclosing package's __init__ first
        parts = module.split(".")
        result.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return result


@functools.cache
def _closure(module: str, package_dir: Path) -> tuple[Path, ...]:
    start = module_file(module, package_dir)
    if start is None:
        raise KeyError(f"module {module!r} not found in {package_dir}")
    seen: dict[Path, None] = {}
    pending = [start]
    # the command's own package chain (regmix/__init__.py, and a subpackage's __init__)
    pending += [f for m in _parents(module) if (f := module_file(m, package_dir))]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen[path] = None
        for imported in imported_modules(path, package_dir):
            found = module_file(imported, package_dir)
            if found is not None and found not in seen:
                pending.append(found)
    return tuple(sorted(seen))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_closure(module: str, package_dir: str | Path | None = None) -> list[str]:
    """Files of `module` and of every `regmix` module it imports, transitively."""
    root = Path(package_dir).resolve() if package_dir else PACKAGE_DIR
    return [str(p) for p in _closure(module, root)]


def code_files(stage: str, package_dir: str | Path | None = None) -> list[str]:
    """The files whose change reruns `stage` (in `package_dir`, default: this package)."""
    if stage not in STAGE_COMMANDS:
        raise KeyError(f"no command module for stage {stage!r} (stages: {sorted(STAGE_COMMANDS)})")
    return module_closure(STAGE_COMMANDS[stage], package_dir)
