"""A fitted model: a regressor plus its domains, target and training swarm; save/load."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.config import load_schema
from regmix.regression.data import normalise_rows, target_values
from regmix.regression.regressors import make_regressor
from regmix.regression.scoring import check_rows

MODEL_FILE = "model.pkl"
# bumped when a pickled model's layout changes: older pickles are refused with a clear line
MODEL_FORMAT = 2


def regression_defaults() -> dict:
    """The schema's defaults of the `regression:` section (one source of truth)."""
    props = load_schema()["properties"]["regression"]["properties"]
    return {key: spec["default"] for key, spec in props.items()}


# ----------------------------------------------------------------------------- fitted model


class FittedModel:
    """A regressor plus what it was fitted on: domain order and target name."""

    def __init__(self, regressor, domains: list[str], target: str, n_rows: int):
        self.regressor = regressor
        self.domains = list(domains)
        self.target = target
        self.n_rows = n_rows
        self.format = MODEL_FORMAT
        self.swarm: np.ndarray | None = None  # training mixture weights (domains order): the support of the fit

    def predict_std_weights(self, weights: np.ndarray) -> np.ndarray:
        """1-sigma predictive std of the target at rows of weights (see regressors.py)."""
        self.predict_weights(weights[:1])  # shape check
        return np.asarray(self.regressor.predict_std(np.asarray(weights, dtype=float)), dtype=float)

    def support(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Euclidean distance of each row to the nearest training mixture, that mixture's row
        number, and a (rows x domains) sign: +1 above / -1 below the swarm's range, 0 inside."""
        weights = np.asarray(weights, dtype=float)
        T = self.swarm
        if T is None:
            raise ValueError("the model has no training swarm (fit_model records it): its support is unknown")
        sq = (weights**2).sum(axis=1)[:, None] + (T**2).sum(axis=1)[None, :] - 2.0 * weights @ T.T
        nearest = np.argmin(sq, axis=1)
        distance = np.sqrt(np.maximum(sq[np.arange(len(weights)), nearest], 0.0))
        beyond = (weights > T.max(axis=0) + 1e-9).astype(int) - (weights < T.min(axis=0) - 1e-9).astype(int)
        return distance, nearest, beyond

    def predict_weights(self, weights: np.ndarray) -> np.ndarray:
        """Predict rows of weights in `self.domains` order (rows already sum to 1)."""
        weights = np.asarray(weights, dtype=float)
        if weights.ndim != 2 or weights.shape[1] != len(self.domains):
            raise ValueError(
                f"expected weights with {len(self.domains)} columns ({self.domains}), got shape {weights.shape}"
            )
        return np.asarray(self.regressor.predict(weights), dtype=float)

    def predict_frame(self, mixtures: pd.DataFrame, where: str = "mixtures") -> np.ndarray:
        missing = [d for d in self.domains if d not in mixtures.columns]
        extra = [c for c in mixtures.columns if c not in self.domains]
        if missing or extra:
            raise ValueError(f"{where}: columns do not match the model's domains (missing {missing}, unknown {extra})")
        return self.predict_weights(normalise_rows(mixtures[self.domains], where).to_numpy())

    def predict_mapping(self, weights: dict, where: str = "mixture") -> float:
        frame = pd.DataFrame([{d: float(weights.get(d, 0.0)) for d in self.domains}])
        unknown = sorted(set(weights) - set(self.domains))
        if unknown:
            raise ValueError(f"{where}: unknown domain(s) {unknown} (model domains: {self.domains})")
        return float(self.predict_frame(frame, where)[0])


def fit_model(
    mixtures: pd.DataFrame, losses: pd.DataFrame, target: str, regressor: str, folds: int, seed: int
) -> FittedModel:
    y = target_values(losses, target)
    X = mixtures.to_numpy(dtype=float)
    check_rows(len(y), folds)
    model = FittedModel(make_regressor(regressor).fit(X, y, folds, seed), list(mixtures.columns), target, len(y))
    model.swarm = X.copy()
    return model


def save_model(model: FittedModel, directory: str | Path) -> None:
    with files.atomic_path(Path(directory) / MODEL_FILE) as tmp:
        tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


def load_model(directory: str | Path) -> FittedModel:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fitted model at {path} (run `regmix fit` first)")
    model = files.load_pickle(path, FittedModel, "rerun `regmix fit`")
    if getattr(model, "format", 1) != MODEL_FORMAT:
        raise ValueError(
            f"{path}: written by an older regmix (model format {getattr(model, 'format', 1)}, "
            f"this one reads {MODEL_FORMAT}); rerun `regmix fit`"
        )
    return model
