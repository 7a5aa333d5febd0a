import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from regmix.cli import main as regmix_main
from regmix.regression import (
    cross_validate,
    fit_model,
    load_model,
    load_swarm_from_duckdb,
    read_swarm_csvs,
    regression_defaults,
    score,
)

DOMAINS = ["code", "docs", "legal", "math"]


def swarm(n, seed=0, law="log"):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(len(DOMAINS), 0.6), n)
    mixtures = pd.DataFrame(w, columns=DOMAINS, index=pd.Index(range(n), name="index"))
    if law == "linear":
        y = 3.0 + w @ np.array([0.5, -1.0, 0.2, 0.8])
    else:  # a loss that falls with the log share of 'docs', helped a little by 'legal'
        y = 4.0 - 0.3 * np.log(w[:, 1] + 0.01) - 0.1 * np.log(w[:, 2] + 0.01) + rng.normal(0, 0.01, n)
    losses = pd.DataFrame({d: y + i for i, d in enumerate(DOMAINS)}, index=mixtures.index)
    losses["mean"] = losses.mean(axis=1)
    return mixtures, losses


def write_csvs(tmp_path, mixtures, losses):
    mix_csv, loss_csv = tmp_path / "mixtures.csv", tmp_path / "losses.csv"
    mixtures.reset_index().to_csv(mix_csv, index=False)
    losses.reset_index().to_csv(loss_csv, index=False)
    return mix_csv, loss_csv


def test_linear_recovers_a_linear_relation():
    mixtures, losses = swarm(30, law="linear")
    model = fit_model(mixtures, losses, "docs", "linear", folds=5, seed=0)
    new, new_losses = swarm(10, seed=1, law="linear")
    np.testing.assert_allclose(model.predict_frame(new), new_losses["docs"], atol=1e-8)


@pytest.mark.parametrize("regressor", ["lightgbm", "gp"])
def test_nonlinear_regressors_rank_held_out_rows_from_24_rows(regressor):
    mixtures, losses = swarm(24)
    model = fit_model(mixtures, losses, "docs", regressor, folds=4, seed=0)
    test, test_losses = swarm(60, seed=7)
    spearman = score(test_losses["docs"].to_numpy(), model.predict_frame(test), bootstrap=50)["spearman"]["value"]
    assert spearman > {"lightgbm": 70, "gp": 95}[regressor]
    if regressor == "lightgbm":  # the defaults (20 rows per leaf) could not split 24 rows at all
        assert model.regressor.booster.num_trees() > 1
        assert model.regressor.hyperparameters["min_data_in_leaf"] < 20


def test_ensemble_weight_is_chosen_by_cv_and_combines_its_members():
    mixtures, losses = swarm(40)
    model = fit_model(mixtures, losses, "docs", "ensemble", folds=4, seed=0)
    ensemble = model.regressor
    errors = ensemble.hyperparameters["cv_mse_by_gp_weight"]
    # the kept weight is the grid point with the lowest out-of-fold error
    assert ensemble.gp_weight == min(errors, key=errors.get)
    # on a smooth log-law the GP member should carry most of the weight
    assert ensemble.gp_weight >= 0.5
    test, _ = swarm(15, seed=3)
    X = test.to_numpy()
    expected = sum(
        w * ensemble.members[name].predict(X) if name in ensemble.members else 0.0
        for name, w in (("gp", ensemble.gp_weight), ("lightgbm", 1 - ensemble.gp_weight))
    )
    np.testing.assert_allclose(model.predict_frame(test), expected)


def test_cross_validation_is_out_of_fold():
    mixtures, losses = swarm(30)
    X, y = mixtures.to_numpy(), losses["docs"].to_numpy()
    oof, fold = cross_validate(X, y, "linear", folds=5, seed=0)
    assert sorted(np.bincount(fold)) == [6] * 5
    # a fold's prediction equals a model fitted without that fold's rows
    held = fold == 0
    refit = fit_model(mixtures[~held], losses[~held], "docs", "linear", 5, 0)
    np.testing.assert_allclose(oof[held], refit.predict_frame(mixtures[held]))


def test_score_bootstrap_ci_brackets_the_value():
    rng = np.random.default_rng(0)
    t = rng.normal(size=100)
    s = score(t, t + rng.normal(0, 0.5, 100), bootstrap=200)
    for key in ("spearman", "pearson", "rmse"):
        assert s[key]["ci_low"] <= s[key]["value"] <= s[key]["ci_high"]
    assert 0.3 < s["rmse"]["value"] < 0.7


def test_fit_cli_matches_on_index_normalises_and_writes_outputs(tmp_path):
    mixtures, losses = swarm(26)
    scaled = mixtures * 2.0  # unnormalised rows: fit must normalise them
    extra = pd.DataFrame([[0.25] * 4], columns=DOMAINS, index=pd.Index([999], name="index"))
    mix_csv, loss_csv = write_csvs(
        tmp_path, pd.concat([scaled, extra]), losses.iloc[::-1]
    )  # extra row has no loss, order differs
    out = tmp_path / "reg"
    assert (
        regmix_main(
            [
                "fit",
                "--mixtures",
                str(mix_csv),
                "--losses",
                str(loss_csv),
                "--target",
                "docs",
                "--out",
                str(out),
                "--regressor",
                "linear",
            ]
        )
        == 0
    )
    cv = json.loads((out / "cv.json").read_text())
    assert cv["rows"] == 26 and cv["regressor"] == "linear" and cv["target"] == "docs"
    assert cv["spearman"]["ci_low"] <= cv["spearman"]["value"] <= cv["spearman"]["ci_high"]
    preds = pd.read_csv(out / "cv_predictions.csv")
    assert sorted(preds["index"]) == list(range(26))
    np.testing.assert_allclose(preds.set_index("index").loc[range(26), "true"], losses["docs"])
    assert (out / "pred_vs_true.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["domains"] == DOMAINS and settings["cv_folds"] == regression_defaults()["cv_folds"]
    model = load_model(out)
    np.testing.assert_allclose(model.predict_frame(mixtures), model.predict_frame(scaled))

    # predict: index,prediction for every row, same as the model in memory
    p = tmp_path / "pred.csv"
    assert regmix_main(["predict", "--model", str(out), "--mixtures", str(mix_csv), "--out", str(p)]) == 0
    pred = pd.read_csv(p)
    assert list(pred.columns) == ["index", "prediction"] and len(pred) == 27
    np.testing.assert_allclose(pred["prediction"][:26], model.predict_frame(mixtures))


def test_fit_cli_default_regressor_comes_from_settings(tmp_path):
    mix_csv, loss_csv = write_csvs(tmp_path, *swarm(20))
    s = json.dumps(
        {
            "seed": 0,
            "domains": DOMAINS,
            "regression": {"regressor": "linear", "target": "mean", "cv_folds": 4, "seed": 1},
        }
    )
    assert (
        regmix_main(
            [
                "fit",
                "--mixtures",
                str(mix_csv),
                "--losses",
                str(loss_csv),
                "--out",
                str(tmp_path / "r"),
                "--settings",
                s,
            ]
        )
        == 0
    )
    cv = json.loads((tmp_path / "r" / "cv.json").read_text())
    assert (cv["regressor"], cv["target"], cv["folds"]) == ("linear", "mean", 4)


def test_bad_inputs_fail_naming_the_problem(tmp_path, capsys):
    mixtures, losses = swarm(20)
    mix_csv, loss_csv = write_csvs(tmp_path, mixtures, losses)
    assert (
        regmix_main(
            [
                "fit",
                "--mixtures",
                str(mix_csv),
                "--losses",
                str(loss_csv),
                "--target",
                "nope",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        != 0
    )
    assert "'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "model.pkl").exists()
    assert (
        regmix_main(
            [
                "fit",
                "--mixtures",
                str(mix_csv),
                "--losses",
                str(loss_csv),
                "--target",
                "docs",
                "--regressor",
                "magic",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        != 0
    )
    assert "'magic'" in capsys.readouterr().err
    assert (
        regmix_main(
            [
                "fit",
                "--mixtures",
                str(mix_csv),
                "--losses",
                str(loss_csv),
                "--target",
                "docs",
                "--regressor",
                "linear",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    other = mixtures.rename(columns={"math": "maths"})
    bad = tmp_path / "bad.csv"
    other.reset_index().to_csv(bad, index=False)
    assert (
        regmix_main(
            ["predict", "--model", str(tmp_path / "r"), "--mixtures", str(bad), "--out", str(tmp_path / "p.csv")]
        )
        != 0
    )
    assert "'math'" in capsys.readouterr().err


def test_load_swarm_from_duckdb_matches_csvs(tmp_path):
    mixtures, losses = swarm(8)
    mixtures.index = [f"mix_{i:04d}" for i in range(8)]
    losses.index = mixtures.index
    db = tmp_path / "regmix.duckdb"
    con = duckdb.connect(str(db))
    long_w = mixtures.reset_index(names="mix_id").melt(id_vars="mix_id", var_name="domain", value_name="weight")
    long_l = losses[DOMAINS].reset_index(names="mix_id").melt(id_vars="mix_id", var_name="domain", value_name="loss")
    long_w = long_w[long_w["weight"] > 0.05]  # zero weights may be absent from the table
    con.register("long_w_frame", long_w)
    con.register("long_l_frame", long_l)
    con.execute("CREATE TABLE mixtures AS SELECT * FROM long_w_frame")
    con.execute("CREATE TABLE proxy_losses AS SELECT * FROM long_l_frame")
    con.close()
    got_m, got_l = load_swarm_from_duckdb(db)
    expected = mixtures.where(mixtures > 0.05, 0.0)
    expected = expected.div(expected.sum(axis=1), axis=0)
    np.testing.assert_allclose(got_m.loc[mixtures.index, DOMAINS], expected)
    np.testing.assert_allclose(got_l.loc[mixtures.index, "mean"], losses["mean"])

    # the fit command reads the database through the same function
    out = tmp_path / "r"
    assert regmix_main(["fit", "--db", str(db), "--target", "docs", "--regressor", "linear", "--out", str(out)]) == 0
    assert json.loads((out / "cv.json").read_text())["rows"] == 8


def test_load_swarm_from_duckdb_missing_loss_names_domain(tmp_path):
    db = tmp_path / "x.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE mixtures AS SELECT * FROM (VALUES "
        "('m0','a',0.5),('m0','b',0.5),('m1','a',1.0)) t(mix_id, domain, weight)"
    )
    con.execute(
        "CREATE TABLE proxy_losses AS SELECT * FROM (VALUES "
        "('m0','a',3.0),('m0','b',3.1),('m1','a',2.9)) t(mix_id, domain, loss)"
    )
    con.close()
    with pytest.raises(ValueError, match="domain 'b' of 'm1'"):
        load_swarm_from_duckdb(db)


def test_read_swarm_csvs_rejects_duplicate_index(tmp_path):
    mixtures, losses = swarm(5)
    mix_csv, loss_csv = write_csvs(tmp_path, pd.concat([mixtures, mixtures.iloc[:1]]), losses)
    with pytest.raises(ValueError, match="more than once"):
        read_swarm_csvs(mix_csv, loss_csv)


@pytest.mark.parametrize("regressor", ["gp", "linear", "loglinear"])
def test_90_percent_interval_covers_about_90_percent_of_held_out_rows(regressor):
    from regmix.regression import coverage90

    mixtures, losses = swarm(120, seed=4)
    X, y = mixtures.to_numpy(), losses["docs"].to_numpy()
    mean, _, std = cross_validate(X, y, regressor, folds=4, seed=0, with_std=True)
    assert (std > 0).all()
    assert 0.75 <= coverage90(y, mean, std) <= 0.99


def test_loglinear_recovers_a_log_linear_law():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(4), 60)
    t = np.array([0.2, -1.0, 0.5, 0.1])
    mixtures = pd.DataFrame(w, columns=DOMAINS)
    losses = pd.DataFrame({"docs": 2.0 + np.exp(w @ t)})
    model = fit_model(mixtures, losses, "docs", "loglinear", folds=4, seed=0)
    test = rng.dirichlet(np.ones(4), 10)
    np.testing.assert_allclose(model.predict_weights(test), 2.0 + np.exp(test @ t), atol=1e-6)
    # the gradient is the law's
    np.testing.assert_allclose(model.regressor.gradient(test), np.exp(test @ t)[:, None] * t[None, :], atol=1e-5)


def test_gp_gradient_matches_finite_differences():
    mixtures, losses = swarm(30)
    model = fit_model(mixtures, losses, "docs", "gp", folds=4, seed=0)
    x = np.array([[0.3, 0.3, 0.2, 0.2]])
    grad = model.regressor.gradient(x)[0]
    h = 1e-6
    numeric = [
        (model.regressor.predict(x + h * np.eye(4)[d]) - model.regressor.predict(x - h * np.eye(4)[d]))[0] / (2 * h)
        for d in range(4)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=2e-5)


def test_support_distance_and_range_flags():
    mixtures, losses = swarm(20)
    model = fit_model(mixtures, losses, "docs", "linear", folds=4, seed=0)
    distance, nearest, beyond = model.support(np.vstack([mixtures.to_numpy()[3], [1.0, 0.0, 0.0, 0.0]]))
    assert distance[0] == pytest.approx(0.0, abs=1e-7) and nearest[0] == 3
    assert distance[1] > 0 and beyond[1, 0] == (1 if mixtures["code"].max() < 1.0 else 0)


def test_old_or_foreign_pickle_is_refused_naming_the_file(tmp_path):
    import pickle

    mixtures, losses = swarm(20)
    model = fit_model(mixtures, losses, "docs", "linear", folds=4, seed=0)
    del model.format  # what a pickle from before the format field looks like
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    with pytest.raises(ValueError, match=r"model\.pkl.*rerun `regmix fit`"):
        load_model(tmp_path)


def test_predict_std_writes_std_and_distance(tmp_path):
    mixtures, losses = swarm(26)
    mix_csv, loss_csv = write_csvs(tmp_path, mixtures, losses)
    out = tmp_path / "reg"
    args = ["fit", "--mixtures", str(mix_csv), "--losses", str(loss_csv), "--target", "docs", "--regressor", "linear"]
    assert regmix_main([*args, "--out", str(out)]) == 0
    p = tmp_path / "pred.csv"
    assert regmix_main(["predict", "--model", str(out), "--mixtures", str(mix_csv), "--out", str(p), "--std"]) == 0
    pred = pd.read_csv(p)
    assert list(pred.columns) == ["index", "prediction", "std", "nearest_proxy_distance"]
    assert (pred["std"] > 0).all() and np.allclose(pred["nearest_proxy_distance"], 0, atol=1e-7)
