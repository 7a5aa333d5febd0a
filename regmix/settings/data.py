"""Typed settings of the data stages: `regmix corpus` (and its validation-set build),
`regmix train-tokenizer` and `regmix tokenize` (domains and validation-only sets).

The JSON they come from is `regmix.config.stage_settings(config, stage)` for "corpus",
"tokenizer" and "tokenize", and `regmix.config.validation_set_settings(config, name)` for
one validation-only set. A source (`data.source`, a validation set) stays a mapping of its
kind's keys: its kind's module in regmix.sources reads it, so adding a kind adds no field here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regmix.settings import build_section, require_keys


@dataclass(frozen=True)
class ReadOptions:
    """What reading documents needs of the config's `data` section (regmix.sources)."""

    source: Mapping[str, Any]
    valid_fraction: float
    max_undecodable_fraction: float


@dataclass(frozen=True)
class DataOptions(ReadOptions):
    """The config's `data` section: the source and how documents are read and tokenized."""

    demo_max_bytes_per_domain: int
    token_limit: Mapping[str, int] | None
    workers: int
    batch_bytes: int
    max_chunk_chars: int
    shard_max_tokens: int


@dataclass(frozen=True)
class TokenizerSpec:
    """The config's `tokenizer` section."""

    kind: str
    name: str | None
    vocab_size: int
    train_max_bytes_per_domain: int | None


@dataclass(frozen=True, kw_only=True)
class ReadSettings:
    """What reading documents needs (regmix.sources.iter_documents): also what
    `regmix make-tasks` reads of its settings (validation_sets: none, or the one set of
    validation_set_settings)."""

    seed: int
    domains: tuple[str, ...]
    data: ReadOptions
    validation_sets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # the JSON as given: what provenance records
    raw: Mapping[str, Any] = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, settings: Mapping[str, Any], stage: str = "eval_tasks") -> ReadSettings:
        require_keys(settings, ("seed", "domains", "data"), stage)
        return cls(**cls._common(settings, ReadOptions))

    @staticmethod
    def _common(settings: Mapping[str, Any], options: type[ReadOptions]) -> dict[str, Any]:
        return {
            "seed": int(settings["seed"]),
            "domains": tuple(settings["domains"]),
            "data": build_section(options, settings["data"], "data"),
            "validation_sets": dict(settings.get("validation_sets") or {}),
            "raw": settings,
        }


@dataclass(frozen=True, kw_only=True)
class DataSettings(ReadSettings):
    """The settings of `regmix corpus` and `regmix tokenize` (domains and validation-only sets)."""

    data: DataOptions

    @classmethod
    def from_json(cls, settings: Mapping[str, Any], stage: str = "tokenize") -> DataSettings:
        """From the JSON of `stage` ("corpus", "tokenize", or "validation_set")."""
        require_keys(settings, ("seed", "domains", "data"), stage)
        return cls(**cls._common(settings, DataOptions))


@dataclass(frozen=True, kw_only=True)
class TokenizerSettings(DataSettings):
    """The settings of `regmix train-tokenizer`: reading the train splits, and the tokenizer."""

    tokenizer: TokenizerSpec

    @classmethod
    def from_json(cls, settings: Mapping[str, Any], stage: str = "tokenizer") -> TokenizerSettings:
        require_keys(settings, ("seed", "domains", "data", "tokenizer"), stage)
        tokenizer = build_section(TokenizerSpec, settings["tokenizer"], "tokenizer")
        return cls(**cls._common(settings, DataOptions), tokenizer=tokenizer)
