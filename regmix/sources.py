"""Where documents come from: one reader per `data.source.kind`, one iterator for all.

Every consumer (tokenizer training, tokenization, evaluation tasks) reads documents
through `iter_documents`, so the rules about what a document is are in one place:
empty documents are skipped, unreadable records (bad UTF-8, malformed JSON, a missing or
non-string text field) are counted and fail the domain beyond
`data.max_undecodable_fraction`, a domain/split with no documents is an error naming it,
and a source without a valid split is split by a seeded hash of each document.

Kinds (keys in config/schema.yaml under data.source):
  demo         R/corpus/<domain>/<split>.jsonl written by `regmix corpus`
  jsonl        <path>/<train_dir>/<domain>-N.jsonl[.gz|.zst] (RegMix's layout)
  huggingface  `datasets.load_dataset` (hub name, local folder, or json/parquet loader
               with data_files) whose `domain_column` names each row's domain; with
               `materialize`, `regmix corpus` reads it once and writes
               R/corpus/<domain>/<split>.jsonl.zst, which every later reader uses
  parquet      per-domain globs of Parquet files with a text column
  text         per-domain globs of plain text files (a document per file or per line)

Validation-only sets (config `validation_sets`) are read by `iter_validation_documents`
under the same rules; each is one source of one of these kinds, without domains or
splits (the demo kind: the held-out slice of a demo domain that is not trained on,
which `regmix corpus --validation-set NAME` writes to CorpusDir.validation_set(NAME)).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from regmix.files import BadFileError
from regmix.layout import CorpusDir, Layout
from regmix.settings import ConfigError

SPLITS = ("train", "valid")
# the domains `regmix corpus` builds from installed packages (the demo source)
DEMO_DOMAINS = ("code", "docstrings", "docs", "structured", "legal", "arithmetic")

# Keys of data.source each kind may set (besides `kind`).
KIND_KEYS: dict[str, set[str]] = {
    "demo": set(),
    "jsonl": {"path", "train_dir", "valid_dir", "text_field"},
    "huggingface": {
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
    },
    "parquet": {"files", "text_column"},
    "text": {"files", "text_unit"},
}

# Keys a validation-only set of each kind may set (besides `kind`).
VALIDATION_KIND_KEYS: dict[str, set[str]] = {
    "demo": {"domain"},
    "jsonl": {"files", "text_field"},
    "huggingface": {"name_or_path", "config_name", "data_files", "split", "text_column", "domain_column", "values"},
    "parquet": {"files", "text_column"},
    "text": {"files", "text_unit"},
}

# A JSON-lines file belongs to the domain spelled before the first "-" or "." of its
# name. Domain names cannot contain either, so `pubmed` never captures
# `pubmed_central-0.jsonl` (RegMix's own prefix match did).
_JSONL_NAME = re.compile(r"^([A-Za-z0-9_]+)(?:[-.][^/]*)?\.jsonl?(?:\.gz|\.zst)?$")
_ARROW_BATCH_ROWS = 2000
UTF8_PIECE_CHARS = 1 << 20  # characters encoded to bytes at a time when hashing or measuring a document
_SURROGATE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------- helpers


def utf8_pieces(text: str, piece_chars: int = UTF8_PIECE_CHARS) -> Iterator[bytes]:
    """The UTF-8 encoding of `text` in pieces of at most `piece_chars` characters, so a
    huge document is never copied whole to bytes (joined, the pieces are `text.encode()`)."""
    for start in range(0, len(text), piece_chars):
        yield text[start : start + piece_chars].encode("utf-8")


def utf8_length(text: str) -> int:
    """len(text.encode("utf-8")) without encoding the whole text at once."""
    if text.isascii():  # O(1) in CPython: the string knows it is ASCII
        return len(text)
    if len(text) <= UTF8_PIECE_CHARS:
        return len(text.encode("utf-8"))
    return sum(len(piece) for piece in utf8_pieces(text))


def unit_hash(text: str, seed: int, purpose: str) -> float:
    """A seeded hash of a document in [0, 1): the same text always lands the same way."""
    digest = hashlib.blake2b(digest_size=8, key=f"{purpose}:{seed}".encode())
    for piece in utf8_pieces(text):
        digest.update(piece)
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def in_valid_split(text: str, seed: int, valid_fraction: float) -> bool:
    return unit_hash(text, seed, "split") < valid_fraction


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file for reading bytes, decompressing .gz and .zst on the fly."""
    name = str(path)
    if name.endswith(".gz"):
        return gzip.open(name, "rb")
    if name.endswith(".zst"):
        import zstandard

        raw = open(name, "rb")
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)
    return open(name, "rb")


class CorruptFileError(BadFileError):
    """An input file that cannot be read to its end: truncated or corrupt compression, or
    a Parquet file its library cannot open. The message names the file."""


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # no .zst file can be opened then either
        pass
    return tuple(errors)


@contextlib.contextmanager
def read_binary(path: str | Path) -> Iterator[BinaryIO]:
    """`open_binary`, where a decompression failure while reading (a truncated .gz ends in
    EOFError, a corrupt .zst in ZstdError) is a CorruptFileError naming the file."""
    try:
        with open_binary(path) as handle:
            yield handle
    except _decompression_errors() as err:
        detail = str(err) or type(err).__name__
        raise CorruptFileError(path, f"truncated or corrupt compressed file ({type(err).__name__}: {detail})") from None


def jsonl_domain(filename: str) -> str | None:
    """The domain a JSON-lines file name belongs to, or None if it is not one."""
    match = _JSONL_NAME.match(filename)
    return match.group(1) if match else None


def _dotted(obj, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(path)
        obj = obj[part]
    return obj


def _glob(pattern: str) -> list[str]:
    return sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (splits: {list(SPLITS)})")


# --------------------------------------------------------------------------- config


def _check_kind_keys(spec: dict, key: str, allowed: set[str]) -> None:
    """Refuse keys of `spec` (a source or a validation set) that its kind does not read."""
    foreign = sorted(set(spec) - {"kind"} - allowed)
    if foreign:
        raise ConfigError(
            f"config key '{key}': key(s) {foreign} do not apply to kind {spec['kind']!r} "
            f"(its keys: {sorted(allowed) or 'none'})"
        )


def check_source_config(config: dict) -> None:
    """Validate `data.source` against `domains`; raise ConfigError naming the key.

    The source's domains must be exactly `domains`: a configured domain the source does
    not provide, or data for a domain that is not configured, stops the run here.
    """
    source, domains = config["data"]["source"], list(config["domains"])
    kind = source["kind"]
    _check_kind_keys(source, "data.source", KIND_KEYS[kind])
    if kind == "demo":
        unknown = sorted(set(domains) - set(DEMO_DOMAINS))
        if unknown:
            raise ConfigError(
                f"config key 'domains': {unknown} not built by the demo source (demo domains: {list(DEMO_DOMAINS)})"
            )
    elif kind == "jsonl":
        _check_jsonl_layout(source, domains)
    elif kind == "huggingface":
        mapped = {d for d in source["domain_map"].values() if d is not None}
        _check_domain_sets(mapped, domains, "data.source.domain_map")
        for split_name, pattern in _local_patterns(source["data_files"]):
            if not _glob(pattern):
                raise ConfigError(f"config key 'data.source.data_files.{split_name}': {pattern!r} matches no file")
    else:  # parquet, text
        _check_domain_sets(set(source["files"]), domains, "data.source.files")
        for domain in domains:
            for split in SPLITS:
                pattern = source["files"][domain].get(split)
                if pattern is not None and not _glob(pattern):
                    raise ConfigError(
                        f"config key 'data.source.files.{domain}.{split}' = {pattern!r}: domain "
                        f"{domain!r} matches no file"
                    )


def check_validation_sets(config: dict) -> None:
    """Validate each `validation_sets` entry's kind-specific keys and files; raise
    ConfigError naming the key. (Names are checked with the other names, in regmix.config.)"""
    domains = list(config["domains"])
    for name, spec in config["validation_sets"].items():
        key, kind = f"validation_sets.{name}", spec["kind"]
        _check_kind_keys(spec, key, VALIDATION_KIND_KEYS[kind])
        if kind == "demo":
            if spec["domain"] not in DEMO_DOMAINS:
                raise ConfigError(
                    f"config key '{key}.domain' = {spec['domain']!r}: not a demo domain (demo domains: "
                    f"{list(DEMO_DOMAINS)})"
                )
            if spec["domain"] in domains:
                raise ConfigError(
                    f"config key '{key}.domain' = {spec['domain']!r}: a training domain; a validation-only set "
                    "must be text no mixture trains on"
                )
        elif kind == "huggingface":
            if (spec["domain_column"] is None) != (spec["values"] is None):
                raise ConfigError(f"config key '{key}': set domain_column and values together, or neither")
            for split_name, pattern in _local_patterns(spec["data_files"]):
                if not _glob(pattern):
                    raise ConfigError(f"config key '{key}.data_files.{split_name}': {pattern!r} matches no file")
        elif not _glob(spec["files"]):
            raise ConfigError(f"config key '{key}.files' = {spec['files']!r}: validation set {name!r} matches no file")


def _local_patterns(data_files: dict | None) -> list[tuple[str, str]]:
    """(split, pattern) of a huggingface `data_files` that are local files."""
    return [
        (split_name, pattern)
        for split_name, spec in (data_files or {}).items()
        for pattern in ([spec] if isinstance(spec, str) else spec)
        if not _is_remote(pattern)
    ]


def _check_domain_sets(found: set[str], domains: list[str], key: str) -> None:
    missing = [d for d in domains if d not in found]
    if missing:
        raise ConfigError(f"config key '{key}': domain(s) {missing} of `domains` have no data in the source")
    extra = sorted(found - set(domains))
    if extra:
        raise ConfigError(f"config key '{key}': source domain(s) {extra} are not in `domains` {domains}")


def _is_remote(pattern: str) -> bool:
    return "://" in pattern or pattern.startswith("hf:")


def _split_dirs(source: dict) -> dict[str, Path]:
    root = Path(source["path"])
    dirs = {"train": root / source["train_dir"]}
    if source["valid_dir"] is not None:
        dirs["valid"] = root / source["valid_dir"]
    return dirs


def _check_jsonl_layout(source: dict, domains: list[str]) -> None:
    for split, folder in _split_dirs(source).items():
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


# --------------------------------------------------------------------------- files


def copies_corpus(source: dict) -> bool:
    """Whether `regmix corpus` writes the documents into the corpus folder (the demo, or a
    materialized dataset) rather than leaving them to be read in place."""
    return source["kind"] == "demo" or (source["kind"] == "huggingface" and source["materialize"])


def corpus_file(corpus_dir: str | Path, source: dict, domain: str, split: str) -> Path:
    """Where `regmix corpus` writes a domain split (the demo's plain, a dataset's compressed)."""
    return Path(CorpusDir(str(corpus_dir)).file(domain, split, compressed=source["kind"] != "demo"))


def jsonl_files(source: dict, domain: str, split: str) -> list[str]:
    """The JSON-lines files of one domain split, matched exactly on the domain name."""
    dirs = _split_dirs(source)
    folder = dirs.get(split, dirs["train"])
    if not folder.is_dir():
        raise ValueError(f"domain {domain!r}: folder {str(folder)!r} does not exist")
    return sorted(str(f) for f in folder.iterdir() if f.is_file() and jsonl_domain(f.name) == domain)


def _glob_files(source: dict, domain: str, split: str) -> list[str]:
    spec = source["files"].get(domain)
    if spec is None:
        raise ValueError(f"domain {domain!r}: no entry in data.source.files")
    pattern = spec.get(split) or spec["train"]
    return _glob(pattern)


def input_files(config: dict, domain: str, split: str) -> list[str]:
    """Local files a (domain, split) is read from, for Snakemake to track as inputs."""
    return local_files(config["data"]["source"], domain, split, Layout(config["results_dir"]).corpus.root)


def local_files(source: dict, domain: str, split: str, corpus_dir: str | Path | None = None) -> list[str]:
    """Local files a (domain, split) of `source` is read from (`corpus_dir` for a source
    that `regmix corpus` copies)."""
    _check_split(split)
    kind = source["kind"]
    if copies_corpus(source):
        if corpus_dir is None:
            raise ValueError(f"the {kind} source reads the corpus folder: pass corpus_dir")
        return [str(corpus_file(corpus_dir, source, domain, split))]
    if kind == "jsonl":
        return jsonl_files(source, domain, split)
    if kind in ("parquet", "text"):
        return _glob_files(source, domain, split)
    return _huggingface_files(source)


def _huggingface_files(source: dict) -> list[str]:
    """Local data files, or a local dataset folder's files, of a huggingface source (a
    domain source or a validation-only set); nothing for a hub name."""
    files = [path for _, pattern in _local_patterns(source["data_files"]) for path in _glob(pattern)]
    local = Path(source["name_or_path"])
    if not files and local.exists():
        files = [str(local)] if local.is_file() else sorted(str(p) for p in local.rglob("*") if p.is_file())
    return sorted(set(files))


def validation_set_files(config: dict, name: str) -> list[str]:
    """Local files validation set `name` is read from, for Snakemake to track as inputs."""
    spec = config["validation_sets"][name]
    if spec["kind"] == "demo":
        return [Layout(config["results_dir"]).corpus.validation_set(name)]
    return _huggingface_files(spec) if spec["kind"] == "huggingface" else _glob(spec["files"])


# --------------------------------------------------------------------------- reading


@dataclass
class ReadStats:
    """What reading one domain split saw; the readers below fill it as they go."""

    documents: int = 0
    records: int = 0
    empty: int = 0
    unreadable: int = 0
    first_unreadable: str = ""
    sources: list[str] = field(default_factory=list)

    def admit(self, text, where: str) -> bool:
        """Count a record; True when it is a usable (readable, non-empty) document."""
        self.records += 1
        if text is _BAD:
            self.unreadable += 1
            self.first_unreadable = self.first_unreadable or where
            return False
        if not text or text.isspace():  # `not text.strip()` without copying the text
            self.empty += 1
            return False
        return True

    def check_unreadable(self, label: str, max_fraction: float) -> None:
        if self.records and self.unreadable / self.records > max_fraction:
            raise ValueError(
                f"{label}: {self.unreadable} of {self.records} records unreadable "
                f"({self.unreadable / self.records:.2%} > data.max_undecodable_fraction {max_fraction}); "
                f"first: {self.first_unreadable}"
            )


_BAD = object()  # marker a reader yields for an unreadable record


def iter_documents(
    settings: dict, corpus_dir: str | Path | None, domain: str, split: str, stats: ReadStats | None = None
) -> Iterator[str]:
    """Yield the documents of one domain split, in a fixed order.

    Raises ValueError naming the domain when it has no documents or more unreadable
    records than `data.max_undecodable_fraction` (checked when the source is exhausted,
    so a consumer that writes atomically never leaves a complete-looking output).
    """
    _check_split(split)
    if domain not in settings["domains"]:
        raise ValueError(f"domain {domain!r} is not in domains {settings['domains']}")
    data = settings["data"]
    source = data["source"]
    stats = stats if stats is not None else ReadStats()
    records, hash_split = _records(source, corpus_dir, domain, split, stats)
    seed, fraction = settings["seed"], data["valid_fraction"]
    for text, where in records:
        if not stats.admit(text, where):
            continue
        if hash_split and in_valid_split(text, seed, fraction) != (split == "valid"):
            continue
        stats.documents += 1
        yield text
    stats.check_unreadable(f"domain {domain!r} split {split!r}", data["max_undecodable_fraction"])
    where = ", ".join(stats.sources[:3]) + (" ..." if len(stats.sources) > 3 else "") or "the source"
    if stats.documents == 0:
        raise ValueError(f"domain {domain!r} split {split!r}: no documents in {where}")


def _records(source: dict, corpus_dir, domain: str, split: str, stats: ReadStats):
    """(record iterator, whether the split comes from hashing the train documents)."""
    kind = source["kind"]
    if copies_corpus(source):
        if corpus_dir is None:
            raise ValueError(f"the {kind} source reads the corpus folder: pass corpus_dir")
        path = corpus_file(corpus_dir, source, domain, split)
        if not path.is_file():
            raise ValueError(f"domain {domain!r} split {split!r}: corpus file {str(path)!r} does not exist")
        stats.sources.append(str(path))
        return _jsonl_records([str(path)], "text"), False
    if kind == "jsonl":
        files = jsonl_files(source, domain, split)
        if not files:
            raise ValueError(
                f"domain {domain!r} split {split!r}: no file {domain}-N.jsonl[.gz|.zst] in {source['path']!r}"
            )
        stats.sources += files
        return _jsonl_records(files, source["text_field"]), source["valid_dir"] is None
    if kind in ("parquet", "text"):
        files = _glob_files(source, domain, split)
        spec = source["files"][domain]
        if not files:
            raise ValueError(
                f"domain {domain!r} split {split!r}: pattern {spec.get(split) or spec['train']!r} matches no file"
            )
        stats.sources += files
        hash_split = spec.get("valid") is None
        if kind == "parquet":
            return _parquet_records(files, source["text_column"]), hash_split
        return _text_records(files, source["text_unit"]), hash_split
    hash_split = source["valid_split"] is None
    stats.sources.append(source["name_or_path"])
    return _huggingface_records(source, domain, split), hash_split


def iter_validation_documents(
    settings: dict, corpus_dir: str | Path | None, name: str, stats: ReadStats | None = None
) -> Iterator[str]:
    """Yield the documents of validation-only set `name` (settings["validation_sets"][name]),
    in a fixed order, under the rules of `iter_documents`: a set without documents, or
    with too many unreadable records, is an error naming it."""
    sets = settings.get("validation_sets") or {}
    if name not in sets:
        raise ValueError(f"validation set {name!r} is not in validation_sets {sorted(sets)}")
    spec, data = sets[name], settings["data"]
    stats = stats if stats is not None else ReadStats()
    kind, label = spec["kind"], f"validation set {name!r}"
    if kind == "demo":
        if corpus_dir is None:
            raise ValueError(f"{label}: a demo set reads the corpus folder: pass corpus_dir")
        path = CorpusDir(str(corpus_dir)).validation_set(name)
        if not Path(path).is_file():
            raise ValueError(f"{label}: documents file {path!r} does not exist (regmix corpus --validation-set)")
        stats.sources.append(path)
        records = _jsonl_records([path], "text")
    elif kind == "huggingface":
        stats.sources.append(spec["name_or_path"])
        records = _huggingface_set_records(spec, label)
    else:
        files = _glob(spec["files"])
        if not files:
            raise ValueError(f"{label}: pattern {spec['files']!r} matches no file")
        stats.sources += files
        if kind == "jsonl":
            records = _jsonl_records(files, spec["text_field"])
        elif kind == "parquet":
            records = _parquet_records(files, spec["text_column"])
        else:
            records = _text_records(files, spec["text_unit"])
    for text, where in records:
        if stats.admit(text, where):
            stats.documents += 1
            yield text
    stats.check_unreadable(label, data["max_undecodable_fraction"])
    if stats.documents == 0:
        where = ", ".join(stats.sources[:3]) + (" ..." if len(stats.sources) > 3 else "") or "the source"
        raise ValueError(f"{label}: no documents in {where}")


def _huggingface_set_records(spec: dict, label: str):
    """Rows of one dataset split (only those whose `domain_column` is in `values`, when set)."""
    import datasets
    import pyarrow.compute as pc

    dataset = datasets.load_dataset(
        spec["name_or_path"], spec["config_name"], data_files=spec["data_files"], split=spec["split"]
    )
    name, row = f"{spec['name_or_path']}[{spec['split']}]", 0
    wanted = _string_array(list(spec["values"])) if spec["values"] is not None else None
    for table in dataset.with_format("arrow").iter(batch_size=_ARROW_BATCH_ROWS):
        try:
            texts = _arrow_column(table, spec["text_column"])
            mask = (
                None
                if wanted is None
                else pc.is_in(pc.cast(_arrow_column(table, spec["domain_column"]), "string"), value_set=wanted)
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{label}: {name} has no column {err} (columns: {table.column_names})") from None
        offsets = range(table.num_rows) if mask is None else pc.indices_nonzero(mask).to_pylist()
        kept = texts if mask is None else texts.filter(mask)
        for offset, text in zip(offsets, kept.to_pylist(), strict=True):
            yield _checked_text(text, f"{name} row {row + offset}")
        row += table.num_rows


def _checked_text(text, where: str):
    if not isinstance(text, str):
        return _BAD, f"{where}: text is {type(text).__name__}, not a string"
    if not text.isascii() and _SURROGATE.search(text):  # lone surrogates from JSON escapes cannot be tokenized
        return _BAD, f"{where}: text has unpaired surrogates"
    return text, where


def _jsonl_records(files: list[str], text_field: str):
    for path in files:
        with read_binary(path) as handle:
            lineno = 0  # not enumerate(): its cached result tuple would keep each raw line alive
            for line in handle:
                lineno += 1
                if not line or line.isspace():  # `not line.strip()` without copying the line
                    continue
                where = f"{path}:{lineno}"
                try:
                    # json.loads(bytes) decodes the same way; decoding first lets the raw line go
                    # before parsing, so a huge line is held twice at most, never three times
                    line = line.decode(json.detect_encoding(line), "surrogatepass")
                    record = json.loads(line)
                except ValueError as err:  # bad UTF-8 or malformed JSON
                    yield _BAD, f"{where}: {type(err).__name__}: {err}"
                    continue
                finally:
                    del line  # nor is it kept alive next to its parsed text while consumers run
                try:
                    text = _dotted(record, text_field)
                except KeyError:
                    yield _BAD, f"{where}: no field {text_field!r}"
                    continue
                yield _checked_text(text, where)


def _text_records(files: list[str], unit: str):
    for path in files:
        with read_binary(path) as handle:
            if unit == "file":
                try:
                    yield handle.read().decode("utf-8"), path
                except UnicodeDecodeError as err:
                    yield _BAD, f"{path}: {err}"
                continue
            lineno = 0  # not enumerate(): its cached result tuple would keep each raw line alive
            for line in handle:
                lineno += 1
                where = f"{path}:{lineno}"
                try:
                    end = len(line)
                    while end and line[end - 1] in b"\r\n":
                        end -= 1
                    text = str(memoryview(line)[:end], "utf-8")  # decodes without a stripped copy of the line
                except UnicodeDecodeError as err:
                    text, where = _BAD, f"{where}: {err}"
                del line  # the raw line is not kept alive next to its text while consumers run
                yield text, where


def _arrow_column(table, dotted: str):
    """A (possibly nested, dotted) column of a pyarrow Table as one flat array."""
    import pyarrow.compute as pc

    first, *rest = dotted.split(".")
    if first not in table.column_names:
        raise KeyError(dotted)
    column = table.column(first)
    for part in rest:
        column = pc.struct_field(column, part)
    return column


def _parquet_records(files: list[str], text_column: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise CorruptFileError(path, f"not a readable Parquet file ({err})") from None
        root = text_column.split(".")[0]
        if root not in parquet.schema_arrow.names:
            yield _BAD, f"{path}: no column {text_column!r} (columns: {parquet.schema_arrow.names})"
            continue
        row = 0
        for batch in parquet.iter_batches(columns=[root], batch_size=_ARROW_BATCH_ROWS):
            import pyarrow as pa

            texts = _arrow_column(pa.Table.from_batches([batch]), text_column).to_pylist()
            for offset, text in enumerate(texts):
                yield _checked_text(text, f"{path} row {row + offset}")
            row += len(texts)


def _huggingface_batches(source: dict, split: str):
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
    for table in dataset.with_format("arrow").iter(batch_size=_ARROW_BATCH_ROWS):
        try:
            values = pc.cast(_arrow_column(table, source["domain_column"]), "string")
            texts = _arrow_column(table, source["text_column"])
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


def _huggingface_records(source: dict, domain: str, split: str):
    """Rows of the configured split whose domain column maps to `domain`.

    Batches are filtered in Arrow before any text becomes a Python string, so a job
    that wants one domain of a many-domain dataset only converts that domain's rows.
    """
    import pyarrow.compute as pc

    wanted = _string_array([value for value, d in source["domain_map"].items() if d == domain])
    for values, texts, row, name in _huggingface_batches(source, split):
        mask = pc.is_in(values, value_set=wanted)
        for offset, text in zip(pc.indices_nonzero(mask).to_pylist(), texts.filter(mask).to_pylist(), strict=False):
            yield _checked_text(text, f"{name} row {row + offset}")


def iter_all_domains(settings: dict, read_split: str) -> Iterator[tuple[str, str, str]]:
    """(domain, split, document) for every configured domain in one pass (huggingface).

    Reads the dataset split behind `read_split`; when the dataset has no valid split,
    reading "train" yields both splits, routed by the seeded hash. The same rules as
    `iter_documents` apply per domain: empty documents skipped, unreadable ones counted
    against the threshold, and a domain split left without documents is an error.
    """
    _check_split(read_split)
    data, source = settings["data"], settings["data"]["source"]
    if source["kind"] != "huggingface":
        raise ValueError(f"iter_all_domains reads a huggingface source, not {source['kind']!r}")
    domain_map, hash_split = source["domain_map"], source["valid_split"] is None
    if hash_split and read_split == "valid":
        raise ValueError("the dataset has no valid split: read 'train', which yields both")
    splits = SPLITS if hash_split else (read_split,)
    documents = {(d, sp): 0 for d in settings["domains"] for sp in splits}
    stats = {d: ReadStats() for d in settings["domains"]}
    for values, texts, row, name in _huggingface_batches(source, read_split):
        for offset, (value, text) in enumerate(zip(values.to_pylist(), texts.to_pylist(), strict=False)):
            domain = domain_map[str(value)]
            if domain is None or not stats[domain].admit(*_checked_text(text, f"{name} row {row + offset}")):
                continue
            split = read_split
            if hash_split:
                split = "valid" if in_valid_split(text, settings["seed"], data["valid_fraction"]) else "train"
            documents[(domain, split)] += 1
            yield domain, split, text
    for domain, tally in stats.items():
        tally.check_unreadable(f"domain {domain!r}", data["max_undecodable_fraction"])
    for (domain, split), count in documents.items():
        if count == 0:
            raise ValueError(f"domain {domain!r} split {split!r}: no documents in {source['name_or_path']}")


def _string_array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())
