"""The interface every source kind implements, and what the kinds share.

A kind is a `SourceKind` subclass in its own module of regmix.sources, registered in
`regmix.sources.KINDS` (and named in config/schema.yaml's `kind` enums). A kind's spec
is a mapping of the keys it declares (`keys` for data.source, `validation_keys` for a
validation-only set), already validated and filled with defaults by the schema.

Readers yield `Record`s: (text, where) for a record that decoded, or (UNREADABLE, why)
for one that did not, so ReadStats counts both the same way for every kind.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import gzip
import hashlib
import io
import json
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeGuard, cast

from regmix.files import BadFileError
from regmix.layout import CorpusDir
from regmix.settings import ConfigError
from regmix.settings.data import ReadSettings

SPLITS = ("train", "valid")
ARROW_BATCH_ROWS = 2000
UTF8_PIECE_CHARS = 1 << 20  # characters encoded to bytes at a time when hashing or measuring a document
_SURROGATE = re.compile("[\ud800-\udfff]")

Spec = Mapping[str, Any]


class Unreadable:
    """The type of UNREADABLE, the text of a record that could not be read."""


UNREADABLE = Unreadable()
Record = tuple[str | Unreadable, str]


# --------------------------------------------------------------------------- text helpers


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


def checked_text(text: object, where: str) -> Record:
    """A record's text, or UNREADABLE when it is not a string a tokenizer can take."""
    if not isinstance(text, str):
        return UNREADABLE, f"{where}: text is {type(text).__name__}, not a string"
    if not text.isascii() and _SURROGATE.search(text):  # lone surrogates from JSON escapes cannot be tokenized
        return UNREADABLE, f"{where}: text has unpaired surrogates"
    return text, where


def dotted(obj: Any, path: str) -> Any:
    """obj["a"]["b"] for path "a.b"; KeyError(path) when a part is missing."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(path)
        obj = obj[part]
    return obj


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (splits: {list(SPLITS)})")


# --------------------------------------------------------------------------- files


def glob_files(pattern: str) -> list[str]:
    """The files (not folders) a glob matches, sorted."""
    return sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file for reading bytes, decompressing .gz and .zst on the fly."""
    name = str(path)
    if name.endswith(".gz"):
        return cast(BinaryIO, gzip.open(name, "rb"))
    if name.endswith(".zst"):
        import zstandard

        raw = open(name, "rb")
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=1 << 20))
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


def jsonl_records(files: Iterable[str], text_field: str) -> Iterator[Record]:
    """The records of JSON-lines files (a JSON object per line, the text at `text_field`):
    the jsonl kind's, and every file `regmix corpus` writes."""
    for path in files:
        with read_binary(path) as handle:
            lineno = 0  # not enumerate(): its cached result tuple would keep each raw line alive
            for raw in handle:
                lineno += 1
                if not raw or raw.isspace():  # `not line.strip()` without copying the line
                    continue
                where = f"{path}:{lineno}"
                # json.loads(bytes) decodes the same way; decoding first lets the raw line go
                # before parsing, so a huge line is held twice at most, never three times
                try:
                    line = raw.decode(json.detect_encoding(raw), "surrogatepass")
                except ValueError as err:  # bad UTF-8
                    yield UNREADABLE, f"{where}: {type(err).__name__}: {err}"
                    continue
                del raw
                try:
                    record = json.loads(line)
                except ValueError as err:  # malformed JSON
                    yield UNREADABLE, f"{where}: {type(err).__name__}: {err}"
                    continue
                finally:
                    del line  # nor is it kept alive next to its parsed text while consumers run
                try:
                    text = dotted(record, text_field)
                except KeyError:
                    yield UNREADABLE, f"{where}: no field {text_field!r}"
                    continue
                yield checked_text(text, where)


# --------------------------------------------------------------------------- Arrow


def arrow_column(table: Any, path: str) -> Any:
    """A (possibly nested, dotted) column of a pyarrow Table as one flat array."""
    import pyarrow.compute as pc

    first, *rest = path.split(".")
    if first not in table.column_names:
        raise KeyError(path)
    column = table.column(first)
    for part in rest:
        column = pc.struct_field(column, part)
    return column


def string_array(values: list[str]) -> Any:
    import pyarrow as pa

    return pa.array(values, type=pa.string())


# --------------------------------------------------------------------------- config checks


def check_kind_keys(spec: Spec, key: str, allowed: frozenset[str]) -> None:
    """Refuse keys of `spec` (a source or a validation set) that its kind does not read."""
    foreign = sorted(set(spec) - {"kind"} - allowed)
    if foreign:
        raise ConfigError(
            f"config key '{key}': key(s) {foreign} do not apply to kind {spec['kind']!r} "
            f"(its keys: {sorted(allowed) or 'none'})"
        )


def check_domain_sets(found: set[str], domains: list[str], key: str) -> None:
    missing = [d for d in domains if d not in found]
    if missing:
        raise ConfigError(f"config key '{key}': domain(s) {missing} of `domains` have no data in the source")
    extra = sorted(found - set(domains))
    if extra:
        raise ConfigError(f"config key '{key}': source domain(s) {extra} are not in `domains` {domains}")


# --------------------------------------------------------------------------- reading


@dataclass
class ReadStats:
    """What reading one domain split saw; the readers fill it as they go."""

    documents: int = 0
    records: int = 0
    empty: int = 0
    unreadable: int = 0
    first_unreadable: str = ""
    sources: list[str] = field(default_factory=list)

    def admit(self, text: str | Unreadable, where: str) -> TypeGuard[str]:
        """Count a record; True when it is a usable (readable, non-empty) document."""
        self.records += 1
        if isinstance(text, Unreadable):
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

    def where(self) -> str:
        """The first sources read, for a message."""
        return ", ".join(self.sources[:3]) + (" ..." if len(self.sources) > 3 else "") or "the source"


# --------------------------------------------------------------------------- the interface


class CorpusStep(enum.Enum):
    """What `regmix corpus` does for a source."""

    DESCRIBE = "describe"  # documents are read in place: the manifest lists the source's local files
    BUILD = "build"  # regmix corpus makes the documents (the demo corpus) into the corpus folder
    MATERIALIZE = "materialize"  # regmix corpus reads the source once into the corpus folder


def corpus_file(corpus_dir: str | Path, compressed: bool, domain: str, split: str) -> Path:
    return Path(CorpusDir(str(corpus_dir)).file(domain, split, compressed=compressed))


class SourceKind(ABC):
    """One `kind` of data.source and of validation-only sets.

    For a spec whose `corpus_step` is DESCRIBE, `files` and `records` read it in place;
    otherwise `regmix corpus` writes its documents into the corpus folder and every later
    reader reads those (regmix.sources does that, the same for every kind).
    """

    name: ClassVar[str]
    keys: ClassVar[frozenset[str]]  # keys of data.source this kind reads (besides `kind`)
    validation_keys: ClassVar[frozenset[str]]  # keys of a validation-only set of this kind
    compressed_corpus: ClassVar[bool] = True  # whether its corpus-folder copy is .jsonl.zst
    builds_validation_sets: ClassVar[bool] = False  # whether `regmix corpus --validation-set` writes its sets

    def corpus_step(self, spec: Spec) -> CorpusStep:
        return CorpusStep.DESCRIBE

    @abstractmethod
    def check(self, spec: Spec, domains: list[str]) -> None:
        """Refuse (ConfigError naming the key) a data.source whose domains are not exactly `domains`."""

    @abstractmethod
    def check_validation_set(self, spec: Spec, key: str, domains: list[str]) -> None:
        """Refuse (ConfigError naming `key`) a validation-only set that cannot be read."""

    @abstractmethod
    def files(self, spec: Spec, domain: str, split: str) -> list[str]:
        """Local files one domain split is read from in place (nothing for a hub dataset)."""

    @abstractmethod
    def records(self, spec: Spec, domain: str, split: str, stats: ReadStats) -> tuple[Iterator[Record], bool]:
        """(records of one domain split read in place, whether the split is the seeded hash
        of the train records); adds what it reads to stats.sources."""

    @abstractmethod
    def validation_files(self, spec: Spec, name: str, corpus_dir: str | Path) -> list[str]:
        """Local files validation-only set `name` is read from."""

    @abstractmethod
    def validation_records(
        self, spec: Spec, name: str, corpus_dir: str | Path | None, stats: ReadStats
    ) -> Iterator[Record]:
        """The records of validation-only set `name`; adds what it reads to stats.sources."""

    def materialized_documents(self, settings: ReadSettings) -> Iterator[tuple[str, str, str]]:
        """(domain, split, document) of every domain for a MATERIALIZE corpus step."""
        raise NotImplementedError(f"the {self.name} source is not materialized")


class GlobbedSets(SourceKind):
    """A kind whose validation-only sets are a glob of files (`files`), read like its
    domains' files by `read`."""

    @abstractmethod
    def read(self, files: list[str], spec: Spec) -> Iterator[Record]:
        """The records of these files."""

    def check_validation_set(self, spec: Spec, key: str, domains: list[str]) -> None:
        if not glob_files(spec["files"]):
            name = key.split(".", 1)[1]
            raise ConfigError(f"config key '{key}.files' = {spec['files']!r}: validation set {name!r} matches no file")

    def validation_files(self, spec: Spec, name: str, corpus_dir: str | Path) -> list[str]:
        return glob_files(spec["files"])

    def validation_records(
        self, spec: Spec, name: str, corpus_dir: str | Path | None, stats: ReadStats
    ) -> Iterator[Record]:
        files = glob_files(spec["files"])
        if not files:
            raise ValueError(f"validation set {name!r}: pattern {spec['files']!r} matches no file")
        stats.sources += files
        return self.read(files, spec)


class GlobbedKind(GlobbedSets):
    """A kind whose data.source gives per-domain globs (`files.<domain>.train|valid`; a
    domain without `valid` is hash-split): the kinds differ only in how a file is read."""

    def check(self, spec: Spec, domains: list[str]) -> None:
        check_domain_sets(set(spec["files"]), domains, "data.source.files")
        for domain in domains:
            for split in SPLITS:
                pattern = spec["files"][domain].get(split)
                if pattern is not None and not glob_files(pattern):
                    raise ConfigError(
                        f"config key 'data.source.files.{domain}.{split}' = {pattern!r}: domain "
                        f"{domain!r} matches no file"
                    )

    def files(self, spec: Spec, domain: str, split: str) -> list[str]:
        entry = spec["files"].get(domain)
        if entry is None:
            raise ValueError(f"domain {domain!r}: no entry in data.source.files")
        return glob_files(entry.get(split) or entry["train"])

    def records(self, spec: Spec, domain: str, split: str, stats: ReadStats) -> tuple[Iterator[Record], bool]:
        files = self.files(spec, domain, split)
        entry = spec["files"][domain]
        if not files:
            raise ValueError(
                f"domain {domain!r} split {split!r}: pattern {entry.get(split) or entry['train']!r} matches no file"
            )
        stats.sources += files
        return self.read(files, spec), entry.get("valid") is None
