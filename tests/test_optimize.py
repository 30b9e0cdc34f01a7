import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import data_caps
from nemo_mlsl.fitting.optimize import RatioProblem, bounds_for, solve_general, solve_kkt


def test_equal_gamma_closed_form():
    coef = np.array([1.0, 2.0, 4.0])
    p = solve_kkt(RatioProblem(coef, np.full(3, 0.1), np.zeros(3), np.ones(3)))
    want = coef ** (1 / 1.1)
    assert p == pytest.approx(want / want.sum(), abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_kkt_agrees_with_a_general_solver(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    coef = rng.uniform(0.5, 3.0, k)
    gamma = rng.uniform(0.02, 0.4, k)
    lower = np.where(rng.random(k) < 0.4, rng.uniform(0.0, 0.6 / k, k), 0.0)
    upper = np.where(rng.random(k) < 0.4, rng.uniform(1.2 / k, 1.0, k), 1.0)
    caps = {str(i): float(rng.uniform(0.5, 3.0)) / k for i in range(k)}  # tokens_i · max_epochs / D
    lo, hi = bounds_for([str(i) for i in range(k)], min_ratio=dict(zip(map(str, range(k)), lower)),
                        max_ratio=dict(zip(map(str, range(k)), upper)), caps=caps)
    if hi.sum() < 1 or lo.sum() > 1:
        hi = np.maximum(hi, 1.0 / k + 1e-3)
    prob = RatioProblem(coef, gamma, lo, np.maximum(hi, lo))
    p = solve_kkt(prob)
    q = solve_general(prob)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(p >= lo - 1e-12) and np.all(p <= prob.upper + 1e-12)
    assert p == pytest.approx(q, abs=1e-6)
    assert prob.objective(p) <= prob.objective(q) + 1e-12


def test_data_caps_bind():
    caps = data_caps({"a": {"a1": 10}, "b": {"b1": 1000}}, budget=100, max_epochs=2)
    assert caps == pytest.approx({"a": 0.2, "b": 20.0})
    lo, hi = bounds_for(["a", "b"], caps=caps)
    assert hi == pytest.approx([0.2, 1.0])
    prob = RatioProblem(np.array([5.0, 1.0]), np.array([0.3, 0.1]), lo, hi, ("a", "b"), (0.2, 20.0))
    p = solve_kkt(prob)
    assert p[0] == pytest.approx(0.2) and prob.binding_caps(p) == ["a"]


def test_data_caps_follow_the_within_family_sampling():
    langs = {"f": {"big": 9900, "small": 100}, "g": {"g1": 10_000}}
    natural = data_caps(langs, budget=10_000, max_epochs=4)
    assert natural["f"] == pytest.approx(4 * 10_000 / 10_000)  # the family's tokens, as a whole
    uniform = data_caps(langs, budget=10_000, max_epochs=4, within="uniform")
    # uniform within f: 'small' gets half of f's share, so 0.5 · p · D <= 4 · 100  ->  p <= 0.08
    assert uniform["f"] == pytest.approx(0.08) and uniform["g"] == pytest.approx(4.0)


def test_infeasible_bounds_are_clear_errors():
    with pytest.raises(ConfigError, match=r"minimum ratios sum to 1.2 > 1 \(a 0.6, b 0.6\)"):
        solve_kkt(RatioProblem(np.ones(2), np.full(2, 0.1), np.array([0.6, 0.6]), np.ones(2), ("a", "b")))
    with pytest.raises(ConfigError, match=r"maximum ratios sum to 0.6 < 1 \(a <= 0.3, b <= 0.3\); raise them"):
        solve_kkt(RatioProblem(np.ones(2), np.full(2, 0.1), np.zeros(2), np.array([0.3, 0.3]), ("a", "b")))
    capped = RatioProblem(np.ones(2), np.full(2, 0.1), np.zeros(2), np.array([0.3, 0.3]), ("latin", "cjk"), (0.3, 0.3))
    with pytest.raises(ConfigError, match=r"data caps p·D <= max_epochs·tokens of latin, cjk bind: there is not enough data"):
        solve_kkt(capped)
    under = RatioProblem(np.ones(2), np.full(2, 0.1), np.array([0.2, 0.5]), np.array([1.0, 0.4]), ("latin", "cjk"), (1.0, 0.4))
    with pytest.raises(ConfigError, match=r"cjk: min 0.5, max 0.4 \(its data cap .* is below its minimum ratio\)"):
        solve_kkt(under)
    with pytest.raises(ConfigError, match="unknown family"):
        bounds_for(["a"], min_ratio={"zz": 0.1})


def test_minimum_ratios_that_fill_the_simplex_up_to_rounding():
    """Lower bounds summing to just above 1 (rounding) are the only feasible point, not a root-finder crash."""
    lower = np.array([0.3, 0.3, 0.4 + 1e-13])
    p = solve_kkt(RatioProblem(np.ones(3), np.full(3, 0.2), lower, np.ones(3)))
    assert p == pytest.approx(lower, abs=1e-12) and p.sum() == pytest.approx(1.0, abs=1e-15)
    upper = np.array([0.5, 0.5 - 1e-13])
    q = solve_kkt(RatioProblem(np.ones(2), np.full(2, 0.2), np.zeros(2), upper))
    assert q == pytest.approx([0.5, 0.5], abs=1e-12)


def test_general_optimizer_agrees_with_kkt_on_a_separable_law():
    from nemo_mlsl.fitting.lawfit import fit
    from nemo_mlsl.fitting.observations import Observations
    from nemo_mlsl.fitting.optimize import optimal_from_fit, optimal_general
    from test_fitting import planted

    recs, _, fams = planted(families=3)
    doc = fit("joint_family", Observations.from_records(recs), bootstrap=4, seed=0).to_dict()
    for objective, kw in (("normalized", {}), ("raw", {"weights": {"f0": 2.0}, "min_ratio": 0.1}),
                          ("normalized", {"caps": {"f0": 0.2, "f1": 1.0, "f2": 1.0}})):
        kkt = optimal_from_fit(doc, N=3e7, D=1e9, objective=objective, **kw)
        gen = optimal_general(doc, N=3e7, D=1e9, objective=objective, **kw)
        assert [gen["ratios"][f] for f in fams] == pytest.approx([kkt["ratios"][f] for f in fams], abs=2e-5)
        assert gen.get("binding_caps", []) == kkt.get("binding_caps", [])
    assert set(gen["ci"]) == set(fams) and gen["replicates"] == 4


def test_cross_family_optimum_matches_a_grid_search_and_can_drop_a_family():
    """Family f2 hurts every family's loss (positive t): the optimum gives it 0 unless a minimum ratio forbids it."""
    from nemo_mlsl.fitting.lawfit import fit
    from nemo_mlsl.fitting.observations import Observations
    from nemo_mlsl.fitting.optimize import optimal_from_fit, predicted_losses
    from test_mixture_laws import YE, records

    t = YE["t"].copy()
    t[:, 2] = 0.5
    YE_BAD = dict(YE, t=t)
    import test_mixture_laws as tm

    old = tm.YE
    tm.YE = YE_BAD
    try:
        recs = records(tm.ye_loss, per=10)
    finally:
        tm.YE = old
    doc = fit("ye_mixing", Observations.from_records(recs), bootstrap=3, seed=0).to_dict()
    opt = optimal_from_fit(doc, N=1e8, D=1e9, objective="raw")
    assert opt["solver"] == "slsqp" and opt["ratios"]["f2"] == pytest.approx(0.0, abs=1e-6)
    grid = [(a, 1 - a, 0.0) for a in np.linspace(0, 1, 2001)]
    total = lambda r: sum(predicted_losses(doc, dict(zip(("f0", "f1", "f2"), r)), 1e8, 1e9).values())
    best = min(grid, key=total)
    assert opt["ratios"]["f0"] == pytest.approx(best[0], abs=1e-3)
    assert total([opt["ratios"][f] for f in ("f0", "f1", "f2")]) <= total(best) + 1e-9
    floor = optimal_from_fit(doc, N=1e8, D=1e9, objective="raw", min_ratio={"f2": 0.05})
    assert floor["ratios"]["f2"] == pytest.approx(0.05, abs=1e-6) and sum(floor["ratios"].values()) == pytest.approx(1.0)
    assert set(opt["ci"]) == {"f0", "f1", "f2"}


def _planted_gamma_zero(seed: int = 0, noise: float = 0.01) -> tuple[list[dict], np.ndarray]:
    """Joint-law runs of 3 families whose first has a true γ of 0 (its loss does not depend on its share)."""
    rng = np.random.default_rng(seed)
    gamma, E, A, B = np.array([0.0, 0.1, 0.2]), np.array([1.5, 1.2, 1.8]), np.array([300.0, 400.0, 500.0]), np.array([400.0, 300.0, 600.0])
    recs = []
    for N in (1e6, 3e6, 1e7):
        for D in (1e8, 3e8, 1e9):
            for _ in range(4):
                p = np.maximum(rng.dirichlet(np.full(3, 2.0)), 0.03)
                p /= p.sum()
                L = (E + A / N ** 0.3 + B / D ** 0.3) * p ** -gamma * np.exp(rng.normal(0, noise, 3))
                recs.append({"run_id": f"r{len(recs)}", "N": N, "D": D, "ratios": dict(zip(["f0", "f1", "f2"], p)),
                             "family_loss": dict(zip(["f0", "f1", "f2"], L))})
    return recs, E + A / 1e7 ** 0.3 + B / 1e9 ** 0.3  # each family's planted loss at p = 1, at N = 1e7, D = 1e9


@pytest.mark.parametrize("law", ["joint_family", "family_power"])
def test_a_planted_gamma_of_zero_is_fitted_non_negative_and_never_starves_its_family(law):
    """He et al.'s γ is bounded to [0, 2.5] (docs/science.md): a true γ of 0 is fitted at >= 0 in the fit and in
    every bootstrap replicate, and the optimum (--min-ratio 0) offers that family a positive share with a finite,
    positive predicted loss: p^-γ has no value at p = 0, so the KKT path keeps the ZERO_FLOOR as the general one does."""
    from nemo_mlsl.fitting.lawfit import fit
    from nemo_mlsl.fitting.observations import Observations
    from nemo_mlsl.fitting.optimize import ZERO_FLOOR, optimal_from_fit, predicted_losses

    recs, c = _planted_gamma_zero()
    doc = fit(law, Observations.from_records(recs), bootstrap=30, seed=0).to_dict()
    gammas = [doc["families"]["f0"]["params"]["gamma"]] + [r["gamma"] for r in doc["families"]["f0"]["replicates"] if r]
    assert min(gammas) >= 0.0 and max(gammas) < 0.02, gammas
    where = {"N": 1e7, "D": 1e9}  # a fitted setting: family_power knows L* only there
    opt = optimal_from_fit(doc, objective="normalized", min_ratio=0.0, **where)
    floor = ZERO_FLOOR * (1 - 1e-9)  # the KKT solution is renormalized to sum to 1
    assert min(opt["ratios"].values()) >= floor and all(lo >= floor for lo, _ in opt["ci"].values()), opt
    loss = predicted_losses(doc, opt["ratios"], **where)
    assert all(np.isfinite(v) and v > 0 for v in loss.values()), loss
    # γ ≈ 0: the family's predicted loss at its tiny share is its planted loss, as at any share
    assert loss["f0"] == pytest.approx(c[0], rel=0.03)
