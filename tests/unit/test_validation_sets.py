"""Validation-only sets: config checks, reading, tokenizing, and their losses in the tables,
the database, the summary and the figures (never in a mixture)."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from regmix import corpus, sources, summary, tokenization, tokenizer
from regmix.collect.database import build_database
from regmix.collect.proxies import collect_proxies
from regmix.config import ConfigError, stage_settings, validate_config, validation_set_settings
from regmix.regression.data import load_swarm_from_duckdb, read_swarm_csvs, target_values
from regmix.settings.data import DataSettings, TokenizerSettings
from regmix.targets import parse_target, study_target
from tests.helpers import synthetic_run as run

DOMAINS = ["code", "docs", "legal"]


def config_with(sets: dict, **extra) -> dict:
    return validate_config({"domains": DOMAINS, "regression": {"target": "mean"}, "validation_sets": sets, **extra})


def write_text_set(folder, texts):
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"{i:03d}.txt").write_text(text)
    return str(folder / "*.txt")


# ------------------------------------------------------------------------ config


def test_a_demo_set_of_an_untrained_demo_domain_passes_with_defaults(tmp_path):
    config = config_with({"heldout": {"kind": "demo", "domain": "structured"}})
    assert config["validation_sets"] == {"heldout": {"kind": "demo", "domain": "structured"}}
    pattern = write_text_set(tmp_path / "notes", ["one note", "two notes"])
    config = config_with({"notes": {"kind": "text", "files": pattern}})
    assert config["validation_sets"]["notes"]["text_unit"] == "file"  # the kind's default


@pytest.mark.parametrize(
    "sets, fragments",
    [
        ({"Docs": {"kind": "demo", "domain": "structured"}}, ["validation_sets.Docs", "'docs'"]),
        ({"mean": {"kind": "demo", "domain": "structured"}}, ["validation_sets.mean", "reserved"]),
        ({"Index": {"kind": "demo", "domain": "structured"}}, ["validation_sets.Index", "reserved"]),
        ({"2bad": {"kind": "demo", "domain": "structured"}}, ["validation_sets", "not a valid name"]),
        ({"held": {"kind": "demo", "domain": "docs"}}, ["validation_sets.held.domain", "training domain"]),
        ({"held": {"kind": "demo", "domain": "poetry"}}, ["validation_sets.held.domain", "not a demo domain"]),
        ({"held": {"kind": "demo"}}, ["validation_sets.held", "domain"]),
        ({"held": {"kind": "text"}}, ["validation_sets.held", "files"]),
        ({"held": {"kind": "text", "files": "/nonexistent/*.txt"}}, ["validation_sets.held.files", "no file"]),
        (
            {"held": {"kind": "demo", "domain": "structured", "text_field": "x"}},
            ["validation_sets.held", "text_field", "'demo'"],
        ),
        (
            {"held": {"kind": "huggingface", "name_or_path": "json", "domain_column": "meta"}},
            ["validation_sets.held", "domain_column and values"],
        ),
        (
            {"a_b": {"kind": "demo", "domain": "structured"}, "A_B": {"kind": "demo", "domain": "structured"}},
            ["validation_sets", "differ only in case"],
        ),
    ],
)
def test_bad_sets_are_refused_naming_the_key(sets, fragments):
    with pytest.raises(ConfigError) as err:
        config_with(sets)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_a_target_may_name_a_set_alone_or_weighted():
    held = {"held": {"kind": "demo", "domain": "structured"}}
    assert config_with(held, regression={"target": "held"})["regression"]["target"] == "held"
    config_with(held, regression={"target": {"held": 1, "docs": 1}})
    with pytest.raises(ConfigError, match="elsewhere"):
        config_with(held, regression={"target": "elsewhere"})
    with pytest.raises(ConfigError, match="held"):  # without the set, its name is unknown
        config_with({}, regression={"target": "held"})


def test_mean_stays_over_the_domains():
    target = parse_target("mean", DOMAINS, validation_sets=["held"])
    assert target.sets == DOMAINS
    assert target.value({"code": 1.0, "docs": 2.0, "legal": 3.0, "held": 100.0}) == pytest.approx(2.0)
    weighted = parse_target({"held": 3, "code": 1}, DOMAINS, validation_sets=["held"])
    assert dict(weighted.weights) == {"held": 0.75, "code": 0.25}


def test_a_set_changes_only_its_own_and_the_scoring_stages_settings():
    """Adding a set must not rebuild or retokenize the domains: the corpus, tokenizer,
    tokenize and mixture settings stay as they were; the trainers' list the set."""
    before = config_with({})
    after = config_with({"held": {"kind": "demo", "domain": "structured"}})
    for stage in ("corpus", "tokenizer", "tokenize", "mixtures", "candidates", "regression", "eval_tasks"):
        assert stage_settings(before, stage) == stage_settings(after, stage), stage
    for stage in ("proxy", "large", "collect", "summary", "plots"):
        assert stage_settings(after, stage)["validation_sets"] == ["held"], stage
    own = validation_set_settings(after, "held")
    assert own["validation_sets"] == {"held": {"kind": "demo", "domain": "structured"}}


# ----------------------------------------------------------------- reading, tokens


def reading_settings(sets: dict) -> DataSettings:
    return DataSettings.from_json(validation_set_settings(config_with(sets), next(iter(sets))), "validation_set")


def test_text_and_jsonl_sets_are_read_in_order(tmp_path):
    pattern = write_text_set(tmp_path / "notes", ["first note", "   ", "second note"])
    docs = list(
        sources.iter_validation_documents(
            reading_settings({"notes": {"kind": "text", "files": pattern}}), None, "notes"
        )
    )
    assert docs == ["first note", "second note"]  # the blank document is skipped
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"q": {"text": t}}) + "\n" for t in ["a question", "another"]))
    settings = reading_settings({"bench": {"kind": "jsonl", "files": str(path), "text_field": "q.text"}})
    assert list(sources.iter_validation_documents(settings, None, "bench")) == ["a question", "another"]


def test_a_huggingface_set_keeps_the_rows_of_the_named_values(tmp_path):
    """Like the paper's target: the Pile-CC rows of a validation split, nothing else."""
    path = tmp_path / "val.jsonl"
    rows = [
        {"text": f"{name} row {i}", "meta": {"pile_set_name": name}} for i in range(3) for name in ("Pile-CC", "ArXiv")
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "kind": "huggingface",
        "name_or_path": "json",
        "data_files": {"validation": str(path)},
        "domain_column": "meta.pile_set_name",
        "values": ["Pile-CC"],
    }
    config = config_with({"pile_cc": spec})
    assert sources.validation_set_files(config, "pile_cc") == [str(path)]
    settings = DataSettings.from_json(validation_set_settings(config, "pile_cc"), "validation_set")
    docs = list(sources.iter_validation_documents(settings, None, "pile_cc"))
    assert docs == [f"Pile-CC row {i}" for i in range(3)]


def test_an_empty_or_missing_set_is_an_error_naming_it(tmp_path):
    pattern = write_text_set(tmp_path / "blank", ["  ", "\n"])
    settings = reading_settings({"blank": {"kind": "text", "files": pattern}})
    with pytest.raises(ValueError, match="validation set 'blank': no documents"):
        list(sources.iter_validation_documents(settings, None, "blank"))
    settings = reading_settings({"held": {"kind": "demo", "domain": "structured"}})
    with pytest.raises(ValueError, match="validation set 'held'.*does not exist"):
        list(sources.iter_validation_documents(settings, tmp_path / "corpus", "held"))
    with pytest.raises(ValueError, match="validation set 'other'"):
        list(sources.iter_validation_documents(settings, tmp_path / "corpus", "other"))


def test_a_demo_set_is_the_held_out_slice_of_an_untrained_domain(tmp_path):
    config = config_with({"held": {"kind": "demo", "domain": "structured"}}, data={"demo_max_bytes_per_domain": 30000})
    settings = DataSettings.from_json(validation_set_settings(config, "held"), "validation_set")
    record = corpus.build_validation_set(settings, tmp_path / "corpus", "held")
    docs = list(sources.iter_validation_documents(settings, tmp_path / "corpus", "held"))
    assert record["documents"] == len(docs) > 0
    fraction = config["data"]["valid_fraction"]
    assert all(sources.in_valid_split(t, config["seed"], fraction) for t in docs)
    assert sources.validation_set_files(config, "held") == ["results/corpus/validation-sets/held.jsonl"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    for split in ("train", "valid"):
        for domain in DOMAINS:
            path = root / "corpus" / domain / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"text": f"{domain} text number {i}"}) + "\n" for i in range(50)))
    config = validate_config({"domains": DOMAINS, "regression": {"target": "mean"}, "tokenizer": {"vocab_size": 300}})
    tokenizer.build(TokenizerSettings.from_json(stage_settings(config, "tokenizer")), root / "corpus", root / "tok")
    return root / "tok"


def test_a_set_is_tokenized_into_its_valid_split(tmp_path, tok):
    pattern = write_text_set(tmp_path / "notes", [f"note {i} about nothing" for i in range(20)])
    settings = reading_settings({"notes": {"kind": "text", "files": pattern}})
    out = tmp_path / "data" / "notes" / "valid.bin"
    sidecar = tokenization.tokenize_split(settings, None, tok, "notes", "valid", out, validation_set=True)
    assert sidecar["validation_set"] is True and sidecar["documents"] == 20 and sidecar["domain"] == "notes"
    assert out.is_file() and out.with_suffix(".json").is_file()
    with pytest.raises(ValueError, match="validation set 'notes': .* fewer than"):
        tokenization.tokenize_split(
            settings, None, tok, "notes", "valid", tmp_path / "x" / "notes" / "valid.bin", 10**7, validation_set=True
        )
    assert not (tmp_path / "x" / "notes" / "valid.bin").exists()
    with pytest.raises(ValueError, match="only the valid split"):
        tokenization.tokenize_split(settings, None, tok, "notes", "train", tmp_path / "t.bin", validation_set=True)


# ------------------------------------------------------- tables, database, summary


SETS = (run.HELD_OUT,)


def test_losses_csv_has_a_set_column_outside_the_mean(tmp_path):
    results = run.write_run(tmp_path / "results", validation_sets=SETS)
    paths = [str(results / f"proxies/{m}/losses.json") for m in run.MIX_IDS]
    losses = collect_proxies(paths, tmp_path / "m.csv", tmp_path / "l.csv")
    assert list(pd.read_csv(tmp_path / "l.csv").columns) == ["index", *run.DOMAINS, run.HELD_OUT, "mean"]
    assert list(pd.read_csv(tmp_path / "m.csv").columns) == ["index", *run.DOMAINS]  # no mixture weighs it
    np.testing.assert_allclose(losses["mean"], losses[run.DOMAINS].mean(axis=1))
    mixtures, table = read_swarm_csvs(tmp_path / "m.csv", tmp_path / "l.csv")
    np.testing.assert_allclose(target_values(table, run.HELD_OUT), losses[run.HELD_OUT])


@pytest.fixture
def database(tmp_path):
    results = run.write_run(tmp_path / "results", validation_sets=SETS)
    settings = run.results_settings(validation_sets=SETS, target=run.HELD_OUT)
    build_database(settings, results, results / "regmix.duckdb", regressor_loader=run.load_regressor)
    return settings, results / "regmix.duckdb"


def test_the_database_holds_the_sets_losses_and_targets_them(database):
    settings, db = database
    with duckdb.connect(str(db), read_only=True) as con:
        held = con.execute("SELECT * FROM validation_sets").df()
        assert held.to_dict("records") == [{"name": "held", "documents": 12, "tokens": 4000, "bytes": 16000}]
        proxy = con.execute("SELECT count(*) FROM proxy_losses WHERE domain = 'held'").fetchone()[0]
        assert proxy == len(run.MIX_IDS)
        assert con.execute("SELECT count(*) FROM mixtures WHERE domain = 'held'").fetchone()[0] == 0
        runs = con.execute("SELECT candidate, achieved_target FROM large_runs").df().set_index("candidate")
        large = con.execute("SELECT candidate, loss FROM large_losses WHERE domain = 'held'").df()
        for row in large.itertuples():
            assert runs.loc[row.candidate, "achieved_target"] == pytest.approx(row.loss)
        assert con.execute("SELECT target FROM transfer_summary").fetchone()[0] == "held"
    _, frame = load_swarm_from_duckdb(db)
    np.testing.assert_allclose(frame["mean"], frame[run.DOMAINS].mean(axis=1))  # the set is not in the mean
    assert study_target(settings).sets == ["held"]


def test_the_summary_names_the_set_target_and_lists_every_sets_loss(database, tmp_path):
    settings, db = database
    table = summary.summarize(settings, db, tmp_path / "s.md", tmp_path / "s.csv")
    text = (tmp_path / "s.md").read_text()
    assert "validation-only set `held`" in text and "## Validation-only sets" in text
    csv = pd.read_csv(tmp_path / "s.csv").set_index("candidate")
    # the target is the held-out loss, so the target ranking follows it (heavy_c: most weight on c)
    assert csv["validation:held"].idxmin() == "heavy_c" == table.iloc[0]["candidate"]
    np.testing.assert_allclose(csv["validation:held"], csv["achieved_target"])


def test_the_summary_refuses_a_database_without_the_sets_losses(tmp_path):
    results = run.write_run(tmp_path / "results")
    build_database(run.results_settings(), results, results / "regmix.duckdb", regressor_loader=run.load_regressor)
    with pytest.raises(ValueError, match="validation set 'held'"):
        summary.summary_table(results / "regmix.duckdb", run.CANDIDATES, ["held"])


def test_predicted_vs_achieved_names_every_candidate_and_the_transfer_spearman(database):
    from regmix import plots

    settings, db = database
    with duckdb.connect(str(db), read_only=True) as con:
        data = {name: con.execute(f'SELECT * FROM "{name}"').df() for name in plots.TABLES}
    t = data["transfer_summary"].iloc[0]
    plt = plots._plt()
    fig = plots.predicted_vs_achieved(data, settings, plt)
    try:
        ax = fig.axes[0]
        assert f"{t.spearman:.2f}" in ax.get_title() and f"{t.ci_low:.2f} .. {t.ci_high:.2f}" in ax.get_title()
        assert {a.get_text() for a in ax.texts} == set(run.CANDIDATES)
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        expected = data["transfer"][["predicted_target", "achieved_target"]].to_numpy()
        assert sorted(map(tuple, points.round(8))) == sorted(map(tuple, expected.round(8)))
        assert "held" in ax.get_title()
        curves = plots.large_training_curves(data, settings, plt)
        right = curves.axes[1]
        final = {line.get_label(): line.get_ydata()[-1] for line in right.get_lines()}
        held = data["transfer"].set_index("candidate")["achieved_target"]
        for cand in run.CANDIDATES:  # the curve ends at the achieved target: the held-out loss
            assert final[cand] == pytest.approx(held[cand])
        plt.close(curves)
    finally:
        plt.close(fig)
