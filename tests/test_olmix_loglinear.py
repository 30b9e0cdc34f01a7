"""benchmarks/olmix_loglinear.py, the olmix baseline of benchmarks/external.py: a planted log-linear law is recovered."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("olmix_loglinear", Path(__file__).resolve().parents[1] / "benchmarks" / "olmix_loglinear.py")
ollin = sys.modules["olmix_loglinear"] = importlib.util.module_from_spec(spec)  # a dataclass needs its module registered
spec.loader.exec_module(ollin)


def planted(seed: int, n: int = 80, k: int = 4, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(k, 0.5), size=n)
    c, t = np.log(0.8), rng.uniform(-1.5, 0.5, k)
    y = np.exp(c) + np.exp(P @ t) + rng.normal(0, noise, n)
    return P, y, c, t


@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_law_is_recovered_from_exact_data(seed):
    """On the simplex (Σp = 1) c trades off against a common shift of every t_j, a valley the fit may stop in
    short of the planted point (seed 1); what it must recover is the law's values: at unseen mixtures, within
    0.5% of the loss."""
    P, y, c, t = planted(seed)
    fit = ollin.fit_target(P, y)
    Q = np.random.default_rng(99).dirichlet(np.full(len(t), 0.5), size=200)
    truth = np.exp(c) + np.exp(Q @ t)
    assert np.max(np.abs(fit.predict(Q) / truth - 1)) < 5e-3
    if seed == 0:
        assert fit.c == pytest.approx(c, abs=1e-3) and fit.t == pytest.approx(t, abs=1e-3)


def test_held_out_predictions_track_the_truth_and_an_outlier_is_tolerated():
    P, y, c, t = planted(2, n=120, noise=0.002)
    y[5] += 0.5  # one corrupted run: the Huber loss bounds its pull
    pred = ollin.fit_predict(P[:100], y[:100, None], P[100:])[:, 0]
    truth = np.exp(c) + np.exp(P[100:] @ t)
    assert np.max(np.abs(pred - truth)) < 0.01  # 5x the noise; a squared loss is pulled by the outlier's 0.5


def test_the_gradient_is_the_objectives_derivative():
    P, y, _, _ = planted(3, n=30)
    theta = np.array([0.1, 0.3, -0.2, 0.5, -1.0])
    f, g = ollin._objective(theta, P, y, 0.02)
    eps = 1e-6
    num = [(ollin._objective(theta + eps * e, P, y, 0.02)[0] - ollin._objective(theta - eps * e, P, y, 0.02)[0]) / (2 * eps)
           for e in np.eye(len(theta))]
    assert g == pytest.approx(num, rel=1e-5, abs=1e-8)
