"""Regressors from mixture weights to one target, each able to say how sure it is.

Every regressor chooses its own hyper-parameters from the rows it is given (k-fold CV,
marginal likelihood, or none), so CV that refits inside each fold is honest. Each has
`predict(X)` (mean) and `predict_std(X)`: a 1-sigma predictive standard deviation of an
observed loss at X (model uncertainty plus noise):
- `gp`: its posterior (latent variance + fitted noise).
- `linear`, `lightgbm`, `loglinear`: a fold ensemble. k models refitted with the chosen
  hyper-parameters on k-1 folds each (no inner search: cheap); the spread of their
  predictions, calibrated on their out-of-fold residuals (`FoldSpread`).
- `ensemble`: the weighted sum of its members' std (as if perfectly correlated: an
  upper bound).

Smooth regressors (`gp`, `linear`, `loglinear`) also give `gradient(X)` for the exact
optimiser; `lightgbm` is piecewise constant and has none.

- `linear`: ordinary least squares on the weights (the paper's baseline).
- `lightgbm`: gradient-boosted trees (the paper's choice); leaves and rounds by k-fold CV.
- `gp`: Gaussian process on log(weight + eps), anisotropic RBF; scales, noise and eps by
  the marginal likelihood. Losses respond roughly logarithmically to a domain's share.
- `loglinear`: the log-linear mixing law loss = c + exp(sum_d t_d w_d) (Data Mixing
  Laws; Olmix), least squares; with sum w = 1 a constant in the exponent is absorbed by t.
  Minimising it over a convex set is minimising the linear t.w: a convex problem.
- `ensemble`: w * gp + (1 - w) * lightgbm, w chosen by k-fold CV on the training rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
from threadpoolctl import threadpool_limits

# rows of one GP kernel block when predicting: 2048 x 512 train rows x 8 bytes = 8 MB,
# small enough to stay in cache between the product, the exp and the sum (faster than
# larger blocks: benchmarks/paper_regression.py times the choice; README "Measured figures")
GP_PREDICT_BLOCK = 2048
# threads of a GP or LightGBM prediction: the blocks are independent, so the predictions
# do not depend on this count, only the time of choose's many-candidate prediction does
PREDICT_THREADS = 2


def kfold(n: int, folds: int, seed: int):
    from sklearn.model_selection import KFold

    return KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.arange(n))


def _blocks(n: int, fn, block: int = GP_PREDICT_BLOCK) -> None:
    """Run fn(start) over row blocks on PREDICT_THREADS threads (numpy releases the GIL)."""
    with threadpool_limits(1), ThreadPoolExecutor(PREDICT_THREADS) as pool:
        list(pool.map(fn, range(0, n, block)))


class FoldSpread:
    """Uncertainty of a regressor without its own: the spread of k fold refits.

    Members reuse the full fit's hyper-parameters (`_refit`), so they cost k plain fits.
    std(x) = sqrt(scale * spread(x)^2 + floor^2): `floor` (noise the spread cannot see)
    makes the out-of-fold z-scores r / std have unit mean square; when the spread alone
    already over-covers, floor = 0 and `scale` shrinks it instead.
    """

    members: list
    hyperparameters: dict[str, Any]

    def _refit(self, X: np.ndarray, y: np.ndarray, seed: int) -> Any:
        """A plain fit of one fold with the full fit's hyper-parameters (each regressor has its own)."""
        raise NotImplementedError

    def _fit_spread(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> None:
        folds = min(folds, len(y))
        self.members, residual, spread = [], np.empty(len(y)), np.empty(len(y))
        for train, held in kfold(len(y), folds, seed):
            self.members.append(self._refit(X[train], y[train], seed))
            residual[held] = y[held] - self.members[-1].predict(X[held])
        spread = self._spread(X)
        r2, s2 = residual**2, spread**2
        self.spread_scale, self.spread_floor = 1.0, 0.0
        if np.mean(r2 / np.maximum(s2, 1e-300)) < 1.0:
            self.spread_scale = float(np.mean(r2 / np.maximum(s2, 1e-300)))
        else:  # solve mean(r2 / (s2 + f^2)) = 1 for f by bisection (decreasing in f)
            low, high = 0.0, float(np.sqrt(r2.max())) + 1e-12
            for _ in range(100):
                mid = 0.5 * (low + high)
                low, high = (mid, high) if np.mean(r2 / (s2 + mid**2)) > 1.0 else (low, mid)
            self.spread_floor = high
        self.hyperparameters["uncertainty"] = {
            "method": f"{folds}-fold ensemble",
            "spread_scale": self.spread_scale,
            "floor": self.spread_floor,
        }

    def _spread(self, X: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(X) for m in self.members]).std(axis=0, ddof=1)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.sqrt(self.spread_scale * self._spread(X) ** 2 + self.spread_floor**2)


class LinearMixtureRegressor(FoldSpread):
    """Ordinary least squares on the weights (no hyper-parameters)."""

    name = "linear"

    def fit(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> LinearMixtureRegressor:
        self._ols(X, y)
        self.hyperparameters = {}
        self._fit_spread(X, y, folds, seed)
        return self

    def _ols(self, X, y):
        from sklearn.linear_model import LinearRegression

        self.model = LinearRegression().fit(X, y)
        return self

    def _refit(self, X, y, seed):
        return LinearMixtureRegressor()._ols(X, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def gradient(self, X: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.model.coef_, np.shape(X)).copy()


class LightGBMMixtureRegressor(FoldSpread):
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
        best: tuple[float, dict, int] | None = None
        for point in self._grid(len(y)):
            params = self._params(point, seed)
            result = lgb.cv(
                params,
                lgb.Dataset(X, y, params={"min_data_in_bin": 1, "feature_pre_filter": False}),
                num_boost_round=self.max_rounds,
                folds=list(kfold(len(y), folds, seed)),
                metrics="l2",
                callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
            )
            scores = cast("list[float]", result["valid l2-mean"])
            rounds = int(np.argmin(scores)) + 1
            if best is None or scores[rounds - 1] < best[0]:
                best = (scores[rounds - 1], point, rounds)
        assert best is not None, "the grid has at least one point"
        _, self.grid_point, self.rounds = best
        self.seed = seed
        self.hyperparameters = {**self.grid_point, "learning_rate": self.learning_rate, "num_boost_round": self.rounds}
        self._train(X, y)
        self._fit_spread(X, y, folds, seed)
        return self

    def _train(self, X, y):
        import lightgbm as lgb

        self.booster = lgb.train(
            self._params(self.grid_point, self.seed),
            lgb.Dataset(X, y, params={"min_data_in_bin": 1}),
            num_boost_round=self.rounds,
        )
        return self

    def _refit(self, X, y, seed):
        member = LightGBMMixtureRegressor()
        member.grid_point, member.rounds, member.seed = self.grid_point, self.rounds, seed
        return member._train(X, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X, num_threads=PREDICT_THREADS))


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
        from scipy.linalg import cho_factor, cho_solve, solve_triangular
        from scipy.optimize import minimize

        y_mean, y_std = float(np.mean(y)), float(np.std(y)) or 1.0
        y_std_units = (y - y_mean) / y_std
        d = X.shape[1]
        bounds = [self.log_scale_bounds] * d + [self.log_amplitude_bounds, self.log_noise_bounds]
        best: tuple[float, float, np.ndarray] | None = None
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
        assert best is not None, "eps_grid has at least one value"
        negative_lml, eps, theta = best
        self.eps = eps
        self.length_scales = np.exp(theta[:d])
        self.amplitude = float(np.exp(theta[d]))
        self.noise = float(np.exp(theta[d + 1]))
        self.train_scaled = np.log(X + eps) / self.length_scales
        sq_norms = (self.train_scaled**2).sum(axis=1)
        sq = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * self.train_scaled @ self.train_scaled.T, 0.0)
        K = self.amplitude * np.exp(-0.5 * sq) + self.noise * np.eye(len(y))
        factor = cho_factor(K, lower=True)
        self.alpha = cho_solve(factor, y_std_units)
        # L^-1 for the posterior variance: amp - |L^-1 k|^2 (a sum of squares: no cancellation in the product)
        self.chol_inv = solve_triangular(np.tril(factor[0]), np.eye(len(y)), lower=True)
        self.y_mean, self.y_std = y_mean, y_std
        self.hyperparameters = {
            "eps": eps,
            "log_marginal_likelihood": -float(negative_lml),
            "amplitude": self.amplitude,
            "noise": self.noise,
            "length_scales": [float(v) for v in self.length_scales],
            "uncertainty": {"method": "GP posterior (latent variance + noise)"},
        }
        return self

    def _augmented_train(self) -> np.ndarray:
        # [z, -0.5|z|^2, 1] . [t, 1, -0.5|t|^2] = -0.5 |z - t|^2: one product gives the exponent
        t = self.train_scaled
        return np.hstack([t, np.ones((len(t), 1)), -0.5 * (t**2).sum(axis=1)[:, None]]).T.copy()

    def _kernel_block(self, X: np.ndarray, train_aug: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = np.log(X + self.eps) / self.length_scales
        Za = np.empty((len(Z), Z.shape[1] + 2))
        Za[:, :-2], Za[:, -2], Za[:, -1] = Z, -0.5 * (Z**2).sum(axis=1), 1.0
        K = Za @ train_aug
        np.minimum(K, 0.0, out=K)
        np.exp(K, out=K)
        return K, Z

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X))
        train_aug, weights = self._augmented_train(), self.amplitude * self.alpha

        def block(start: int) -> None:
            K, _ = self._kernel_block(X[start : start + GP_PREDICT_BLOCK], train_aug)
            out[start : start + len(K)] = K @ weights

        _blocks(len(X), block)
        return out * self.y_std + self.y_mean

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X))
        train_aug = self._augmented_train()

        def block(start: int) -> None:
            K, _ = self._kernel_block(X[start : start + GP_PREDICT_BLOCK], train_aug)
            V = (self.amplitude * K) @ self.chol_inv.T
            out[start : start + len(K)] = np.maximum(self.amplitude - (V**2).sum(axis=1), 0.0)

        _blocks(len(X), block)
        return self.y_std * np.sqrt(out + self.noise)

    def gradient(self, X: np.ndarray) -> np.ndarray:
        K, Z = self._kernel_block(np.asarray(X, float), self._augmented_train())
        weighted = K * (self.amplitude * self.alpha)[None, :]  # rows x train
        # d/dz of sum_j a_j exp(-0.5|z - t_j|^2) = sum_j a_j k_j (t_j - z)
        dz = weighted @ self.train_scaled - weighted.sum(axis=1)[:, None] * Z
        return self.y_std * dz / (self.length_scales[None, :] * (np.asarray(X, float) + self.eps))


class LogLinearMixtureRegressor(FoldSpread):
    """loss = c + exp(t . w), least squares (no hyper-parameters; c < min loss)."""

    name = "loglinear"

    def fit(self, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> LogLinearMixtureRegressor:
        self._least_squares(X, y)
        self.hyperparameters = {"c": self.c, "t": [float(v) for v in self.t]}
        self._fit_spread(X, y, folds, seed)
        return self

    def _least_squares(self, X, y):
        from scipy.optimize import least_squares

        spread = float(np.std(y)) or 1.0
        best = None
        # starts: c below the smallest loss by a few spreads; t from log(y - c) ~ X t (sum w = 1: no intercept)
        for gap in (0.1, 0.5, 1.0, 2.0, 5.0):
            c0 = float(np.min(y)) - gap * spread
            t0 = np.linalg.lstsq(X, np.log(y - c0), rcond=None)[0]
            result = least_squares(
                lambda p: p[0] + np.exp(np.clip(X @ p[1:], -700, 700)) - y,
                np.concatenate([[c0], t0]),
                jac=lambda p: np.hstack([np.ones((len(y), 1)), np.exp(np.clip(X @ p[1:], -700, 700))[:, None] * X]),
                method="trf",
            )
            if best is None or result.cost < best.cost:
                best = result
        assert best is not None, "at least one start"
        self.c, self.t = float(best.x[0]), best.x[1:].copy()
        return self

    def _refit(self, X, y, seed):
        return LogLinearMixtureRegressor()._least_squares(X, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.c + np.exp(np.asarray(X, float) @ self.t)

    def gradient(self, X: np.ndarray) -> np.ndarray:
        return np.exp(np.asarray(X, float) @ self.t)[:, None] * self.t[None, :]


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
        for train, held in kfold(len(y), folds, seed):
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
            "cv_mse_by_gp_weight": dict(zip(map(float, self.weight_grid), errors, strict=True)),
            **{f"{name}": member.hyperparameters for name, member in self.members.items()},
        }
        return self

    def _weights(self) -> dict[str, float]:
        return {"gp": self.gp_weight, "lightgbm": 1 - self.gp_weight}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return sum(self._weights()[name] * member.predict(X) for name, member in self.members.items())

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return sum(self._weights()[name] * member.predict_std(X) for name, member in self.members.items())

    @property
    def smooth(self) -> bool:
        return "lightgbm" not in self.members

    def gradient(self, X: np.ndarray) -> np.ndarray:
        if not self.smooth:
            raise AttributeError("the ensemble has a lightgbm member: no gradient")
        return self.members["gp"].gradient(X)


REGRESSORS = {
    cls.name: cls
    for cls in (
        LinearMixtureRegressor,
        LightGBMMixtureRegressor,
        GPMixtureRegressor,
        LogLinearMixtureRegressor,
        GPLightGBMEnsembleRegressor,
    )
}


def make_regressor(name: str):
    if name not in REGRESSORS:
        raise ValueError(f"unknown regressor {name!r} (known: {sorted(REGRESSORS)})")
    return REGRESSORS[name]()


def has_gradient(regressor) -> bool:
    """Whether the exact optimiser can follow the regressor's gradient."""
    return hasattr(regressor, "gradient") and getattr(regressor, "smooth", True)
