"""``ado``: an ADO-style policy (Jiang et al. 2024, "Adaptive Data Optimization"), on the run's own validation history.

For each family ``f`` the losses on the fixed validation set against the family's tokens trained so far are fitted by
a power law ``L_f(t) = E_f + B_f t^-beta_f`` (least squares, a few starts, ``E_f`` below the lowest loss seen). The
next interval's raw ratios are proportional to each family's expected loss decrease per token of its own data at the
tokens seen so far, ``-dL_f/dt = beta_f B_f t^(-beta_f - 1)``; they are smoothed toward the previous interval's ratios
(``smoothing``: the previous ratios' weight) and projected onto the bounds: every family keeps ``min_share``, none
passes its ``max_share``, and no decision moves the ratios by more than ``max_change`` (total variation). A family with fewer than ``MIN_POINTS`` validations that saw its data keeps the previous
ratios for all (the decision says why).
"""

from __future__ import annotations

from typing import Any

from nemo_mlsl.policies import Decision, PolicyContext, check_context, limit_change, project
from nemo_mlsl.policies.curves import MIN_POINTS, fit_curves


def ado(ctx: PolicyContext) -> Decision:
    """The next interval's ratios (see the module's docstring)."""
    check_context(ctx)
    fams = sorted(ctx.previous)
    prev = {f: float(ctx.previous[f]) for f in fams}
    base: dict[str, Any] = {"policy": "ado", "smoothing": ctx.smoothing, "min_share": ctx.min_share,
                            "at_step": ctx.history[-1].step if ctx.history else 0}
    fits, short = fit_curves(ctx.history, fams)
    if short:
        kept = project(prev, ctx.min_share, ctx.max_share)
        return Decision(kept, {**base, "kept": f"fewer than {MIN_POINTS} validations with tokens of "
                                              f"{', '.join(short)}: the previous ratios (within the bounds)"})
    slope = {f: max(0.0, fits[f]["slope"]) for f in fams}
    total = sum(slope.values())
    raw = {f: slope[f] / total for f in fams} if total > 0 else dict(prev)
    mixed = {f: (1 - ctx.smoothing) * raw[f] + ctx.smoothing * prev[f] for f in fams}
    ratios = limit_change(prev, project(mixed, ctx.min_share, ctx.max_share), ctx)
    return Decision(ratios, {**base, "fits": fits, "raw": raw})
