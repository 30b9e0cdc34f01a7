"""Mixture policies (issue #26, part 3's core): the registry, bounds, and the ADO-style policy on planted curves."""

import math

import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.policies import PolicyContext, ValidationPoint, policy, project
from nemo_mlsl.policies.curves import fit_power
from nemo_mlsl.registry import POLICIES

PLANTED = {"amber": (2.0, 30.0, 0.5), "cobalt": (2.5, 0.2, 0.3), "jade": (1.5, 60.0, 0.6)}  # E, B, beta


def history(shares, steps=(200, 400, 600, 800, 1000), tokens_per_step=1024, planted=PLANTED):
    """Validations of a run on fixed ``shares``: each family's tokens so far and its planted loss there."""
    out = []
    for s in steps:
        t = {f: shares[f] * s * tokens_per_step for f in shares}
        out.append(ValidationPoint(s, t, {f: e + b * t[f] ** -beta for f, (e, b, beta) in planted.items()}))
    return out


def test_ado_is_registered_as_an_entry_point_and_unknown_policies_are_named():
    assert "ado" in POLICIES.names() and policy("ado").__name__ == "ado"
    with pytest.raises(ConfigError, match="unknown policy .nosuch.; available: ado, law"):
        policy("nosuch")


def test_the_power_law_fit_recovers_planted_curves():
    import numpy as np

    t = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    fit = fit_power(t, 2.0 + 30.0 * t ** -0.5)
    assert fit["beta"] == pytest.approx(0.5, rel=1e-3) and fit["E"] == pytest.approx(2.0, abs=1e-3)
    assert fit["B"] == pytest.approx(30.0, rel=1e-2)
    assert fit["slope"] == pytest.approx(0.5 * 30.0 * 1e6 ** -1.5, rel=1e-2)  # -dL/dt at the last point


def test_ado_shares_follow_the_expected_loss_decrease_per_token():
    prev = {"amber": 1 / 3, "cobalt": 1 / 3, "jade": 1 / 3}
    ctx = PolicyContext(history(prev), prev, min_share=0.05, smoothing=0.0)
    d = policy("ado")(ctx)
    t = {f: prev[f] * 1000 * 1024 for f in prev}
    slope = {f: beta * b * t[f] ** (-beta - 1) for f, (e, b, beta) in PLANTED.items()}
    want = {f: s / sum(slope.values()) for f, s in slope.items()}
    assert want["cobalt"] < 0.05  # the planted cobalt curve is nearly flat: its share is pinned at the minimum
    assert d.ratios["cobalt"] == pytest.approx(0.05)
    rest = 0.95 / (want["amber"] + want["jade"])
    assert d.ratios["amber"] == pytest.approx(want["amber"] * rest, rel=1e-2)
    assert d.ratios["jade"] == pytest.approx(want["jade"] * rest, rel=1e-2)
    assert math.isclose(sum(d.ratios.values()), 1.0) and d.evidence["policy"] == "ado" and d.evidence["at_step"] == 1000
    assert d.evidence["fits"]["jade"]["beta"] == pytest.approx(0.6, rel=1e-2)
    # smoothing: halfway toward the previous ratios, before the bounds
    half = policy("ado")(PolicyContext(history(prev), prev, min_share=0.0, smoothing=0.5))
    for f in prev:
        assert half.ratios[f] == pytest.approx(0.5 * want[f] + 0.5 * prev[f], rel=1e-2)
    # deterministic
    assert policy("ado")(ctx) == d


def test_bounds_hold_and_too_little_history_keeps_the_previous_ratios():
    prev = {"amber": 0.6, "cobalt": 0.3, "jade": 0.1}
    d = policy("ado")(PolicyContext(history(prev), prev, min_share=0.2, max_share={"jade": 0.3}, smoothing=0.0))
    assert all(0.2 - 1e-12 <= p for p in d.ratios.values()) and d.ratios["jade"] <= 0.3 + 1e-12
    assert math.isclose(sum(d.ratios.values()), 1.0)
    kept = policy("ado")(PolicyContext(history(prev)[:2], prev, min_share=0.02))
    assert kept.ratios == pytest.approx(prev) and "fewer than 3 validations" in kept.evidence["kept"]
    assert project({"a": 0.0, "b": 1.0}, 0.1) == pytest.approx({"a": 0.1, "b": 0.9})
    with pytest.raises(ConfigError, match="no ratios fit the bounds"):
        project({"a": 1.0, "b": 1.0, "c": 1.0}, 0.4)
    with pytest.raises(ConfigError, match="previous interval's ratios, summing to 1"):
        policy("ado")(PolicyContext(history(prev), {"amber": 0.5}, min_share=0.02))


# the law policy: the optimum of the remaining budget on the fitted curves, approached under a step limit

def planted_final(p, tokens, remaining, planted=PLANTED):
    """The planted curves' mean loss at the end of the run if the remaining tokens are shared by ``p``."""
    return sum(e + b * (tokens[f] + p[f] * remaining) ** -beta for f, (e, b, beta) in planted.items()) / len(planted)


def brute_optimum(tokens, remaining, lo, hi, planted=PLANTED):
    """The same problem solved by a general constrained optimizer (SLSQP from several starts)."""
    import numpy as np
    from scipy.optimize import minimize

    fams = sorted(planted)
    obj = lambda x: planted_final(dict(zip(fams, x)), tokens, remaining, planted)  # noqa: E731
    best = None
    for x0 in ([1 / 3] * 3, [0.6, 0.2, 0.2], [0.2, 0.2, 0.6]):
        r = minimize(obj, np.asarray(x0), method="SLSQP", bounds=[(lo, hi.get(f, 1.0)) for f in fams],
                     constraints=[{"type": "eq", "fun": lambda x: float(np.sum(x) - 1)}], options={"ftol": 1e-15, "maxiter": 500})
        if best is None or r.fun < best.fun:
            best = r
    return dict(zip(fams, best.x)), best.fun


@pytest.mark.parametrize("remaining, lo, hi", [(1e6, 0.02, {}), (1e8, 0.02, {}), (1e7, 0.15, {"jade": 0.3})])
def test_the_remaining_budget_optimum_equals_a_general_optimizer_on_the_planted_curves(remaining, lo, hi):
    from nemo_mlsl.policies.law import remaining_optimum

    tokens = {"amber": 2e5, "cobalt": 5e5, "jade": 3e5}
    fits = {f: {"E": e, "B": b, "beta": beta} for f, (e, b, beta) in PLANTED.items()}
    mine = remaining_optimum(fits, tokens, remaining, lo, hi)
    want, best = brute_optimum(tokens, remaining, lo, hi)
    assert math.isclose(sum(mine.values()), 1.0) and all(lo - 1e-12 <= p <= hi.get(f, 1) + 1e-12 for f, p in mine.items())
    assert planted_final(mine, tokens, remaining) <= best + 1e-12  # at least as good as SLSQP's optimum
    assert mine == pytest.approx(want, abs=1e-4)


def test_a_larger_remaining_budget_moves_the_optimum_toward_the_slower_curves():
    """With little budget left the optimum is greedy (the steepest family now, as ado's raw shares); with a large one
    it spreads toward the families whose loss keeps falling (the larger beta): the decision sees the whole budget."""
    from nemo_mlsl.policies.law import remaining_optimum

    tokens = {"amber": 2e5, "cobalt": 5e5, "jade": 3e5}
    fits = {f: {"E": e, "B": b, "beta": beta} for f, (e, b, beta) in PLANTED.items()}
    small, large = (remaining_optimum(fits, tokens, r, 0.0, {}) for r in (1e4, 1e9))
    slope = {f: beta * b * tokens[f] ** (-beta - 1) for f, (e, b, beta) in PLANTED.items()}
    assert max(small, key=small.get) == max(slope, key=slope.get)
    assert large != pytest.approx(small, abs=0.05)
    for r, p in ((1e4, small), (1e9, large)):  # each is the optimum of its own budget, not of the other's
        other = large if p is small else small
        assert planted_final(p, tokens, r) < planted_final(other, tokens, r)


def test_the_law_policy_moves_toward_the_optimum_of_its_fitted_curves_under_the_step_limit():
    prev = {"amber": 1 / 3, "cobalt": 1 / 3, "jade": 1 / 3}
    h = history(prev)
    tokens = dict(h[-1].family_tokens)
    remaining = 4e6
    want, _ = brute_optimum(tokens, remaining, 0.02, {})
    full = policy("law")(PolicyContext(h, prev, min_share=0.02, smoothing=0.0, remaining_tokens=remaining))
    assert full.ratios == pytest.approx(want, abs=2e-3)  # the curves fitted from the history are the planted ones
    assert full.evidence["optimum"] == full.ratios and full.evidence["policy"] == "law"
    pf = full.evidence["predicted_final"]
    assert pf["optimum"] <= pf["previous"] and pf["next"] == pytest.approx(pf["optimum"])
    assert full.evidence["fits"]["amber"]["beta"] == pytest.approx(0.5, rel=1e-2)
    # the step limit: the move's total variation is max_change, along the line toward the optimum
    step = policy("law")(PolicyContext(h, prev, min_share=0.02, smoothing=0.0, max_change=0.05, remaining_tokens=remaining))
    tv = 0.5 * sum(abs(step.ratios[f] - prev[f]) for f in prev)
    assert tv == pytest.approx(0.05, rel=1e-9)
    tv_full = 0.5 * sum(abs(want[f] - prev[f]) for f in prev)
    for f in prev:
        assert step.ratios[f] - prev[f] == pytest.approx((full.ratios[f] - prev[f]) * 0.05 / tv_full, abs=1e-9)
    # smoothing: halfway toward the optimum
    half = policy("law")(PolicyContext(h, prev, min_share=0.02, smoothing=0.5, remaining_tokens=remaining))
    assert half.ratios == pytest.approx({f: 0.5 * full.ratios[f] + 0.5 * prev[f] for f in prev}, abs=1e-9)
    assert policy("law")(PolicyContext(h, prev, min_share=0.02, smoothing=0.0, remaining_tokens=remaining)) == full


def test_the_law_policy_names_what_it_needs():
    prev = {"amber": 1 / 3, "cobalt": 1 / 3, "jade": 1 / 3}
    with pytest.raises(ConfigError, match="remaining_tokens > 0"):
        policy("law")(PolicyContext(history(prev), prev))
    with pytest.raises(ConfigError, match=r"max_change must be in \(0, 1\]"):
        policy("law")(PolicyContext(history(prev), prev, max_change=0.0, remaining_tokens=1e6))
    kept = policy("law")(PolicyContext(history(prev)[:2], prev, remaining_tokens=1e6))
    assert kept.ratios == pytest.approx(prev) and "fewer than 3 validations" in kept.evidence["kept"]
    # ado keeps its behaviour unless a step limit is asked for
    ado = policy("ado")(PolicyContext(history(prev), prev, smoothing=0.0))
    limited = policy("ado")(PolicyContext(history(prev), prev, smoothing=0.0, max_change=0.01))
    assert 0.5 * sum(abs(limited.ratios[f] - prev[f]) for f in prev) == pytest.approx(0.01)
    assert 0.5 * sum(abs(ado.ratios[f] - prev[f]) for f in prev) > 0.01
