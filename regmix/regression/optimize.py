"""Exact choice: minimise a fitted model's prediction over the constrained simplex.

The feasible set is {w : sum w = 1, lower <= w <= upper}, where `upper` is the epoch cap
the chooser applies (regmix.mixtures.weight_caps) tightened by `choose.bounds` and
`lower` comes from those bounds (else 0): a box cut by a hyperplane, so convex. The
objective is the model's predicted target plus an optional kl_weight * KL(w || prior),
which pulls the choice back towards the prior (stable rather than near-one-hot weights).

SLSQP (scipy) runs from several starts; smooth regressors give an analytic gradient,
others (lightgbm: piecewise constant, zero gradient almost everywhere) keep the best
start. Every result is projected back onto the feasible set (SLSQP may end a hair
outside), and the caller compares it with the top-k average and keeps the better one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from regmix.regression.regressors import has_gradient

# weights below this count as 0 inside the KL's log (its gradient is -inf at 0)
KL_FLOOR = 1e-12
FEASIBILITY_TOLERANCE = 1e-9


def project_to_box_simplex(v: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The Euclidean projection of v onto {sum w = 1, lower <= w <= upper}.

    w(tau) = clip(v - tau, lower, upper) has a sum decreasing in tau; bisection finds the
    tau where it is 1. The set must be non-empty (sum lower <= 1 <= sum upper).
    """
    v = np.asarray(v, dtype=float)
    low, high = float((v - upper).min()) - 1.0, float((v - lower).max()) + 1.0
    for _ in range(200):
        tau = 0.5 * (low + high)
        if np.clip(v - tau, lower, upper).sum() > 1.0:
            low = tau
        else:
            high = tau
    w = np.clip(v - 0.5 * (low + high), lower, upper)
    # the last bisection step leaves ~1e-15 of slack: spread it over the free coordinates
    free = (w > lower) & (w < upper)
    if free.any():
        w[free] += (1.0 - w.sum()) / free.sum()
        w = np.clip(w, lower, upper)
    return w


def is_feasible(w: np.ndarray, lower: np.ndarray, upper: np.ndarray, tol: float = FEASIBILITY_TOLERANCE) -> bool:
    return bool(abs(w.sum() - 1.0) <= tol and (w >= lower - tol).all() and (w <= upper + tol).all())


def kl_divergence(w: np.ndarray, prior: np.ndarray) -> float:
    """KL(w || prior) for one mixture (0 log 0 = 0)."""
    w = np.asarray(w, dtype=float)
    p = np.asarray(prior, dtype=float) / np.sum(prior)
    mask = w > 0
    return float(np.sum(w[mask] * np.log(w[mask] / p[mask])))


def objective(model, w: np.ndarray, prior: np.ndarray, kl_weight: float) -> float:
    """What the optimiser minimises: predicted target (+ kl_weight * KL(w || prior))."""
    value = float(model.predict_weights(np.asarray(w, dtype=float)[None, :])[0])
    return value + (kl_weight * kl_divergence(w, prior) if kl_weight else 0.0)


def minimise(
    model,
    prior: np.ndarray,
    starts: dict[str, np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    kl_weight: float = 0.0,
    max_iter: int = 300,
) -> dict:
    """Best feasible mixture found from `starts` (name -> weights): {weights, objective,
    start, iterations, smooth, message}. Starts are projected onto the feasible set first."""
    from scipy.optimize import minimize

    if lower.sum() > 1.0 + FEASIBILITY_TOLERANCE or upper.sum() < 1.0 - FEASIBILITY_TOLERANCE or (lower > upper).any():
        raise ValueError(
            f"no mixture is feasible: lower bounds sum to {lower.sum():.6f}, upper bounds (epoch caps and "
            f"choose.bounds) to {upper.sum():.6f}; need lower <= upper, sum lower <= 1 <= sum upper"
        )
    p = np.asarray(prior, dtype=float) / np.sum(prior)
    smooth = has_gradient(model.regressor)

    def fun(w):
        value = float(model.predict_weights(w[None, :])[0])
        if kl_weight:
            safe = np.maximum(w, KL_FLOOR)
            value += kl_weight * float(np.sum(safe * np.log(safe / p)))
        return value

    def jac(w):
        grad = np.asarray(model.regressor.gradient(w[None, :]), dtype=float)[0]
        if kl_weight:
            grad = grad + kl_weight * (np.log(np.maximum(w, KL_FLOOR) / p) + 1.0)
        return grad

    best: dict[str, Any] | None = None
    for name, start in starts.items():
        x0 = project_to_box_simplex(start, lower, upper)
        iterations, message = 0, "start kept (the regressor has no gradient)"
        w = x0
        if smooth:
            result = minimize(
                fun,
                x0,
                jac=jac,
                method="SLSQP",
                bounds=list(zip(lower, upper, strict=True)),
                constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                options={"maxiter": max_iter, "ftol": 1e-12},
            )
            iterations, message = int(result.nit), str(result.message)
            w = project_to_box_simplex(result.x, lower, upper) if np.isfinite(result.x).all() else x0
        value = objective(model, w, p, kl_weight)
        start_value = objective(model, x0, p, kl_weight)
        if start_value < value:  # a failed run may wander uphill: never end above its own start
            w, value, message = x0, start_value, f"{message}; start kept (the run ended higher)"
        if best is None or value < best["objective"]:
            best = {
                "weights": w,
                "objective": value,
                "start": name,
                "iterations": iterations,
                "smooth": smooth,
                "message": message,
            }
    if best is None:
        raise ValueError("no start mixtures to optimise from")
    if not is_feasible(best["weights"], lower, upper):  # projection guarantees this; checked, not assumed
        raise AssertionError(f"optimised mixture is infeasible: {best['weights']}")
    return best
