"""What a scaling law is to the fitter: named, bounded parameters, a start grid and log-space predictions.

``log_predict`` takes ``theta`` of shape ``[k]`` or ``[m, k]`` (m candidate parameter vectors at
once, used to score the whole start grid in one vectorized call) and returns ``[n]`` or ``[m, n]``.

A law whose parameters depend on the runs it is fitted on (one L* per (N, D) setting, the transfer
families of ATLAS) fixes that structure once, at fit time: ``layout(data)`` returns it as plain
JSON, ``bind(layout)`` gives the law that predicts with it. A fitted law stores its layout, so it
predicts any runs (a hold-out, one run, a plotting grid) with the parameters it was fitted with.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import FitError
from nemo_mlsl.fitting.observations import FamilyData, Observations


@dataclass(frozen=True)
class Param:
    """A bounded parameter and its start values. Parameters with the same ``tie`` take their start values
    together (one row per index of their common grid), so a law with one weight per family adds one grid
    axis, not one per family."""

    name: str
    lower: float
    upper: float
    grid: tuple[float, ...]
    tie: str | None = None


class Law(ABC):
    """A per-family scaling law. Subclasses set ``name`` and implement ``params`` and ``log_predict``."""

    name: str = "law"
    formula: str = ""
    #: Whether the law can represent a family with no share of its own (p_i = 0 in some runs). He et al.'s
    #: p^-γ is infinite there; laws with transfer from the other families (or none in p) are finite.
    zero_shares: bool = False
    #: Whether the predicted loss depends on the mixture at all (an optimum over the simplex is defined).
    mixture_aware: bool = True
    #: Whether each family's loss depends on its own share alone (c_i(N, D)·p_i^-γ_i): the KKT closed form applies.
    separable: bool = False
    #: Whether the form has N and D terms (present wherever the fitted runs vary N and D), so the fitted law predicts
    #: a larger model and another token budget than it was fitted at: what a study needs of its law (it predicts the
    #: confirmation rung). A third-party law declares it here; ``study_law_problem`` reads it.
    extrapolates_nd: bool = False

    @property
    def own_share(self) -> bool:
        """Whether the law's form needs the target's own share (He et al.'s p^-γ): then it can fit only targets that
        are training families. Laws that take the whole mixture (or none) fit any target: a task, a held-out set, a
        language outside the mixture. By default, the laws that cannot represent a share of 0."""
        return not self.zero_shares

    def __init__(self, arg: str | None = None):
        self.arg = arg
        self.fixed: dict[str, Any] | None = None

    def layout(self, data: FamilyData) -> dict[str, Any]:
        """The structure of the parameter vector that depends on the fitted runs (JSON-serialisable); none by default."""
        return {}

    def bind(self, layout: Mapping[str, Any]) -> "Law":
        """A copy of this law that predicts with ``layout`` (fixed at fit time)."""
        out = copy.copy(self)
        out.fixed = dict(layout)
        return out

    def bound_to(self, data: FamilyData) -> "Law":
        """This law with the layout of the runs it is about to be fitted on."""
        return self.bind(self.layout(data))

    def fixed_layout(self) -> dict[str, Any]:
        if self.fixed is None:
            raise FitError(f"law {self.name!r} predicts only with a layout fixed at fit time: use law.bound_to(data) "
                           "before fitting, or the fitted law (LawFit / TargetFit) to predict")
        return self.fixed

    def targets(self, obs: Observations) -> list[str]:
        """What gets one fit each: every evaluated target, by default (shares alone are features)."""
        return list(obs.targets)

    def data_for(self, obs: Observations, target: str) -> FamilyData:
        """The runs and losses one target is fitted on."""
        return FamilyData.of(obs, target)

    @abstractmethod
    def params(self, data: FamilyData) -> list[Param]:
        """Parameters for this family's data (their number may depend on it, e.g. one L* per setting)."""

    @abstractmethod
    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """log L for every run in ``data`` under parameters ``theta``."""

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """d log L / d theta, ``[n, k]``; central differences unless a law knows better."""
        k = len(theta)
        eps = 1e-6 * np.maximum(1.0, np.abs(theta))
        pts = np.concatenate([theta + np.diag(eps), theta - np.diag(eps)])
        vals = self.log_predict(pts, data)
        return ((vals[:k] - vals[k:]) / (2 * eps[:, None])).T

    def evaluator(self, data: FamilyData) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``theta -> (log_predict(theta, data), jacobian(theta, data))`` for one parameter vector: what the fitter
        calls at every step. A law may override it to compute what depends on the runs alone once per fit and to
        share work between the two; its values must equal the two methods' bit for bit (the fit's iterates, and
        so its results, depend on every bit: tested for every built-in law)."""
        return lambda theta: (self.log_predict(theta, data), self.jacobian(theta, data))

    def start_grid(self, data: FamilyData) -> np.ndarray:
        """Candidate starting points ``[m, k]`` scored in one vectorized call; the product of the parameters' grids."""
        return grid_product(self.params(data))

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """d log L / d P (every family's share), ``[n, F]``; central differences unless a law knows better.
        The optimizer's gradient over the simplex. A share at 0 is differenced forward (a share below 0 is no mixture,
        and a law there may be undefined); where the loss is not finite on either side the derivative is undefined: nan."""
        F, h = data.P.shape[1], 1e-6

        def at(P: np.ndarray) -> np.ndarray:
            p = P[:, data.index] if data.index >= 0 else data.p
            return self.log_predict(theta, FamilyData(data.family, data.index, data.N, data.D, p, P, data.U, data.loss,
                                                      data.families))

        out = np.full((len(data.loss), F), np.nan)
        for j in range(F):
            up, down = data.P.copy(), data.P.copy()
            up[:, j] += h
            edge = down[:, j] < h
            down[:, j] = np.where(edge, data.P[:, j], down[:, j] - h)
            hi, lo = at(up), at(down)
            ok = np.isfinite(hi) & np.isfinite(lo)
            np.divide(np.subtract(hi, lo, where=ok, out=np.zeros_like(hi)), np.where(edge, h, 2 * h), where=ok, out=out[:, j])
        return out

    def requirements(self) -> dict[str, int]:
        """Minimum runs and distinct values of p (the target's own share), mixtures, N and D this law needs to be
        identifiable. For a target that is no training family, "p" counts distinct mixtures instead."""
        return {"runs": 3, "p": 2}

    def unidentifiable(self, data: FamilyData) -> str | None:
        """Why ``data`` cannot pin this (bound) law's parameters down, or None. Also decides which bootstrap
        resamples are fitted: only the variation the law actually needs (p only for laws with a ratio term)."""
        req = self.requirements()
        k = len(self.params(data))
        need_runs = max(req.get("runs", 0), k + 1)
        mixtures = data.distinct_mixtures()
        have = {"runs": len(data.loss), "p": len(np.unique(np.round(data.p, 9))) if data.has_own_share else mixtures,
                "mixtures": mixtures, "N": len(np.unique(data.N)), "D": len(np.unique(data.D))}
        if have["runs"] < need_runs:
            return f"law {self.name!r} needs at least {need_runs} runs for target {data.family!r}; got {have['runs']}"
        for key in ("p", "mixtures", "N", "D"):
            if have[key] < req.get(key, 0):
                what = "distinct mixtures" if key == "mixtures" or (key == "p" and not data.has_own_share) else f"distinct values of {key}"
                return (f"law {self.name!r} needs at least {req[key]} {what} for target {data.family!r}; "
                        f"got {have[key]}. Add runs that vary {'the mixture' if what == 'distinct mixtures' else key}")
        return None

    def check(self, data: FamilyData) -> None:
        if not data.has_own_share and self.own_share:
            raise FitError(not_a_family_message(self.name, [data.family]))
        if np.any(data.P < 0) or np.any(data.P > 1):
            bad = float(data.P[(data.P < 0) | (data.P > 1)][0])
            raise FitError(f"target {data.family!r} has a run with a share of {bad}: a share is a number in [0, 1]")
        zero = int(np.sum(data.p <= 0)) if data.has_own_share else 0
        if zero and not self.zero_shares:
            raise FitError(zero_share_message(self.name, data.family, zero, len(data.p)))
        reason = self.unidentifiable(data)
        if reason:
            raise FitError(reason)


def zero_share_laws() -> list[str]:
    """Registered mixture-aware laws that can represent a family with no share of its own."""
    from nemo_mlsl.registry import LAWS

    out = []
    for name in LAWS.names():
        try:
            cls = LAWS.get(name)
            if getattr(cls, "zero_shares", False) and getattr(cls, "mixture_aware", True):
                out.append(name)
        except Exception:  # a broken third-party entry point must not hide this message
            continue
    return out


def whole_mixture_laws() -> list[str]:
    """Registered mixture-aware laws that predict a target from the whole mixture (it need not be a family)."""
    from nemo_mlsl.registry import LAWS

    out = []
    for name in LAWS.names():
        try:
            law = LAWS.get(name)()
            if law.mixture_aware and not law.own_share:
                out.append(name)
        except Exception:  # a broken third-party entry point must not hide this message
            continue
    return out


def not_a_family_message(law: str, targets: Sequence[str]) -> str:
    """The named error of a law whose form needs the target's own share, asked to fit targets that are no family."""
    shown = ", ".join(repr(t) for t in list(targets)[:5]) + (f" and {len(targets) - 5} more" if len(targets) > 5 else "")
    return (f"law {law!r} predicts a target from its own share (p^-gamma), and {shown} "
            f"{'is no training family' if len(targets) == 1 else 'are no training families'} (no run has a share of "
            f"{'it' if len(targets) == 1 else 'them'}): fit a law that predicts any target from the whole mixture "
            f"({', '.join(repr(n) for n in whole_mixture_laws())}), or fit only the family targets")


def zero_share_message(law: str, family: str, zeros: int, runs: int) -> str:
    """The named error of a law that cannot take runs in which ``family`` has no share of its own."""
    others = ", ".join(repr(n) for n in zero_share_laws())
    return (f"law {law!r} cannot fit family {family!r}: {zeros} of its {runs} runs give it a share of 0, and "
            f"the law's p^-gamma is infinite at p = 0 (it has no term for what a family learns from the others). "
            f"Fit a law that takes zero shares ({others}), or drop those {zeros} runs (`mlsl fit --drop-zero-shares`, fit(..., drop_zero_shares=True))")


def grid_product(params: Sequence[Param]) -> np.ndarray:
    """Cartesian product of the parameters' grids, ``[m, k]``: one axis per untied parameter with more than one
    start value and one per ``tie`` group (tied grids must have equal lengths); single values are broadcast,
    so hundreds of parameters with one start each (one L* per setting) add no axis."""
    axes: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        if len(p.grid) > 1 or p.tie:
            axes.setdefault(p.tie or f"#{i}", []).append(i)
    rows = 1
    sizes = []
    for key, members in axes.items():
        n = {len(params[i].grid) for i in members}
        if len(n) != 1:
            raise ValueError(f"tied parameters {[params[i].name for i in members]} need grids of one length")
        sizes.append(n.pop())
        rows *= sizes[-1]
    out = np.empty((rows, len(params)))
    for i, p in enumerate(params):
        out[:, i] = p.grid[0]
    if not axes:
        return out
    idx = np.unravel_index(np.arange(rows), sizes)  # C order, as np.meshgrid(indexing='ij') gave
    for a, members in enumerate(axes.values()):
        for i in members:
            out[:, i] = np.asarray(params[i].grid, dtype=float)[idx[a]]
    return out

