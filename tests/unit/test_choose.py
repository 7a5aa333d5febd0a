import json

import numpy as np
import pandas as pd
import pytest
import yaml

import regmix.choose as choose_module
from regmix.choose import (
    RULES,
    choose,
    choose_defaults,
    choose_settings,
    pull_inside,
    simulate,
    simulate_top_k,
    trust_radius,
)
from regmix.cli import main as regmix_main
from regmix.config import ConfigError, validate_config
from regmix.mixtures import stage_rng
from regmix.regression import fit_model, save_model

DOMAINS = ["code", "docs", "legal", "math"]
PRIOR = {"code": 0.4, "docs": 0.3, "legal": 0.2, "math": 0.1}
COEF = np.array([0.5, -1.0, 0.2, 0.8])  # loss falls with 'docs'


@pytest.fixture(scope="module")
def gp_model():
    w = np.random.default_rng(1).dirichlet(np.ones(4), 60)
    y = 3.0 - 0.3 * np.log(w[:, 1] + 0.02) + 0.1 * np.log(w[:, 0] + 0.02) + 0.5 * w[:, 3]
    return fit_model(pd.DataFrame(w, columns=DOMAINS), pd.DataFrame({"docs": y}), "docs", "gp", folds=5, seed=0)


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
    result, rows, preds = choose(linear_model, PRIOR, choose_settings(3000, 50, seed=0))
    np.testing.assert_allclose(list(result["weights"].values()), rows.mean(axis=0), atol=1e-9)
    assert result["weights"]["docs"] > 0.9
    assert result["predicted_target"] == pytest.approx(3.0 + rows.mean(axis=0) @ COEF, abs=1e-6)
    assert (preds[:-1] <= preds[1:]).all()


def test_epoch_cap_is_respected_and_reported(linear_model):
    counts = {"code": 10_000, "docs": 1_000, "legal": 10_000, "math": 10_000}
    # 1000 docs tokens x 2 epochs / 10,000 train tokens: docs may take at most 0.2
    result, rows, _ = choose(
        linear_model, PRIOR, choose_settings(3000, 50, seed=0, max_epochs=2, large_train_tokens=10_000), counts
    )
    assert rows[:, 1].max() <= 0.2 + 1e-9
    assert 0.1 < result["weights"]["docs"] <= 0.2 + 1e-9
    assert result["epochs"]["docs"] == pytest.approx(result["weights"]["docs"] * 10)
    assert max(result["epochs"].values()) <= 2 + 1e-6
    assert result["feasible_samples"] < 3000


def test_no_feasible_candidate_is_an_error(linear_model):
    counts = {d: 1 for d in DOMAINS}
    with pytest.raises(ValueError, match="feasible"):
        choose(linear_model, PRIOR, choose_settings(500, 10, seed=0, max_epochs=1, large_train_tokens=1000), counts)


def _settings(choose_section, seed=2, max_epochs=3, large_train_tokens=10_000):
    """What stage_settings(config, 'choose') passes (the CLI's only source of settings):
    the validator fills the section's defaults."""
    return json.dumps(
        {
            "seed": seed,
            "domains": DOMAINS,
            "choose": {**choose_defaults(), **choose_section},
            "max_epochs": max_epochs,
            "large_train_tokens": large_train_tokens,
        }
    )


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
                "--settings",
                _settings({"samples": 4000, "top_k": 30}, seed=5),
                "--model",
                str(model_dir),
                "--prior",
                str(tmp_path / "prior.yaml"),
                "--out",
                str(out / "regmix.yaml"),
                "--tokens-available",
                str(tmp_path / "counts.json"),
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
    assert (chosen["samples"], chosen["top_k"], chosen["seed"]) == (4000, 30, 5)
    assert chosen["weights"]["docs"] <= 1.5 + 1e-9 and max(chosen["epochs"].values()) <= 3 + 1e-6
    topk = pd.read_csv(a / "topk.csv")
    assert len(topk) == 30 and topk["predicted"].is_monotonic_increasing
    assert (a / "weights.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_takes_settings_only(tmp_path, linear_model, capsys):
    save_model(linear_model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    base = ["choose", "--model", str(tmp_path / "model"), "--prior", str(tmp_path / "prior.yaml")]
    with pytest.raises(SystemExit):  # the per-value flags are gone: one way to set them
        regmix_main([*base, "--settings", _settings({}), "--samples", "100", "--out", str(tmp_path / "c.yaml")])
    with pytest.raises(SystemExit):  # and the settings are required
        regmix_main([*base, "--out", str(tmp_path / "c.yaml")])
    assert not (tmp_path / "c.yaml").exists()


def test_cli_refuses_an_unknown_settings_key(tmp_path, linear_model, capsys):
    save_model(linear_model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    rc = _choose_without_counts(tmp_path, _settings({"samples": 100, "top_k": 5, "trust_radius": 0.5}))
    assert rc != 0 and "trust_radius" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()


def test_cli_prior_must_name_the_model_domains(tmp_path, linear_model, capsys):
    save_model(linear_model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump({"code": 0.5, "docs": 0.5, "legal": 0.0}))
    rc = _choose_without_counts(tmp_path, _settings({"samples": 100, "top_k": 5}))
    assert rc != 0 and "'math'" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()


def test_cli_takes_epoch_cap_and_run_size_from_settings(tmp_path, linear_model):
    # every domain at most 0.6 of the run (3 epochs x 2000 / 10,000)
    section = {"samples": 2000, "top_k": 20, "chunk_size": 300}
    assert _choose_cli(tmp_path, linear_model, section, tmp_path / "c.yaml") == 0
    chosen = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert (chosen["samples"], chosen["top_k"], chosen["seed"], chosen["max_epochs"]) == (2000, 20, 2, 3)
    assert 0.5 < max(chosen["weights"].values()) <= 0.6 + 1e-9  # 'docs' pushed up to its cap
    assert chosen["epochs"]["docs"] == pytest.approx(chosen["weights"]["docs"] * 5)


def test_cli_without_token_counts_caps_by_the_prior(tmp_path, linear_model):
    # the paper's rule: max_epochs x prior share (docs 0.3 x 2 = 0.6)
    save_model(linear_model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    rc = _choose_without_counts(tmp_path, _settings({"samples": 2000, "top_k": 20}, max_epochs=2))
    assert rc == 0
    chosen = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert 0.5 < chosen["weights"]["docs"] <= 0.6 + 1e-9 and chosen["epochs"] is None


def _choose_without_counts(tmp_path, settings_json):
    """`regmix choose` on tmp_path's model/ and prior.yaml, writing c.yaml (no token counts)."""
    return regmix_main(
        [
            "choose",
            "--settings",
            settings_json,
            "--model",
            str(tmp_path / "model"),
            "--prior",
            str(tmp_path / "prior.yaml"),
            "--out",
            str(tmp_path / "c.yaml"),
        ]
    )


def _choose_cli(tmp_path, model, choose_section, out, *extra):
    save_model(model, tmp_path / "model")
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(PRIOR))
    (tmp_path / "counts.json").write_text(json.dumps({d: {"train": 2000, "valid": 10} for d in DOMAINS}))
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
            _settings(choose_section),
            "--out",
            str(out),
            *extra,
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


# ----------------------------------------------------------------------------- rules penalized, trust_region


def _feasible_draws(model, samples, seed, caps=None):
    """Every candidate the chooser draws (same generator), feasible ones only, in draw order."""
    rows = stage_rng(seed, "choose").dirichlet(np.array(list(PRIOR.values())), samples)
    return rows if caps is None else rows[(rows <= caps * (1 + 1e-9)).all(axis=1)]


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_respects_the_epoch_caps(gp_model, rule):
    counts = {"code": 10_000, "docs": 1_000, "legal": 10_000, "math": 3_000}  # docs <= 0.2, math <= 0.6
    result, rows, _ = choose(
        gp_model, PRIOR, choose_settings(3000, 20, seed=0, max_epochs=2, rule=rule, large_train_tokens=10_000), counts
    )
    caps = np.array([1.0, 0.2, 1.0, 0.6])
    assert (rows <= caps + 1e-9).all()
    assert set(result["choices"]) == {"topk"} | {rule}
    for name, report in result["choices"].items():
        w = np.array([report["weights"][d] for d in DOMAINS])
        assert abs(w.sum() - 1) < 1e-8 and (w >= -1e-12).all() and (w <= caps + 1e-9).all(), name
    assert max(result["epochs"].values()) <= 2 + 1e-6


def test_penalized_with_weight_zero_is_the_plain_top_k(gp_model):
    plain, plain_rows, plain_preds = choose(gp_model, PRIOR, choose_settings(4000, 25, seed=3, chunk_size=900))
    zero, zero_rows, zero_preds = choose(
        gp_model, PRIOR, choose_settings(4000, 25, seed=3, chunk_size=900, rule="penalized", uncertainty_weight=0.0)
    )
    np.testing.assert_array_equal(plain_rows, zero_rows)
    np.testing.assert_array_equal(plain_preds, zero_preds)
    assert zero["weights"] == plain["weights"] == zero["choices"]["penalized"]["weights"]
    assert zero["predicted_target"] == plain["predicted_target"]


def test_penalized_top_k_is_the_brute_force_top_k_of_its_score(gp_model):
    weight = 3.0
    draws = _feasible_draws(gp_model, 3000, 4)
    score = gp_model.predict_weights(draws) + weight * gp_model.predict_std_weights(draws)
    expected = draws[np.lexsort((np.arange(len(draws)), score))[:15]]
    for chunk in (3000, 700):  # computing the std lazily loses no candidate, whatever the chunk
        _, rows, _ = choose(
            gp_model,
            PRIOR,
            choose_settings(3000, 15, seed=4, chunk_size=chunk, rule="penalized", uncertainty_weight=weight),
        )
        np.testing.assert_allclose(rows, expected, atol=1e-12)
    result, _, _ = choose(
        gp_model, PRIOR, choose_settings(3000, 15, seed=4, rule="penalized", uncertainty_weight=weight)
    )
    pen, top = result["choices"]["penalized"], result["choices"]["topk"]
    # the trade-off, as reported: lower std bought with a higher prediction (or no change at all)
    assert pen["predicted_std"] <= top["predicted_std"] + 1e-9
    assert pen["predicted_target"] >= top["predicted_target"] - 1e-9
    assert pen["penalized_score"] <= top["penalized_score"] + 0.05 * weight * top["predicted_std"]
    assert pen["uncertainty_weight"] == weight and result["weights"] == pen["weights"]


@pytest.mark.parametrize("cells", [choose_module.SUPPORT_CELLS, 50])  # one block, and blocks of one row
def test_trust_radius_is_the_quantile_of_the_swarms_own_nearest_neighbour_distances(linear_model, monkeypatch, cells):
    monkeypatch.setattr(choose_module, "SUPPORT_CELLS", cells)
    T = linear_model.swarm
    distances = np.linalg.norm(T[:, None, :] - T[None, :, :], axis=2)
    np.fill_diagonal(distances, np.inf)
    for q in (0.5, 0.9, 1.0):
        assert trust_radius(linear_model, q) == pytest.approx(np.quantile(distances.min(axis=1), q), abs=1e-9)
    rows = stage_rng(0, "x").dirichlet(np.ones(4), 300)
    expected = np.linalg.norm(rows[:, None, :] - T[None, :, :], axis=2).min(axis=1)
    np.testing.assert_allclose(choose_module.nearest_proxy_distance(linear_model, rows), expected, atol=1e-9)


def test_trust_region_choice_lies_within_the_radius_where_top_k_does_not(linear_model):
    # the linear law drives docs towards 1, where the swarm has no runs
    result, rows, _ = choose(
        linear_model, PRIOR, choose_settings(4000, 20, seed=0, rule="trust_region", trust_quantile=0.9)
    )
    radius = trust_radius(linear_model, 0.9)
    assert result["trust_radius"] == {"quantile": 0.9, "radius": pytest.approx(radius, abs=1e-8)}
    tr, top = result["choices"]["trust_region"], result["choices"]["topk"]
    for report in (tr, top):
        w = np.array([report["weights"][d] for d in DOMAINS])
        assert report["support_distance"] == pytest.approx(
            np.linalg.norm(linear_model.swarm - w, axis=1).min(), abs=1e-7
        )
    assert top["support_distance"] > radius and top["within_trust_radius"] is False
    assert tr["support_distance"] <= radius + 1e-8 and tr["within_trust_radius"] is True
    assert result["weights"] == tr["weights"] and tr["predicted_target"] >= top["predicted_target"]
    # its top k are the brute-force top k among the draws within the radius
    draws = _feasible_draws(linear_model, 4000, 0)
    inside = draws[np.linalg.norm(draws[:, None, :] - linear_model.swarm[None], axis=2).min(axis=1) <= radius]
    pred = linear_model.predict_weights(inside)
    np.testing.assert_allclose(rows, inside[np.lexsort((np.arange(len(inside)), pred))[:20]], atol=1e-12)


def test_an_average_outside_the_trust_region_is_pulled_inside(linear_model):
    import copy

    model = copy.copy(linear_model)
    model.swarm = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])  # two far proxies: a non-convex region
    mean, best = np.array([0.5, 0.5, 0, 0]), np.array([0.95, 0.05, 0, 0])
    point, share = pull_inside(model, mean, best, radius=0.1)
    assert 0 < share <= 1 and np.linalg.norm(model.swarm - point, axis=1).min() <= 0.1 + 1e-9
    np.testing.assert_allclose(point, (1 - share) * mean + share * best)
    assert pull_inside(model, best, best, 0.1)[1] == 0.0  # already inside: unchanged


def test_too_few_candidates_in_the_trust_region_is_an_error(linear_model):
    with pytest.raises(ValueError, match="trust radius"):
        choose(linear_model, PRIOR, choose_settings(300, 200, seed=0, rule="trust_region", trust_quantile=0.01))


def test_one_pass_gives_the_plain_and_the_restricted_top_k(gp_model):
    prior = np.array(list(PRIOR.values()))
    plain, restricted, feasible = simulate(gp_model, prior, 2000, 10, 0, uncertainty_weight=1.0)
    rows, preds, _ = simulate_top_k(gp_model, prior, 2000, 10, 0)
    np.testing.assert_array_equal(plain.rows, rows)
    assert feasible == 2000 and restricted.seen <= 2000 and (np.diff(restricted.score) >= 0).all()


def test_cli_trust_region_reports_both_choices_and_plots_them(tmp_path, linear_model):
    section = {"samples": 3000, "top_k": 20, "rule": "trust_region", "trust_quantile": 0.9}
    out = tmp_path / "c.yaml"
    assert _choose_cli(tmp_path, linear_model, section, out, "--plot", str(tmp_path / "w.png")) == 0
    chosen = yaml.safe_load(out.read_text())
    assert chosen["rule"] == "trust_region" and set(chosen["choices"]) == {"topk", "trust_region"}
    for report in chosen["choices"].values():
        assert {"predicted_target", "predicted_std", "support_distance", "beyond_range", "within_trust_radius"} <= set(
            report
        )
        assert max(report["weights"].values()) <= 0.6 + 1e-9  # the epoch cap of every domain
    assert chosen["choices"]["trust_region"]["support_distance"] <= chosen["trust_radius"]["radius"] + 1e-8
    assert chosen["provenance"]["settings"]["trust_quantile"] == 0.9
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "section, key",
    [
        ({"rule": "safest"}, "choose.rule"),
        ({"uncertainty_weight": -1.0}, "choose.uncertainty_weight"),
        ({"trust_quantile": 0.0}, "choose.trust_quantile"),
        ({"trust_quantile": 1.5}, "choose.trust_quantile"),
        ({"trust_radius": 0.2}, "choose"),
    ],
)
def test_bad_rule_settings_are_refused_naming_the_key(section, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        validate_config({"choose": section})


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"rule": "safest"}, "choose.rule"),
        ({"rule": "penalized", "uncertainty_weight": float("nan")}, "choose.uncertainty_weight"),
        ({"rule": "trust_region", "trust_quantile": 2.0}, "choose.trust_quantile"),
    ],
)
def test_choose_refuses_bad_rule_settings_that_skipped_the_validator(linear_model, kwargs, key):
    with pytest.raises(ValueError, match=rf"config key '{key}'"):
        choose(linear_model, PRIOR, choose_settings(100, 5, seed=0, **kwargs))
