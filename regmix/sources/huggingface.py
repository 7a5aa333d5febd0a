"""The huggingface kind: `datasets.load_dataset` (hub name, local folder, or a json/parquet
loader with data_files) whose `domain_column` names each row's domain through
`domain_map`. With `materialize`, `regmix corpus` reads it once (`iter_all_domains`) and
writes R/corpus/<domain>/<split>.jsonl.zst, which every later reader uses. A
validation-only set is one split, optionally only the rows whose `domain_column` is in `values`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from regmix.settings import ConfigError
from regmix.settings.data import ReadSettings
from regmix.sources.base import (
    ARROW_BATCH_ROWS,
    SPLITS,
    CorpusStep,
    ReadStats,
    Record,
    SourceKind,
    Spec,
    arrow_column,
    check_domain_sets,
    check_split,
    checked_text,
    glob_files,
    in_valid_split,
    string_array,
)


def _is_remote(pattern: str) -> bool:
    return "://" in pattern or pattern.startswith("hf:")


def _local_patterns(data_files: Spec | None) -> list[tuple[str, str]]:
    """(split, pattern) of a huggingface `data_files` that are local files."""
    return [
        (split_name, pattern)
        for split_name, spec in (data_files or {}).items()
        for pattern in ([spec] if isinstance(spec, str) else spec)
        if not _is_remote(pattern)
    ]


def _check_data_files(spec: Spec, key: str) -> None:
    for split_name, pattern in _local_patterns(spec["data_files"]):
        if not glob_files(pattern):
            raise ConfigError(f"config key '{key}.data_files.{split_name}': {pattern!r} matches no file")


def local_files(spec: Spec) -> list[str]:
    """Local data files, or a local dataset folder's files, of a huggingface source (a
    domain source or a validation-only set); nothing for a hub name."""
    files = [path for _, pattern in _local_patterns(spec["data_files"]) for path in glob_files(pattern)]
    local = Path(spec["name_or_path"])
    if not files and local.exists():
        files = [str(local)] if local.is_file() else sorted(str(p) for p in local.rglob("*") if p.is_file())
    return sorted(set(files))


def _batches(source: Spec, split: str) -> Iterator[tuple[Any, Any, int, str]]:
    """(domain values, texts, first row, dataset name) per Arrow batch of one split.

    Every value of the domain column must be in `domain_map`, so no row is dropped
    without the config saying so.
    """
    import datasets
    import pyarrow.compute as pc

    hf_split = source["train_split"] if split == "train" or source["valid_split"] is None else source["valid_split"]
    dataset = datasets.load_dataset(
        source["name_or_path"],
        source["config_name"],
        data_files=source["data_files"],
        split=hf_split,
        streaming=source["streaming"],
    )
    name = f"{source['name_or_path']}[{hf_split}]"
    row = 0
    for table in dataset.with_format("arrow").iter(batch_size=ARROW_BATCH_ROWS):
        try:
            values = pc.cast(arrow_column(table, source["domain_column"]), "string")
            texts = arrow_column(table, source["text_column"])
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"{name} has no column {source['domain_column']!r} / {source['text_column']!r} "
                f"(columns: {table.column_names}): {err}"
            ) from None
        unmapped = sorted(set(map(str, pc.unique(values).to_pylist())) - set(source["domain_map"]))
        if unmapped:
            raise ValueError(
                f"{name}: domain column value(s) {unmapped} are not in data.source.domain_map "
                "(map them to a domain, or to null to exclude them on purpose)"
            )
        yield values, texts, row, name
        row += table.num_rows


def _domain_records(source: Spec, domain: str, split: str) -> Iterator[Record]:
    """Rows of the configured split whose domain column maps to `domain`.

    Batches are filtered in Arrow before any text becomes a Python string, so a job
    that wants one domain of a many-domain dataset only converts that domain's rows.
    """
    import pyarrow.compute as pc

    wanted = string_array([value for value, d in source["domain_map"].items() if d == domain])
    for values, texts, row, name in _batches(source, split):
        mask = pc.is_in(values, value_set=wanted)
        for offset, text in zip(pc.indices_nonzero(mask).to_pylist(), texts.filter(mask).to_pylist(), strict=False):
            yield checked_text(text, f"{name} row {row + offset}")


def _set_records(spec: Spec, label: str) -> Iterator[Record]:
    """Rows of one dataset split (only those whose `domain_column` is in `values`, when set)."""
    import datasets
    import pyarrow.compute as pc

    dataset = datasets.load_dataset(
        spec["name_or_path"], spec["config_name"], data_files=spec["data_files"], split=spec["split"]
    )
    name, row = f"{spec['name_or_path']}[{spec['split']}]", 0
    wanted = string_array(list(spec["values"])) if spec["values"] is not None else None
    for table in dataset.with_format("arrow").iter(batch_size=ARROW_BATCH_ROWS):
        try:
            texts = arrow_column(table, spec["text_column"])
            mask = (
                None
                if wanted is None
                else pc.is_in(pc.cast(arrow_column(table, spec["domain_column"]), "string"), value_set=wanted)
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{label}: {name} has no column {err} (columns: {table.column_names})") from None
        offsets = range(table.num_rows) if mask is None else pc.indices_nonzero(mask).to_pylist()
        kept = texts if mask is None else texts.filter(mask)
        for offset, text in zip(offsets, kept.to_pylist(), strict=True):
            yield checked_text(text, f"{name} row {row + offset}")
        row += table.num_rows


def iter_all_domains(settings: ReadSettings, read_split: str) -> Iterator[tuple[str, str, str]]:
    """(domain, split, document) for every configured domain in one pass.

    Reads the dataset split behind `read_split`; when the dataset has no valid split,
    reading "train" yields both splits, routed by the seeded hash. The same rules as
    `regmix.sources.iter_documents` apply per domain: empty documents skipped, unreadable
    ones counted against the threshold, and a domain split left without documents is an error.
    """
    check_split(read_split)
    data, source = settings.data, settings.data.source
    if source["kind"] != KIND.name:
        raise ValueError(f"iter_all_domains reads a huggingface source, not {source['kind']!r}")
    domain_map, hash_split = source["domain_map"], source["valid_split"] is None
    if hash_split and read_split == "valid":
        raise ValueError("the dataset has no valid split: read 'train', which yields both")
    splits = SPLITS if hash_split else (read_split,)
    documents = {(d, sp): 0 for d in settings.domains for sp in splits}
    stats = {d: ReadStats() for d in settings.domains}
    for values, texts, row, name in _batches(source, read_split):
        for offset, (value, text) in enumerate(zip(values.to_pylist(), texts.to_pylist(), strict=False)):
            domain = domain_map[str(value)]
            if domain is None:
                continue
            document, where = checked_text(text, f"{name} row {row + offset}")
            if not stats[domain].admit(document, where):
                continue
            split = read_split
            if hash_split:
                split = "valid" if in_valid_split(document, settings.seed, data.valid_fraction) else "train"
            documents[(domain, split)] += 1
            yield domain, split, document
    for domain, tally in stats.items():
        tally.check_unreadable(f"domain {domain!r}", data.max_undecodable_fraction)
    for (domain, split), count in documents.items():
        if count == 0:
            raise ValueError(f"domain {domain!r} split {split!r}: no documents in {source['name_or_path']}")


class HuggingFace(SourceKind):
    name = "huggingface"
    keys = frozenset(
        {
            "name_or_path",
            "config_name",
            "data_files",
            "train_split",
            "valid_split",
            "text_column",
            "domain_column",
            "domain_map",
            "streaming",
            "materialize",
        }
    )
    validation_keys = frozenset(
        {"name_or_path", "config_name", "data_files", "split", "text_column", "domain_column", "values"}
    )

    def corpus_step(self, spec: Spec) -> CorpusStep:
        return CorpusStep.MATERIALIZE if spec["materialize"] else CorpusStep.DESCRIBE

    def check(self, spec: Spec, domains: list[str]) -> None:
        mapped = {d for d in spec["domain_map"].values() if d is not None}
        check_domain_sets(mapped, domains, "data.source.domain_map")
        _check_data_files(spec, "data.source")

    def check_validation_set(self, spec: Spec, key: str, domains: list[str]) -> None:
        if (spec["domain_column"] is None) != (spec["values"] is None):
            raise ConfigError(f"config key '{key}': set domain_column and values together, or neither")
        _check_data_files(spec, key)

    def files(self, spec: Spec, domain: str, split: str) -> list[str]:
        return local_files(spec)

    def records(self, spec: Spec, domain: str, split: str, stats: ReadStats) -> tuple[Iterator[Record], bool]:
        stats.sources.append(spec["name_or_path"])
        return _domain_records(spec, domain, split), spec["valid_split"] is None

    def validation_files(self, spec: Spec, name: str, corpus_dir: str | Path) -> list[str]:
        return local_files(spec)

    def validation_records(
        self, spec: Spec, name: str, corpus_dir: str | Path | None, stats: ReadStats
    ) -> Iterator[Record]:
        stats.sources.append(spec["name_or_path"])
        return _set_records(spec, f"validation set {name!r}")

    def materialized_documents(self, settings: ReadSettings) -> Iterator[tuple[str, str, str]]:
        # without a valid split, reading train yields both splits (hash-routed)
        read_splits = ("train",) if settings.data.source["valid_split"] is None else SPLITS
        for read_split in read_splits:
            yield from iter_all_domains(settings, read_split)


KIND = HuggingFace()
