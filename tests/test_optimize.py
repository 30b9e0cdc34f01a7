import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.optimize import RatioProblem, bounds_for, solve_general, solve_kkt


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
    tokens = {str(i): float(rng.uniform(0.5, 3.0)) for i in range(k)}
    lo, hi = bounds_for([str(i) for i in range(k)], min_ratio=dict(zip(map(str, range(k)), lower)),
                        max_ratio=dict(zip(map(str, range(k)), upper)), tokens=tokens, D=float(k), max_epochs=1.0)
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
    lo, hi = bounds_for(["a", "b"], tokens={"a": 10, "b": 1000}, D=100, max_epochs=2)
    assert hi == pytest.approx([0.2, 1.0])
    p = solve_kkt(RatioProblem(np.array([5.0, 1.0]), np.array([0.3, 0.1]), lo, hi))
    assert p[0] == pytest.approx(0.2)


def test_infeasible_bounds_are_clear_errors():
    with pytest.raises(ConfigError, match="minimum ratios sum to 1.2"):
        solve_kkt(RatioProblem(np.ones(2), np.full(2, 0.1), np.array([0.6, 0.6]), np.ones(2)))
    with pytest.raises(ConfigError, match="not enough data"):
        solve_kkt(RatioProblem(np.ones(2), np.full(2, 0.1), np.zeros(2), np.array([0.3, 0.3])))
    with pytest.raises(ConfigError, match="unknown family"):
        bounds_for(["a"], min_ratio={"zz": 0.1})
