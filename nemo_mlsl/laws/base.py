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
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import FitError
from nemo_mlsl.observations import FamilyData, Observations


@dataclass(frozen=True)
class Param:
    name: str
    lower: float
    upper: float
    grid: tuple[float, ...]


class Law(ABC):
    """A per-family scaling law. Subclasses set ``name`` and implement ``params`` and ``log_predict``."""

    name: str = "law"
    formula: str = ""

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
        """What gets one fit each: the families, by default."""
        return list(obs.families)

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

    def requirements(self) -> dict[str, int]:
        """Minimum runs and distinct values of p, N, D this law needs to be identifiable."""
        return {"runs": 3, "p": 2}

    def unidentifiable(self, data: FamilyData) -> str | None:
        """Why ``data`` cannot pin this (bound) law's parameters down, or None. Also decides which bootstrap
        resamples are fitted: only the variation the law actually needs (p only for laws with a ratio term)."""
        req = self.requirements()
        k = len(self.params(data))
        need_runs = max(req.get("runs", 0), k + 1)
        have = {"runs": len(data.loss), "p": len(np.unique(np.round(data.p, 9))),
                "N": len(np.unique(data.N)), "D": len(np.unique(data.D))}
        if have["runs"] < need_runs:
            return f"law {self.name!r} needs at least {need_runs} runs for family {data.family!r}; got {have['runs']}"
        for key in ("p", "N", "D"):
            if have[key] < req.get(key, 0):
                return (f"law {self.name!r} needs at least {req[key]} distinct values of {key} for family {data.family!r}; "
                        f"got {have[key]}. Add runs that vary {key}")
        return None

    def check(self, data: FamilyData) -> None:
        reason = self.unidentifiable(data)
        if reason:
            raise FitError(reason)
        if np.any(data.p <= 0) or np.any(data.p > 1):
            bad = float(data.p[(data.p <= 0) | (data.p > 1)][0])
            raise FitError(
                f"family {data.family!r} has a run with ratio {bad}: laws in p need ratios in (0, 1]; "
                "drop runs that did not train on the family, or give it a floor ratio"
            )


def grid_product(params: Sequence[Param]) -> np.ndarray:
    """Cartesian product of every parameter's grid: ``[m, k]``."""
    mesh = np.meshgrid(*[np.asarray(p.grid, dtype=float) for p in params], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)

