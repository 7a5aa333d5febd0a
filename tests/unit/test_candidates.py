import json

import numpy as np
import pytest
import yaml

from regmix.cli import main as regmix_main
from regmix.config import stage_settings, validate_config

DOMAINS = ["code", "docstrings", "docs", "structured", "legal", "arithmetic"]


@pytest.fixture()
def setup(tmp_path):
    config = validate_config(
        {
            "domains": DOMAINS,
            "large": {
                "random_candidates": 2,
                "named": {
                    "prose": {
                        "code": 0.1,
                        "docstrings": 0.2,
                        "docs": 0.4,
                        "structured": 0.1,
                        "legal": 0.1,
                        "arithmetic": 0.1,
                    }
                },
            },
        }
    )
    settings = stage_settings(config, "candidates")
    prior = {d: w for d, w in zip(DOMAINS, [0.3, 0.1, 0.2, 0.2, 0.15, 0.05], strict=False)}
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(prior))
    (tmp_path / "chosen.yaml").write_text(
        yaml.safe_dump({"weights": {d: 1 / 6 for d in DOMAINS}, "predicted_target": 3.0})
    )
    counts = {d: {"train": 10**9, "valid": 10**6} for d in DOMAINS}
    counts["arithmetic"]["train"] = settings[
        "large_train_tokens"
    ]  # arithmetic: at most 15 epochs -> weight <= 15 ... capped at 1
    (tmp_path / "counts.json").write_text(json.dumps(counts))

    def run(name):
        out = tmp_path / "candidates" / f"{name}.yaml"
        rc = regmix_main(
            [
                "candidate",
                "--settings",
                json.dumps(settings),
                "--name",
                name,
                "--prior",
                str(tmp_path / "prior.yaml"),
                "--chosen",
                str(tmp_path / "chosen.yaml"),
                "--token-counts",
                str(tmp_path / "counts.json"),
                "--out",
                str(out),
            ]
        )
        return rc, (yaml.safe_load(out.read_text()) if out.exists() else None)

    return run, prior


def test_builtin_and_named_candidates(setup):
    run, prior = setup
    for name, expected in [
        ("prior", prior),
        ("uniform", {d: 1 / 6 for d in DOMAINS}),
        ("regmix", {d: 1 / 6 for d in DOMAINS}),
        ("prose", {"code": 0.1, "docstrings": 0.2, "docs": 0.4, "structured": 0.1, "legal": 0.1, "arithmetic": 0.1}),
    ]:
        rc, doc = run(name)
        assert rc == 0 and doc["name"] == name and doc["source"]
        assert list(doc["weights"]) == DOMAINS
        assert [doc["weights"][d] for d in DOMAINS] == pytest.approx([expected[d] for d in DOMAINS])


def test_random_candidates_are_seeded_distinct_synthesis_draws(setup):
    run, _ = setup
    _, first = run("random_000")
    _, again = run("random_000")
    _, second = run("random_001")
    assert first == again
    assert first["weights"] != second["weights"]
    w = np.array(list(first["weights"].values()))
    assert w.sum() == pytest.approx(1.0) and not ((w > 0) & (w < 2e-4)).any()


def test_unknown_candidate_fails(setup, capsys):
    run, _ = setup
    rc, doc = run("mystery")
    assert rc != 0 and doc is None and "'mystery'" in capsys.readouterr().err
