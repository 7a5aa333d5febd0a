"""Regress a target loss on mixture weights; cross-validate honestly; predict.

A swarm is two frames sharing an index: mixture weights (one column per domain, rows
normalised to sum 1) and losses (one column per metric). Every regressor chooses its
own hyper-parameters from the rows it is given (k-fold CV or marginal likelihood), so
`cross_validate` (which refits inside each fold) and any held-out test score are honest.

Regressors (`REGRESSORS`):
- `linear`: ordinary least squares on the weights (the paper's baseline).
- `lightgbm`: gradient-boosted trees (the paper's choice); leaves, leaf size and number
  of boosting rounds chosen by k-fold CV on the training rows.
- `gp`: Gaussian process on log(weight + eps) with an anisotropic RBF kernel. Losses
  respond roughly logarithmically to a domain's share, so the log features make the
  response smooth; kernel scales, noise and eps are chosen by the marginal likelihood
  of the training rows. Best on the paper's data (benchmarks/paper_regression.py).
- `ensemble`: w * gp + (1 - w) * lightgbm, w chosen by k-fold CV on the training rows.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from regmix import files
from regmix.config import load_schema, parse_settings
from regmix.targets import parse_target

MODEL_FILE = "model.pkl"
# rows of one GP kernel block when predicting (bounds memory: rows x train rows x 8 bytes)
GP_PREDICT_BLOCK = 16384
# threads of a GP prediction (the target machine has 2 cores)
PREDICT_THREADS = 2


# ----------------------------------------------------------------------------- data


def read_swarm_csvs(mixtures_csv: str | Path, losses_csv: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read RegMix-format CSVs and keep the rows present in both (matched on `index`)."""
    mixtures = _read_indexed_csv(mixtures_csv)
    losses = _read_indexed_csv(losses_csv)
    return align_swarm(mixtures, losses, f"{mixtures_csv} / {losses_csv}")


def _read_indexed_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    frame = pd.read_csv(path)
    if "index" not in frame.columns:
        raise ValueError(f"{path}: no 'index' column (columns: {list(frame.columns)})")
    if frame["index"].duplicated().any():
        dup = frame.loc[frame["index"].duplicated(), "index"].iloc[0]
        raise ValueError(f"{path}: index {dup!r} appears more than once")
    return frame.set_index("index")


def align_swarm(
    mixtures: pd.DataFrame, losses: pd.DataFrame, where: str = "swarm"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows in both frames, mixture rows checked and normalised to sum 1."""
    common = mixtures.index.intersection(losses.index, sort=False)
    if len(common) == 0:
        raise ValueError(f"{where}: no index value is present in both the mixtures and the losses")
    mixtures = normalise_rows(mixtures.loc[common], where)
    return mixtures, losses.loc[common]


def normalise_rows(mixtures: pd.DataFrame, where: str = "mixtures") -> pd.DataFrame:
    values = mixtures.to_numpy(dtype=float)
    bad_cols = [c for c, ok in zip(mixtures.columns, np.isfinite(values).all(axis=0)) if not ok]
    if bad_cols:
        raise ValueError(f"{where}: non-numeric or missing weights in column(s) {bad_cols}")
    if (values < 0).any():
        col = mixtures.columns[np.where((values < 0).any(axis=0))[0][0]]
        raise ValueError(f"{where}: negative weight in column {col!r}")
    sums = values.sum(axis=1)
    if (sums <= 0).any():
        raise ValueError(f"{where}: mixture row {mixtures.index[np.argmax(sums <= 0)]!r} has no weight")
    return pd.DataFrame(values / sums[:, None], index=mixtures.index, columns=mixtures.columns)


def load_swarm_from_duckdb(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pipeline database's `mixtures(mix_id, domain, weight)` and
    `proxy_losses(mix_id, domain, loss)` as (mixtures, losses) frames indexed by mix_id.

    The losses frame gains a `mean` column (mean over validation domains), like the
    collected losses CSV.
    """
    import duckdb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such database: {path}")
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in ("mixtures", "proxy_losses"):
            if table not in tables:
                raise ValueError(f"{path}: no table {table!r} (tables: {sorted(tables)})")
        weights = con.execute("SELECT mix_id, domain, weight FROM mixtures").df()
        losses = con.execute("SELECT mix_id, domain, loss FROM proxy_losses").df()
    finally:
        con.close()
    mixtures = _pivot(weights, "weight", f"{path}:mixtures", fill=0.0)
    loss_frame = _pivot(losses, "loss", f"{path}:proxy_losses", fill=None)
    loss_frame["mean"] = loss_frame.mean(axis=1)
    return align_swarm(mixtures, loss_frame, str(path))


def _pivot(long: pd.DataFrame, value: str, where: str, fill: float | None) -> pd.DataFrame:
    if long.duplicated(["mix_id", "domain"]).any():
        row = long[long.duplicated(["mix_id", "domain"])].iloc[0]
        raise ValueError(f"{where}: ({row['mix_id']}, {row['domain']}) appears more than once")
    wide = long.pivot(index="mix_id", columns="domain", values=value).sort_index()
    wide = wide.reindex(columns=sorted(wide.columns))
    if fill is not None:
        wide = wide.fillna(fill)
    elif wide.isna().any().any():
        col = wide.columns[wide.isna().any(axis=0)][0]
        mix = wide.index[wide[col].isna()][0]
        raise ValueError(f"{where}: no {value} for domain {col!r} of {mix!r}")
    wide.columns.name = None
    wide.index.name = "index"
    return wide.astype(float)


def target_values(losses: pd.DataFrame, target: str | dict, where: str = "losses") -> np.ndarray:
    """The target (a loss column, `mean`, or a {set: weight} objective) for each row."""
    return parse_target(target, list(losses.columns)).values(losses, where)


# ----------------------------------------------------------------------------- regressors


class LinearMixtureRegressor:
    """Ordinary least squares on the weights (no hyper-parameters)."""

    name = "linear"

    def fit(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> LinearMixtureRegressor:
        from sklearn.linear_model import LinearRegression

        self.model = LinearRegression().fit(X, y)
        self.hyperparameters = {}
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


class LightGBMMixtureRegressor:
    """LightGBM with leaves, minimum leaf size and boosting rounds chosen by k-fold CV."""

    name = "lightgbm"
    learning_rate = 0.1
    max_rounds = 1000
    early_stopping = 50

    def _grid(self, n: int) -> list[dict]:
        # the defaults (20 rows per leaf) cannot split a 20-row swarm: scale leaf size to n
        leaf_size = max(2, n // 40)
        return [{"num_leaves": leaves, "min_data_in_leaf": leaf_size} for leaves in (4, 8, 16)]

    def _params(self, grid_point: dict, seed: int) -> dict:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "min_data_in_bin": 1,
            "feature_pre_filter": False,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,  # tiny data: threads cost more than they save
            "seed": seed,
            "verbose": -1,
            **grid_point,
        }

    def fit(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> LightGBMMixtureRegressor:
        import lightgbm as lgb

        folds = min(folds, len(y))
        best = None
        for point in self._grid(len(y)):
            params = self._params(point, seed)
            result = lgb.cv(
                params,
                lgb.Dataset(X, y, params={"min_data_in_bin": 1, "feature_pre_filter": False}),
                num_boost_round=self.max_rounds,
                folds=list(_kfold(len(y), folds, seed)),
                metrics="l2",
                callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
            )
            scores = result["valid l2-mean"]
            rounds = int(np.argmin(scores)) + 1
            if best is None or scores[rounds - 1] < best[0]:
                best = (scores[rounds - 1], point, rounds)
        _, point, rounds = best
        self.hyperparameters = {**point, "learning_rate": self.learning_rate, "num_boost_round": rounds}
        self.booster = lgb.train(
            self._params(point, seed), lgb.Dataset(X, y, params={"min_data_in_bin": 1}), num_boost_round=rounds
        )
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X, num_threads=2)


class GPMixtureRegressor:
    """Gaussian process on log(w + eps): anisotropic RBF + white noise, standardised y.

    Kernel scales, amplitude and noise maximise the log marginal likelihood of the
    training rows (L-BFGS, analytic gradient) for each eps of a grid; the eps with the
    highest marginal likelihood is kept.
    """

    name = "gp"
    eps_grid = (1e-3, 3e-3, 1e-2)
    max_iterations = 200
    # bounds of the log hyper-parameters: length scales, amplitude, noise
    log_scale_bounds = (np.log(1e-2), np.log(1e4))
    log_amplitude_bounds = (np.log(1e-3), np.log(1e3))
    log_noise_bounds = (np.log(1e-8), np.log(1.0))

    @staticmethod
    def _negative_lml(theta: np.ndarray, Z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """-log p(y | Z, theta) and its gradient; theta = (log scales..., log amp, log noise)."""
        from scipy.linalg import cho_factor, cho_solve

        d = Z.shape[1]
        scales, amplitude, noise = np.exp(theta[:d]), np.exp(theta[d]), np.exp(theta[d + 1])
        S = Z / scales
        sq_norms = (S**2).sum(axis=1)
        sq = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * S @ S.T, 0.0)
        K_signal = amplitude * np.exp(-0.5 * sq)
        K = K_signal + noise * np.eye(len(y))
        try:
            factor = cho_factor(K, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return 1e25, np.zeros_like(theta)
        alpha = cho_solve(factor, y, check_finite=False)
        K_inv = cho_solve(factor, np.eye(len(y)), check_finite=False)
        value = 0.5 * y @ alpha + np.log(np.diag(factor[0])).sum() + 0.5 * len(y) * np.log(2 * np.pi)
        W = np.outer(alpha, alpha) - K_inv  # d lml / d K
        M = W * K_signal
        # d K_ij / d log scale_k = K_signal_ij * (s_ik - s_jk)^2, summed against W in O(n^2 d)
        grad_scales = 0.5 * (2.0 * (S**2 * M.sum(axis=1)[:, None]).sum(axis=0) - 2.0 * np.einsum("ik,ik->k", S, M @ S))
        grad_amplitude = 0.5 * M.sum()
        grad_noise = 0.5 * noise * np.trace(W)
        return float(value), -np.concatenate([grad_scales, [grad_amplitude, grad_noise]])

    def fit(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> GPMixtureRegressor:
        from scipy.optimize import minimize

        y_mean, y_std = float(np.mean(y)), float(np.std(y)) or 1.0
        y_std_units = (y - y_mean) / y_std
        d = X.shape[1]
        bounds = [self.log_scale_bounds] * d + [self.log_amplitude_bounds, self.log_noise_bounds]
        best = None
        for eps in self.eps_grid:
            Z = np.log(X + eps)
            # start: every length scale at the spread of its feature, unit amplitude, 1% noise
            start = np.concatenate([np.log(np.clip(Z.std(axis=0), 1e-2, 1e4)), [0.0, np.log(1e-2)]])
            # one BLAS thread: on small matrices extra threads only fight over the cores
            with threadpool_limits(1):
                result = minimize(
                    self._negative_lml,
                    start,
                    args=(Z, y_std_units),
                    jac=True,
                    method="L-BFGS-B",
                    bounds=bounds,
                    options={"maxiter": self.max_iterations},
                )
            if best is None or result.fun < best[0]:
                best = (result.fun, eps, result.x)
        negative_lml, eps, theta = best
        from scipy.linalg import cho_factor, cho_solve

        self.eps = eps
        self.length_scales = np.exp(theta[:d])
        self.amplitude = float(np.exp(theta[d]))
        self.noise = float(np.exp(theta[d + 1]))
        self.train_scaled = np.log(X + eps) / self.length_scales
        sq_norms = (self.train_scaled**2).sum(axis=1)
        sq = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * self.train_scaled @ self.train_scaled.T, 0.0)
        K = self.amplitude * np.exp(-0.5 * sq) + self.noise * np.eye(len(y))
        self.alpha = cho_solve(cho_factor(K, lower=True), y_std_units)
        self.y_mean, self.y_std = y_mean, y_std
        self.hyperparameters = {
            "eps": eps,
            "log_marginal_likelihood": -float(negative_lml),
            "amplitude": self.amplitude,
            "noise": self.noise,
            "length_scales": [float(v) for v in self.length_scales],
        }
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        # posterior mean written out, in bounded blocks (a million candidates at a time),
        # two blocks at once: numpy releases the GIL in the products and the exp
        from concurrent.futures import ThreadPoolExecutor

        out = np.empty(len(X))
        half_train_sq = 0.5 * (self.train_scaled**2).sum(axis=1)
        weights = self.amplitude * self.alpha

        def block(start: int) -> None:
            Z = np.log(X[start : start + GP_PREDICT_BLOCK] + self.eps) / self.length_scales
            # -0.5 |z - t|^2 = z.t - 0.5|z|^2 - 0.5|t|^2, built in place
            K = Z @ self.train_scaled.T
            K -= half_train_sq[None, :]
            K -= 0.5 * (Z**2).sum(axis=1)[:, None]
            np.minimum(K, 0.0, out=K)
            np.exp(K, out=K)
            out[start : start + len(Z)] = K @ weights

        with threadpool_limits(1), ThreadPoolExecutor(PREDICT_THREADS) as pool:
            list(pool.map(block, range(0, len(X), GP_PREDICT_BLOCK)))
        return out * self.y_std + self.y_mean


class GPLightGBMEnsembleRegressor:
    """w * gp + (1 - w) * lightgbm, w on a grid chosen by k-fold CV on the training rows.

    Each member picks its own hyper-parameters inside every fold (honest out-of-fold
    predictions); the w with the lowest out-of-fold squared error is kept and both
    members are refitted on all rows.
    """

    name = "ensemble"
    weight_grid = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))

    def fit(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> GPLightGBMEnsembleRegressor:
        folds = min(folds, len(y))
        out_of_fold = {name: np.empty(len(y)) for name in ("gp", "lightgbm")}
        for train, held in _kfold(len(y), folds, seed):
            for name, predictions in out_of_fold.items():
                predictions[held] = make_regressor(name).fit(X[train], y[train], folds, seed).predict(X[held])
        errors = [
            float(np.mean((w * out_of_fold["gp"] + (1 - w) * out_of_fold["lightgbm"] - y) ** 2))
            for w in self.weight_grid
        ]
        self.gp_weight = float(self.weight_grid[int(np.argmin(errors))])
        # a member with zero weight is neither refitted nor evaluated
        self.members = {
            name: make_regressor(name).fit(X, y, folds, seed)
            for name, w in (("gp", self.gp_weight), ("lightgbm", 1 - self.gp_weight))
            if w > 0
        }
        self.hyperparameters = {
            "gp_weight": self.gp_weight,
            "cv_mse_by_gp_weight": dict(zip(map(float, self.weight_grid), errors)),
            **{f"{name}": member.hyperparameters for name, member in self.members.items()},
        }
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        weights = {"gp": self.gp_weight, "lightgbm": 1 - self.gp_weight}
        return sum(weights[name] * member.predict(X) for name, member in self.members.items())


REGRESSORS = {
    cls.name: cls
    for cls in (LinearMixtureRegressor, LightGBMMixtureRegressor, GPMixtureRegressor, GPLightGBMEnsembleRegressor)
}


def make_regressor(name: str):
    if name not in REGRESSORS:
        raise ValueError(f"unknown regressor {name!r} (known: {sorted(REGRESSORS)})")
    return REGRESSORS[name]()


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
    _check_rows(len(y), folds)
    return FittedModel(make_regressor(regressor).fit(X, y, folds, seed), list(mixtures.columns), target, len(y))


def _check_rows(n: int, folds: int) -> None:
    if n < max(folds, 4):
        raise ValueError(f"only {n} rows to fit on: need at least {max(folds, 4)} (cv_folds = {folds})")


def _kfold(n: int, folds: int, seed: int):
    from sklearn.model_selection import KFold

    return KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.arange(n))


def cross_validate(
    X: np.ndarray, y: np.ndarray, regressor: str, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions; each fold's regressor selects its own hyper-parameters."""
    _check_rows(len(y), folds)
    predictions = np.empty(len(y))
    fold_of = np.empty(len(y), dtype=int)
    for fold, (train, held) in enumerate(_kfold(len(y), folds, seed)):
        model = make_regressor(regressor).fit(X[train], y[train], folds, seed)
        predictions[held] = model.predict(X[held])
        fold_of[held] = fold
    return predictions, fold_of


def score(y_true: np.ndarray, y_pred: np.ndarray, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Spearman and Pearson (x100) and RMSE, each with a 95% percentile bootstrap CI."""
    from scipy.stats import pearsonr, spearmanr

    def metrics(t, p):
        return (100 * spearmanr(t, p)[0], 100 * pearsonr(t, p)[0], float(np.sqrt(np.mean((t - p) ** 2))))

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    point = metrics(y_true, y_pred)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        rows = rng.integers(0, len(y_true), len(y_true))
        if np.ptp(y_true[rows]) == 0 or np.ptp(y_pred[rows]) == 0:
            continue
        draws.append(metrics(y_true[rows], y_pred[rows]))
    draws = np.array(draws)
    out = {"n": int(len(y_true)), "bootstrap": int(len(draws))}
    for i, name in enumerate(("spearman", "pearson", "rmse")):
        low, high = np.percentile(draws[:, i], [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
        out[name] = {"value": float(point[i]), "ci_low": float(low), "ci_high": float(high)}
    return out


def save_model(model: FittedModel, directory: str | Path) -> None:
    with files.atomic_path(Path(directory) / MODEL_FILE) as tmp:
        tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


def load_model(directory: str | Path) -> FittedModel:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fitted model at {path} (run `regmix fit` first)")
    model = pickle.loads(path.read_bytes())
    if not isinstance(model, FittedModel):
        raise ValueError(f"{path}: not a regmix fitted model")
    return model


def plot_pred_vs_true(y_true, y_pred, spearman: float, target: str, title: str, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=12, alpha=0.7, label=f"held-out rows (Spearman {spearman:.2f})")
    low, high = float(min(np.min(y_true), np.min(y_pred))), float(max(np.max(y_true), np.max(y_pred)))
    ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--", label="y = x")
    ax.set_xlabel(f"true {target} (nats/token)")
    ax.set_ylabel(f"predicted {target} (nats/token)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- commands


def fit_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix fit", description="Fit a regressor from mixture weights to a target loss."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mixtures", help="RegMix-format mixtures CSV (index,<domain>...)")
    source.add_argument("--db", help="pipeline DuckDB file (tables mixtures, proxy_losses) instead of CSVs")
    parser.add_argument("--losses", help="RegMix-format losses CSV (index,<metric>...); required with --mixtures")
    parser.add_argument("--target", help="loss column to fit (default: settings' regression.target)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--regressor", help=f"one of {sorted(REGRESSORS)} (default: settings' or schema's regression.regressor)"
    )
    parser.add_argument("--settings", help="stage settings JSON (regmix.config.stage_settings(config, 'regression'))")
    args = parser.parse_args(argv)

    settings = regression_defaults()
    if args.settings:
        settings.update(parse_settings(args.settings).get("regression", {}))
    regressor = args.regressor or settings["regressor"]
    target = args.target or settings["target"]
    folds, seed = int(settings["cv_folds"]), int(settings["seed"])
    make_regressor(regressor)  # fail on a bad name before any work

    if args.mixtures:
        if not args.losses:
            parser.error("--losses is required with --mixtures")
        mixtures, losses = read_swarm_csvs(args.mixtures, args.losses)
        inputs = [args.mixtures, args.losses]
    else:
        mixtures, losses = load_swarm_from_duckdb(args.db)
        inputs = [args.db]
    y = target_values(losses, target)
    X = mixtures.to_numpy(dtype=float)
    _check_rows(len(y), folds)

    out = Path(args.out)
    oof, fold_of = cross_validate(X, y, regressor, folds, seed)
    cv = score(y, oof, seed=seed)
    model = fit_model(mixtures, losses, target, regressor, folds, seed)
    run_settings = {"regressor": regressor, "target": target, "cv_folds": folds, "seed": seed}

    cv_frame = pd.DataFrame({"index": mixtures.index, "fold": fold_of, "true": y, "predicted": oof})
    with files.atomic_path(out / "cv_predictions.csv") as tmp:
        cv_frame.to_csv(tmp, index=False)
    plot_pred_vs_true(
        y,
        oof,
        cv["spearman"]["value"],
        target,
        f"{regressor}: {folds}-fold CV, {len(y)} rows",
        out / "pred_vs_true.png",
    )
    files.write_json(out / "cv.json", {"regressor": regressor, "target": target, "folds": folds, "rows": len(y), **cv})
    files.write_json(
        out / "settings.json",
        {
            **run_settings,
            "domains": model.domains,
            "rows": len(y),
            "hyperparameters": model.regressor.hyperparameters,
            "provenance": files.provenance(run_settings, inputs),
        },
    )
    save_model(model, out)  # last: its presence marks a complete fit
    print(
        f"regmix fit: {regressor} on {len(y)} rows, target {target}: CV Spearman {cv['spearman']['value']:.2f} "
        f"(95% CI {cv['spearman']['ci_low']:.2f}..{cv['spearman']['ci_high']:.2f}), RMSE {cv['rmse']['value']:.4f}"
    )
    return 0


def predict_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix predict", description="Predict the target for each mixture row.")
    parser.add_argument("--model", required=True, help="directory written by `regmix fit`")
    parser.add_argument("--mixtures", required=True, help="RegMix-format mixtures CSV")
    parser.add_argument("--out", required=True, help="output CSV: index,prediction")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    mixtures = _read_indexed_csv(args.mixtures)
    predictions = model.predict_frame(mixtures, args.mixtures)
    with files.atomic_path(args.out) as tmp:
        pd.DataFrame({"index": mixtures.index, "prediction": predictions}).to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(fit_main(sys.argv[1:]))
