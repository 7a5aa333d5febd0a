"""One verifiable archive of a run, for a paper.

`archive` packs the results tables, figures, chosen mixture, lm-eval results, configs,
dependency lock, Snakemake report and a provenance record (git commit, container image,
code version) into one tar.gz whose `MANIFEST.sha256` lists the sha256 of every other
file inside. The archive is byte-for-byte reproducible from the same files (fixed
member order, times and owners). `verify-archive` recomputes every checksum and names
each changed, missing or extra file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import IO

from regmix import files
from regmix.layout import Layout
from regmix.settings import parse_settings
from regmix.settings.outputs import ArchiveSettings

MANIFEST = "MANIFEST.sha256"
PROVENANCE = "PROVENANCE.json"

# What of the results directory goes in: globs relative to it, from the layout with "*"
# for each name. Token files, the raw corpus and training state are rebuilt by the
# pipeline and stay out.
_REL = Layout("")
RESULT_PATTERNS = (
    _REL.summary_md,
    _REL.summary_csv,
    str(files.provenance_sidecar(_REL.summary_csv)),
    _REL.database,
    f"{_REL.parquet_dir}/*.parquet",
    _REL.figure("*"),
    f"{_REL.mixtures_dir}/*",
    f"{_REL.proxies_dir}/*.csv",
    f"{_REL.proxies_dir}/*.json",  # the tables' provenance sidecars
    _REL.proxy("*").losses,
    _REL.proxy("*").train_log,
    _REL.regression("*"),
    _REL.regression_target("*", "*"),
    f"{_REL.swarms_dir}/*/*",
    f"{_REL.chosen_dir}/*",
    f"{_REL.candidates_dir}/*",
    _REL.large("*").losses,
    _REL.large("*").train_log,
    f"{_REL.eval_dir}/*",
    f"{_REL.eval_tasks}/*",
    _REL.prior,
    _REL.token_counts,
    _REL.data.sidecar("*", "*"),
    _REL.corpus.manifest,
    f"{_REL.tokenizer}/*",
    f"{_REL.logs_dir}/**/*",
)
CHECKPOINT_PATTERNS = (f"{_REL.large('*').model}/**/*", f"{_REL.proxy('*').model}/**/*")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def result_files(results: Path, include_checkpoints: bool) -> list[Path]:
    """Files of the results directory that the archive holds, relative to it, sorted."""
    patterns = RESULT_PATTERNS + (CHECKPOINT_PATTERNS if include_checkpoints else ())
    found = set()
    for pattern in patterns:
        for path in results.glob(pattern):
            relative = path.relative_to(results)
            if path.is_file() and not _hidden(relative) and relative.parts[0] != "archive":
                found.add(relative)
    return sorted(found)


def _git(args: list[str]) -> str | None:
    """Git of the checkout the running package comes from (the code that made the run)."""
    try:
        return subprocess.run(
            ["git", "-C", str(files.PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _add(tar: tarfile.TarFile, name: str, source: bytes | Path) -> None:
    """Add a member with fixed time, owner and mode, so the same files give the same bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(source) if isinstance(source, bytes) else source.stat().st_size
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
    if isinstance(source, bytes):
        tar.addfile(info, io.BytesIO(source))
    else:
        with source.open("rb") as handle:  # streamed: checkpoints can be large
            tar.addfile(info, handle)


def build_archive(
    settings: ArchiveSettings,
    results: str | Path,
    configs: list[str | Path],
    out: str | Path,
    report: str | Path | None = None,
    lock: str | Path | None = None,
) -> dict:
    """Write the archive; return its manifest (archive path -> sha256)."""
    results, out = Path(results), Path(out)
    if not results.is_dir():
        raise FileNotFoundError(f"results directory not found: {results}")
    root = out.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
    members: dict[str, Path] = {}
    for relative in result_files(results, settings.archive.include_checkpoints):
        members[f"results/{relative.as_posix()}"] = results / relative
    for config in map(Path, configs):
        if not config.is_file():
            raise FileNotFoundError(f"config file not found: {config}")
        name = f"config/{config.name}"
        if name in members:
            raise ValueError(f"two config files share the name {config.name!r}: {members[name]} and {config}")
        members[name] = config
    absent = []
    for name, path in (("report.html", report), ("requirements.lock", lock)):
        if path is None:
            continue
        if Path(path).is_file():
            members[name] = Path(path)
        else:
            # optional by nature: the report is built outside the DAG, the lock may not exist
            absent.append(str(path))
            print(f"regmix archive: {path} not found; the archive goes without it", file=sys.stderr)
    commit = _git(["rev-parse", "HEAD"])
    record = {
        "git_commit": commit,
        "git_dirty": bool(_git(["status", "--porcelain", "--untracked-files=no"])) if commit else None,
        "git_remote": _git(["config", "--get", "remote.origin.url"]) if commit else None,
        "container": settings.container,
        "absent_optional_files": absent,
        **files.provenance(settings.raw, []),
        "sources": {name: str(path) for name, path in members.items()},
    }
    contents: dict[str, bytes | Path] = dict(members)
    contents[PROVENANCE] = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    manifest = {
        name: hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else files.sha256_file(src)
        for name, src in sorted(contents.items())
    }
    manifest_text = "".join(f"{digest}  {name}\n" for name, digest in manifest.items())
    with files.atomic_path(out) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add(tar, f"{root}/{MANIFEST}", manifest_text.encode())
                for name, src in sorted(contents.items()):
                    _add(tar, f"{root}/{name}", src)
    return manifest


def plain_relative_path(name: str) -> bool:
    """A path that stays inside the folder it is read from: relative, `/`-separated, no
    empty, `.` or `..` component, no backslash or control character."""
    if not name or name.startswith("/") or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _unsafe_members(members: list[tarfile.TarInfo]) -> tuple[str | None, list[str]]:
    """(the archive's folder, every reason not to trust the archive). The folder is the one
    holding MANIFEST.sha256; every member must be a plain file or folder inside it."""
    problems, seen = [], set()
    roots = sorted(
        {m.name.split("/")[0] for m in members if m.name.endswith(f"/{MANIFEST}") and m.name.count("/") == 1}
    )
    if len(roots) > 1:
        problems.append(f"a {MANIFEST} in more than one folder: {roots}")
    root = roots[0] if len(roots) == 1 else None
    for member in members:
        name = member.name.rstrip("/") if member.isdir() else member.name
        if not plain_relative_path(name):
            problems.append(f"unsafe: {member.name!r} (not a plain relative path)")
        elif root is not None and name != root and not name.startswith(f"{root}/"):
            problems.append(f"unsafe: {member.name!r} (outside the archive's folder {root}/)")
        if not (member.isfile() or member.isdir()):
            kind = "link" if member.issym() or member.islnk() else "device or special file"
            problems.append(f"unsafe: {member.name!r} (a {kind}; only plain files may be inside)")
        if name in seen:
            problems.append(f"unsafe: {member.name!r} (the name appears twice)")
        seen.add(name)
    return root, problems


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """A vetted member's data, read in memory (nothing is written to disk)."""
    handle = tar.extractfile(member)
    if handle is None:  # members are vetted as plain files first
        raise ValueError(f"{member.name}: not a plain file")
    return handle


def _sha256_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    handle = _member_file(tar, member)  # read in chunks
    while block := handle.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def _read_manifest(path: Path, text: str) -> dict[str, str]:
    """MANIFEST.sha256 as file -> sha256; every listed path plain, relative and listed once."""
    expected: dict[str, str] = {}
    # lines end in "\n" only (as written): splitlines() would also split a name at U+2028 or U+0085
    for number, line in enumerate(text.removesuffix("\n").split("\n") if text else [], 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{path}: {MANIFEST} line {number} is not '<sha256>  <file>'")
        if not plain_relative_path(name) or name == MANIFEST:
            raise ValueError(f"{path}: refused, {MANIFEST} line {number} lists {name!r}, not a plain relative path")
        if name in expected:
            raise ValueError(f"{path}: refused, {MANIFEST} line {number} lists {name!r} a second time")
        expected[name] = digest
    return expected


def verify_archive(path: str | Path) -> int:
    """Recompute every checksum; raise ValueError naming each changed, missing or extra file.

    An archive is refused before any checksum when a member is not a plain file or folder
    inside the folder holding the manifest (absolute paths, `..`, links, devices, a name
    twice), or the manifest lists a path that is not plain and relative. Nothing is extracted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"archive not found: {path}")
    found: dict[str, str] = {}
    manifest_text = None
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()  # headers only: vetted before any data is read
            root, unsafe = _unsafe_members(members)
            if unsafe:
                raise ValueError(f"{path}: refused, unsafe archive:\n  " + "\n  ".join(unsafe))
            if root is None:
                raise ValueError(f"{path}: no {MANIFEST} inside")
            for member in members:
                if member.isdir():
                    continue
                name = member.name.removeprefix(f"{root}/")
                if name == MANIFEST:
                    manifest_text = _member_file(tar, member).read().decode("utf-8", errors="replace")
                else:
                    found[name] = _sha256_member(tar, member)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ValueError(f"{path}: unreadable archive ({err})") from None
    if manifest_text is None:  # MANIFEST.sha256 was a folder
        raise ValueError(f"{path}: no {MANIFEST} file inside")
    expected = _read_manifest(path, manifest_text)
    problems = []
    for name in sorted(expected.keys() | found.keys()):
        if name not in found:
            problems.append(f"missing: {name}")
        elif name not in expected:
            problems.append(f"extra: {name}")
        elif found[name] != expected[name]:
            problems.append(f"changed: {name} (sha256 {found[name][:12]}..., manifest says {expected[name][:12]}...)")
    if problems:
        raise ValueError(f"{path} does not match its manifest:\n  " + "\n  ".join(problems))
    return len(found)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix archive", description=build_archive.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'archive')")
    parser.add_argument("--results", required=True, help="results directory R")
    parser.add_argument(
        "--config", nargs="+", required=True, help="config files of the run (config.yaml, schema, models)"
    )
    parser.add_argument("--out", required=True, help="archive file (R/archive/regmix-run.tar.gz)")
    parser.add_argument("--report", help="Snakemake HTML report (R/report.html), packed when it exists")
    parser.add_argument("--lock", help="resolved dependency lock (requirements.lock), packed when it exists")
    args = parser.parse_args(argv)
    settings = ArchiveSettings.from_json(parse_settings(args.settings))
    manifest = build_archive(settings, args.results, args.config, args.out, args.report, args.lock)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {len(manifest)} files, {size / 1e6:.2f} MB")
    return 0


def verify_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix verify-archive", description=verify_archive.__doc__)
    parser.add_argument("archive", help="archive written by `regmix archive`")
    args = parser.parse_args(argv)
    count = verify_archive(args.archive)
    print(f"{args.archive}: all {count} files match the manifest")
    return 0
