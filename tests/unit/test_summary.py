"""The ranked summary, built from the database of a synthetic run."""

import json

import pandas as pd
import pytest

from regmix.cli import main as cli_main
from regmix.collect.database import build_database
from regmix.settings.outputs import ResultsSettings
from tests.helpers import synthetic_run as run


@pytest.fixture
def database(tmp_path):
    results = run.write_run(tmp_path / "results")
    build_database(run.results_settings(), results, results / "regmix.duckdb", regressor_loader=run.load_regressor)
    return results / "regmix.duckdb"


def test_summary_ranks_candidates_on_target_and_tasks(tmp_path, database):
    out_md, out_csv = tmp_path / "summary.md", tmp_path / "summary.csv"
    code = cli_main(
        [
            "summary",
            "--settings",
            json.dumps(run.settings()),
            "--db",
            str(database),
            "--out-md",
            str(out_md),
            "--out-csv",
            str(out_csv),
        ]
    )
    assert code == 0
    table = pd.read_csv(out_csv)
    assert list(table["candidate"]) == ["regmix", "uniform", "prior", "heavy_c"]
    assert list(table["target_rank"]) == [1, 2, 3, 4]
    row = table.set_index("candidate").loc["prior"]
    assert row["predicted_target"] == pytest.approx(3.0 - 0.2)
    assert row["achieved_target"] == pytest.approx(3.2 - 0.9 * 0.2)
    assert row["regmix_ppl_b:bits_per_byte"] == pytest.approx(2.0 - (0.3 + 0.5 * 0.2))
    assert row["regmix_mc_b:acc_norm:rank"] == 3
    assert table.set_index("candidate").loc["regmix", "task_rank"] == 1

    md = out_md.read_text()
    assert "validation loss on domain `b`" in md
    lines = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert lines and "`regmix`" in lines[0] and "2.5700" in lines[0] and "2.3000" in lines[0]
    assert "mean over 0, 1-shot runs" in md
    task_row = next(line for line in md.splitlines() if line.startswith("| `regmix_mc_b` | acc_norm |"))
    assert task_row.split(" | ")[2] == "0.6700 ± 0.0354 (1)"  # regmix first, averaged over shots
    # synthetic run: downstream follows the target weight exactly as the loss does
    assert "mean task rank over 4 candidates: +1.00" in md
    assert "| spearman | 90.0000 | 70.0000 .. 98.0000 |" in md
    # predicted and achieved target both fall with the weight on b: the transfer is a perfect rank match
    assert "achieved target over 4 candidates: 1.00" in md and "`regmix` ranks 1 of 4" in md
    sidecar = json.loads((tmp_path / "summary.provenance.json").read_text())
    assert sidecar["settings"] == run.settings() and str(database) in sidecar["inputs"]


def test_summary_names_a_candidate_missing_from_the_database(tmp_path, database):
    settings = ResultsSettings.from_json({**run.settings(), "candidates": [*run.CANDIDATES, "random_000"]}, "summary")
    with pytest.raises(ValueError, match="random_000"):
        from regmix import summary

        summary.summarize(settings, database, tmp_path / "s.md", tmp_path / "s.csv")
    assert not (tmp_path / "s.md").exists()
