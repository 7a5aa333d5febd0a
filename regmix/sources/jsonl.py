"""The jsonl kind: <path>/<train_dir>/<domain>-N.jsonl[.gz|.zst] (RegMix's layout); a
validation-only set is a glob of JSON-lines files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from regmix.settings import ConfigError
from regmix.sources.base import GlobbedSets, ReadStats, Record, Spec, jsonl_records

# A JSON-lines file belongs to the domain spelled before the first "-" or "." of its
# name. Domain names cannot contain either, so `pubmed` never captures
# `pubmed_central-0.jsonl` (RegMix's own prefix match did).
_JSONL_NAME = re.compile(r"^([A-Za-z0-9_]+)(?:[-.][^/]*)?\.jsonl?(?:\.gz|\.zst)?$")


def jsonl_domain(filename: str) -> str | None:
    """The domain a JSON-lines file name belongs to, or None if it is not one."""
    match = _JSONL_NAME.match(filename)
    return match.group(1) if match else None


def _split_dirs(spec: Spec) -> dict[str, Path]:
    root = Path(spec["path"])
    dirs = {"train": root / spec["train_dir"]}
    if spec["valid_dir"] is not None:
        dirs["valid"] = root / spec["valid_dir"]
    return dirs


class Jsonl(GlobbedSets):
    name = "jsonl"
    keys = frozenset({"path", "train_dir", "valid_dir", "text_field"})
    validation_keys = frozenset({"files", "text_field"})

    def check(self, spec: Spec, domains: list[str]) -> None:
        for split, folder in _split_dirs(spec).items():
            if not folder.is_dir():
                raise ConfigError(f"config key 'data.source.path': {split} folder {str(folder)!r} does not exist")
            found = {d for f in folder.iterdir() if f.is_file() and (d := jsonl_domain(f.name))}
            missing = [d for d in domains if d not in found]
            if missing:
                raise ConfigError(
                    f"config key 'data.source.path': domain(s) {missing} match no file "
                    f"<domain>-N.jsonl[.gz|.zst] in {str(folder)!r}"
                )
            extra = sorted(found - set(domains))
            if extra:
                raise ConfigError(
                    f"config key 'data.source.path': {str(folder)!r} holds files of domain(s) {extra} "
                    "that are not in `domains`"
                )

    def files(self, spec: Spec, domain: str, split: str) -> list[str]:
        """The JSON-lines files of one domain split, matched exactly on the domain name."""
        dirs = _split_dirs(spec)
        folder = dirs.get(split, dirs["train"])
        if not folder.is_dir():
            raise ValueError(f"domain {domain!r}: folder {str(folder)!r} does not exist")
        return sorted(str(f) for f in folder.iterdir() if f.is_file() and jsonl_domain(f.name) == domain)

    def records(self, spec: Spec, domain: str, split: str, stats: ReadStats) -> tuple[Iterator[Record], bool]:
        files = self.files(spec, domain, split)
        if not files:
            raise ValueError(
                f"domain {domain!r} split {split!r}: no file {domain}-N.jsonl[.gz|.zst] in {spec['path']!r}"
            )
        stats.sources += files
        return self.read(files, spec), spec["valid_dir"] is None

    def read(self, files: list[str], spec: Spec) -> Iterator[Record]:
        return jsonl_records(files, spec["text_field"])


KIND = Jsonl()
