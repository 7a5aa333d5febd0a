"""RegMix CSVs from proxy files, and the results database rebuilt from a synthetic run."""

import json

import duckdb
import pandas as pd
import pytest

from regmix.cli import main as cli_main
from regmix.collect.database import build_database
from regmix.collect.proxies import collect_proxies
from regmix.collect.rows import eval_rows
from regmix.collect.statistics import paired_comparisons, spearman_ci, task_power
from tests.helpers import synthetic_run as run


def _build(tmp_path, **kwargs):
    results = run.write_run(tmp_path / "results", **kwargs)
    counts = build_database(
        run.results_settings(), results, results / "regmix.duckdb", results / "db", regressor_loader=run.load_regressor
    )
    return results, counts


def test_collect_proxies_writes_regmix_csvs(tmp_path):
    results = run.write_run(tmp_path / "results")
    paths = [str(results / f"proxies/{m}/losses.json") for m in reversed(run.MIX_IDS)]
    code = cli_main(
        [
            "collect-proxies",
            "--losses",
            *paths,
            "--out-mixtures",
            str(tmp_path / "m.csv"),
            "--out-losses",
            str(tmp_path / "l.csv"),
        ]
    )
    assert code == 0
    weights, losses = pd.read_csv(tmp_path / "m.csv"), pd.read_csv(tmp_path / "l.csv")
    assert list(weights.columns) == ["index", *run.DOMAINS]
    assert list(losses.columns) == ["index", *run.DOMAINS, "mean"]
    assert list(weights["index"]) == list(range(len(run.MIX_IDS)))  # sorted by mixture number
    first = json.loads((results / "proxies/mix_0003/losses.json").read_text())
    row = losses.set_index("index").loc[3]
    assert row["b"] == pytest.approx(first["val_loss"]["b"])
    assert row["mean"] == pytest.approx(sum(first["val_loss"].values()) / 3)
    assert weights.set_index("index").loc[3, "c"] == pytest.approx(first["weights"]["c"])
    assert (tmp_path / "l.provenance.json").is_file()


def test_collect_proxies_names_a_file_with_a_missing_domain(tmp_path):
    results = run.write_run(tmp_path / "results")
    bad = results / "proxies/mix_0002/losses.json"
    data = json.loads(bad.read_text())
    del data["val_loss"]["c"]
    bad.write_text(json.dumps(data))
    paths = [str(results / f"proxies/{m}/losses.json") for m in run.MIX_IDS]
    with pytest.raises(ValueError, match="mix_0002"):
        collect_proxies(paths, tmp_path / "m.csv", tmp_path / "l.csv")
    assert not (tmp_path / "m.csv").exists()


def test_database_tables_hold_every_number(tmp_path):
    results, counts = _build(tmp_path)
    assert counts["mixtures"] == len(run.MIX_IDS) * len(run.DOMAINS)
    assert counts["proxy_losses"] == len(run.MIX_IDS) * len(run.DOMAINS)
    assert counts["proxy_runs"] == len(run.MIX_IDS)
    assert counts["large_train_log"] == len(run.CANDIDATES) * 10
    assert counts["large_val_log"] == len(run.CANDIDATES) * len(run.DOMAINS) * 2  # mid-way + final
    # per candidate: mc (acc, acc_norm) x 2 shot counts + ppl (3 metrics) at 0 shots
    assert counts["eval_results"] == len(run.CANDIDATES) * (2 * 2 + 3)
    con = duckdb.connect(str(results / "regmix.duckdb"), read_only=True)
    loss = con.execute("SELECT loss FROM proxy_losses WHERE mix_id = 'mix_0004' AND domain = 'a'").fetchone()[0]
    assert loss == pytest.approx(json.loads((results / "proxies/mix_0004/losses.json").read_text())["val_loss"]["a"])
    seed, tokens = con.execute("SELECT seed, tokens_seen FROM proxy_runs WHERE mix_id = 'mix_0005'").fetchone()
    assert (seed, tokens) == (5, 50 * 2048)
    assert con.execute("SELECT value FROM regression_cv WHERE key = 'spearman.value'").fetchone()[0] == pytest.approx(
        90
    )
    assert con.execute("SELECT count(*) FROM regression_cv_predictions").fetchone()[0] == 4
    assert con.execute("SELECT weight FROM chosen_mixture WHERE domain = 'b'").fetchone()[0] == pytest.approx(0.7)
    row = con.execute(
        "SELECT value, stderr, higher_is_better, is_primary FROM eval_results WHERE candidate = 'uniform'"
        " AND task = 'regmix_mc_b' AND shots = 1 AND metric = 'acc_norm'"
    ).fetchone()
    assert row[0] == pytest.approx(0.3 + 0.5 / 3 + 0.02 + 0.01) and row[1] == pytest.approx(0.05) and row[2] and row[3]
    # lm-eval's "N/A" stderr becomes NULL, not a string
    assert con.execute("SELECT stderr FROM eval_results WHERE metric = 'bits_per_byte' LIMIT 1").fetchone()[0] is None
    assert con.execute("SELECT count(*) FROM topk").fetchone()[0] == 2
    # validation curves end at the loss that losses.json reports
    curve = con.execute(
        "SELECT step, loss FROM large_val_log WHERE candidate = 'prior' AND domain = 'b' ORDER BY step"
    ).fetchall()
    final = json.loads((results / "large/prior/losses.json").read_text())["val_loss"]["b"]
    assert curve == [(50, pytest.approx(final + 0.4)), (100, pytest.approx(final))]


def test_views_rank_candidates(tmp_path):
    results, _ = _build(tmp_path)
    con = duckdb.connect(str(results / "regmix.duckdb"), read_only=True)
    target = con.execute("SELECT candidate, predicted_target, achieved_target, achieved_rank FROM target_loss").df()
    assert list(target["candidate"]) == ["regmix", "uniform", "prior", "heavy_c"]  # more weight on b, lower loss
    regmix = target.set_index("candidate").loc["regmix"]
    assert regmix["predicted_target"] == pytest.approx(3.0 - 0.7)
    assert regmix["achieved_target"] == pytest.approx(3.2 - 0.9 * 0.7)
    ranking = con.execute("SELECT task, metric, candidate, rank FROM task_ranking").df()
    ppl = ranking[ranking.task == "regmix_ppl_b"]
    assert set(ppl["metric"]) == {"bits_per_byte"}  # one primary metric per task
    assert list(ppl.sort_values("rank")["candidate"]) == ["regmix", "uniform", "prior", "heavy_c"]  # lower is better
    mc = ranking[ranking.task == "regmix_mc_b"]
    assert set(mc["metric"]) == {"acc_norm"}
    assert mc.set_index("candidate").loc["regmix", "rank"] == 1  # higher is better
    scores = con.execute(
        "SELECT value, shot_counts FROM eval_scores WHERE candidate = 'prior' AND task = 'regmix_mc_b'"
        " AND metric = 'acc'"
    ).fetchone()
    assert scores == (pytest.approx(0.3 + 0.5 * 0.2 + 0.01), 2)  # averaged over 0 and 1 shots
    average = con.execute("SELECT candidate, mean_task_rank, target_rank FROM average_ranking ORDER BY rank").fetchall()
    assert average[0] == ("regmix", 1.0, 1) and average[-1][0] == "heavy_c"


def test_parquet_copies_match_tables(tmp_path):
    results, counts = _build(tmp_path)
    for name, rows in counts.items():
        assert len(pd.read_parquet(results / "db" / f"{name}.parquet")) == rows, name
    assert len(pd.read_parquet(results / "db" / "target_loss.parquet")) == len(run.CANDIDATES)
    provenance = pd.read_parquet(results / "db" / "provenance.parquet").set_index("key")["value"]
    assert json.loads(provenance["settings"]) == run.settings()
    assert "input:eval/regmix.json" in provenance.index


def test_missing_topk_gives_an_empty_table(tmp_path):
    results, counts = _build(tmp_path, with_topk=False)
    assert counts["topk"] == 0
    con = duckdb.connect(str(results / "regmix.duckdb"), read_only=True)
    assert "b" in [c[0] for c in con.execute("DESCRIBE topk").fetchall()]


def test_missing_required_file_is_named_and_keeps_the_old_database(tmp_path):
    results, _ = _build(tmp_path)
    before = (results / "regmix.duckdb").read_bytes()
    (results / "eval/prior.json").unlink()
    with pytest.raises(FileNotFoundError, match="eval/prior.json"):
        build_database(
            run.results_settings(),
            results,
            results / "regmix.duckdb",
            results / "db",
            regressor_loader=run.load_regressor,
        )
    assert (results / "regmix.duckdb").read_bytes() == before
    assert sorted(p.name for p in results.iterdir() if p.name.startswith(".")) == []


def test_a_mixture_with_an_unknown_domain_is_named(tmp_path):
    results = run.write_run(tmp_path / "results")
    (results / "candidates/heavy_c.yaml").write_text("name: heavy_c\nweights: {a: 0.5, z: 0.5}\n")
    with pytest.raises(ValueError, match=r"heavy_c.yaml.*\['z'\]"):
        build_database(run.results_settings(), results, results / "regmix.duckdb", regressor_loader=run.load_regressor)


def test_candidate_predictions_come_from_the_fitted_regression(tmp_path):
    """With the real regmix.regression model: a linear fit of proxy losses on the weights."""
    regression = pytest.importorskip("regmix.regression")
    results = run.write_run(tmp_path / "results")
    paths = [results / f"proxies/{m}/losses.json" for m in run.MIX_IDS]
    collect_proxies(paths, tmp_path / "m.csv", tmp_path / "l.csv")
    weights, losses = (
        pd.read_csv(tmp_path / "m.csv", index_col="index"),
        pd.read_csv(tmp_path / "l.csv", index_col="index"),
    )
    model = regression.fit_model(weights, losses, run.TARGET, "linear", folds=3, seed=0)
    (results / "regression/model.pkl").unlink()
    regression.save_model(model, results / "regression")
    build_database(run.results_settings(), results, results / "regmix.duckdb")
    con = duckdb.connect(str(results / "regmix.duckdb"), read_only=True)
    predicted = dict(con.execute("SELECT candidate, predicted_target FROM candidate_predictions").fetchall())
    # synthetic proxy losses are exactly 3.7 - 0.9 * weight on each domain: a linear fit recovers it
    for cand, w in run.CANDIDATE_WEIGHTS.items():
        assert predicted[cand] == pytest.approx(3.7 - 0.9 * w[run.TARGET], abs=1e-6)


def test_eval_rows_of_registry_tasks_pick_one_primary_metric():
    """lm-eval registry shapes: perplexity next to accuracy, several filters, N/A stderr."""
    result = {
        "runs": {
            "5": {
                "results": {
                    "lambada_standard": {
                        "alias": "lambada_standard",
                        "perplexity,none": 40.5,
                        "perplexity_stderr,none": 1.2,
                        "acc,none": 0.31,
                        "acc_stderr,none": 0.006,
                    },
                    "gsm8k": {
                        "alias": "gsm8k",
                        "exact_match,strict-match": 0.02,
                        "exact_match_stderr,strict-match": 0.004,
                        "exact_match,flexible-extract": 0.03,
                        "exact_match_stderr,flexible-extract": "N/A",
                    },
                },
                "higher_is_better": {
                    "lambada_standard": {"perplexity": False, "acc": True},
                    "gsm8k": {"exact_match": True},
                },
            }
        }
    }
    rows = pd.DataFrame(eval_rows("regmix", result, "eval/regmix.json"))
    assert len(rows) == 4 and set(rows["shots"]) == {5}
    primary = rows[rows.is_primary]
    assert sorted(zip(primary.task, primary.metric, primary["filter"], strict=False)) == [
        ("gsm8k", "exact_match", "flexible-extract"),
        ("lambada_standard", "acc", "none"),
    ]
    ppl = rows[(rows.task == "lambada_standard") & (rows.metric == "perplexity")].iloc[0]
    assert not ppl.higher_is_better and ppl.stderr == pytest.approx(1.2)
    assert pd.isna(rows[rows["filter"] == "flexible-extract"].iloc[0].stderr)


def test_eval_file_without_results_is_named():
    with pytest.raises(ValueError, match="eval/x.json"):
        eval_rows("x", {"runs": {"0": {"results": {}}}}, "eval/x.json")


def test_paired_comparisons_task_power_and_transfer_statistics():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 300
    truth = rng.random(n)
    rows = []
    # regmix right on 80% of items, "close" on 78% (no real difference), "bad" on 40%
    for cand, p in (("regmix", 0.8), ("close", 0.78), ("bad", 0.4)):
        # "close" is right on different items than regmix: differences of both signs
        scores = (truth < p if cand == "regmix" else truth > 1 - p if cand == "close" else rng.random(n) < p) * 1.0
        rows += [
            {
                "candidate": cand,
                "task": "t",
                "shots": 0,
                "doc_id": i,
                "metric": "acc",
                "score": s,
                "higher_is_better": True,
            }
            for i, s in enumerate(scores)
        ]
    items = pd.DataFrame(rows)
    paired = paired_comparisons(items, "regmix", seed=0).set_index("other")
    assert paired.loc["bad", "verdict"] == "better" and paired.loc["bad", "ci_low"] > 0
    assert (
        paired.loc["close", "verdict"] == "n.s."
        and paired.loc["close", "ci_low"] <= 0 <= paired.loc["close", "ci_high"]
    )
    assert (
        abs(
            paired.loc["bad", "mean_difference"]
            - (paired.loc["bad", "reference_score"] - paired.loc["bad", "other_score"])
        )
        < 1e-12
    )
    # lower-is-better metrics are oriented so that positive still means regmix is better
    flipped = items.assign(score=-items["score"], higher_is_better=False)
    again = paired_comparisons(flipped, "regmix", seed=0).set_index("other")
    assert again.loc["bad", "verdict"] == "better"
    power = task_power(items).iloc[0]
    assert (
        power["items"] == n
        and power["best"] in ("regmix", "close")
        and power["worst"] == "bad"
        and bool(power["can_tell_apart"])
    )
    same = items[items.candidate != "bad"].assign(score=lambda f: f["doc_id"] % 2 * 1.0)
    assert not bool(task_power(same).iloc[0]["can_tell_apart"])

    rho, low, high, used = spearman_ci([1, 2, 3, 4, 5, 6], [1.1, 2.5, 2.4, 4.0, 5.2, 6.1], seed=0)
    assert abs(rho - (1 - 6 * 2 / (6 * 35))) < 1e-9 and low <= rho <= high <= 1 and used > 900
    assert np.isnan(spearman_ci([1, 1, 1], [1, 2, 3])[0])
