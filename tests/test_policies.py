"""Mixture policies (issue #26, part 3's core): the registry, bounds, and the ADO-style policy on planted curves."""

import math

import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.policies import PolicyContext, ValidationPoint, policy, project
from nemo_mlsl.policies.ado import fit_power
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
    with pytest.raises(ConfigError, match="unknown policy 'nosuch'; available: ado"):
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
