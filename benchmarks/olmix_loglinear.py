"""olmix's default regressor, written here from its published description (not olmix's code, not nemo-mlsl's laws):
one log-linear law per target,

    y = exp(c) + exp(Σ_j t_j p_j),

fitted by minimising the sum of a Huber loss (δ = 0.02, the δ olmix's log-linear regressor uses) of the residuals
ŷ - y, in the target's own units (bits per byte), over (c, t), keeping the start with the lowest training loss.
Where this differs from olmix: olmix starts from 10 values of log c in [-2, 1.5] times 30 random t (small, the
target's own domain negative) and runs at most 100 steps of torch's L-BFGS; here 8 values of log c in the same
range with t = 0 (deterministic), each run to convergence by scipy's L-BFGS-B with an analytic gradient (olmix's
targets here are no training domain, so no t_j is "the target's own"). No regularisation; bounds |c|, |t_j| <= 50
only keep exp(·) finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

DELTA = 0.02  # Huber's switch from squares to absolute values, in the target's units (olmix's default)
START_LOG_C = tuple(np.linspace(-2.0, 1.5, 8))
BOUND = 50.0  # |c|, |t_j| <= 50 keeps exp() finite; no fit comes near it


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(r, -delta, delta)


@dataclass
class LogLinearTarget:
    """One target's fitted (c, t)."""

    c: float
    t: np.ndarray

    def predict(self, P: np.ndarray) -> np.ndarray:
        return np.exp(self.c) + np.exp(np.asarray(P, float) @ self.t)


def _objective(theta: np.ndarray, P: np.ndarray, y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    c, t = theta[0], theta[1:]
    mix = np.exp(P @ t)
    r = np.exp(c) + mix - y
    g = huber_grad(r, delta)
    grad = np.concatenate([[np.sum(g) * np.exp(c)], P.T @ (g * mix)])
    return float(np.sum(huber(r, delta))), grad


def fit_target(P: np.ndarray, y: np.ndarray, delta: float = DELTA) -> LogLinearTarget:
    P, y = np.asarray(P, float), np.asarray(y, float)
    best = None
    for c0 in START_LOG_C:
        x0 = np.concatenate([[c0], np.zeros(P.shape[1])])
        res = minimize(_objective, x0, args=(P, y, delta), jac=True, method="L-BFGS-B",
                       bounds=[(-BOUND, BOUND)] * len(x0), options={"maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    return LogLinearTarget(float(best.x[0]), best.x[1:].copy())


def fit_predict(P_train: np.ndarray, Y_train: np.ndarray, P_test: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """[test runs, targets]: one law per column of ``Y_train``."""
    return np.column_stack([fit_target(P_train, Y_train[:, j], delta).predict(P_test) for j in range(Y_train.shape[1])])
