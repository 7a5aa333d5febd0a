"""Honest scores: out-of-fold predictions, Spearman/Pearson/RMSE with bootstrap CIs."""

from __future__ import annotations

from typing import Any

import numpy as np

from regmix.config import MIN_FIT_ROWS
from regmix.regression.regressors import kfold, make_regressor


def check_rows(n: int, folds: int) -> None:
    need = max(folds, MIN_FIT_ROWS)
    if n < need:
        raise ValueError(f"only {n} rows to fit on: need at least {need} (cv_folds = {folds})")


def cross_validate(
    X: np.ndarray, y: np.ndarray, regressor: str, folds: int, seed: int, with_std: bool = False
) -> tuple[np.ndarray, ...]:
    """Out-of-fold predictions (and fold of each row; and std with `with_std`); each
    fold's regressor selects its own hyper-parameters."""
    check_rows(len(y), folds)
    predictions, std = np.empty(len(y)), np.empty(len(y))
    fold_of = np.empty(len(y), dtype=int)
    for fold, (train, held) in enumerate(kfold(len(y), folds, seed)):
        model = make_regressor(regressor).fit(X[train], y[train], folds, seed)
        predictions[held] = model.predict(X[held])
        if with_std:
            std[held] = model.predict_std(X[held])
        fold_of[held] = fold
    return (predictions, fold_of, std) if with_std else (predictions, fold_of)


def score(y_true: np.ndarray, y_pred: np.ndarray, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Spearman and Pearson (x100) and RMSE, each with a 95% percentile bootstrap CI."""
    from scipy.stats import pearsonr, spearmanr

    def metrics(t, p):
        return (100 * spearmanr(t, p)[0], 100 * pearsonr(t, p)[0], float(np.sqrt(np.mean((t - p) ** 2))))

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    point = metrics(y_true, y_pred)
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(bootstrap):
        rows = rng.integers(0, len(y_true), len(y_true))
        if np.ptp(y_true[rows]) == 0 or np.ptp(y_pred[rows]) == 0:
            continue
        resampled.append(metrics(y_true[rows], y_pred[rows]))
    draws = np.array(resampled)
    out: dict[str, Any] = {"n": int(len(y_true)), "bootstrap": int(len(draws))}
    for i, name in enumerate(("spearman", "pearson", "rmse")):
        low, high = np.percentile(draws[:, i], [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
        out[name] = {"value": float(point[i]), "ci_low": float(low), "ci_high": float(high)}
    return out


# z of a central 90% normal interval
Z90 = 1.6448536269514722


def coverage90(y_true: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Share of rows inside mean +- 1.645 std (0.90 when std is calibrated)."""
    return float(np.mean(np.abs(np.asarray(y_true) - mean) <= Z90 * std))
