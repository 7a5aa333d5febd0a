"""Typed settings of the choice stages (regmix.settings.choice): built from what the
workflow emits, missing keys named, frozen, and the standalone routes equal to --settings."""

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from regmix.choose import choose, choose_settings
from regmix.cli import main as regmix_main
from regmix.config import candidate_settings, stage_settings, swarm_settings, validate_config
from regmix.regression import fit_model, regression_defaults, save_model
from regmix.regression.cli import fit_settings
from regmix.settings import ConfigError
from regmix.settings.choice import (
    CandidateSettings,
    ChooseSettings,
    MixturesSettings,
    RegressionSettings,
    SwarmImportSettings,
)

SWARM = {"name": "old", "mixtures": "m.csv", "losses": "l.csv"}


@pytest.fixture(scope="module")
def config():
    return validate_config({"regression": {"extra_swarms": [SWARM], "targets": ["docs"]}})


def _built(config):
    return {
        "mixtures": MixturesSettings.from_json(stage_settings(config, "mixtures")),
        "regression": RegressionSettings.from_json(stage_settings(config, "regression")),
        "choose": ChooseSettings.from_json(stage_settings(config, "choose")),
        "candidates": CandidateSettings.from_json(stage_settings(config, "candidates")),
        "import_swarm": SwarmImportSettings.from_json(swarm_settings(config, "old")),
    }


def test_the_workflow_settings_build_each_stage_object(config):
    built = _built(config)
    assert built["mixtures"].mixtures.count == config["mixtures"]["count"]
    assert built["regression"].target == config["regression"]["target"] and built["regression"].targets == ("docs",)
    assert built["regression"].extra_swarms[0].sum_tolerance == 0.01  # the schema's default, filled by the validator
    assert built["choose"].choose.top_k == config["choose"]["top_k"]
    assert built["choose"].max_epochs == config["mixtures"]["max_epochs"]
    assert built["candidates"].synthesis == built["mixtures"]  # a random candidate draws as the proxies do
    assert built["import_swarm"].swarm.name == "old" and built["import_swarm"].domains == tuple(config["domains"])
    assert CandidateSettings.from_json(candidate_settings(config, "prior")).synthesis is None


@pytest.mark.parametrize(
    "stage, key",
    [
        ("mixtures", "large_train_tokens"),
        ("regression", "regression"),
        ("choose", "max_epochs"),
        ("choose", "seed"),
        ("candidates", "named"),
        ("import_swarm", "swarm"),
    ],
)
def test_a_missing_settings_key_is_named(config, stage, key):
    settings = swarm_settings(config, "old") if stage == "import_swarm" else stage_settings(config, stage)
    settings = copy.deepcopy(settings)  # the sections are the config's own
    del settings[key]
    cls = {
        "mixtures": MixturesSettings,
        "regression": RegressionSettings,
        "choose": ChooseSettings,
        "candidates": CandidateSettings,
        "import_swarm": SwarmImportSettings,
    }[stage]
    with pytest.raises(ConfigError, match=f"missing key '{key}'"):
        cls.from_json(settings)


@pytest.mark.parametrize(
    "stage, section, key",
    [
        ("mixtures", "mixtures", "dedup_tolerance"),
        ("regression", "regression", "cv_folds"),
        ("choose", "choose", "trust_quantile"),
    ],
)
def test_a_missing_section_key_is_named(config, stage, section, key):
    settings = copy.deepcopy(stage_settings(config, stage))  # the sections are the config's own
    del settings[section][key]
    cls = {"mixtures": MixturesSettings, "regression": RegressionSettings, "choose": ChooseSettings}[stage]
    with pytest.raises(ConfigError, match=rf"'{section}': missing \['{key}'\]"):
        cls.from_json(settings)


def test_a_random_candidate_without_synthesis_settings_is_refused(tmp_path, capsys, config):
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump({d: 1 / len(config["domains"]) for d in config["domains"]}))
    settings = json.dumps(candidate_settings(config, "uniform"))  # no mixtures: not a random candidate's
    argv = ["candidate", "--settings", settings, "--prior", str(tmp_path / "prior.yaml")]
    assert regmix_main([*argv, "--name", "random_000", "--out", str(tmp_path / "r.yaml")]) == 2
    assert "'mixtures'" in capsys.readouterr().err and not (tmp_path / "r.yaml").exists()


def test_every_settings_object_is_frozen(config):
    for settings in _built(config).values():
        field = dataclasses.fields(settings)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(settings, field, None)
        for value in vars(settings).values():  # and so is each nested section
            if dataclasses.is_dataclass(value):
                with pytest.raises(dataclasses.FrozenInstanceError):
                    setattr(value, dataclasses.fields(value)[0].name, None)


# ------------------------------------------------------------------ standalone routes


def _swarm_csvs(tmp_path, domains=("code", "docs", "legal"), n=12, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(len(domains)), n)
    mixtures = pd.DataFrame(w, columns=list(domains), index=pd.Index(range(n), name="index"))
    losses = pd.DataFrame({d: 3.0 - w[:, i] for i, d in enumerate(domains)}, index=mixtures.index)
    mix_csv, loss_csv = tmp_path / "mixtures.csv", tmp_path / "losses.csv"
    mixtures.to_csv(mix_csv)
    losses.to_csv(loss_csv)
    return mix_csv, loss_csv


def test_fit_flags_build_the_settings_object_the_workflow_passes(tmp_path):
    section = {**regression_defaults(), "target": "docs", "regressor": "linear"}
    via_json = json.dumps({"seed": 0, "domains": ["code", "docs", "legal"], "regression": section})
    assert fit_settings(None, "docs", "linear") == fit_settings(via_json)
    mix_csv, loss_csv = _swarm_csvs(tmp_path)
    base = ["fit", "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main([*base, "--target", "docs", "--regressor", "linear", "--out", str(tmp_path / "flags")]) == 0
    assert regmix_main([*base, "--settings", via_json, "--out", str(tmp_path / "settings")]) == 0
    for name in ("cv.json", "cv_predictions.csv", "settings.json"):
        assert (tmp_path / "flags" / name).read_bytes() == (tmp_path / "settings" / name).read_bytes(), name


def test_fit_refuses_config_flags_next_to_settings(tmp_path):
    mix_csv, loss_csv = _swarm_csvs(tmp_path)
    settings = json.dumps({"regression": regression_defaults()})
    argv = ["fit", "--mixtures", str(mix_csv), "--losses", str(loss_csv), "--settings", settings]
    with pytest.raises(SystemExit):  # one place for each value: the settings
        regmix_main([*argv, "--target", "docs", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_import_swarm_flags_give_the_output_the_settings_give(tmp_path, config):
    mix_csv, loss_csv = _swarm_csvs(tmp_path, ("legacy", "docs"))
    base = ["import-swarm", "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    domains = config["domains"]
    flags = ["--name", "old", "--domains", *domains, "--rename", "legacy=code", "--sum-tolerance", "0.02"]
    assert regmix_main([*base, *flags, "--out", str(tmp_path / "flags")]) == 0
    entry = {**SWARM, "rename": {"legacy": "code"}, "sum_tolerance": 0.02}
    settings = json.dumps({"seed": 0, "domains": domains, "swarm": entry})
    assert regmix_main([*base, "--settings", settings, "--out", str(tmp_path / "settings")]) == 0
    for name in ("mixtures.csv", "losses.csv", "source.json"):
        assert (tmp_path / "flags" / name).read_bytes() == (tmp_path / "settings" / name).read_bytes(), name
    with pytest.raises(SystemExit):
        regmix_main([*base, "--settings", settings, "--name", "other", "--out", str(tmp_path / "both")])
    assert not (tmp_path / "both").exists()


def test_choose_in_python_equals_the_command(tmp_path):
    config = validate_config({"choose": {"samples": 3000, "top_k": 20, "rule": "penalized"}})
    domains = config["domains"]
    w = np.random.default_rng(0).dirichlet(np.ones(len(domains)), 30)
    losses = pd.DataFrame({"docs": 3.0 - w[:, domains.index("docs")]})
    model = fit_model(pd.DataFrame(w, columns=domains), losses, "docs", "linear", folds=5, seed=0)
    save_model(model, tmp_path / "model")
    prior = {d: (i + 1) / 21 for i, d in enumerate(domains)}
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(prior))
    settings = stage_settings(config, "choose")
    argv = ["choose", "--settings", json.dumps(settings), "--model", str(tmp_path / "model")]
    assert regmix_main([*argv, "--prior", str(tmp_path / "prior.yaml"), "--out", str(tmp_path / "c.yaml")]) == 0
    written = yaml.safe_load((tmp_path / "c.yaml").read_text())
    python = choose_settings(
        3000, 20, seed=config["seed"], max_epochs=settings["max_epochs"], rule="penalized",
        large_train_tokens=settings["large_train_tokens"],
    )  # fmt: skip
    assert python == ChooseSettings.from_json(settings)
    result, _, _ = choose(model, prior, python)
    assert written.pop("provenance")["settings"] == python.provenance()
    assert yaml.safe_load(yaml.safe_dump(result)) == written
