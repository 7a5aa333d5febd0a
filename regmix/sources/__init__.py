"""Where documents come from: one module per `data.source.kind`, one iterator for all.

Every consumer (tokenizer training, tokenization, evaluation tasks) reads documents
through `iter_documents`, so the rules about what a document is are in one place:
empty documents are skipped, unreadable records (bad UTF-8, malformed JSON, a missing or
non-string text field) are counted and fail the domain beyond
`data.max_undecodable_fraction`, a domain/split with no documents is an error naming it,
and a source without a valid split is split by a seeded hash of each document.

Kinds (keys in config/schema.yaml under data.source), each a `base.SourceKind` in its module:
  demo         R/corpus/<domain>/<split>.jsonl written by `regmix corpus`
  jsonl        <path>/<train_dir>/<domain>-N.jsonl[.gz|.zst] (RegMix's layout)
  huggingface  `datasets.load_dataset` whose `domain_column` names each row's domain;
               with `materialize`, `regmix corpus` reads it once and writes
               R/corpus/<domain>/<split>.jsonl.zst, which every later reader uses
  parquet      per-domain globs of Parquet files with a text column
  text         per-domain globs of plain text files (a document per file or per line)
Adding a kind: a module with a SourceKind subclass, a line in KINDS, its schema entry.

Validation-only sets (config `validation_sets`) are read by `iter_validation_documents`
under the same rules; each is one source of one of these kinds, without domains or
splits (the demo kind: the held-out slice of a demo domain that is not trained on,
which `regmix corpus --validation-set NAME` writes to CorpusDir.validation_set(NAME)).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from regmix.layout import Layout
from regmix.settings.data import ReadSettings
from regmix.sources import demo, huggingface, jsonl, parquet, text
from regmix.sources.base import (
    SPLITS,
    UTF8_PIECE_CHARS,
    CorpusStep,
    CorruptFileError,
    ReadStats,
    Record,
    SourceKind,
    Spec,
    check_kind_keys,
    check_split,
    in_valid_split,
    jsonl_records,
    open_binary,
    read_binary,
    unit_hash,
    utf8_length,
    utf8_pieces,
)
from regmix.sources.base import corpus_file as _corpus_file
from regmix.sources.demo import DEMO_DOMAINS
from regmix.sources.huggingface import iter_all_domains
from regmix.sources.jsonl import jsonl_domain

__all__ = [
    "DEMO_DOMAINS",
    "KINDS",
    "SPLITS",
    "UTF8_PIECE_CHARS",
    "CorpusStep",
    "CorruptFileError",
    "ReadStats",
    "SourceKind",
    "check_source_config",
    "check_validation_sets",
    "copies_corpus",
    "corpus_file",
    "corpus_step",
    "in_valid_split",
    "input_files",
    "iter_all_domains",
    "iter_documents",
    "iter_validation_documents",
    "jsonl_domain",
    "kind_of",
    "local_files",
    "open_binary",
    "read_binary",
    "unit_hash",
    "utf8_length",
    "utf8_pieces",
    "validation_set_files",
]

KINDS: dict[str, SourceKind] = {module.KIND.name: module.KIND for module in (demo, jsonl, huggingface, parquet, text)}


def kind_of(spec: Spec) -> SourceKind:
    """The kind module's SourceKind of a data.source or validation-set spec."""
    kind = spec["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r} (kinds: {sorted(KINDS)})")
    return KINDS[kind]


# --------------------------------------------------------------------------- config


def check_source_config(config: dict) -> None:
    """Validate `data.source` against `domains`; raise ConfigError naming the key.

    The source's domains must be exactly `domains`: a configured domain the source does
    not provide, or data for a domain that is not configured, stops the run here.
    """
    source, domains = config["data"]["source"], list(config["domains"])
    kind = kind_of(source)
    check_kind_keys(source, "data.source", kind.keys)
    kind.check(source, domains)


def check_validation_sets(config: dict) -> None:
    """Validate each `validation_sets` entry's kind-specific keys and files; raise
    ConfigError naming the key. (Names are checked with the other names, in regmix.config.)"""
    domains = list(config["domains"])
    for name, spec in config["validation_sets"].items():
        key, kind = f"validation_sets.{name}", kind_of(spec)
        check_kind_keys(spec, key, kind.validation_keys)
        kind.check_validation_set(spec, key, domains)


# --------------------------------------------------------------------------- files


def corpus_step(source: Spec) -> CorpusStep:
    """What `regmix corpus` does for `source`."""
    return kind_of(source).corpus_step(source)


def copies_corpus(source: Spec) -> bool:
    """Whether `regmix corpus` writes the documents into the corpus folder (the demo, or a
    materialized dataset) rather than leaving them to be read in place."""
    return corpus_step(source) is not CorpusStep.DESCRIBE


def corpus_file(corpus_dir: str | Path, source: Spec, domain: str, split: str) -> Path:
    """Where `regmix corpus` writes a domain split (the demo's plain, a dataset's compressed)."""
    return _corpus_file(corpus_dir, kind_of(source).compressed_corpus, domain, split)


def input_files(config: dict, domain: str, split: str) -> list[str]:
    """Local files a (domain, split) is read from, for Snakemake to track as inputs."""
    return local_files(config["data"]["source"], domain, split, Layout(config["results_dir"]).corpus.root)


def local_files(source: Spec, domain: str, split: str, corpus_dir: str | Path | None = None) -> list[str]:
    """Local files a (domain, split) of `source` is read from (`corpus_dir` for a source
    that `regmix corpus` copies)."""
    check_split(split)
    if copies_corpus(source):
        if corpus_dir is None:
            raise ValueError(f"the {source['kind']} source reads the corpus folder: pass corpus_dir")
        return [str(corpus_file(corpus_dir, source, domain, split))]
    return kind_of(source).files(source, domain, split)


def validation_set_files(config: dict, name: str) -> list[str]:
    """Local files validation set `name` is read from, for Snakemake to track as inputs."""
    spec = config["validation_sets"][name]
    return kind_of(spec).validation_files(spec, name, Layout(config["results_dir"]).corpus.root)


# --------------------------------------------------------------------------- reading


def iter_documents(
    settings: ReadSettings, corpus_dir: str | Path | None, domain: str, split: str, stats: ReadStats | None = None
) -> Iterator[str]:
    """Yield the documents of one domain split, in a fixed order.

    Raises ValueError naming the domain and split when none is left, or when more than
    data.max_undecodable_fraction of the records are unreadable (raised when the source is exhausted,
    so a consumer that writes atomically never leaves a complete-looking output).
    """
    check_split(split)
    if domain not in settings.domains:
        raise ValueError(f"domain {domain!r} is not in domains {list(settings.domains)}")
    data = settings.data
    stats = stats if stats is not None else ReadStats()
    records, hash_split = _records(data.source, corpus_dir, domain, split, stats)
    seed, fraction = settings.seed, data.valid_fraction
    for document, where in records:
        if not stats.admit(document, where):
            continue
        if hash_split and in_valid_split(document, seed, fraction) != (split == "valid"):
            continue
        stats.documents += 1
        yield document
    stats.check_unreadable(f"domain {domain!r} split {split!r}", data.max_undecodable_fraction)
    if stats.documents == 0:
        raise ValueError(f"domain {domain!r} split {split!r}: no documents in {stats.where()}")


def _records(
    source: Spec, corpus_dir: str | Path | None, domain: str, split: str, stats: ReadStats
) -> tuple[Iterator[Record], bool]:
    """(record iterator, whether the split comes from hashing the train documents)."""
    if copies_corpus(source):
        if corpus_dir is None:
            raise ValueError(f"the {source['kind']} source reads the corpus folder: pass corpus_dir")
        path = corpus_file(corpus_dir, source, domain, split)
        if not path.is_file():
            raise ValueError(f"domain {domain!r} split {split!r}: corpus file {str(path)!r} does not exist")
        stats.sources.append(str(path))
        return jsonl_records([str(path)], "text"), False
    return kind_of(source).records(source, domain, split, stats)


def iter_validation_documents(
    settings: ReadSettings, corpus_dir: str | Path | None, name: str, stats: ReadStats | None = None
) -> Iterator[str]:
    """Yield the documents of validation-only set `name` (settings.validation_sets[name]),
    in a fixed order, under the rules of `iter_documents`: a set without documents, or
    with too many unreadable records, is an error naming it."""
    sets = settings.validation_sets
    if name not in sets:
        raise ValueError(f"validation set {name!r} is not in validation_sets {sorted(sets)}")
    spec, label = sets[name], f"validation set {name!r}"
    stats = stats if stats is not None else ReadStats()
    for document, where in kind_of(spec).validation_records(spec, name, corpus_dir, stats):
        if stats.admit(document, where):
            stats.documents += 1
            yield document
    stats.check_unreadable(label, settings.data.max_undecodable_fraction)
    if stats.documents == 0:
        raise ValueError(f"{label}: no documents in {stats.where()}")
