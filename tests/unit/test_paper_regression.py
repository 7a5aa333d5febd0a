"""The default regressor on the RegMix paper's released runs (skipped without the data)."""

import numpy as np
import pytest

from regmix.choose import choose, read_mixture_file
from regmix.paper import NAMED, TARGET, data_dir, prior_by_column
from regmix.regression import fit_model, read_swarm_csvs, regression_defaults, score, target_values

DATA = data_dir()
PAPER_LIGHTGBM_SPEARMAN = 98.45

pytestmark = [
    pytest.mark.paper,
    pytest.mark.skipif(not (DATA / "train_mixture_1m.csv").is_file(), reason=f"paper data not found under {DATA}"),
]


@pytest.fixture(scope="module")
def default_model():
    train_mix, train_loss = read_swarm_csvs(DATA / "train_mixture_1m.csv", DATA / "train_pile_loss_1m.csv")
    assert len(train_mix) == 512
    defaults = regression_defaults()
    # fitted on training rows only: the test rows are read after the model is final
    return fit_model(train_mix, train_loss, TARGET, defaults["regressor"], defaults["cv_folds"], defaults["seed"])


def test_default_regressor_beats_the_papers_lightgbm_on_unseen_runs(default_model):
    test_mix, test_loss = read_swarm_csvs(DATA / "test_mixture_1m.csv", DATA / "test_pile_loss_1m.csv")
    assert len(test_mix) == 256
    result = score(target_values(test_loss, TARGET), default_model.predict_frame(test_mix), bootstrap=0)
    assert result["spearman"]["value"] >= PAPER_LIGHTGBM_SPEARMAN


def test_default_choice_is_predicted_no_worse_than_the_papers_named_mixtures(default_model):
    prior = prior_by_column()
    chosen, _, _ = choose(default_model, prior, samples=1_000_000, top_k=100, seed=0, max_epochs=15)
    weights = np.array([chosen["weights"][d] for d in default_model.domains])
    assert (
        abs(weights.sum() - 1) < 1e-6 and (weights <= np.minimum(15 * np.array(list(prior.values())), 1) + 1e-9).all()
    )
    for name in NAMED:
        named = read_mixture_file(DATA / "config_1b" / f"{name}.yaml", default_model.domains)
        assert chosen["predicted_target"] <= default_model.predict_mapping(named) + 1e-9, name


def test_optimised_choice_is_capped_and_no_worse_than_the_top_k_average(default_model):
    prior = prior_by_column()
    chosen, _, _ = choose(default_model, prior, samples=100_000, top_k=100, seed=0, max_epochs=15, rule="optimize")
    top, opt = chosen["choices"]["topk"], chosen["choices"]["optimize"]
    weights = np.array([opt["weights"][d] for d in default_model.domains])
    caps = np.minimum(15 * np.array(list(prior.values())), 1)
    assert abs(weights.sum() - 1) < 1e-9 and (weights >= -1e-12).all() and (weights <= caps + 1e-9).all()
    assert opt["predicted_target"] <= top["predicted_target"]
    assert opt["predicted_std"] > 0 and opt["support_distance"] >= 0
