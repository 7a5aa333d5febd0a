"""Targets: one set, the mean over domains, or a weighted objective, resolved in one place."""

import numpy as np
import pandas as pd
import pytest

from regmix.config import ConfigError, validate_config
from regmix.targets import TargetError, parse_target

SETS = ["code", "docs", "legal"]


def test_a_set_name_is_that_loss():
    target = parse_target("docs", SETS)
    assert target.value({"code": 1.0, "docs": 2.0, "legal": 3.0}) == 2.0


def test_mean_averages_every_set():
    target = parse_target("mean", SETS)
    assert target.value({"code": 1.0, "docs": 2.0, "legal": 6.0}) == pytest.approx(3.0)


def test_a_column_called_mean_is_that_column():
    # RegMix's CSVs and the pipeline's losses.csv carry a precomputed `mean` column
    frame = pd.DataFrame({"a": [1.0, 3.0], "mean": [9.0, 9.0]})
    assert parse_target("mean", list(frame.columns)).values(frame).tolist() == [9.0, 9.0]


def test_weights_are_normalised():
    target = parse_target({"code": 1, "legal": 3}, SETS)
    assert dict(target.weights) == {"code": 0.25, "legal": 0.75}
    frame = pd.DataFrame({"code": [2.0, 4.0], "docs": [0.0, 0.0], "legal": [6.0, 8.0]})
    np.testing.assert_allclose(target.values(frame), [5.0, 7.0])
    assert "code" in target.label and "legal" in target.label


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("nope", "'nope'"),
        ({"nope": 1.0}, "['nope']"),
        ({"code": 0}, "regression.target.code"),
        ({"code": -1.0}, "regression.target.code"),
        ({"code": float("nan")}, "regression.target.code"),
        ({"code": True}, "regression.target.code"),
        ({}, "regression.target"),
    ],
)
def test_bad_targets_name_the_key(spec, fragment):
    with pytest.raises(TargetError, match="regression.target") as err:
        parse_target(spec, SETS)
    assert fragment in str(err.value)


def test_missing_loss_names_the_set_and_row():
    target = parse_target({"code": 1, "docs": 1}, SETS)
    with pytest.raises(TargetError, match="docs"):
        target.value({"code": 1.0})
    frame = pd.DataFrame({"code": [1.0, float("nan")], "docs": [1.0, 1.0]}, index=["m0", "m1"])
    with pytest.raises(TargetError, match="'code'.*'m1'"):
        target.values(frame)


def test_config_accepts_a_weighted_target_and_refuses_an_unknown_set():
    domains = validate_config({})["domains"]
    assert validate_config({"regression": {"target": {domains[0]: 0.5, domains[1]: 0.5}}})
    with pytest.raises(ConfigError, match="poetry"):
        validate_config({"regression": {"target": {domains[0]: 1.0, "poetry": 1.0}}})
    with pytest.raises(ConfigError, match="regression.target"):
        validate_config({"regression": {"target": {domains[0]: -1.0}}})
