"""The default regressor on the RegMix paper's released runs (skipped without the data)."""

import os
from pathlib import Path

import pytest

from regmix.regression import fit_model, read_swarm_csvs, regression_defaults, score, target_values

DATA = Path(os.environ.get("REGMIX_PAPER_DATA", Path(__file__).resolve().parents[2] / "shared" / "paper-data"))
TARGET = "metric/the_pile_pile_cc_val_loss"
PAPER_LIGHTGBM_SPEARMAN = 98.45

pytestmark = [
    pytest.mark.paper,
    pytest.mark.skipif(not (DATA / "train_mixture_1m.csv").is_file(), reason=f"paper data not found under {DATA}"),
]


def test_default_regressor_beats_the_papers_lightgbm_on_unseen_runs():
    train_mix, train_loss = read_swarm_csvs(DATA / "train_mixture_1m.csv", DATA / "train_pile_loss_1m.csv")
    test_mix, test_loss = read_swarm_csvs(DATA / "test_mixture_1m.csv", DATA / "test_pile_loss_1m.csv")
    assert (len(train_mix), len(test_mix)) == (512, 256)
    defaults = regression_defaults()
    # fitted on training rows only: the test rows are read after the model is final
    model = fit_model(train_mix, train_loss, TARGET, defaults["regressor"], defaults["cv_folds"], defaults["seed"])
    result = score(target_values(test_loss, TARGET), model.predict_frame(test_mix), bootstrap=0)
    assert result["spearman"]["value"] >= PAPER_LIGHTGBM_SPEARMAN
