"""Regress a target loss on mixture weights; cross-validate honestly; predict with uncertainty.

Modules: `data` (swarm I/O, joining swarms), `swarm_import` (`regmix import-swarm`),
`regressors` (gp, lightgbm, linear, loglinear, ensemble, each with a predictive std),
`model` (FittedModel, save/load), `scoring` (CV and metrics), `plots`, `cli` (`regmix fit`,
`regmix predict`).
"""

from regmix.regression.cli import fit_main, predict_main
from regmix.regression.data import (
    align_swarm,
    combine_swarms,
    conform_domains,
    load_swarm_from_duckdb,
    normalise_rows,
    read_swarm_csvs,
    target_values,
)
from regmix.regression.model import MODEL_FILE, FittedModel, fit_model, load_model, regression_defaults, save_model
from regmix.regression.plots import plot_pred_vs_true
from regmix.regression.regressors import REGRESSORS, make_regressor
from regmix.regression.scoring import coverage90, cross_validate, score

__all__ = [
    "MODEL_FILE",
    "REGRESSORS",
    "FittedModel",
    "align_swarm",
    "combine_swarms",
    "conform_domains",
    "coverage90",
    "cross_validate",
    "fit_main",
    "fit_model",
    "load_model",
    "load_swarm_from_duckdb",
    "make_regressor",
    "normalise_rows",
    "plot_pred_vs_true",
    "predict_main",
    "read_swarm_csvs",
    "regression_defaults",
    "save_model",
    "score",
    "target_values",
]
