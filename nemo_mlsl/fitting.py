"""Fitting a law to run records: Huber loss on log residuals, multi-start L-BFGS-B, bootstrap, hold-outs.

The whole start grid is scored in one vectorized ``log_predict`` call; L-BFGS-B (with the law's
Jacobian) refines the best few starts. Bootstrap replicates resample runs and warm-start from the
full-data optimum. Everything is seeded: the same records give the same fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.laws.base import Law, grid_product
from nemo_mlsl.observations import FamilyData, Observations
from nemo_mlsl.registry import LAWS

HUBER_DELTA = 1e-3
HOLDOUTS = ("largest-N", "largest-D", "mixtures")


def make_law(spec: str) -> Law:
    """``name`` or ``name:arg`` → a law instance from the ``nemo_mlsl.laws`` registry."""
    name, _, arg = spec.partition(":")
    cls = LAWS.get(name.strip())
    return cls(arg.strip() or None)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    return np.clip(r, -delta, delta)


@dataclass
class TargetFit:
    """One family's (or target's) fitted parameters."""

    target: str
    names: list[str]
    theta: np.ndarray
    objective: float
    n_runs: int
    boot: np.ndarray | None = None

    @property
    def params(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.theta)}

    def ci(self, level: float = 0.95) -> dict[str, list[float]]:
        if self.boot is None or len(self.boot) == 0:
            return {}
        lo, hi = 50 * (1 - level), 50 * (1 + level)
        ok = ~np.isnan(self.boot).any(axis=1)
        if not ok.any():
            return {}
        return {n: [float(np.percentile(self.boot[ok, i], lo)), float(np.percentile(self.boot[ok, i], hi))]
                for i, n in enumerate(self.names)}


def _objective(law: Law, data: FamilyData, delta: float):
    y = np.log(data.loss)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        r = y - law.log_predict(theta, data)
        jac = law.jacobian(theta, data)
        # Elementwise product and sum, not a BLAS matrix product: BLAS threading can change the summation
        # order from run to run, and L-BFGS-B amplifies last-bit differences; fits must be reproducible.
        return float(huber(r, delta).sum()), -(huber_grad(r, delta)[:, None] * jac).sum(axis=0)

    return fun


def fit_target(law: Law, data: FamilyData, *, delta: float = HUBER_DELTA, top_k: int = 4,
               start: np.ndarray | None = None, check: bool = True) -> TargetFit:
    """Fit one target. Without ``start``: score the full grid, refine the ``top_k`` best starts."""
    if check:
        law.check(data)
    params = law.params(data)
    bounds = [(p.lower, p.upper) for p in params]
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    if start is None:
        grid = np.clip(grid_product(params), lo, hi)
        with np.errstate(all="ignore"):
            scores = huber(np.log(data.loss) - law.log_predict(grid, data), delta).sum(axis=-1)
        scores = np.where(np.isfinite(scores), scores, np.inf)
        starts = grid[np.argsort(scores, kind="stable")[:top_k]]
    else:
        starts = np.clip(np.atleast_2d(start), lo, hi)
    fun = _objective(law, data, delta)
    best: tuple[float, np.ndarray] | None = None
    for x0 in starts:
        with np.errstate(all="ignore"):
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10})
        if np.isfinite(res.fun) and (best is None or res.fun < best[0]):
            best = (float(res.fun), res.x)
    if best is None:
        raise FitError(f"law {law.name!r}: no start converged for {data.family!r}")
    return TargetFit(data.family, [p.name for p in params], best[1], best[0], len(data.loss))


@dataclass
class LawFit:
    """A law fitted to every target of a set of runs, with bootstrap replicates."""

    law: Law
    spec: str
    obs: Observations
    fits: dict[str, TargetFit]
    bootstrap: int = 0
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict(self, obs: Observations, target: str) -> np.ndarray:
        data = self.law.data_for(obs, target)
        return np.exp(self.law.log_predict(self.fits[target].theta, data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.spec, "formula": self.law.formula, "bootstrap": self.bootstrap, "seed": self.seed,
            "n_runs": len(self.obs), "families": {
                t: {"params": f.params, "ci": f.ci(), "n_runs": f.n_runs, "objective": f.objective,
                    "replicates": [] if f.boot is None else [None if np.isnan(r).any() else r.tolist() for r in f.boot]}
                for t, f in self.fits.items()
            },
            "metrics": self.metrics,
        }


def fit(spec: str, obs: Observations, *, bootstrap: int = 0, seed: int = 0, targets: Sequence[str] | None = None,
        delta: float = HUBER_DELTA) -> LawFit:
    """Fit ``spec`` to every target; ``bootstrap`` > 0 adds replicates (runs resampled with replacement)."""
    law = make_law(spec)
    fits: dict[str, TargetFit] = {}
    rng = np.random.default_rng(seed)
    boot_idx = [rng.integers(0, len(obs), size=len(obs)) for _ in range(bootstrap)]
    for target in targets or law.targets(obs):
        data = law.data_for(obs, target)
        tf = fit_target(law, data, delta=delta)
        if bootstrap:
            # Rows stay aligned with the shared resamples (NaN where a replicate cannot be fitted), so
            # quantities that combine families (optimal ratios) can be computed replicate by replicate.
            tf.boot = np.full((bootstrap, len(tf.theta)), np.nan)
            for b, idx in enumerate(boot_idx):
                sub = law.data_for(obs.subset(np.sort(idx)), target)
                if [p.name for p in law.params(sub)] != tf.names or len(np.unique(np.round(sub.p, 9))) < 2:
                    continue  # lost a whole (N, D) setting or all variation in p: not estimable
                try:
                    tf.boot[b] = fit_target(law, sub, delta=delta, start=tf.theta, check=False).theta
                except FitError:
                    continue  # the row stays NaN: intervals use the replicates that could be fitted
        fits[target] = tf
    out = LawFit(law, spec, obs, fits, bootstrap, seed)
    out.metrics = {"in_sample": evaluate(out, obs)}
    return out


def regression_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """R² on loss, RMSE of log loss and MAPE (%)."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    ss_res = float(np.sum((observed - predicted) ** 2))
    ss_tot = float(np.sum((observed - observed.mean()) ** 2))
    return {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "rmse_log": float(np.sqrt(np.mean((np.log(observed) - np.log(predicted)) ** 2))),
        "mape": float(100 * np.mean(np.abs(predicted - observed) / observed)),
        "n": int(len(observed)),
    }


def evaluate(lf: LawFit, obs: Observations) -> dict[str, Any]:
    per: dict[str, Any] = {}
    all_o, all_p = [], []
    for target in lf.fits:
        data = lf.law.data_for(obs, target)
        pred = np.exp(lf.law.log_predict(lf.fits[target].theta, data))
        per[target] = regression_metrics(data.loss, pred)
        all_o.append(data.loss)
        all_p.append(pred)
    return {"families": per, "overall": regression_metrics(np.concatenate(all_o), np.concatenate(all_p))}


def holdout_split(obs: Observations, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/test run indices: the largest N, the largest D, or ~25% of the distinct mixtures."""
    if kind == "largest-N":
        test = obs.N == obs.N.max()
    elif kind == "largest-D":
        test = obs.D == obs.D.max()
    elif kind == "mixtures":
        keys = [tuple(np.round(row, 6)) for row in obs.P]
        uniq = sorted(set(keys))
        if len(uniq) < 4:
            raise FitError(f"holdout 'mixtures' needs at least 4 distinct mixtures; the runs have {len(uniq)}")
        perm = np.random.default_rng(seed).permutation(len(uniq))
        held = {uniq[i] for i in perm[: max(1, len(uniq) // 4)]}
        test = np.array([k in held for k in keys])
    else:
        raise ConfigError(f"unknown holdout {kind!r}; choose one of {', '.join(HOLDOUTS)}")
    if test.all() or not test.any():
        raise FitError(f"holdout {kind!r} leaves no training or no test runs: the runs need at least two values to split on")
    return np.flatnonzero(~test), np.flatnonzero(test)


def fit_with_holdout(spec: str, obs: Observations, kind: str, *, bootstrap: int = 0, seed: int = 0) -> LawFit:
    """Fit on the training part of the split; report in-sample and out-of-sample metrics."""
    train, test = holdout_split(obs, kind, seed)
    lf = fit(spec, obs.subset(train), bootstrap=bootstrap, seed=seed)
    lf.metrics["holdout"] = {"kind": kind, "train_runs": len(train), "test_runs": len(test),
                             **evaluate(lf, obs.subset(test))}
    return lf
