"""``ado``: an ADO-style policy (Jiang et al. 2024, "Adaptive Data Optimization"), on the run's own validation history.

For each family ``f`` the losses on the fixed validation set against the family's tokens trained so far are fitted by
a power law ``L_f(t) = E_f + B_f t^-beta_f`` (least squares, a few starts, ``E_f`` below the lowest loss seen). The
next interval's raw ratios are proportional to each family's expected loss decrease per token of its own data at the
tokens seen so far, ``-dL_f/dt = beta_f B_f t^(-beta_f - 1)``; they are smoothed toward the previous interval's ratios
(``smoothing``: the previous ratios' weight) and projected onto the bounds: every family keeps ``min_share``, none
passes its ``max_share``. A family with fewer than ``MIN_POINTS`` validations that saw its data keeps the previous
ratios for all (the decision says why).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nemo_mlsl.policies import Decision, PolicyContext, check_context, project

MIN_POINTS = 3


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


def ado(ctx: PolicyContext) -> Decision:
    """The next interval's ratios (see the module's docstring)."""
    check_context(ctx)
    fams = sorted(ctx.previous)
    prev = {f: float(ctx.previous[f]) for f in fams}
    base: dict[str, Any] = {"policy": "ado", "smoothing": ctx.smoothing, "min_share": ctx.min_share,
                            "at_step": ctx.history[-1].step if ctx.history else 0}
    fits, short = {}, []
    for f in fams:
        pts = [(float(p.family_tokens.get(f, 0.0)), float(p.family_loss[f])) for p in ctx.history
               if f in p.family_loss and p.family_tokens.get(f, 0.0) > 0 and math.isfinite(p.family_loss[f])]
        if len(pts) < MIN_POINTS:
            short.append(f)
            continue
        t, loss = (np.asarray(v, dtype=np.float64) for v in zip(*pts))
        fits[f] = fit_power(t, loss)
    if short:
        kept = project(prev, ctx.min_share, ctx.max_share)
        return Decision(kept, {**base, "kept": f"fewer than {MIN_POINTS} validations with tokens of "
                                              f"{', '.join(short)}: the previous ratios (within the bounds)"})
    slope = {f: max(0.0, fits[f]["slope"]) for f in fams}
    total = sum(slope.values())
    raw = {f: slope[f] / total for f in fams} if total > 0 else dict(prev)
    mixed = {f: (1 - ctx.smoothing) * raw[f] + ctx.smoothing * prev[f] for f in fams}
    ratios = project(mixed, ctx.min_share, ctx.max_share)
    return Decision(ratios, {**base, "fits": fits, "raw": raw})
