"""Small file helpers every stage shares: atomic writes, fingerprints, provenance.

A stage never leaves a half-written file that looks complete: everything is written to
a temporary name in the same directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

import regmix

PACKAGE_DIR = Path(__file__).resolve().parent


def temp_file(path: str | os.PathLike) -> Path:
    """A new empty temporary file next to `path` (same folder, so a rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file onto `path`."""
    Path(tmp).chmod(0o644)  # mkstemp makes files private; outputs are for everyone
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success."""
    tmp_path = temp_file(path)
    try:
        yield tmp_path
        if tmp_path.is_file():
            commit_file(tmp_path, path)
        else:
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; swap it in for `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes folders private; outputs are for everyone
        replace_dir(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


class BadFileError(ValueError):
    """A file that exists but cannot be used; the message names the file (and the line and
    column, where the parsing library knows them) and says what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None, column: int | None = None):
        self.path, self.problem, self.line, self.column = str(path), problem, line, column
        where = self.path
        if line is not None:
            where += f", line {line}" + (f", column {column}" if column is not None else "")
        super().__init__(f"{where}: {problem}")


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; a missing file stays FileNotFoundError (callers test for it)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BadFileError(path, f"not UTF-8 text (byte {err.start}: {err.reason})") from None
    except IsADirectoryError:
        raise BadFileError(path, "is a directory, not a file") from None


def read_json(path: str | os.PathLike) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        problem = "empty file" if not text.strip() else f"not valid JSON ({err.msg}; truncated or corrupt?)"
        raise BadFileError(path, problem, *((err.lineno, err.colno) if text.strip() else ())) from None


def read_yaml(path: str | os.PathLike) -> Any:
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, err) from None


def _yaml_error(path: str | os.PathLike, err: yaml.YAMLError) -> BadFileError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = " ".join(str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
    problem = f"YAML syntax error: {problem or type(err).__name__}"
    if mark is None:
        return BadFileError(path, problem)
    return BadFileError(path, problem, mark.line + 1, mark.column + 1)  # marks count from 0


def read_csv(path: str | os.PathLike, numeric: bool | list[str] = False, index: str | None = None):
    """A CSV as a DataFrame. `numeric=True` requires every column but `index` to be numbers,
    a list names the columns that must be; an empty file, a file pandas cannot parse or
    text in a numeric column is a BadFileError naming the file (and the column)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise BadFileError(path, "empty file (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        line = re.search(r"line (\d+)", str(err))
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise BadFileError(path, f"not a valid CSV ({detail})", int(line.group(1)) if line else None) from None
    if index is not None and index not in frame.columns:
        raise BadFileError(path, f"no {index!r} column (columns: {list(frame.columns)})")
    if numeric is True:
        columns = [c for c in frame.columns if c != index]
    else:
        columns = list(numeric or [])
    for column in columns:
        if column not in frame.columns:
            raise BadFileError(path, f"no {column!r} column (columns: {list(frame.columns)})")
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise BadFileError(
                path, f"column {column!r}: {frame[column].iloc[row]!r} in data row {row + 1} is not a number"
            )
        frame[column] = values
    return frame


def load_pickle(path: str | os.PathLike, expected_type: type | tuple[type, ...], hint: str) -> Any:
    """Unpickle a file this pipeline wrote. A truncated, garbage or foreign file is a
    BadFileError naming the file and `hint` (what to run to rebuild it, e.g. "rerun `regmix fit`").
    Only for the pipeline's own outputs: unpickling runs code, never load a stranger's file."""
    import pickle

    path = Path(path)
    data = path.read_bytes()  # a missing file stays FileNotFoundError
    if not data:
        raise BadFileError(path, f"empty file; {hint}")
    try:
        obj = pickle.loads(data)
    except Exception as err:  # pickle raises nearly anything on garbage: UnpicklingError, EOFError, ValueError, ...
        raise BadFileError(path, f"truncated or corrupt ({type(err).__name__}: {err}); {hint}") from None
    if not isinstance(obj, expected_type):
        names = " or ".join(
            t.__name__ for t in (expected_type if isinstance(expected_type, tuple) else (expected_type,))
        )
        raise BadFileError(path, f"holds a {type(obj).__name__}, not a {names}; {hint}")
    return obj


def check_safetensors(path: str | os.PathLike, hint: str = "") -> list[str]:
    """Read a .safetensors file's header and every tensor's byte range, so a truncated or
    corrupt file is a BadFileError naming it before a model is built; returns the tensor names."""
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    size = path.stat().st_size  # a missing file stays FileNotFoundError
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise BadFileError(path, f"truncated: {size} bytes, shorter than a safetensors header{suffix}")
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            raise BadFileError(
                path, f"truncated or not safetensors (header says {header_len} bytes, file has {size}){suffix}"
            )
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadFileError(path, f"corrupt safetensors header (not JSON){suffix}") from None
    if not isinstance(header, dict):
        raise BadFileError(path, f"corrupt safetensors header (not a JSON object){suffix}")
    data_len = size - 8 - header_len
    names = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise BadFileError(path, f"corrupt safetensors header (tensor {name!r} has no data_offsets){suffix}")
        if not 0 <= offsets[0] <= offsets[1] <= data_len:
            raise BadFileError(
                path, f"truncated: tensor {name!r} needs bytes up to {offsets[1]}, the file holds {data_len}{suffix}"
            )
        names.append(name)
    return names


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able value (configs, settings)."""
    blob = json.dumps(obj, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one: the code
    this process started with (asked once, not once per output)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "status", "--porcelain", "--", str(PACKAGE_DIR)],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{regmix.__version__}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return regmix.__version__


def provenance(settings: Any, inputs: Sequence[str | os.PathLike] = ()) -> dict:
    """What produced an output: its settings, the code version, the inputs' fingerprints."""
    return {
        "code_version": code_version(),
        "settings": settings,
        "settings_fingerprint": fingerprint(settings),
        "inputs": {str(p): _input_fingerprint(Path(p)) for p in inputs},
    }


def _input_fingerprint(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(sha256_file(child).encode())
        return digest.hexdigest()
    return "missing"


def provenance_sidecar(path: str | Path) -> Path:
    """`results/summary.csv` -> `results/summary.provenance.json`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.provenance.json")


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a freshly written directory into place (the old one goes only after)."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
