import numpy as np
import pytest

from nemo_mlsl.fitting.independence import controlled_test, residual_correlations, seed_noise, summarize
from nemo_mlsl.fitting.observations import Observations


def records(coupling: float, noise: float = 0.01, seed: int = 0):
    """Family x held at 0.3 while y and z trade the rest; x's loss gains `coupling` x p_y (transfer from y)."""
    rng = np.random.default_rng(seed)
    recs = []
    for py in (0.05, 0.2, 0.35, 0.5, 0.65):
        for s in range(2):
            p = {"x": 0.3, "y": py, "z": 0.7 - py}
            L = {f: 3.0 * p[f] ** -0.1 * np.exp(rng.normal(0, noise)) for f in p}
            L["x"] *= np.exp(-coupling * py)
            recs.append({"run_id": f"{py}-{s}", "N": 1e6, "D": 1e8, "ratios": p, "family_loss": L, "seed": s})
    return Observations.from_records(recs)


def test_independent_families_pass():
    obs = records(coupling=0.0)
    noise = seed_noise(obs)
    assert noise["sigma"] == pytest.approx(0.01, rel=0.5) and noise["groups"] == 5
    tests = [t for t in controlled_test(obs, noise["sigma"]) if t["family"] == "x"]
    assert len(tests) == 1 and tests[0]["mixtures"] == 5 and tests[0]["independent"]


def test_transfer_is_flagged_with_an_effect_size():
    obs = records(coupling=0.3)
    tests = [t for t in controlled_test(obs, seed_noise(obs)["sigma"]) if t["family"] == "x"]
    t = tests[0]
    assert not t["independent"] and t["p_value"] < 1e-3
    assert t["range_pct"] == pytest.approx(100 * (np.exp(0.3 * 0.6) - 1), rel=0.3)
    assert t["spread_ci_pct"][0] > t["noise_pct"]
    assert not summarize(tests)["passed"] and summarize(tests)["violations"]


def test_residual_correlation_sees_the_coupling():
    obs = records(coupling=0.3)
    resid = {f: np.log(obs.L[:, obs.family_index(f)]) + 0.1 * np.log(obs.P[:, obs.family_index(f)]) for f in obs.families}
    resid = {f: r - r.mean() for f, r in resid.items()}
    rc = {(c["family"], c["other"]): c for c in residual_correlations(obs, resid)}
    assert rc[("x", "y")]["r"] < -0.9 and rc[("x", "y")]["ci"][1] < 0


def test_without_repeats_noise_is_unknown():
    obs = records(0.0)
    one = obs.subset(np.arange(0, len(obs), 2))
    assert seed_noise(one)["sigma"] is None
    assert all(t["independent"] is None for t in controlled_test(one, None))
