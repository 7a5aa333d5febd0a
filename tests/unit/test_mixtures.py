import json

import numpy as np
import pandas as pd
import pytest
import yaml

from regmix.cli import main as regmix_main
from regmix.config import stage_settings, validate_config
from regmix.mixtures import drop_near_duplicates, synthesize

DOMAINS = ["a", "b", "c", "d"]
PRIOR = {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05}


def settings(**mixtures):
    base = {
        "count": 40,
        "temperature": 0.5,
        "concentration_min": 0.1,
        "concentration_max": 5.0,
        "concentration_steps": 15,
        "min_weight": 0.01,
        "max_epochs": 4,
        "pool_factor": 10,
        "dedup_tolerance": 0.001,
    }
    return {"seed": 3, "domains": DOMAINS, "mixtures": {**base, **mixtures}, "large_train_tokens": 1000}


def test_rows_are_distinct_feasible_mixtures_above_min_weight():
    counts = {"a": 10_000, "b": 10_000, "c": 100, "d": 50}  # c at most 0.4, d at most 0.2 of 1000 tokens x 4 epochs
    rows = synthesize(settings(), PRIOR, counts)
    assert rows.shape == (40, 4)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    assert not ((rows > 0) & (rows < 0.01)).any()
    assert rows[:, 2].max() <= 0.4 + 1e-9 and rows[:, 3].max() <= 0.2 + 1e-9
    assert rows[:, 2].max() > 0.1  # the cap binds, it does not just zero the domain
    l1 = np.abs(rows[:, None, :] - rows[None, :, :]).sum(axis=2) + np.eye(len(rows)) * 10
    assert l1.min() >= 0.001


def test_paper_rule_caps_at_max_epochs_times_prior_without_token_counts():
    rows = synthesize(settings(max_epochs=2), PRIOR, None)
    caps = np.minimum(2 * np.array(list(PRIOR.values())), 1)
    assert (rows <= caps + 1e-9).all()


def test_tempered_prior_is_the_mean_at_high_concentration():
    rows = synthesize(
        settings(
            concentration_min=500, concentration_max=500, concentration_steps=1, min_weight=0, max_epochs=100, count=200
        ),
        PRIOR,
        None,
    )
    tempered = np.sqrt(list(PRIOR.values()))
    np.testing.assert_allclose(rows.mean(axis=0), tempered / tempered.sum(), atol=0.01)


def test_seeded():
    np.testing.assert_array_equal(synthesize(settings(), PRIOR, None), synthesize(settings(), PRIOR, None))
    other = settings()
    other["seed"] = 4
    assert not np.array_equal(synthesize(other, PRIOR, None), synthesize(settings(), PRIOR, None))


def test_too_tight_cap_names_the_domain():
    # caps sum to 0.412, so no mixture is feasible; b (large share, cap 0.004) fails most often
    with pytest.raises(ValueError, match="too tight, most often for domain 'b'"):
        synthesize(settings(count=5, pool_factor=2), PRIOR, {"a": 100, "b": 1, "c": 1, "d": 1})


def test_near_duplicates_dropped():
    rows = np.array([[0.5, 0.5], [0.5004, 0.4996], [0.6, 0.4]])
    np.testing.assert_array_equal(drop_near_duplicates(rows, 0.001), rows[[0, 2]])


def test_cli_writes_yaml_per_mixture_and_csv(tmp_path):
    config = validate_config(
        {"domains": ["code", "docstrings", "docs", "structured", "legal", "arithmetic"], "mixtures": {"count": 12}}
    )
    s = stage_settings(config, "mixtures")
    domains = s["domains"]
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump({d: 1 / 6 for d in domains}))
    (tmp_path / "counts.json").write_text(json.dumps({d: {"train": 10**7, "valid": 10**5} for d in domains}))
    out = tmp_path / "mix"
    rc = regmix_main(
        [
            "mixtures",
            "--settings",
            json.dumps(s),
            "--prior",
            str(tmp_path / "prior.yaml"),
            "--token-counts",
            str(tmp_path / "counts.json"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "mixtures.csv")
    assert list(table.columns) == ["index", *domains] and list(table["index"]) == list(range(12))
    eleventh = yaml.safe_load((out / "mix_0011.yaml").read_text())
    assert eleventh["mix_id"] == "mix_0011"
    assert [eleventh["weights"][d] for d in domains] == pytest.approx(table.loc[11, domains].tolist())


def test_cli_prior_missing_domain_fails(tmp_path, capsys):
    s = settings()
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump({"a": 0.5, "b": 0.5, "c": 0.0}))
    rc = regmix_main(
        ["mixtures", "--settings", json.dumps(s), "--prior", str(tmp_path / "prior.yaml"), "--out", str(tmp_path / "m")]
    )
    assert rc != 0 and "'d'" in capsys.readouterr().err
    assert not (tmp_path / "m" / "mixtures.csv").exists()
