"""``law``: the mixture that the run's own fitted law says is best for the rest of the run, approached in steps.

Each family's curve ``L_f(t) = E_f + B_f t^-beta_f`` in the tokens ``t`` of its own data is fitted to the fixed
validation set's losses so far (``nemo_mlsl.policies.curves``, the fit ``ado`` makes). Where ``ado`` moves toward the
families whose loss falls fastest per token *now*, this policy solves for the whole remaining budget ``R`` (the run's
tokens after the boundary): the shares ``p`` that minimise the families' mean predicted loss at the end of the run,

    min_p  (1/K) sum_f L_f(t_f + p_f R)   subject to  sum_f p_f = 1,  min_share <= p_f <= max_share_f,

a convex problem (each term is convex in ``p_f``) whose optimum equalises the marginal gains
``beta_f B_f R (t_f + p_f R)^(-beta_f - 1) / K`` across the families off their bounds; it is found by bisection on
that common gain (a water-filling). The run then moves from the previous ratios toward this optimum: ``smoothing``
is the previous ratios' weight and ``max_change`` caps the move's total variation, so one noisy fit cannot swing
the mixture. Each decision's evidence holds the curves, the optimum, and the predicted mean final loss at the
optimum and at the previous ratios.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.policies import Decision, PolicyContext, check_context, limit_change, project
from nemo_mlsl.policies.curves import MIN_POINTS, fit_curves


def final_loss(fit: Mapping[str, float], tokens: float) -> float:
    """A family's predicted loss after ``tokens`` of its data."""
    return fit["E"] + fit["B"] * tokens ** -fit["beta"]


def remaining_optimum(fits: Mapping[str, Mapping[str, float]], tokens: Mapping[str, float], remaining: float, lo: float,
                      hi: Mapping[str, float]) -> dict[str, float]:
    """The shares of the next ``remaining`` tokens that minimise the mean of ``final_loss(fit_f, tokens_f + p_f R)``
    within ``[lo, hi_f]`` and summing to 1 (the module's docstring)."""
    fams = sorted(fits)
    hi = {f: float(hi.get(f, 1.0)) for f in fams}
    u = {f: float(tokens[f]) / remaining for f in fams}  # tokens so far in units of the remaining budget
    c = {f: fits[f]["beta"] * fits[f]["B"] * remaining ** -fits[f]["beta"] / len(fams) for f in fams}  # gain at p: c (u+p)^-(b+1)

    def shares(log_lam: float) -> dict[str, float]:
        out = {}
        for f in fams:
            b = fits[f]["beta"]
            p = math.exp((math.log(c[f]) - log_lam) / (b + 1)) - u[f] if c[f] > 0 else lo
            out[f] = min(hi[f], max(lo, p))
        return out

    live = [f for f in fams if c[f] > 0]
    if not live:  # no family's loss still falls: nothing to trade
        return project({f: 1.0 for f in fams}, lo, hi)
    def gain(f: str, p: float) -> float:  # log of the marginal gain at share p
        return math.log(c[f]) - (fits[f]["beta"] + 1) * math.log(u[f] + p)

    a = min(gain(f, hi[f]) for f in live) - 1.0  # every live family at its cap: the shares sum to >= 1
    b = max(gain(f, lo) for f in live) + 1.0  # every family at the floor: they sum to <= 1
    for _ in range(200):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if sum(shares(mid).values()) > 1 else (a, mid)
    return project(shares(0.5 * (a + b)), lo, hi)  # (the last rounding of the sum)


def law(ctx: PolicyContext) -> Decision:
    """The next interval's ratios (see the module's docstring)."""
    check_context(ctx)
    if ctx.remaining_tokens is None or not ctx.remaining_tokens > 0:
        raise ConfigError("the law policy optimises the run's remaining tokens and needs them (PolicyContext."
                          f"remaining_tokens > 0; got {ctx.remaining_tokens}); the adaptive callback of the training "
                          "backend passes them at every boundary")
    fams = sorted(ctx.previous)
    prev = {f: float(ctx.previous[f]) for f in fams}
    last = ctx.history[-1] if ctx.history else None
    base: dict[str, Any] = {"policy": "law", "smoothing": ctx.smoothing, "max_change": ctx.max_change,
                            "min_share": ctx.min_share, "remaining_tokens": float(ctx.remaining_tokens),
                            "at_step": last.step if last else 0}
    fits, short = fit_curves(ctx.history, fams)
    if short:
        kept = project(prev, ctx.min_share, ctx.max_share)
        return Decision(kept, {**base, "kept": f"fewer than {MIN_POINTS} validations with tokens of "
                                              f"{', '.join(short)}: the previous ratios (within the bounds)"})
    tokens = {f: float(last.family_tokens[f]) for f in fams}
    R = float(ctx.remaining_tokens)
    target = remaining_optimum(fits, tokens, R, ctx.min_share, ctx.max_share)
    mixed = {f: (1 - ctx.smoothing) * target[f] + ctx.smoothing * prev[f] for f in fams}
    ratios = limit_change(prev, project(mixed, ctx.min_share, ctx.max_share), ctx)

    def mean_final(p: Mapping[str, float]) -> float:
        return sum(final_loss(fits[f], tokens[f] + p[f] * R) for f in fams) / len(fams)

    return Decision(ratios, {**base, "fits": fits, "optimum": target, "predicted_final": {
        "optimum": mean_final(target), "previous": mean_final(prev), "next": mean_final(ratios)}})
