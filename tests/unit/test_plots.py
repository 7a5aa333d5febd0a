"""The report's figures, drawn from the database of a synthetic run."""

import json

import duckdb
import pytest
from PIL import Image

from regmix import plots
from regmix.cli import main as cli_main
from regmix.collect.database import build_database
from regmix.config import REPO_DIR
from tests.helpers import synthetic_run as run


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    results = run.write_run(tmp_path_factory.mktemp("plots") / "results")
    build_database(run.results_settings(), results, results / "regmix.duckdb", regressor_loader=run.load_regressor)
    return results / "regmix.duckdb"


@pytest.fixture(scope="module")
def data(database):
    con = duckdb.connect(str(database), read_only=True)
    yield {name: con.execute(f'SELECT * FROM "{name}"').df() for name in plots.TABLES}
    con.close()


def test_plots_writes_every_figure_with_provenance(tmp_path, database):
    code = cli_main(
        ["plots", "--settings", json.dumps(run.settings()), "--db", str(database), "--out-dir", str(tmp_path)]
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(plots.FIGURES)
    for name in plots.FIGURES:
        image = Image.open(tmp_path / name)
        assert image.format == "PNG" and image.width >= 400 and image.height >= 300
        record = json.loads(image.text["Description"])
        assert record["settings"] == run.settings() and str(database) in record["inputs"]
    assert json.loads((tmp_path / "provenance.json").read_text())["figures"] == list(plots.FIGURES)


def test_every_figure_has_a_caption_file():
    for category, caption in plots.FIGURES.values():
        text = (REPO_DIR / "report" / caption).read_text()
        assert len(text.split()) > 10 and category


@pytest.mark.parametrize("name", list(plots.DRAWERS))
def test_every_axis_is_labelled(name, data):
    plt = plots._plt()
    fig = plots.DRAWERS[name](data, run.results_settings(), plt)
    try:
        for ax in (a for a in fig.axes if a.get_visible()):
            assert ax.get_xlabel() or ax.get_xticklabels(), name
            assert ax.get_ylabel(), name
    finally:
        plt.close(fig)


def test_cv_figure_reports_the_spearman_of_the_rows(data):
    plt = plots._plt()
    fig = plots.cv_pred_vs_true(data, run.results_settings(), plt)
    # rows (true, predicted): (3.1, 3.05) (2.9, 2.95) (2.7, 2.72) (3.0, 2.9): ranks 4,2,1,3 vs 4,3,1,2 -> 0.8
    assert "ρ = 0.800" in fig.axes[0].get_title()
    plt.close(fig)


def test_downstream_error_bars_are_the_stderr(data):
    plt = plots._plt()
    fig = plots.downstream_scores(data, run.results_settings(), plt)
    ax = next(a for a in fig.axes if a.get_title() == "regmix_mc_b")
    from matplotlib.container import BarContainer

    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    heights = [b.get_height() for b in bars]
    assert heights[0] == pytest.approx(0.3 + 0.5 * 0.7 + 0.01 + 0.01)  # regmix acc_norm, mean of 0 and 1 shots
    segments = bars.errorbar.lines[2][0].get_segments()
    combined = (0.05**2 * 2) ** 0.5 / 2  # two shot counts with stderr 0.05 each
    assert segments[0][1][1] - segments[0][0][1] == pytest.approx(2 * combined)
    plt.close(fig)
