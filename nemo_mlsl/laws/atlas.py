"""ATLAS adaptive-transfer law (Longpre et al. 2025), at the level of families.

``L_t = E + A/N^α + B/D_eff^β`` with
``D_eff = S_λ(D_t; U_t) + Σ_{j∈K_t} τ_j S_λ(D_j; U_j) + τ_o S_λ(D_other; U_other)`` and the
repetition saturation ``S_λ(D; U) = D`` for D ≤ U, else ``U [1 + (1 - exp(-λ(D/U - 1)))/λ]``.
D_j = p_j·D. Choices the notes leave open, made here: K_t is the ``arg`` (default 3) families most
co-sampled with t (largest mean ratio over the runs it is fitted on: the layout, fixed at fit time
and stored with the fit, so a fitted τ always belongs to the family it was fitted for); one λ is shared by all sources (as the
paper's text says); τ may be negative (interference) down to -0.5, and D_eff is floored at 1% of
the target's own effective data and at 1e-6·D so the law stays defined. A target with no share of its own
(p_t = 0: the monolingual and bilingual runs of ATLAS evaluated on languages they never trained on), or a
target that is no training family at all (a task, a language outside the mixture), has D_eff = the
transfer-weighted tokens of the others (its transfer families: the most sampled ones), a finite loss: zero shares are data for this law. U = ∞ (no repetition) when the runs do
not record available tokens (``family_tokens``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.laws.base import Law, Param
from nemo_mlsl.fitting.observations import FamilyData


def saturate(D: np.ndarray, U: np.ndarray | float, lam: np.ndarray | float) -> np.ndarray:
    """S_λ(D; U): tokens count fully up to one epoch, then with exponentially diminishing returns."""
    D = np.asarray(D, dtype=float)
    U = np.broadcast_to(np.asarray(U, dtype=float), D.shape) if np.ndim(U) else np.full(D.shape, float(U))
    lam = np.asarray(lam, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        over = U * (1.0 + (1.0 - np.exp(-lam * (D / U - 1.0))) / lam)
    return np.where(D <= U, D, over)


def saturate_dlam(D: np.ndarray, U: np.ndarray | float, lam: float) -> np.ndarray:
    """dS_λ(D; U)/dλ: 0 up to one epoch, U·[x·e^(-λx)/λ - (1 - e^(-λx))/λ²] with x = D/U - 1 beyond."""
    D = np.asarray(D, dtype=float)
    U = np.broadcast_to(np.asarray(U, dtype=float), D.shape) if np.ndim(U) else np.full(D.shape, float(U))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        x = D / U - 1.0
        e = np.exp(-lam * x)
        over = U * (x * e / lam - (1.0 - e) / lam**2)
    return np.where(D <= U, 0.0, over)


def own_unique(data: FamilyData) -> float:
    """Unique tokens of the target's own data (inf: unknown, or a target that is no training family)."""
    return float(data.U[data.index]) if data.has_own_share else np.inf


class AtlasLaw(Law):
    name = "atlas"
    zero_shares = True
    formula = "L_t = E + A/N^α + B/D_eff^β,  D_eff = S_λ(D_t) + Σ_j τ_j S_λ(D_j) + τ_o S_λ(D_other)"

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        try:
            self.k = int(arg) if arg else 3
        except ValueError:
            raise ConfigError(f"law atlas:{arg}: the argument is the number of transfer families, e.g. atlas:3") from None

    def layout(self, data: FamilyData) -> dict[str, Any]:
        """The k families most co-sampled with the target in the runs being fitted, by name."""
        mean = data.P.mean(axis=0).astype(float)
        if data.has_own_share:
            mean[data.index] = -np.inf
        order = [j for j in np.argsort(-mean, kind="stable") if j != data.index and np.isfinite(mean[j])]
        return {"transfer": [self._names(data)[j] for j in order[: self.k]]}

    @staticmethod
    def _names(data: FamilyData) -> tuple[str, ...]:
        return data.families or tuple(str(j) for j in range(data.P.shape[1]))

    def transfer_families(self, data: FamilyData) -> list[int]:
        """Column indices in ``data`` of the fitted transfer families."""
        names = self._names(data)
        fams = self.fixed_layout()["transfer"]
        missing = [f for f in fams if f not in names]
        if missing:
            raise FitError(f"law 'atlas' was fitted with transfer families {fams}; the runs to predict have no {missing}")
        return [names.index(f) for f in fams]

    def params(self, data: FamilyData) -> list[Param]:
        top = float(data.loss.min())
        out = [
            Param("E", 0.0, top, (0.0, 0.5 * top, 0.9 * top)),
            Param("a", -5.0, 40.0, (0.0, 5.0, 10.0)),
            Param("alpha", 0.0, 2.5, (0.1, 0.3, 0.6)),
            Param("b", -5.0, 40.0, (0.0, 5.0, 10.0)),
            Param("beta", 0.0, 2.5, (0.1, 0.3, 0.6)),
            Param("log_lambda", -7.0, 4.6, (0.0,)),
        ]
        out += [Param(f"tau[{f}]", -0.5, 1.0, (0.0,)) for f in self.fixed_layout()["transfer"]]
        out.append(Param("tau_other", -0.5, 1.0, (0.0,)))
        return out

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        t2 = np.atleast_2d(theta)
        fams = self.transfer_families(data)
        lam = np.exp(t2[:, 5:6])
        own = saturate(np.broadcast_to(data.p * data.D, (len(t2), len(data.D))), own_unique(data), lam)
        d_eff = own.copy()
        rest = 1.0 - data.p
        for col, j in enumerate(fams):
            tau = t2[:, 6 + col : 7 + col]
            d_eff = d_eff + tau * saturate(np.broadcast_to(data.P[:, j] * data.D, own.shape), data.U[j], lam)
            rest = rest - data.P[:, j]
        others = [j for j in range(data.P.shape[1]) if j != data.index and j not in fams]
        u_other = float(np.sum(data.U[others])) if others else np.inf
        tau_o = t2[:, -1:]
        d_eff = d_eff + tau_o * saturate(np.broadcast_to(np.clip(rest, 0, 1) * data.D, own.shape), u_other, lam)
        d_eff = np.maximum(d_eff, np.maximum(0.01 * own, 1e-6 * data.D))
        E, a, alpha, b, beta = (t2[:, i : i + 1] for i in range(5))
        out = np.log(E + np.exp(a - alpha * np.log(data.N)) + np.exp(b - beta * np.log(d_eff)))
        return out if theta.ndim == 2 else out[0]

    def _sources(self, data: FamilyData) -> list[tuple[np.ndarray, np.ndarray | float]]:
        """(tokens, unique tokens) of each transfer family, then of the other families together."""
        fams = self.transfer_families(data)
        rest = 1.0 - data.p - sum((data.P[:, j] for j in fams), np.zeros(len(data.p)))
        others = [j for j in range(data.P.shape[1]) if j != data.index and j not in fams]
        u_other = float(np.sum(data.U[others])) if others else np.inf
        return [(data.P[:, j] * data.D, data.U[j]) for j in fams] + [(np.clip(rest, 0, 1) * data.D, u_other)]

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """Analytic d log L / d theta (through the saturation in λ and the transfer weights)."""
        theta = np.asarray(theta, dtype=float)
        E, a, alpha, b, beta, loglam = theta[:6]
        tau = theta[6:]
        lam = float(np.exp(loglam))
        own_D, own_U = data.p * data.D, own_unique(data)
        own = saturate(own_D, own_U, lam)
        d_eff, dlam = own.copy(), saturate_dlam(own_D, own_U, lam)
        srcs = self._sources(data)
        S = [saturate(D, U, lam) for D, U in srcs]
        for t, s_j, (D, U) in zip(tau, S, srcs):
            d_eff = d_eff + t * s_j
            dlam = dlam + t * saturate_dlam(D, U, lam)
        floor = np.maximum(0.01 * own, 1e-6 * data.D)
        free = d_eff > floor  # where the floor holds, only the target's own saturation moves it (if it is the floor)
        d_eff = np.where(free, d_eff, floor)
        dlam = np.where(free, dlam, np.where(0.01 * own >= 1e-6 * data.D, 0.01 * saturate_dlam(own_D, own_U, lam), 0.0))
        tn = np.exp(a - alpha * np.log(data.N))
        td = np.exp(b - beta * np.log(d_eff))
        L = E + tn + td
        dd = -beta * td / d_eff  # dL / d D_eff
        cols = [np.ones_like(L), tn, -np.log(data.N) * tn, td, -np.log(d_eff) * td, dd * dlam * lam]
        cols += [dd * np.where(free, s_j, 0.0) for s_j in S]
        return np.column_stack(cols) / L[:, None]

    def requirements(self) -> dict[str, int]:
        return {"runs": 10, "p": 2, "N": 2, "D": 2}
