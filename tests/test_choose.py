import json

import numpy as np
import pandas as pd
import pytest
import yaml

from regmix.choose import choose, simulate_top_k
from regmix.cli import main as regmix_main
from regmix.mixtures import stage_rng
from regmix.regression import fit_model, save_model

DOMAINS = ["code", "docs", "legal", "math"]
PRIOR = {"code": 0.4, "docs": 0.3, "legal": 0.2, "math": 0.1}
COEF = np.array([0.5, -1.0, 0.2, 0.8])  # loss falls with 'docs'


@pytest.fixture(scope="module")
def linear_model():
    w = np.random.default_rng(0).dirichlet(np.ones(4), 40)
    mixtures = pd.DataFrame(w, columns=DOMAINS)
    losses = pd.DataFrame({"docs": 3.0 + w @ COEF})
    return fit_model(mixtures, losses, "docs", "linear", folds=5, seed=0)


def test_top_k_are_the_lowest_predictions_whatever_the_chunk(linear_model):
    prior = np.array(list(PRIOR.values()))
    rows, preds, feasible = simulate_top_k(linear_model, prior, 5000, 20, seed=1, chunk_size=5000)
    assert feasible == 5000
    everything = stage_rng(1, "choose").dirichlet(prior, 5000)
    all_preds = 3.0 + everything @ COEF
    np.testing.assert_allclose(np.sort(all_preds)[:20], preds, atol=1e-9)
    chunked_rows, chunked_preds, _ = simulate_top_k(linear_model, prior, 5000, 20, seed=1, chunk_size=700)
    np.testing.assert_array_equal(rows, chunked_rows)


def test_chosen_is_the_top_k_average_and_favours_the_helpful_domain(linear_model):
    result, rows, preds = choose(linear_model, PRIOR, 3000, 50, seed=0)
    np.testing.assert_allclose(list(result["weights"].values()), rows.mean(axis=0), atol=1e-9)
    assert result["weights"]["docs"] > 0.9
    assert result["predicted_target"] == pytest.approx(3.0 + rows.mean(axis=0) @ COEF, abs=1e-6)
    assert (preds[:-1] <= preds[1:]).all()


def test_epoch_cap_is_respected_and_reported(linear_model):
    counts = {"code": 10_000, "docs": 1_000, "legal": 10_000, "math": 10_000}
    # 1000 docs tokens x 2 epochs / 10,000 train tokens: docs may take at most 0.2
    result, rows, _ = choose(
        linear_model, PRIOR, 3000, 50, seed=0, max_epochs=2, token_counts=counts, train_tokens=10_000
    )
    assert rows[:, 1].max() <= 0.2 + 1e-9
    assert 0.1 < result["weights"]["docs"] <= 0.2 + 1e-9
    assert result["epochs"]["docs"] == pytest.approx(result["weights"]["docs"] * 10)
    assert max(result["epochs"].values()) <= 2 + 1e-6
    assert result["feasible_samples"] < 3000


def test_no_feasible_candidate_is_an_error(linear_model):
    counts = {d: 1 for d in DOMAINS}
    with pytest.raises(ValueError, match="feasible"):
        choose(linear_model, PRIOR, 500, 10, seed=0, max_epochs=1, token_counts=counts, train_tokens=1000)


def test_cli_is_byte_identical_and_writes_plot_and_topk(tmp_path, linear_model):
    model_dir = tmp_path / "model"
    save_model(linear_model, model_dir)
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    (tmp_path / "counts.json").write_text(json.dumps({d: {"train": 5000, "valid": 100} for d in DOMAINS}))
    (tmp_path / "named.yaml").write_text(
        yaml.safe_dump({"name": "x", "weights": {"code": 0.25, "docs": 0.25, "legal": 0.25, "math": 0.25}})
    )
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        rc = regmix_main(
            [
                "choose",
                "--model",
                str(model_dir),
                "--prior",
                str(tmp_path / "prior.yaml"),
                "--samples",
                "4000",
                "--top-k",
                "30",
                "--out",
                str(out / "regmix.yaml"),
                "--max-epochs",
                "3",
                "--tokens-available",
                str(tmp_path / "counts.json"),
                "--train-tokens",
                "10000",
                "--seed",
                "5",
                "--plot",
                str(out / "weights.png"),
                "--topk-out",
                str(out / "topk.csv"),
                "--baselines",
                str(tmp_path / "named.yaml"),
            ]
        )
        assert rc == 0
        outputs.append(out)
    a, b = outputs
    assert (a / "regmix.yaml").read_bytes() == (b / "regmix.yaml").read_bytes()
    assert (a / "topk.csv").read_bytes() == (b / "topk.csv").read_bytes()
    chosen = yaml.safe_load((a / "regmix.yaml").read_text())
    assert set(chosen) >= {"weights", "predicted_target", "epochs", "top_k", "samples", "seed", "provenance"}
    assert chosen["weights"]["docs"] <= 1.5 + 1e-9 and max(chosen["epochs"].values()) <= 3 + 1e-6
    topk = pd.read_csv(a / "topk.csv")
    assert len(topk) == 30 and topk["predicted"].is_monotonic_increasing
    assert (a / "weights.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_prior_must_name_the_model_domains(tmp_path, linear_model, capsys):
    save_model(linear_model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump({"code": 0.5, "docs": 0.5, "legal": 0.0}))
    rc = regmix_main(
        [
            "choose",
            "--model",
            str(tmp_path / "model"),
            "--prior",
            str(tmp_path / "prior.yaml"),
            "--samples",
            "100",
            "--top-k",
            "5",
            "--out",
            str(tmp_path / "c.yaml"),
        ]
    )
    assert rc != 0 and "'math'" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()


def test_cli_takes_epoch_cap_and_run_size_from_settings(tmp_path, linear_model):
    save_model(linear_model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    (tmp_path / "counts.json").write_text(json.dumps({d: {"train": 2000, "valid": 10} for d in DOMAINS}))
    settings = {
        "seed": 2,
        "domains": DOMAINS,
        "choose": {"samples": 2000, "top_k": 20, "chunk_size": 300},
        "max_epochs": 3,
        "large_train_tokens": 10_000,
    }  # every domain at most 0.6 of the run
    rc = regmix_main(
        [
            "choose",
            "--model",
            str(tmp_path / "model"),
            "--prior",
            str(tmp_path / "prior.yaml"),
            "--tokens-available",
            str(tmp_path / "counts.json"),
            "--settings",
            json.dumps(settings),
            "--out",
            str(tmp_path / "c.yaml"),
        ]
    )
    assert rc == 0
    chosen = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert (chosen["samples"], chosen["top_k"], chosen["seed"], chosen["max_epochs"]) == (2000, 20, 2, 3)
    assert 0.5 < max(chosen["weights"].values()) <= 0.6 + 1e-9  # 'docs' pushed up to its cap
    assert chosen["epochs"]["docs"] == pytest.approx(chosen["weights"]["docs"] * 5)


def _choose_cli(tmp_path, model, choose_section, out):
    save_model(model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    (tmp_path / "counts.json").write_text(json.dumps({d: {"train": 2000, "valid": 10} for d in DOMAINS}))
    settings = {"seed": 2, "domains": DOMAINS, "choose": choose_section, "max_epochs": 3, "large_train_tokens": 10_000}
    return regmix_main(
        [
            "choose",
            "--model",
            str(tmp_path / "model"),
            "--prior",
            str(tmp_path / "prior.yaml"),
            "--tokens-available",
            str(tmp_path / "counts.json"),
            "--settings",
            json.dumps(settings),
            "--out",
            str(out),
        ]
    )


def test_cli_optimize_rule_reports_both_choices_with_their_trust(tmp_path, linear_model):
    section = {"samples": 2000, "top_k": 20, "rule": "optimize", "kl_weight": 0.0, "bounds": {"math": [0.05, 0.5]}}
    outs = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    for out in outs:
        assert _choose_cli(tmp_path, linear_model, section, out) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    chosen = yaml.safe_load(outs[0].read_text())
    assert chosen["rule"] == "optimize" and set(chosen["choices"]) == {"topk", "optimize"}
    for report in chosen["choices"].values():
        assert {"predicted_target", "predicted_std", "support_distance", "nearest_proxy_row", "beyond_range"} <= set(
            report
        )
        assert report["predicted_std"] >= 0  # an exact linear law: the fold refits agree
        assert report["weights"]["math"] >= 0.05 - 1e-9
        assert max(report["weights"].values()) <= 0.6 + 1e-9  # the epoch cap of every domain
    opt = chosen["choices"]["optimize"]
    # linear law, docs best then legal: docs at its cap 0.6, math at its lower bound, the rest to legal
    assert opt["weights"]["docs"] == pytest.approx(0.6, abs=1e-6)
    assert opt["weights"]["math"] == pytest.approx(0.05, abs=1e-6)
    assert opt["weights"]["legal"] == pytest.approx(0.35, abs=1e-6)
    assert (
        chosen["weights"] == opt["weights"] and opt["predicted_target"] <= chosen["choices"]["topk"]["predicted_target"]
    )
    assert chosen["provenance"]["settings"]["rule"] == "optimize"


def test_cli_bad_bounds_are_refused_naming_the_key(tmp_path, linear_model, capsys):
    section = {"samples": 200, "top_k": 5, "rule": "optimize", "bounds": {"atlantis": [0.0, 0.5]}}
    assert _choose_cli(tmp_path, linear_model, section, tmp_path / "c.yaml") != 0
    err = capsys.readouterr().err
    assert "choose.bounds" in err and "atlantis" in err
    assert not (tmp_path / "c.yaml").exists()
