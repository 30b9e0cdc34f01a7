"""Optimal family sampling ratios: minimise Σ_i w_i · L_i(N, D, p_i) / Z_i over the simplex.

With L_i = c_i(N, D) · p_i^(-γ_i) each term is convex in p_i (γ_i > 0), so the KKT conditions
give the optimum: p_i(λ) = clip((w_i c̃_i γ_i / λ)^(1/(1+γ_i)), lo_i, hi_i), with c̃_i = c_i (raw) or
1 (normalized, Z_i = c_i: the family's loss at p_i = 1), and λ found by a 1-D root find so that
Σ p_i = 1. Upper bounds include data caps: p_i · D ≤ max_epochs · tokens_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import brentq, minimize

from nemo_mlsl.errors import ConfigError


@dataclass(frozen=True)
class RatioProblem:
    """min Σ w_i c_i p_i^(-γ_i)  s.t.  Σ p_i = 1, lower ≤ p ≤ upper."""

    coef: np.ndarray
    gamma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def objective(self, p: np.ndarray) -> float:
        return float(np.sum(self.coef * np.asarray(p, float) ** (-self.gamma)))

    def validate(self, names: Sequence[str] | None = None) -> None:
        names = list(names or range(len(self.coef)))
        if np.any(self.lower < 0) or np.any(self.upper > 1) or np.any(self.lower > self.upper):
            bad = [names[i] for i in np.flatnonzero((self.lower < 0) | (self.upper > 1) | (self.lower > self.upper))]
            raise ConfigError(f"ratio bounds of {bad} are inconsistent: need 0 <= min <= max <= 1")
        if self.lower.sum() > 1 + 1e-12:
            raise ConfigError(f"minimum ratios sum to {self.lower.sum():.4g} > 1; lower them")
        if self.upper.sum() < 1 - 1e-12:
            raise ConfigError(
                f"upper bounds (including data caps p·D <= max_epochs·tokens) sum to {self.upper.sum():.4g} < 1: "
                "there is not enough data for this token budget; raise max_epochs or lower D"
            )
        if np.any(self.coef <= 0):
            raise ConfigError("loss coefficients must be positive")


def solve_kkt(prob: RatioProblem, tol: float = 1e-14) -> np.ndarray:
    """Exact optimum via the multiplier λ (monotone 1-D root find in log λ)."""
    prob.validate()
    g = prob.gamma
    active = g > 0
    lo, hi = prob.lower, prob.upper

    def p_of(log_lam: float) -> np.ndarray:
        p = lo.copy()  # γ_i <= 0: more data does not help, so the family takes its minimum
        with np.errstate(over="ignore"):
            free = np.exp((np.log(prob.coef[active] * g[active]) - log_lam) / (1.0 + g[active]))
        p[active] = np.clip(free, lo[active], hi[active])
        return p

    if not active.any():
        p = lo.copy()
        p += (1 - p.sum()) * (hi - lo) / max(1e-300, (hi - lo).sum())
        return p
    f = lambda x: p_of(x).sum() - 1.0
    a, b = -50.0, 50.0
    while f(a) < 0 and a > -1e4:
        a *= 2
    while f(b) > 0 and b < 1e4:
        b *= 2
    if f(a) < 0:
        # Even unbounded multipliers cannot reach 1: inactive families fill the gap up to their caps.
        p = p_of(a)
        slack = hi - p
        p += (1 - p.sum()) * slack / slack.sum()
        return p
    x = brentq(f, a, b, xtol=tol, rtol=4 * np.finfo(float).eps, maxiter=500)
    p = p_of(x)
    return p / p.sum()


def solve_general(prob: RatioProblem, x0: np.ndarray | None = None) -> np.ndarray:
    """Reference solution with a general constrained solver (SLSQP); used to check ``solve_kkt``."""
    n = len(prob.coef)
    x0 = np.clip(np.full(n, 1.0 / n) if x0 is None else x0, np.maximum(prob.lower, 1e-9), prob.upper)
    res = minimize(
        prob.objective, x0, method="SLSQP", bounds=list(zip(np.maximum(prob.lower, 1e-12), prob.upper)),
        jac=lambda p: -prob.coef * prob.gamma * p ** (-prob.gamma - 1),
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    return res.x


def bounds_for(
    families: Sequence[str],
    *,
    min_ratio: Mapping[str, float] | float = 0.0,
    max_ratio: Mapping[str, float] | float = 1.0,
    tokens: Mapping[str, float] | None = None,
    D: float | None = None,
    max_epochs: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-family lower/upper bounds; data caps p_i ≤ max_epochs · tokens_i / D when tokens and D are known."""
    def per(value, default):
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(families))
            if unknown:
                raise ConfigError(f"unknown family {unknown} in ratio bounds; families: {list(families)}")
            return np.array([float(value.get(f, default)) for f in families])
        return np.full(len(families), float(value))

    lower, upper = per(min_ratio, 0.0), per(max_ratio, 1.0)
    if tokens is not None and D and max_epochs:
        caps = np.array([max_epochs * float(tokens.get(f, np.inf)) / D for f in families])
        upper = np.minimum(upper, caps)
    return lower, upper


SEPARABLE_LAWS = ("joint_family", "family_power")


def _coefficients(law: str, params: Mapping[str, float], N: float | None, D: float | None) -> tuple[float, float]:
    """(c_i(N, D), γ_i) of one family from fitted parameters."""
    gamma = float(params["gamma"])
    if law == "joint_family":
        if N is None or D is None:
            raise ConfigError("the joint_family law needs --N and --D to evaluate c_i(N, D) = E + A/N^α + B/D^β")
        c = params["E"] + np.exp(params["a"] - params["alpha"] * np.log(N)) + np.exp(params["b"] - params["beta"] * np.log(D))
        return float(c), gamma
    settings = {k: v for k, v in params.items() if k.startswith("log_Lstar[")}
    if N is not None and D is not None:
        key = min(settings, key=lambda k: _setting_distance(k, N, D))
    else:
        key = sorted(settings)[-1]
    return float(np.exp(settings[key])), gamma


def _setting_distance(key: str, N: float, D: float) -> float:
    body = key[key.index("[") + 1 : -1]
    vals = dict(part.split("=") for part in body.split(","))
    return abs(np.log(float(vals["N"]) / N)) + abs(np.log(float(vals["D"]) / D))


def optimal_from_fit(
    fit_doc: Mapping,
    *,
    N: float | None = None,
    D: float | None = None,
    objective: str = "normalized",
    weights: Mapping[str, float] | None = None,
    min_ratio: Mapping[str, float] | float = 0.0,
    max_ratio: Mapping[str, float] | float = 1.0,
    tokens: Mapping[str, float] | None = None,
    max_epochs: float | None = None,
) -> dict:
    """Optimal ratios (and bootstrap intervals) from a ``fit.json`` document."""
    law = str(fit_doc["law"]).split(":")[0]
    if law not in SEPARABLE_LAWS:
        raise ConfigError(f"optimal ratios need a law of the form c_i·p_i^-γ_i ({', '.join(SEPARABLE_LAWS)}); fit.json has {law!r}")
    if objective not in ("normalized", "raw"):
        raise ConfigError(f"--objective must be 'normalized' or 'raw', got {objective!r}")
    fams = sorted(fit_doc["families"])
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(fams))
    if unknown:
        raise ConfigError(f"unknown family {unknown} in --weights; the fit has {fams}")
    w = np.array([float(weights.get(f, 1.0)) for f in fams])
    lower, upper = bounds_for(fams, min_ratio=min_ratio, max_ratio=max_ratio, tokens=tokens, D=D, max_epochs=max_epochs)

    def solve(param_sets: list[Mapping[str, float]]) -> np.ndarray:
        c, g = np.array([_coefficients(law, ps, N, D) for ps in param_sets]).T
        coef = w * (c if objective == "raw" else 1.0)
        return solve_kkt(RatioProblem(coef, g, lower, upper))

    point = solve([fit_doc["families"][f]["params"] for f in fams])
    out = {"ratios": {f: float(p) for f, p in zip(fams, point)}, "objective": objective, "law": fit_doc["law"],
           "N": N, "D": D, "weights": {f: float(x) for f, x in zip(fams, w)}}
    reps = [fit_doc["families"][f].get("replicates") or [] for f in fams]
    if all(reps) and len({len(r) for r in reps}) == 1:
        names = {f: list(fit_doc["families"][f]["params"]) for f in fams}
        samples = []
        for b in range(len(reps[0])):
            rows = [reps[i][b] for i in range(len(fams))]
            if any(r is None for r in rows):
                continue
            try:
                samples.append(solve([dict(zip(names[f], r)) for f, r in zip(fams, rows)]))
            except ConfigError:
                continue
        if samples:
            s = np.array(samples)
            out["ci"] = {f: [float(np.percentile(s[:, i], 2.5)), float(np.percentile(s[:, i], 97.5))] for i, f in enumerate(fams)}
            out["replicates"] = len(samples)
    return out


def predicted_losses(fit_doc: Mapping, ratios: Mapping[str, float], N: float | None = None, D: float | None = None) -> dict[str, float]:
    """L_i(N, D, p_i) for every family under a separable law."""
    law = str(fit_doc["law"]).split(":")[0]
    out = {}
    for fam, entry in fit_doc["families"].items():
        c, g = _coefficients(law, entry["params"], N, D)
        out[fam] = c * float(ratios[fam]) ** (-g)
    return out


def unit_losses(fit_doc: Mapping, N: float | None = None, D: float | None = None) -> dict[str, float]:
    """c_i(N, D): each family's predicted loss at p_i = 1 (the normalizer Z_i)."""
    law = str(fit_doc["law"]).split(":")[0]
    return {fam: _coefficients(law, e["params"], N, D)[0] for fam, e in fit_doc["families"].items()}
