"""Config validation: defaults, and every bad input named by key and value."""

import copy

import pytest

from regmix.cluster import rule_resources
from regmix.config import (
    ConfigError,
    candidate_names,
    candidate_settings,
    load_config,
    proxy_packs,
    stage_settings,
    validate_config,
)


@pytest.fixture
def demo(repo_dir):
    return load_config(repo_dir / "config" / "config.yaml")


def test_defaults_fill_every_section():
    config = validate_config({})
    assert config["proxy"]["lr"] > 0
    assert config["proxy"]["resources"]["gpus"] == 0
    assert config["choose"]["top_k"] <= config["choose"]["samples"]
    assert config["data"]["source"] == {"kind": "demo"}


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"bogus": 1}, "bogus"),
        ({"proxy": {"bogus_key": 1}}, "bogus_key"),
        ({"proxy": {"steps": "many"}}, "proxy.steps"),
        ({"proxy": {"lr": -1.0}}, "proxy.lr"),
        ({"mixtures": {"count": 1}}, "mixtures.count"),
        ({"regression": {"target": "nope"}}, "regression.target"),
        ({"proxy": {"model": "gpt5"}}, "proxy.model"),
        ({"proxy": {"global_batch": 10, "micro_batch": 4}}, "proxy.global_batch"),
        ({"data": {"token_limit": {"atlantis": 10}}}, "atlantis"),
        ({"tokenizer": {"kind": "pretrained"}}, "tokenizer.name"),
    ],
)
def test_bad_values_name_the_key(patch, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        validate_config(patch)


@pytest.mark.parametrize(
    "weights, expected",
    [
        ({"code": 0.5, "atlantis": 0.5}, "atlantis"),
        ({"code": 1.2, "docs": -0.2}, "docs"),
        ({"code": 0.5, "docs": 0.2}, "sum to 0.7"),
    ],
)
def test_bad_named_mixtures_are_rejected(weights, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        validate_config({"large": {"named": {"mine": weights}}})
    assert "large.named.mine" in str(err.value)


def test_reserved_candidate_names(demo):
    with pytest.raises(ConfigError, match="reserved"):
        validate_config({"large": {"named": {"prior": {"code": 1.0}}}})


def test_candidates_packs_and_resources(demo):
    random = [f"random_{i:03d}" for i in range(demo["large"]["random_candidates"])]
    assert candidate_names(demo) == ["regmix", "prior", "uniform", "prose_heavy", *random]
    packs = proxy_packs(demo)
    assert sum(len(v) for v in packs.values()) == demo["mixtures"]["count"]
    assert all(len(v) <= demo["proxy"]["pack_size"] for v in packs.values())
    assert "gpu" not in rule_resources(demo, "proxy")
    gpu = validate_config({"proxy": {"resources": {"gpus": 1, "gpu_model": "a100"}}})
    assert rule_resources(gpu, "proxy")["gpu"] == 1
    assert rule_resources(gpu, "proxy")["gpu_model"] == "a100"


def test_stage_settings_hold_only_what_a_stage_reads(demo):
    changed = copy.deepcopy(demo)
    changed["proxy"]["lr"] *= 2
    assert stage_settings(changed, "proxy") != stage_settings(demo, "proxy")
    for stage in ("tokenize", "mixtures", "large", "regression"):
        assert stage_settings(changed, stage) == stage_settings(demo, stage)


def test_a_new_named_mixture_leaves_other_candidates_alone(demo):
    changed = copy.deepcopy(demo)
    changed["large"]["named"]["other"] = {d: 1 / 6 for d in demo["domains"]}
    for name in ("regmix", "prior", "uniform", "prose_heavy"):
        assert candidate_settings(changed, name) == candidate_settings(demo, name)


@pytest.mark.parametrize("command", ["mixtures", "summary", "plots", "train-proxies"])
def test_bad_settings_json_is_a_configuration_error_naming_it(command, tmp_path, capsys):
    from regmix.cli import main

    args = {
        "mixtures": ["--prior", "p.yaml", "--out", str(tmp_path / "m")],
        "summary": ["--db", "x.duckdb", "--out-md", str(tmp_path / "s.md"), "--out-csv", str(tmp_path / "s.csv")],
        "plots": ["--db", "x.duckdb", "--out-dir", str(tmp_path / "f")],
        "train-proxies": ["--data", "d", "--tokenizer", "t", "--mixtures", "m.yaml", "--out-dirs", str(tmp_path / "o")],
    }
    assert main([command, "--settings", "{not json", *args[command]]) == 2
    assert "--settings is not valid JSON" in capsys.readouterr().err
    assert main([command, "--settings", "[1, 2]", *args[command]]) == 2
    assert "--settings must be a JSON object" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
