"""nemo-mlsl's Chinchilla fit against an independent fitter of the kind OLMo-core uses, on the same points, timed in
the same run: a grid of 4^5 = 1,024 L-BFGS-B starts over (e = log E, a = log A, b = log B, α, β) minimising the
Huber loss (δ = 1e-3) of log residuals, L = exp(LSE(a − α log N, b − β log D, e)); the best start wins.

Both are scored on that same objective, so "objective" compares like with like; the planted parameters give the
error each recovers them with. Three planted laws (--laws), 6 model sizes × 8 token counts each, 1% log-normal noise.
"""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from nemo_mlsl.fitting.lawfit import fit
from nemo_mlsl.fitting.observations import Observations

DELTA = 1e-3
GRID = {"e": np.linspace(-1.0, 1.0, 4), "a": np.linspace(0.0, 25.0, 4), "b": np.linspace(0.0, 25.0, 4),
        "alpha": np.linspace(0.0, 2.0, 4), "beta": np.linspace(0.0, 2.0, 4)}


def planted(seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = {"E": rng.uniform(1.5, 2.5), "A": rng.uniform(200, 600), "alpha": rng.uniform(0.25, 0.4),
             "B": rng.uniform(300, 900), "beta": rng.uniform(0.25, 0.35)}
    N, D = (g.ravel() for g in np.meshgrid(np.geomspace(1e6, 3e8, 6), np.geomspace(1e8, 3e10, 8), indexing="ij"))
    L = (truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]) * np.exp(rng.normal(0, 0.01, N.size))
    return truth, N, D, L


def objective(e, a, b, alpha, beta, N, D, L) -> float:
    r = logsumexp([a - alpha * np.log(N), b - beta * np.log(D), np.full_like(N, e)], axis=0) - np.log(L)
    return float(np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA)).sum())


def reference_fit(N, D, L) -> np.ndarray:
    """The independent fitter: every grid start through L-BFGS-B with an analytic gradient; best objective."""
    lN, lD, lL = np.log(N), np.log(D), np.log(L)

    def f(x):
        e, a, b, alpha, beta = x
        terms = np.stack([a - alpha * lN, b - beta * lD, np.full_like(lN, e)])
        lse = logsumexp(terms, axis=0)
        r = lse - lL
        w = np.exp(terms - lse)  # softmax weights: d lse / d term
        g = np.clip(r, -DELTA, DELTA)
        loss = np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA)).sum()
        grad = np.array([(g * w[2]).sum(), (g * w[0]).sum(), (g * w[1]).sum(), -(g * w[0] * lN).sum(), -(g * w[1] * lD).sum()])
        return loss, grad

    best, best_x = np.inf, None
    for x0 in itertools.product(*GRID.values()):
        res = minimize(f, np.array(x0), jac=True, method="L-BFGS-B")
        if res.fun < best:
            best, best_x = res.fun, res.x
    return best_x


def ours_fit(N, D, L):
    recs = [{"run_id": f"r{i}", "N": float(n), "D": float(d), "ratios": {"f": 1.0}, "family_loss": {"f": float(l)}}
            for i, (n, d, l) in enumerate(zip(N, D, L))]
    p = fit("chinchilla", Observations.from_records(recs)).fits["f"].params
    return np.array([np.log(p["E"]), p["a"], p["b"], p["alpha"], p["beta"]])


def rel_errors(x: np.ndarray, truth: dict[str, float]) -> dict[str, float]:
    got = {"E": np.exp(x[0]), "A": np.exp(x[1]), "B": np.exp(x[2]), "alpha": x[3], "beta": x[4]}
    return {k: abs(got[k] / truth[k] - 1) for k in ("E", "alpha", "beta")}


def main(laws: int = 3) -> None:
    t_ours = t_ref = 0.0
    rows = []
    for seed in range(laws):
        truth, N, D, L = planted(seed)
        t = time.perf_counter()
        x_ours = ours_fit(N, D, L)
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        x_ref = reference_fit(N, D, L)
        t_ref += time.perf_counter() - t
        rows.append({"law": seed, "ours_objective": objective(*x_ours, N, D, L), "reference_objective": objective(*x_ref, N, D, L),
                     "ours_max_rel_error": max(rel_errors(x_ours, truth).values()),
                     "reference_max_rel_error": max(rel_errors(x_ref, truth).values())})
    print(f"{laws} planted Chinchilla laws x 48 points; objective = sum of Huber(delta={DELTA}) of log residuals (lower is better)")
    print(f"{'law':>4}{'ours objective':>16}{'reference objective':>21}{'ours max rel err (E, α, β)':>29}{'reference':>11}")
    for r in rows:
        print(f"{r['law']:>4}{r['ours_objective']:>16.3e}{r['reference_objective']:>21.3e}{r['ours_max_rel_error']:>29.4f}"
              f"{r['reference_max_rel_error']:>11.4f}")
    print(f"nemo-mlsl chinchilla fit: {t_ours:7.2f} s for {laws} fits")
    print(f"reference (1,024 L-BFGS-B starts each): {t_ref:7.2f} s for {laws} fits")
    print(f"speed-up, measured in this run: {t_ref / t_ours:.1f}x")
    print(json.dumps({"ours_s": t_ours, "reference_s": t_ref, "speedup": t_ref / t_ours, "rows": rows}))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laws", type=int, default=3, help="planted laws to fit (each costs the reference ~1,024 L-BFGS-B runs)")
    main(ap.parse_args().laws)
