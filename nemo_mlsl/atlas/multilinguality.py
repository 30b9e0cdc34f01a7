"""The curse of multilinguality (ATLAS §5): ``L(K, N, D_t) = L∞ + A·K^φ/N^α + B·K^ψ/D_t^β``.

K languages sampled uniformly, D_t tokens per language (D_tot = K·D_t). Going from K to r·K
languages at unchanged per-language loss, the compute-optimal multipliers are
N'/N = r^(φ/α), D_t'/D_t = r^(ψ/β), D_tot'/D_tot = r^(1+ψ/β), C'/C = r^(1+φ/α+ψ/β).
Defaults are the paper's φ = 0.11, ψ = -0.04 with α, β implied by its Fig. 5 exponents
(φ/α = 0.243, ψ/β = -0.272, so α ≈ 0.453, β ≈ 0.147).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.fitting.lawfit import huber

PAPER = {"phi": 0.11, "psi": -0.04, "alpha": 0.11 / 0.243, "beta": 0.04 / 0.272}


@dataclass(frozen=True)
class CapacityLaw:
    phi: float
    psi: float
    alpha: float
    beta: float
    L_inf: float | None = None
    A: float | None = None
    B: float | None = None
    source: str = "paper"
    metrics: dict = field(default_factory=dict)

    @classmethod
    def paper(cls) -> "CapacityLaw":
        return cls(**PAPER)

    def multipliers(self, r: float) -> dict[str, float]:
        if r <= 0:
            raise ConfigError("the language multiplier r = K'/K must be > 0")
        n = r ** (self.phi / self.alpha)
        dt = r ** (self.psi / self.beta)
        return {"r": r, "N": n, "D_per_language": dt, "D_total": r * dt, "compute": r * n * dt,
                "exponents": {"N": self.phi / self.alpha, "D_total": 1 + self.psi / self.beta,
                              "compute": 1 + self.phi / self.alpha + self.psi / self.beta}}

    def frontier(self, r: float, s: np.ndarray, w_N: float | None = None) -> np.ndarray:
        """Iso-loss D_t multiplier t for model multipliers s (Eq. 8); w_N defaults to the compute-optimal β/(α+β)."""
        w_N = self.beta / (self.alpha + self.beta) if w_N is None else w_N
        w_D = 1.0 - w_N
        rest = 1.0 - r ** self.phi * w_N * np.asarray(s, float) ** (-self.alpha)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (r ** self.psi * w_D / rest) ** (1.0 / self.beta)
        return np.where(rest > 0, t, np.nan)

    def predict(self, K, N, D_t) -> np.ndarray:
        if self.L_inf is None:
            raise ConfigError("this capacity law has only the paper's exponents; fit it to runs to predict losses")
        K, N, D_t = (np.asarray(x, float) for x in (K, N, D_t))
        return self.L_inf + self.A * K ** self.phi / N ** self.alpha + self.B * K ** self.psi / D_t ** self.beta


def fit_capacity(K: Sequence[float], N: Sequence[float], D_t: Sequence[float], loss: Sequence[float]) -> CapacityLaw:
    """Fit all seven parameters (Huber on log loss, multi-start L-BFGS-B) to capacity runs."""
    K, N, D, y = (np.asarray(x, float) for x in (K, N, D_t, loss))
    for name, need in (("K", 2), ("N", 2), ("D_t", 2)):
        if len(np.unique({"K": K, "N": N, "D_t": D}[name])) < need:
            raise FitError(f"the capacity law needs runs at >= {need} distinct values of {name}")
    if len(y) < 8:
        raise FitError(f"the capacity law has 7 parameters and needs at least 8 runs; got {len(y)}")
    ly = np.log(y)

    def pred(th):
        Linf, a, phi, alpha, b, psi, beta = th
        return np.log(Linf + np.exp(a + phi * np.log(K) - alpha * np.log(N)) + np.exp(b + psi * np.log(K) - beta * np.log(D)))

    def fun(th):
        r = ly - pred(th)
        eps = 1e-6
        g = np.array([(huber(ly - pred(th + eps * e)).sum() - huber(ly - pred(th - eps * e)).sum()) / (2 * eps) for e in np.eye(7)])
        return float(huber(r).sum()), g

    bounds = [(0, float(y.min())), (-5, 30), (-1, 1), (0, 2), (-5, 30), (-1, 1), (0, 2)]
    best = None
    for a0 in (2.0, 8.0):
        for al in (0.2, 0.5):
            for be in (0.2, 0.5):
                x0 = np.array([0.5 * y.min(), a0, 0.0, al, a0, 0.0, be])
                res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds)
                if best is None or res.fun < best.fun:
                    best = res
    Linf, a, phi, alpha, b, psi, beta = best.x
    resid = ly - pred(best.x)
    r2 = 1 - np.sum((y - np.exp(pred(best.x))) ** 2) / np.sum((y - y.mean()) ** 2)
    return CapacityLaw(phi, psi, alpha, beta, Linf, float(np.exp(a)), float(np.exp(b)), "fit",
                       {"r2": float(r2), "rmse_log": float(np.sqrt(np.mean(resid ** 2))), "n": int(len(y))})


def from_records(records: Sequence[Mapping]) -> CapacityLaw:
    """Capacity runs: records with K (languages), N, D (total tokens) and one loss per language (``language_loss``)."""
    K, N, D, L = [], [], [], []
    for r in records:
        if "K" not in r:
            raise ConfigError(f"run {r.get('run_id')!r} has no 'K' (number of uniformly sampled languages)")
        k = int(r["K"])
        for loss in (r.get("language_loss") or r["family_loss"]).values():
            K.append(k)
            N.append(float(r["N"]))
            D.append(float(r["D"]) / k)
            L.append(float(loss))
    return fit_capacity(K, N, D, L)
