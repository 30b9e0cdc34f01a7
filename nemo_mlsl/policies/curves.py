"""Each family's validation loss against the tokens of its own data trained so far, ``L_f(t) = E_f + B_f t^-beta_f``,
fitted on a run's validation history: the curve the ``ado`` and ``law`` policies decide from."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_POINTS = 3  # validations with tokens of a family before its curve is fitted


def fit_power(t: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """``L = E + B t^-beta`` by least squares on ``t / t[-1]`` (so ``B`` is fitted at the last point's scale)."""
    from scipy.optimize import least_squares

    ref = float(t[-1])
    x = t / ref
    lo_e = 0.0
    hi_e = max(1e-9, float(loss.min()) * (1 - 1e-6))

    def resid(theta: np.ndarray) -> np.ndarray:
        e, log_b, beta = theta
        return e + np.exp(log_b) * x ** (-beta) - loss

    best = None
    for beta0 in (0.1, 0.5, 1.0):
        for frac in (0.0, 0.5, 0.9):
            e0 = lo_e + frac * (hi_e - lo_e)
            b0 = max(1e-6, float(loss[-1]) - e0)
            start = np.array([min(e0, hi_e * 0.999), math.log(b0), beta0])
            r = least_squares(resid, start, bounds=([lo_e, -30.0, 1e-3], [hi_e, 10.0, 3.0]))
            if best is None or r.cost < best.cost:
                best = r
    e, log_b, beta = (float(v) for v in best.x)
    b_ref = math.exp(log_b)  # B at the reference scale: L = E + b_ref (t / ref)^-beta
    return {"E": e, "B": b_ref * ref ** beta, "beta": beta, "t": ref, "points": int(len(t)),
            "rmse": float(np.sqrt(np.mean(best.fun ** 2))),
            "slope": beta * b_ref / ref}  # -dL/dt at t = ref


def fit_curves(history: Sequence, families: Sequence[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Each family's fitted curve from ``history`` (``ValidationPoint``s), and the families with fewer than
    ``MIN_POINTS`` validations that saw their data (no curve yet)."""
    fits, short = {}, []
    for f in families:
        pts = [(float(p.family_tokens.get(f, 0.0)), float(p.family_loss[f])) for p in history
               if f in p.family_loss and p.family_tokens.get(f, 0.0) > 0 and math.isfinite(p.family_loss[f])]
        if len(pts) < MIN_POINTS:
            short.append(f)
            continue
        t, loss = (np.asarray(v, dtype=np.float64) for v in zip(*pts))
        fits[f] = fit_power(t, loss)
    return fits, short
