"""`regmix import-swarm`, fitting on imported swarms with the study's own (mixture reuse),
and fitting several targets in one `regmix fit`."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from regmix import paper
from regmix.cli import main as regmix_main
from regmix.collect.database import build_database
from regmix.config import ConfigError, validate_config
from regmix.layout import Layout, SwarmDir
from regmix.regression import load_model, regression_defaults
from regmix.regression.swarm_import import read_import, swarm_defaults
from regmix.settings.outputs import ResultsSettings
from regmix.targets import target_slug
from tests.helpers import assert_one_line
from tests.helpers import synthetic_run as run

OLD = ["code", "docs", "legal"]  # an earlier study's domains
NEW = ["code", "docs", "legal", "math"]  # the study now: one domain added


def draw(domains, n, seed, prefix=None):
    """Mixtures and losses with the study's columns: a loss falls with each domain's log share."""
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(len(domains), 0.7), n)
    mixtures = pd.DataFrame(w, columns=domains, index=pd.Index(range(n), name="index"))
    losses = pd.DataFrame(
        {d: 4.0 - 0.2 * np.log(w[:, i] + 0.01) + 0.05 * i for i, d in enumerate(domains)}, index=mixtures.index
    )
    losses["mean"] = losses.mean(axis=1)
    return mixtures, losses


def write(tmp_path, mixtures, losses, stem=""):
    mix_csv, loss_csv = tmp_path / f"{stem}mixtures.csv", tmp_path / f"{stem}losses.csv"
    mixtures.reset_index().to_csv(mix_csv, index=False)
    losses.reset_index().to_csv(loss_csv, index=False)
    return mix_csv, loss_csv


def import_cli(mix_csv, loss_csv, out, name="old", domains=NEW, extra=()):
    argv = ["import-swarm", "--mixtures", str(mix_csv), "--losses", str(loss_csv), "--out", str(out), "--name", name]
    return regmix_main(argv + (["--domains", *domains] if domains else []) + list(extra))


# ---------------------------------------------------------------------------- import


def test_import_adds_missing_study_domains_at_zero_and_recomputes_mean(tmp_path, capsys):
    mixtures, losses = draw(OLD, 6, seed=1)
    mixtures["retired"] = 0.0  # a domain of the old study only, never used: removed, and said so
    out = tmp_path / "swarms" / "old"
    assert import_cli(*write(tmp_path, mixtures, losses), out) == 0
    printed = capsys.readouterr().out
    assert "['math']" in printed and "['retired']" in printed

    folder = SwarmDir(str(out))
    got = pd.read_csv(folder.mixtures).set_index("index")
    assert list(got.columns) == NEW
    assert list(got.index) == [f"old:{i}" for i in range(6)]
    assert (got["math"] == 0).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    np.testing.assert_allclose(got[OLD].to_numpy(), mixtures[OLD].to_numpy())
    got_losses = pd.read_csv(folder.losses).set_index("index")
    # the old runs have no loss on math: no `mean` over the study's four domains can be made
    assert list(got_losses.columns) == OLD
    record = json.loads(open(folder.source).read())
    assert record["domains_added_at_zero"] == ["math"]
    assert record["domains_removed_all_zero"] == ["retired"]
    assert record["study_domains_without_loss"] == ["math"] and record["own_mean_replaced"]
    assert set(record["provenance"]["inputs"]) == {str(tmp_path / "mixtures.csv"), str(tmp_path / "losses.csv")}


def test_import_of_the_study_domains_keeps_a_mean_over_them(tmp_path):
    mixtures, losses = draw(NEW, 5, seed=2)
    losses["mean"] = 99.0  # a swarm's own mean is not the study's: replaced
    swarm = read_import(*write(tmp_path, mixtures, losses), "same", domains=NEW)
    np.testing.assert_allclose(swarm.losses["mean"], losses[NEW].mean(axis=1).to_numpy())


def test_import_reads_regmix_column_names(tmp_path):
    mixtures = pd.DataFrame(
        {"index": [1, 2], "train_the_pile_pile_cc": [0.6, 0.302], "train_the_pile_github": [0.4, 0.7]}
    )
    losses = pd.DataFrame(
        {"index": [2, 1], "metric/the_pile_pile_cc_val_loss": [3.1, 3.0], "metric/the_pile_github_val_loss": [2, 2.5]}
    )
    mixtures.to_csv(tmp_path / "m.csv", index=False)
    losses.to_csv(tmp_path / "l.csv", index=False)
    swarm = read_import(tmp_path / "m.csv", tmp_path / "l.csv", "pub", domains=["github", "pile_cc"])
    assert list(swarm.mixtures.columns) == ["github", "pile_cc"]
    assert swarm.losses.loc["pub:1", "pile_cc"] == 3.0 and swarm.losses.loc["pub:2", "github"] == 2.0
    np.testing.assert_allclose(swarm.mixtures.loc["pub:2"].sum(), 1.0)  # 1.002 within tolerance, renormalised
    # a column named otherwise is mapped with rename
    swarm = read_import(
        tmp_path / "m.csv",
        tmp_path / "l.csv",
        "pub",
        domains=["code", "pile_cc"],
        rename={"train_the_pile_github": "code", "metric/the_pile_github_val_loss": "code"},
    )
    assert list(swarm.mixtures.columns) == ["code", "pile_cc"] and "code" in swarm.losses.columns


def _bad(tmp_path, case):
    """A swarm with one defect, and the words its error must contain."""
    mixtures, losses = draw(OLD, 5, seed=3)
    mixtures, losses = mixtures.reset_index(), losses.reset_index()
    mix_name, loss_name = str(tmp_path / "mixtures.csv"), str(tmp_path / "losses.csv")
    if case == "negative":
        mixtures.loc[2, "docs"] = -0.1
        named = [mix_name, "'docs'", "row index 2", "negative"]
    elif case == "sum":
        mixtures.loc[3, "code"] += 0.2
        named = [mix_name, "row index 3", "sum to"]
    elif case == "text":
        mixtures["legal"] = mixtures["legal"].astype(object)
        mixtures.loc[1, "legal"] = "lots"
        named = [mix_name, "'legal'", "'lots'", "row 2"]
    elif case == "empty_weight":
        mixtures.loc[4, "code"] = np.nan
        named = [mix_name, "'code'", "row index 4"]
    elif case == "missing_loss_row":
        losses = losses.drop(index=1)
        named = [loss_name, "index 1", mix_name]
    elif case == "missing_mixture_row":
        mixtures = mixtures.drop(index=0)
        named = [mix_name, "index 0", loss_name]
    elif case == "duplicate_index":
        mixtures.loc[2, "index"] = 1
        losses.loc[2, "index"] = 1
        named = [mix_name, "index 1", "more than once"]
    elif case == "unknown_domain":
        mixtures["poetry"] = 0.1
        mixtures[OLD] = mixtures[OLD] * 0.9
        named = [mix_name, "'poetry'", "not domains of the study"]
    elif case == "empty_loss":
        losses.loc[3, "docs"] = np.nan
        named = [loss_name, "'docs'", "row index 3"]
    elif case == "two_columns_one_domain":
        mixtures["train_the_pile_code"] = 0.0
        named = [mix_name, "'code'", "'train_the_pile_code'"]
    elif case == "no_index":
        mixtures = mixtures.rename(columns={"index": "id"})
        named = [mix_name, "'index'"]
    else:
        raise AssertionError(case)
    mixtures.to_csv(mix_name, index=False)
    losses.to_csv(loss_name, index=False)
    return mix_name, loss_name, named


BAD_CASES = [
    "negative",
    "sum",
    "text",
    "empty_weight",
    "missing_loss_row",
    "missing_mixture_row",
    "duplicate_index",
    "unknown_domain",
    "empty_loss",
    "two_columns_one_domain",
    "no_index",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_swarm_fails_in_one_line_naming_file_column_and_row(tmp_path, capsys, case):
    mix_csv, loss_csv, named = _bad(tmp_path, case)
    out = tmp_path / "swarms" / "old"
    assert import_cli(mix_csv, loss_csv, out) == 1
    assert_one_line(capsys.readouterr().err, "import-swarm", *named)
    assert not out.exists() or not any(out.iterdir())  # nothing that looks complete


def test_paper_swarm_imports_into_the_pile_study_and_fits_with_own_runs(tmp_path, capsys):
    data = paper.data_dir()
    if not (data / "train_mixture_1m.csv").is_file():
        pytest.skip(f"paper data not found at {data}")
    domains = list(paper.PILE_PRIOR)
    out = tmp_path / "swarms" / "paper"
    code = import_cli(
        data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv", out, name="paper", domains=domains
    )
    assert code == 0, capsys.readouterr().err
    folder = SwarmDir(str(out))
    mixtures = pd.read_csv(folder.mixtures).set_index("index")
    losses = pd.read_csv(folder.losses).set_index("index")
    assert mixtures.shape == (512, 17) and list(mixtures.columns) == domains
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)
    original = pd.read_csv(data / "train_pile_loss_1m.csv").set_index("index")
    np.testing.assert_allclose(losses.loc["paper:7", "pile_cc"], original.loc[7, paper.TARGET])
    assert "mean" not in losses.columns  # 4 small domains have no validation loss in the release
    record = json.loads(open(folder.source).read())
    assert record["study_domains_without_loss"] == ["nih_exporter", "philpapers", "enron_emails", "europarl"]

    # a study's own 16 runs (here: unseen paper runs, in the pipeline's own columns) fitted with the import
    test_mix = pd.read_csv(data / "test_mixture_1m.csv").set_index("index").iloc[:16]
    test_loss = pd.read_csv(data / "test_pile_loss_1m.csv").set_index("index").loc[test_mix.index]
    own_mix = test_mix.set_axis([c.removeprefix("train_the_pile_") for c in test_mix.columns], axis=1)
    own_loss = pd.DataFrame({"pile_cc": test_loss[paper.TARGET]}, index=test_mix.index)
    mix_csv, loss_csv = write(tmp_path, own_mix, own_loss, "own_")
    settings = {"regression": {**regression_defaults(), "target": "pile_cc", "regressor": "linear", "cv_folds": 5}}
    fit = tmp_path / "fit"
    argv = ["fit", "--settings", json.dumps(settings), "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main(argv + ["--swarm", str(out), "--out", str(fit)]) == 0
    cv = json.loads((fit / "cv.json").read_text())
    assert cv["rows"] == 528 and cv["sources"] == {"study": 16, "paper": 512}
    assert cv["spearman"]["value"] > 80  # the paper's linear baseline is ~90 on unseen runs


# ----------------------------------------------------------------- fit: mixture reuse


def _reuse_setup(tmp_path, target="docs"):
    """An old swarm on OLD (imported: math at 0) and the study's own runs on NEW."""
    old_mix, old_loss = draw(OLD, 12, seed=4)
    swarm_dir = tmp_path / "swarms" / "old"
    assert import_cli(*write(tmp_path, old_mix, old_loss, "old_"), swarm_dir) == 0
    own_mix, own_loss = draw(NEW, 8, seed=5)
    mix_csv, loss_csv = write(tmp_path, own_mix, own_loss, "own_")
    settings = {"regression": {**regression_defaults(), "target": target, "regressor": "linear", "cv_folds": 4}}
    argv = ["fit", "--settings", json.dumps(settings), "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    return argv + ["--swarm", str(swarm_dir)], old_mix


def test_reuse_fits_old_runs_at_weight_zero_on_the_new_domain_with_the_new_runs(tmp_path):
    argv, old_mix = _reuse_setup(tmp_path)
    out = tmp_path / "fit"
    assert regmix_main(argv + ["--out", str(out)]) == 0
    model = load_model(out)
    assert model.domains == NEW and model.n_rows == 20
    assert (model.swarm[8:, NEW.index("math")] == 0).all()  # the old runs, math at 0
    assert (model.swarm[:8, NEW.index("math")] > 0).all()  # the study's own runs
    np.testing.assert_allclose(model.swarm[8:, :3], old_mix.to_numpy())
    cv_rows = pd.read_csv(out / "cv_predictions.csv")
    assert cv_rows["source"].value_counts().to_dict() == {"old": 12, "study": 8}
    assert "old:11" in set(cv_rows["index"])
    assert json.loads((out / "settings.json").read_text())["sources"] == {"study": 8, "old": 12}


def test_reuse_target_the_old_runs_did_not_measure_is_named(tmp_path, capsys):
    argv, _ = _reuse_setup(tmp_path, target="math")
    out = tmp_path / "fit"
    assert regmix_main(argv + ["--out", str(out)]) == 1
    assert_one_line(capsys.readouterr().err, "fit", "'math'", "'old:0'", "['old']")
    assert not (out / "model.pkl").exists()


def test_fit_refuses_an_imported_swarm_with_a_used_domain_the_study_lacks(tmp_path, capsys):
    mixtures, losses = draw(["code", "docs", "poetry"], 6, seed=6)
    swarm_dir = tmp_path / "swarms" / "wide"
    assert import_cli(*write(tmp_path, mixtures, losses, "wide_"), swarm_dir, name="wide", domains=None) == 0
    own_mix, own_loss = draw(NEW, 8, seed=5)
    mix_csv, loss_csv = write(tmp_path, own_mix, own_loss, "own_")
    settings = json.dumps(
        {"regression": {**regression_defaults(), "target": "docs", "regressor": "linear", "cv_folds": 4}}
    )
    argv = ["fit", "--settings", settings, "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main(argv + ["--swarm", str(swarm_dir), "--out", str(tmp_path / "fit")]) == 1
    assert_one_line(capsys.readouterr().err, "fit", str(swarm_dir), "'poetry'")


# ------------------------------------------------------------------- several targets


def test_fit_writes_one_model_per_target_and_keeps_the_main_one(tmp_path):
    mixtures, losses = draw(NEW, 16, seed=7)
    mix_csv, loss_csv = write(tmp_path, mixtures, losses)
    targets = ["code", {"docs": 1, "legal": 3}]
    settings = {
        "regression": {
            **regression_defaults(),
            "target": "mean",
            "regressor": "linear",
            "cv_folds": 4,
            "targets": targets,
        }
    }
    out = tmp_path / "regression"
    argv = ["fit", "--settings", json.dumps(settings), "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main(argv + ["--out", str(out)]) == 0
    assert load_model(out).target == "mean"
    layout = Layout(str(tmp_path))
    expected = {"code": losses["code"], "docs25_legal75": 0.25 * losses["docs"] + 0.75 * losses["legal"]}
    assert [target_slug(t) for t in targets] == list(expected)
    for spec, (slug, truth) in zip(targets, expected.items(), strict=True):
        model = load_model(layout.regression_target(slug, ""))
        assert model.target == spec and model.domains == NEW
        cv = json.loads(open(layout.regression_target(slug, "cv.json")).read())
        assert cv["target"] == spec and cv["rows"] == 16
        rows = pd.read_csv(layout.regression_target(slug, "cv_predictions.csv"))
        np.testing.assert_allclose(rows["true"], truth.to_numpy())
        # each target is fitted to its own values: the linear fit predicts them closely in sample
        np.testing.assert_allclose(model.predict_frame(mixtures), truth.to_numpy(), atol=0.2)


def test_a_bad_extra_target_fails_before_any_fit(tmp_path, capsys):
    mixtures, losses = draw(NEW, 8, seed=8)
    mix_csv, loss_csv = write(tmp_path, mixtures, losses)
    settings = {
        "regression": {
            **regression_defaults(),
            "target": "mean",
            "regressor": "linear",
            "cv_folds": 4,
            "targets": ["poetry"],
        }
    }
    argv = ["fit", "--settings", json.dumps(settings), "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main(argv + ["--out", str(tmp_path / "out")]) == 1
    assert_one_line(capsys.readouterr().err, "fit", "'poetry'")
    assert not (tmp_path / "out").exists()


def test_config_checks_targets_and_swarm_names():
    base = {"domains": NEW, "data": {"source": {"kind": "demo"}}, "large": {"named": {}}}
    with pytest.raises(ConfigError, match=r"regression\.targets\[1\]"):
        validate_config({**base, "regression": {"target": "mean", "targets": ["code", {"poetry": 1}]}})
    with pytest.raises(ConfigError, match=r"regression\.targets\[1\].*regression\.targets\[0\]"):
        validate_config(
            {**base, "regression": {"target": "mean", "targets": [{"code": 1, "docs": 1}, {"docs": 2, "code": 2}]}}
        )
    swarm = {"mixtures": "m.csv", "losses": "l.csv"}
    with pytest.raises(ConfigError, match=r"extra_swarms\[1\]\.name"):
        validate_config({**base, "regression": {"extra_swarms": [{"name": "old", **swarm}, {"name": "OLD", **swarm}]}})
    with pytest.raises(ConfigError, match="extra_swarms"):
        validate_config({**base, "regression": {"extra_swarms": [{"name": "old", "mixtures": "m.csv"}]}})


# ------------------------------------------------------------------------ database


def test_database_loads_imported_swarms_with_their_source_and_every_target(tmp_path):
    results = run.write_run(tmp_path / "results")
    mixtures, losses = draw(["a", "b"], 4, seed=9)
    layout = Layout(str(results))
    assert import_cli(*write(tmp_path, mixtures, losses), layout.swarm("old").root, domains=run.DOMAINS) == 0
    cv = json.loads((results / "regression" / "cv.json").read_text())
    target_cv = Layout(str(results)).regression_target("a", "cv.json")
    Path(target_cv).parent.mkdir(parents=True)
    Path(target_cv).write_text(json.dumps({**cv, "target": "a"}))
    settings = run.settings()
    settings["regression"] = {
        **settings["regression"],
        "targets": ["a"],
        "extra_swarms": [{"name": "old", "mixtures": "m.csv", "losses": "l.csv"}],
    }
    db = results / "regmix.duckdb"
    build_database(ResultsSettings.from_json(settings, "collect"), results, db, regressor_loader=run.load_regressor)
    con = duckdb.connect(str(db), read_only=True)
    weights = con.execute("SELECT source, mix_id, domain, weight FROM imported_mixtures ORDER BY mix_id, domain").df()
    assert set(weights["source"]) == {"old"} and len(weights) == 4 * 3
    assert weights[weights.domain == "c"]["weight"].eq(0).all()  # the study's domain the swarm lacked
    np.testing.assert_allclose(weights[weights.mix_id == "old:2"]["weight"].to_numpy()[:2], mixtures.loc[2])
    loss = con.execute("SELECT * FROM imported_losses WHERE mix_id = 'old:1' AND domain = 'b'").df()
    assert loss["loss"].item() == pytest.approx(losses.loc[1, "b"])
    targets = con.execute("SELECT target, main, rows FROM regression_targets ORDER BY target").df()
    assert targets.to_dict("records") == [
        {"target": "a", "main": False, "rows": cv["rows"]},
        {"target": run.TARGET, "main": True, "rows": cv["rows"]},
    ]
    con.close()


def test_a_target_listed_twice_is_fitted_once_and_written_to_both_folders(tmp_path, capsys):
    mixtures, losses = draw(NEW, 12, seed=10)
    mix_csv, loss_csv = write(tmp_path, mixtures, losses)
    settings = {
        "regression": {
            **regression_defaults(),
            "target": "docs",
            "regressor": "linear",
            "cv_folds": 4,
            "targets": [{"docs": 2}],
        }
    }
    out = tmp_path / "regression"
    argv = ["fit", "--settings", json.dumps(settings), "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main(argv + ["--out", str(out)]) == 0
    assert capsys.readouterr().out.count("regmix fit: linear") == 1
    again = out / "targets" / "docs100"
    assert (again / "cv_predictions.csv").read_text() == (out / "cv_predictions.csv").read_text()
    assert load_model(again).target == "docs"


def test_fit_refuses_settings_naming_a_swarm_it_was_not_given(tmp_path, capsys):
    mixtures, losses = draw(NEW, 8, seed=11)
    mix_csv, loss_csv = write(tmp_path, mixtures, losses)
    swarm = {**swarm_defaults(), "name": "old", "mixtures": "m.csv", "losses": "l.csv"}
    settings = {
        "regression": {
            **regression_defaults(),
            "target": "docs",
            "regressor": "linear",
            "cv_folds": 4,
            "extra_swarms": [swarm],
        }
    }
    argv = ["fit", "--settings", json.dumps(settings), "--mixtures", str(mix_csv), "--losses", str(loss_csv)]
    assert regmix_main(argv + ["--out", str(tmp_path / "out")]) == 1
    assert_one_line(capsys.readouterr().err, "fit", "['old']", "--swarm")


def test_workflow_imports_each_swarm_and_fits_every_target_in_one_job(tmp_path):
    """Dry run of the micro config with an extra swarm and two more targets: the DAG and the commands."""
    import yaml

    from tests.helpers import REPO_DIR, copy_workflow, run_snakemake

    workdir = copy_workflow(tmp_path / "workflow")
    old_mix, old_loss = write(tmp_path, *draw(OLD, 6, seed=12), "old_")
    config = yaml.safe_load((REPO_DIR / "config" / "micro.yaml").read_text())
    config["regression"]["extra_swarms"] = [{"name": "old", "mixtures": str(old_mix), "losses": str(old_loss)}]
    config["regression"]["targets"] = ["docs", {"code": 1, "docs": 1}]
    (workdir / "config" / "reuse.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "-n", "-p", "--cores", "1", "--configfile", "config/reuse.yaml", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    lines = [line.removeprefix("Shell command: ").strip() for line in text.splitlines()]
    (imports,) = [line for line in lines if line.startswith("regmix import-swarm")]
    assert f"--mixtures {old_mix}" in imports and "--out results/swarms/old" in imports
    (fit,) = [line for line in lines if line.startswith("regmix fit")]
    assert "--swarm results/swarms/old" in fit and "--target" not in fit and "--regressor" not in fit
    assert '"targets": ["docs", {"code": 1, "docs": 1}]' in fit
    for slug in ("docs", "code50_docs50"):
        assert f"results/regression/targets/{slug}/model.pkl" in text
