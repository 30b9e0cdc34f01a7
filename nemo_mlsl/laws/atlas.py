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


class Source:
    """A source of tokens D (per run) with U unique tokens, and what S_λ(D; U) and dS_λ/dλ need of it alone: which runs
    go past one epoch. Where none does (U = ∞: the runs record no ``family_tokens``), S_λ is D itself and no
    exponential is evaluated; the values are those of the full formula bit for bit."""

    def __init__(self, D: np.ndarray, U: np.ndarray | float):
        self.D = np.asarray(D, dtype=float)
        self.U = np.broadcast_to(np.asarray(U, dtype=float), self.D.shape) if np.ndim(U) else np.full(self.D.shape, float(U))
        self.within = self.D <= self.U
        self.repeats = not bool(self.within.all())
        if self.repeats:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self.x = self.D / self.U - 1.0  # epochs beyond the first

    def _shape(self, lam: np.ndarray | float) -> tuple[int, ...]:
        return np.broadcast_shapes(self.D.shape, np.shape(lam))

    def value(self, lam: np.ndarray | float) -> np.ndarray:
        """S_λ(D; U), broadcast against ``lam``; read-only where no run repeats (it is then D)."""
        if not self.repeats:
            return np.broadcast_to(self.D, self._shape(lam))
        lam = np.asarray(lam, dtype=float)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            over = self.U * (1.0 + (1.0 - np.exp(-lam * self.x)) / lam)
        return np.where(self.within, self.D, over)

    def dlam(self, lam: float) -> np.ndarray:
        """dS_λ(D; U)/dλ: 0 up to one epoch, U·[x·e^(-λx)/λ - (1 - e^(-λx))/λ²] with x = D/U - 1 beyond."""
        if not self.repeats:
            return np.zeros(self._shape(lam))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            e = np.exp(-lam * self.x)
            over = self.U * (self.x * e / lam - (1.0 - e) / lam**2)
        return np.where(self.within, 0.0, over)

    def dD(self, lam: float) -> np.ndarray:
        """dS_λ(D; U)/dD: 1 up to one epoch, e^(-λ(D/U - 1)) beyond."""
        if not self.repeats:
            return np.ones(self.D.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(self.within, 1.0, np.exp(-lam * self.x))


def saturate(D: np.ndarray, U: np.ndarray | float, lam: np.ndarray | float) -> np.ndarray:
    """S_λ(D; U): tokens count fully up to one epoch, then with exponentially diminishing returns."""
    return np.array(Source(D, U).value(lam))


def saturate_dlam(D: np.ndarray, U: np.ndarray | float, lam: float) -> np.ndarray:
    """dS_λ(D; U)/dλ: 0 up to one epoch, U·[x·e^(-λx)/λ - (1 - e^(-λx))/λ²] with x = D/U - 1 beyond."""
    return Source(D, U).dlam(lam)


def own_unique(data: FamilyData) -> float:
    """Unique tokens of the target's own data (inf: unknown, or a target that is no training family)."""
    return float(data.U[data.index]) if data.has_own_share else np.inf


class AtlasLaw(Law):
    name = "atlas"
    zero_shares = True
    extrapolates_nd = True
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

    def _consts(self, data: FamilyData) -> dict[str, Any]:
        """The token sources of the runs (the target's own, its transfer families', the other families'), log N and
        the 1e-6·D floor: everything the law needs of the runs alone. The value and the Jacobian have always summed
        the other families' share in different orders (``other`` and ``other_jac``); both are kept, so fits stay
        bit for bit what they were."""
        fams = self.transfer_families(data)
        others = [j for j in range(data.P.shape[1]) if j != data.index and j not in fams]
        u_other = float(np.sum(data.U[others])) if others else np.inf
        rest = 1.0 - data.p
        for j in fams:
            rest = rest - data.P[:, j]
        rest_jac = 1.0 - data.p - sum((data.P[:, j] for j in fams), np.zeros(len(data.p)))
        return {"own": Source(data.p * data.D, own_unique(data)),
                "transfer": [Source(data.P[:, j] * data.D, data.U[j]) for j in fams],
                "other": Source(np.clip(rest, 0, 1) * data.D, u_other), "rest": rest,
                "other_jac": Source(np.clip(rest_jac, 0, 1) * data.D, u_other),
                "log_n": np.log(data.N), "floor": 1e-6 * data.D, "D": data.D}

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return self._log_predict(theta, self._consts(data))

    def _log_predict(self, theta: np.ndarray, c: dict[str, Any]) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        t2 = np.atleast_2d(theta)
        lam = np.exp(t2[:, 5:6])
        own = c["own"].value(lam)  # [m, n]: lam is [m, 1]
        d_eff = own.copy()
        for col, src in enumerate(c["transfer"]):
            d_eff = d_eff + t2[:, 6 + col : 7 + col] * src.value(lam)
        d_eff = d_eff + t2[:, -1:] * c["other"].value(lam)
        d_eff = np.maximum(d_eff, np.maximum(0.01 * own, c["floor"]))
        E, a, alpha, b, beta = (t2[:, i : i + 1] for i in range(5))
        out = np.log(E + np.exp(a - alpha * c["log_n"]) + np.exp(b - beta * np.log(d_eff)))
        return out if theta.ndim == 2 else out[0]

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """Analytic d log L / d theta (through the saturation in λ and the transfer weights)."""
        return self._jacobian(theta, self._consts(data))

    def _jacobian(self, theta: np.ndarray, c: dict[str, Any]) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        E, a, alpha, b, beta, loglam = theta[:6]
        tau = theta[6:]
        lam = float(np.exp(loglam))
        own_src = c["own"]
        own = own_src.value(lam)
        own_dlam = own_src.dlam(lam)
        d_eff, dlam = own.copy(), own_dlam
        srcs = c["transfer"] + [c["other_jac"]]
        S = [src.value(lam) for src in srcs]
        for t, s_j, src in zip(tau, S, srcs):
            d_eff = d_eff + t * s_j
            dlam = dlam + t * src.dlam(lam)
        floor = np.maximum(0.01 * own, c["floor"])
        free = d_eff > floor  # where the floor holds, only the target's own saturation moves it (if it is the floor)
        d_eff = np.where(free, d_eff, floor)
        dlam = np.where(free, dlam, np.where(0.01 * own >= c["floor"], 0.01 * own_dlam, 0.0))
        tn = np.exp(a - alpha * c["log_n"])
        log_d_eff = np.log(d_eff)
        td = np.exp(b - beta * log_d_eff)
        L = E + tn + td
        dd = -beta * td / d_eff  # dL / d D_eff
        cols = [np.ones_like(L), tn, -c["log_n"] * tn, td, -log_d_eff * td, dd * dlam * lam]
        cols += [dd * np.where(free, s_j, 0.0) for s_j in S]
        return np.column_stack(cols) / L[:, None]

    def evaluator(self, data: FamilyData):
        """The token sources once per fit (no exponential for a source that never repeats); value and Jacobian as
        ``log_predict`` and ``jacobian`` compute them."""
        c = self._consts(data)
        return lambda theta: (self._log_predict(theta, c), self._jacobian(theta, c))

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """d log L / d P (every family's share) of ``log_predict`` as written: D_eff moves with the target's own share
        and its transfer families' (each through its saturation), and the other families' tokens with the
        unclipped remainder 1 - p_t - Σ_K p_j; where the floor holds, only the target's own share moves it."""
        theta = np.asarray(theta, dtype=float)
        c = self._consts(data)
        lam = float(np.exp(theta[5]))
        beta, tau = theta[4], theta[6:]
        own = c["own"].value(lam)
        d_eff = own + sum((t * src.value(lam) for t, src in zip(tau, c["transfer"] + [c["other"]])), np.zeros(len(own)))
        floor = np.maximum(0.01 * own, c["floor"])
        free = d_eff > floor
        d_eff = np.where(free, d_eff, floor)
        tn = np.exp(theta[1] - theta[2] * c["log_n"])
        td = np.exp(theta[3] - beta * np.log(d_eff))
        dlog = -beta * td / d_eff / (theta[0] + tn + td)  # d log L / d D_eff
        inner = (c["rest"] > 0) & (c["rest"] < 1)
        via_rest = -tau[-1] * c["D"] * c["other"].dD(lam) * inner  # d D_eff / d p_j through the remainder
        out = np.zeros((len(own), data.P.shape[1]))
        own_floor = np.where(0.01 * own >= c["floor"], 0.01 * c["D"] * c["own"].dD(lam), 0.0)
        if data.has_own_share:  # a target that is no training family has no share of its own to move
            out[:, data.index] = np.where(free, c["D"] * c["own"].dD(lam) + via_rest, own_floor)
        for t, src, j in zip(tau, c["transfer"], self.transfer_families(data)):
            out[:, j] = np.where(free, t * c["D"] * src.dD(lam) + via_rest, 0.0)
        return out * dlog[:, None]

    def requirements(self) -> dict[str, int]:
        return {"runs": 10, "p": 2, "N": 2, "D": 2}
