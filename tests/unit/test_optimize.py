"""The exact optimiser: feasibility under caps and bounds, agreement with the known optimum,
never worse than the top-k average, and the trust report (std, support) of each choice."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import regmix.choose as choose_module
from regmix.choose import RULES, choose
from regmix.config import ConfigError, check_choose_bounds, validate_config
from regmix.regression import fit_model
from regmix.regression.optimize import is_feasible, minimise, objective, project_to_box_simplex

DOMAINS = ["code", "docs", "legal", "math"]
PRIOR = {"code": 0.4, "docs": 0.3, "legal": 0.2, "math": 0.1}
COEF = np.array([0.5, -1.0, 0.2, 0.8])  # loss falls with 'docs', then 'legal', 'code', 'math'


def swarm(n=40, seed=0):
    w = np.random.default_rng(seed).dirichlet(np.ones(4), n)
    return pd.DataFrame(w, columns=DOMAINS), w


@pytest.fixture(scope="module")
def linear_model():
    mixtures, w = swarm()
    return fit_model(mixtures, pd.DataFrame({"docs": 3.0 + w @ COEF}), "docs", "linear", folds=5, seed=0)


@pytest.fixture(scope="module")
def gp_model():
    mixtures, w = swarm(60, seed=1)
    y = 3.0 - 0.3 * np.log(w[:, 1] + 0.02) + 0.1 * np.log(w[:, 0] + 0.02) + 0.5 * w[:, 3]
    return fit_model(mixtures, pd.DataFrame({"docs": y}), "docs", "gp", folds=5, seed=0)


def greedy_linear_optimum(coef, lower, upper):
    """The minimum of coef . w over {sum w = 1, lower <= w <= upper}: fill the cheapest first."""
    w = lower.copy()
    left = 1.0 - w.sum()
    for i in np.argsort(coef):
        take = min(upper[i] - w[i], left)
        w[i] += take
        left -= take
    return w


@st.composite
def boxes(draw, n=4):
    """Random feasible (lower, upper): caps and bounds with sum lower <= 1 <= sum upper."""
    upper = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n)))
    if upper.sum() < 1.0:
        upper = np.minimum(upper / upper.sum() * 1.01, 1.0)
    lower = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))) * upper
    if lower.sum() > 1.0:
        lower = lower / lower.sum() * draw(st.floats(0.0, 0.99))
    return lower, upper


@settings(max_examples=60, deadline=None)
@given(box=boxes(), v=st.lists(st.floats(-2.0, 2.0), min_size=4, max_size=4))
def test_projection_is_feasible_and_nearest(box, v):
    lower, upper = box
    w = project_to_box_simplex(np.array(v), lower, upper)
    assert is_feasible(w, lower, upper)
    # no other feasible point is nearer v (the greedy optimum of a random linear law is one)
    other = greedy_linear_optimum(np.random.default_rng(len(v)).normal(size=4), lower, upper)
    assert np.linalg.norm(w - v) <= np.linalg.norm(other - v) + 1e-9


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(box=boxes(), prior=st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4))
def test_optimum_is_feasible_and_matches_the_known_linear_optimum(linear_model, box, prior):
    lower, upper = box
    prior = np.array(prior) / np.sum(prior)
    starts = {"prior": prior, "uniform": np.full(4, 0.25)}
    best = minimise(linear_model, prior, starts, lower, upper)
    assert is_feasible(best["weights"], lower, upper)
    # the fitted law is linear: its value at each vertex orders the domains
    exact = greedy_linear_optimum(linear_model.predict_weights(np.eye(4)), lower, upper)
    assert objective(linear_model, best["weights"], prior, 0.0) <= objective(linear_model, exact, prior, 0.0) + 1e-7


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prior=st.lists(st.floats(0.1, 1.0), min_size=4, max_size=4),
    counts=st.lists(st.integers(200, 20_000), min_size=4, max_size=4),
    max_epochs=st.floats(1.0, 4.0),
    docs_bounds=st.tuples(st.floats(0.0, 0.2), st.floats(0.3, 1.0)),
)
def test_choice_respects_caps_and_bounds_whatever_the_rule(gp_model, prior, counts, max_epochs, docs_bounds):
    prior = dict(zip(DOMAINS, np.array(prior) / np.sum(prior), strict=True))
    counts = dict(zip(DOMAINS, counts, strict=True))
    caps = np.minimum(np.array([max_epochs * counts[d] / 10_000 for d in DOMAINS]), 1.0)
    lower = np.array([0.0, docs_bounds[0], 0.0, 0.0])
    upper = np.minimum(caps, [1.0, docs_bounds[1], 1.0, 1.0])
    assume(upper.sum() >= 1.0 and (lower <= upper).all())  # else no mixture is feasible: refused (test below)
    bounds = {"docs": list(docs_bounds)}
    chosen = 0
    for rule in RULES:
        try:
            result, _, _ = choose(gp_model, prior, 1500, 5, 0, max_epochs, counts, 10_000, rule=rule, bounds=bounds)
        except ValueError as err:  # too few sampled candidates meet the caps: said so, never a bad mixture
            assert "feasible" in str(err) or "trust radius" in str(err), rule
            continue
        chosen += 1
        for name, report in result["choices"].items():
            w = np.array([report["weights"][d] for d in DOMAINS])
            assert is_feasible(w, lower, upper, tol=1e-8), (rule, name)
        assert max(result["epochs"].values()) <= max_epochs + 1e-6, rule
        if rule == "optimize":
            assert result["choices"]["optimize"]["objective"] <= result["choices"]["topk"]["predicted_target"] + 1e-8
    assume(chosen)


def test_gp_optimum_beats_the_top_k_average_and_reports_both(gp_model):
    result, _, _ = choose(gp_model, PRIOR, 3000, 20, seed=0, rule="optimize")
    top, opt = result["choices"]["topk"], result["choices"]["optimize"]
    assert opt["predicted_target"] < top["predicted_target"]
    assert opt["kept"] == "optimum" and result["weights"] == opt["weights"]
    assert opt["gradient"] is True and opt["iterations"] > 0
    for report in (top, opt):
        assert report["predicted_std"] > 0
        assert report["support_distance"] >= 0 and 0 <= report["nearest_proxy_row"] < 60
        w = np.array([report["weights"][d] for d in DOMAINS])
        distances = np.linalg.norm(gp_model.swarm - w, axis=1)
        assert report["support_distance"] == pytest.approx(distances.min(), abs=1e-7)
        assert report["nearest_proxy_row"] == int(np.argmin(distances))
        assert report["predicted_std"] == pytest.approx(float(gp_model.predict_std_weights(w[None, :])[0]), abs=1e-7)


def test_kl_weight_pulls_the_optimum_towards_the_prior(gp_model):
    free, _, _ = choose(gp_model, PRIOR, 2000, 20, seed=0, rule="optimize")
    pulled, _, _ = choose(gp_model, PRIOR, 2000, 20, seed=0, rule="optimize", kl_weight=1.0)
    assert pulled["choices"]["optimize"]["kl_to_prior"] < free["choices"]["optimize"]["kl_to_prior"]


def test_beyond_range_names_the_domain(linear_model):
    # the swarm never had docs near 1: the linear law drives docs to its upper end
    result, _, _ = choose(linear_model, PRIOR, 2000, 10, seed=0, rule="optimize")
    opt = result["choices"]["optimize"]
    assert opt["weights"]["docs"] > 0.999
    assert opt["beyond_range"]["docs"] == "above"
    assert opt["support_distance"] > 0


def test_a_worse_optimum_falls_back_to_the_top_k_average(linear_model, monkeypatch):
    def uphill(model, prior, starts, lower, upper, kl_weight=0.0):
        w = np.array([0.0, 0.0, 0.0, 1.0])  # all 'math': the worst mixture of the law
        return {
            "weights": w,
            "objective": objective(model, w, prior, 0.0),
            "start": "x",
            "iterations": 0,
            "smooth": True,
            "message": "forced",
        }

    monkeypatch.setattr(choose_module, "minimise", uphill)
    result, _, _ = choose(linear_model, PRIOR, 2000, 10, seed=0, rule="optimize")
    assert result["choices"]["optimize"]["kept"] == "top-k average (better by the model)"
    assert result["weights"] == result["choices"]["topk"]["weights"]


def test_lightgbm_std_only_for_the_reported_rows(monkeypatch):
    mixtures, w = swarm(60, seed=2)
    model = fit_model(mixtures, pd.DataFrame({"docs": 3.0 + w @ COEF}), "docs", "lightgbm", folds=3, seed=0)
    sizes = []
    real = model.regressor.predict_std
    monkeypatch.setattr(model.regressor, "predict_std", lambda X: sizes.append(len(X)) or real(X))
    result, _, _ = choose(model, PRIOR, 5000, 20, seed=0, rule="optimize")
    assert sizes == [1, 1]  # the top-k average and the optimum, never the 5000 candidates
    opt = result["choices"]["optimize"]
    assert opt["gradient"] is False and opt["objective"] <= result["choices"]["topk"]["predicted_target"] + 1e-12


def test_topk_rule_reports_only_the_top_k_choice(linear_model):
    result, rows, _ = choose(linear_model, PRIOR, 2000, 10, seed=0)
    assert result["rule"] == "topk" and set(result["choices"]) == {"topk"}
    np.testing.assert_allclose(list(result["weights"].values()), rows.mean(axis=0), atol=1e-9)


@pytest.mark.parametrize(
    "bounds, expected",
    [
        ({"atlantis": [0.0, 0.5]}, r"choose\.bounds.*atlantis"),
        ({"code": [0.6, 0.2]}, r"choose\.bounds\.code.*lo is above hi"),
        ({"code": [0.6, 1.0], "docs": [0.5, 1.0]}, r"choose\.bounds.*infeasible"),
        ({d: [0.0, 0.1] for d in DOMAINS}, r"choose\.bounds.*infeasible"),
    ],
)
def test_bad_bounds_are_refused_naming_the_key(bounds, expected):
    with pytest.raises(ConfigError, match=expected):
        check_choose_bounds(bounds, DOMAINS)


def test_config_validation_checks_the_bounds():
    with pytest.raises(ConfigError, match=r"choose\.bounds\.code"):
        validate_config({"choose": {"bounds": {"code": [0.5, 0.1]}}})
    with pytest.raises(ConfigError, match=r"choose"):
        validate_config({"choose": {"rule": "best"}})
    assert validate_config({"choose": {"rule": "optimize", "bounds": {"code": [0.1, 0.5]}}})["choose"]["kl_weight"] == 0


def test_bounds_and_caps_that_cannot_meet_are_refused(linear_model):
    counts = {d: 1000 for d in DOMAINS}  # every domain capped at 0.3 (3 epochs of 1000 / 10,000)
    with pytest.raises(ValueError, match=r"choose\.bounds"):
        choose(linear_model, PRIOR, 500, 5, 0, 3, counts, 10_000, rule="optimize", bounds={"docs": [0.5, 1.0]})
