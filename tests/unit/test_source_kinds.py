"""The source-kind interface (regmix.sources.base.SourceKind) and the data stages' typed settings."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json

import pytest

from regmix import corpus, sources
from regmix.config import load_schema, stage_settings, validate_config, validation_set_settings
from regmix.settings import ConfigError
from regmix.settings.data import DataOptions, DataSettings, ReadOptions, ReadSettings, TokenizerSettings
from regmix.sources.base import CorpusStep, SourceKind

SCHEMA = load_schema()
SOURCE_SCHEMA = SCHEMA["properties"]["data"]["properties"]["source"]
SET_SCHEMA = SCHEMA["properties"]["validation_sets"]["additionalProperties"]


def demo_config(**extra):
    return validate_config({"regression": {"target": "mean"}, **extra})


def test_every_schema_kind_has_its_own_module_implementing_the_interface():
    kinds = SOURCE_SCHEMA["properties"]["kind"]["enum"]
    assert SET_SCHEMA["properties"]["kind"]["enum"] == kinds
    assert sorted(sources.KINDS) == sorted(kinds)
    for name in kinds:
        module = importlib.import_module(f"regmix.sources.{name}")
        assert module.KIND is sources.KINDS[name] and module.KIND.name == name
        assert isinstance(module.KIND, SourceKind)
        assert not inspect.isabstract(type(module.KIND)), name


def test_kind_keys_are_the_schemas_keys():
    """Each key of data.source / a validation set is read by some kind, and no kind claims a key the schema lacks."""
    source_keys = set(SOURCE_SCHEMA["properties"]) - {"kind"}
    set_keys = set(SET_SCHEMA["properties"]) - {"kind"}
    assert set().union(*(kind.keys for kind in sources.KINDS.values())) == source_keys
    assert set().union(*(kind.validation_keys for kind in sources.KINDS.values())) == set_keys


def test_a_kind_missing_a_method_cannot_be_made():
    class Half(SourceKind):
        name, keys, validation_keys = "half", frozenset(), frozenset()

        def check(self, spec, domains):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_unknown_kind_is_refused_naming_the_kinds():
    with pytest.raises(ValueError, match=r"unknown source kind 'nope'.*demo"):
        sources.kind_of({"kind": "nope"})


def test_what_regmix_corpus_does_comes_from_the_kind():
    hub = {"kind": "huggingface", "name_or_path": "x", "materialize": False}
    assert sources.corpus_step({"kind": "demo"}) is CorpusStep.BUILD
    assert sources.corpus_step(hub) is CorpusStep.DESCRIBE and not sources.copies_corpus(hub)
    assert sources.corpus_step({**hub, "materialize": True}) is CorpusStep.MATERIALIZE
    assert sources.copies_corpus({**hub, "materialize": True}) and sources.copies_corpus({"kind": "demo"})
    for name in ("jsonl", "parquet", "text"):
        assert sources.corpus_step({"kind": name}) is CorpusStep.DESCRIBE
    assert sources.corpus_file("c", {"kind": "demo"}, "code", "train").name == "train.jsonl"
    assert sources.corpus_file("c", {**hub, "materialize": True}, "code", "train").name == "train.jsonl.zst"
    assert [n for n, k in sources.KINDS.items() if k.builds_validation_sets] == ["demo"]


def test_data_stages_parse_their_settings_once_into_frozen_objects():
    config = demo_config(validation_sets={"held": {"kind": "demo", "domain": "structured"}}, domains=["code", "docs"])
    for stage in ("corpus", "tokenize"):
        settings = DataSettings.from_json(stage_settings(config, stage), stage)
        assert settings.seed == 0 and settings.domains == ("code", "docs")
        assert settings.data.valid_fraction == config["data"]["valid_fraction"]
        assert settings.data.source == {"kind": "demo"} and settings.validation_sets == {}
        assert settings.raw == stage_settings(config, stage)  # what provenance records
    one_set = DataSettings.from_json(validation_set_settings(config, "held"), "validation_set")
    assert one_set.validation_sets == {"held": {"kind": "demo", "domain": "structured"}}
    tok = TokenizerSettings.from_json(stage_settings(config, "tokenizer"))
    assert tok.tokenizer.vocab_size == config["tokenizer"]["vocab_size"] and tok.tokenizer.kind == "train"
    with pytest.raises(dataclasses.FrozenInstanceError):
        tok.seed = 1
    # the typed settings change nothing the rules pass (Snakemake's params): the same JSON keys
    assert set(stage_settings(config, "corpus")) == {"seed", "domains", "data"}
    assert set(stage_settings(config, "tokenizer")) == {"seed", "domains", "data", "tokenizer"}
    assert {f.name for f in dataclasses.fields(DataOptions)} == set(config["data"])


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("data",), r"missing key 'data'.*stage_settings\(config, 'tokenize'\)"),
        (("data", "workers"), r"settings key 'data': missing \['workers'\]"),
        (("seed",), r"missing key 'seed'"),
    ],
)
def test_a_missing_settings_key_is_named(drop, message):
    settings = json.loads(json.dumps(stage_settings(demo_config(), "tokenize")))
    section = settings
    for key in drop[:-1]:
        section = section[key]
    del section[drop[-1]]
    with pytest.raises(ConfigError, match=message):
        DataSettings.from_json(settings)


def test_a_missing_tokenizer_key_is_named():
    settings = stage_settings(demo_config(), "tokenizer")
    with pytest.raises(ConfigError, match=r"missing key 'tokenizer'"):
        TokenizerSettings.from_json({k: v for k, v in settings.items() if k != "tokenizer"})
    partial = {**settings, "tokenizer": {k: v for k, v in settings["tokenizer"].items() if k != "vocab_size"}}
    with pytest.raises(ConfigError, match=r"settings key 'tokenizer': missing \['vocab_size'\]"):
        TokenizerSettings.from_json(partial)
    with pytest.raises(ConfigError, match=r"validation_set_settings"):
        DataSettings.from_json({"seed": 0, "domains": []}, "validation_set")


def test_corpus_command_names_a_missing_settings_key(tmp_path):
    settings = {k: v for k, v in stage_settings(demo_config(), "corpus").items() if k != "domains"}
    with pytest.raises(ConfigError, match=r"missing key 'domains'.*'corpus'"):
        corpus.main(["--settings", json.dumps(settings), "--out", str(tmp_path / "corpus")])
    assert not (tmp_path / "corpus").exists()


def test_reading_needs_only_the_reading_options():
    """regmix make-tasks reads documents with `ReadSettings`; a missing reading option is still named."""
    config = demo_config()
    tasks = stage_settings(config, "eval_tasks")
    reading = ReadSettings.from_json(tasks)
    assert reading.data == ReadOptions(
        source={"kind": "demo"},
        valid_fraction=config["data"]["valid_fraction"],
        max_undecodable_fraction=config["data"]["max_undecodable_fraction"],
    )
    trimmed = {**tasks, "data": {"source": {"kind": "demo"}, "valid_fraction": 0.1}}
    with pytest.raises(ConfigError, match=r"settings key 'data': missing \['max_undecodable_fraction'\]"):
        ReadSettings.from_json(trimmed)
    assert isinstance(DataSettings.from_json(stage_settings(config, "tokenize")), ReadSettings)
