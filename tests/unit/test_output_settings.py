"""Typed settings of the output stages (regmix.settings.outputs), read from stage_settings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from regmix.cli import main as cli_main
from regmix.config import REPO_DIR, load_config, model_architecture, stage_settings
from regmix.settings import ConfigError
from regmix.settings.outputs import (
    ArchiveSettings,
    EvalTasksSettings,
    EvaluateSettings,
    ResultsSettings,
)


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(REPO_DIR / "config" / "config.yaml")


def parse(settings: dict, stage: str):
    if stage == "eval_tasks":
        return EvalTasksSettings.from_json(settings)
    if stage == "evaluate":
        return EvaluateSettings.from_json(settings)
    if stage == "archive":
        return ArchiveSettings.from_json(settings)
    return ResultsSettings.from_json(settings, stage)


def parsed(config: dict, stage: str):
    return parse(stage_settings(config, stage), stage)


STAGES = ("eval_tasks", "evaluate", "collect", "summary", "plots", "archive")


@pytest.mark.parametrize("stage", STAGES)
def test_every_output_stage_reads_its_settings_and_keeps_the_json(config, stage):
    typed = parsed(config, stage)
    assert typed.seed == config["seed"]
    # the JSON as the rule passed it is the outputs' provenance record
    assert typed.raw == stage_settings(config, stage)


def test_the_typed_values_are_the_configs(config):
    tasks = parsed(config, "eval_tasks")
    assert tasks.tasks.mc_choices == config["evaluate"]["mc_choices"]
    assert tasks.window == model_architecture(config["large"]["model"])["seq_len"]
    ev = parsed(config, "evaluate").evaluate
    assert ev.num_fewshot == tuple(config["evaluate"]["num_fewshot"]) and ev.suite == config["evaluate"]["suite"]
    results = parsed(config, "collect")
    assert results.domains == tuple(config["domains"])
    assert results.regression.target == config["regression"]["target"]
    assert results.regression.swarms == tuple(e["name"] for e in config["regression"]["extra_swarms"])
    archive = parsed(config, "archive")
    assert archive.archive.include_checkpoints is config["archive"]["include_checkpoints"]
    assert archive.container == config["container"]


@pytest.mark.parametrize(
    ("stage", "drop", "named"),
    [
        ("eval_tasks", "window", "'window'"),
        ("eval_tasks", "evaluate.mc_choices", "mc_choices"),
        ("evaluate", "evaluate", "'evaluate'"),
        ("evaluate", "evaluate.suite", "suite"),
        ("collect", "mixture_ids", "'mixture_ids'"),
        ("summary", "regression.target", "target"),
        ("plots", "candidates", "'candidates'"),
        ("archive", "archive.include_checkpoints", "include_checkpoints"),
        ("archive", "container", "'container'"),
    ],
)
def test_a_missing_key_is_named(config, stage, drop, named):
    settings = json.loads(json.dumps(stage_settings(config, stage)))
    *parents, key = drop.split(".")
    section = settings
    for parent in parents:
        section = section[parent]
    del section[key]
    with pytest.raises(ConfigError, match=named):
        parse(settings, stage)


@pytest.mark.parametrize("stage", STAGES)
def test_settings_objects_are_frozen(config, stage):
    typed = parsed(config, stage)
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.seed = 1
    # and so is each nested section
    section = next(v for f in dataclasses.fields(typed) if dataclasses.is_dataclass(v := getattr(typed, f.name)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(section, dataclasses.fields(section)[0].name, None)


def test_a_command_names_the_missing_key_and_fails(config, tmp_path, capsys):
    settings = stage_settings(config, "summary")
    del settings["candidates"]
    code = cli_main(
        [
            "summary",
            "--settings",
            json.dumps(settings),
            "--db",
            str(tmp_path / "db.duckdb"),
            "--out-md",
            str(tmp_path / "s.md"),
            "--out-csv",
            str(tmp_path / "s.csv"),
        ]
    )
    assert code != 0 and "'candidates'" in capsys.readouterr().err
    assert not (tmp_path / "s.md").exists()
