"""What the cross-family mixture laws share: every family's share as a feature, and (N, D) terms only where
the fitted runs vary N or D, in units of the fitted runs' geometric mean sizes N0 and D0.

The layout, fixed at fit time and stored with the fit, names the share columns (every family any run
trained on, in order) and whether the runs varied N and D: a law fitted at one scale has no N or D term
(it could not pin one down) and predicts the same loss at any N, D. Shares of families the fit never saw
must be 0 in the runs it predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nemo_mlsl.errors import FitError
from nemo_mlsl.laws.base import Law
from nemo_mlsl.fitting.observations import FamilyData


class CrossFamilyLaw(Law):
    """A per-target law whose loss depends on every family's share (no independence assumed): the target may be a
    training family or anything else the runs were evaluated on."""

    zero_shares = True
    extrapolates_nd = True

    def layout(self, data: FamilyData) -> dict[str, Any]:
        names = list(data.families or [str(j) for j in range(data.P.shape[1])])
        return {"families": names, "N": bool(len(np.unique(data.N)) > 1), "D": bool(len(np.unique(data.D)) > 1),
                "N0": float(np.exp(np.mean(np.log(data.N)))), "D0": float(np.exp(np.mean(np.log(data.D))))}

    def log_scale(self, data: FamilyData, key: str) -> np.ndarray:
        """log(N/N0) or log(D/D0): sizes relative to the fitted runs' geometric mean, so that amplitudes and
        exponents are not confounded by the distance of log N from 0."""
        return np.log(getattr(data, key)) - np.log(float(self.fixed_layout().get(f"{key}0", 1.0)))

    def features(self) -> list[str]:
        return list(self.fixed_layout()["families"])

    def uses(self, key: str) -> bool:
        return bool(self.fixed_layout().get(key))

    def shares(self, data: FamilyData) -> np.ndarray:
        """The runs' shares in the fitted column order, ``[n, F]``."""
        names = list(data.families or [str(j) for j in range(data.P.shape[1])])
        fams = self.features()
        if names == fams:
            return data.P
        extra = [f for j, f in enumerate(names) if f not in fams and np.any(data.P[:, j] > 0)]
        if extra:
            raise FitError(f"law {self.name!r} was fitted on the shares of {fams}; the runs to predict train on {extra} too")
        out = np.zeros((len(data.P), len(fams)))
        for i, f in enumerate(fams):
            if f in names:
                out[:, i] = data.P[:, names.index(f)]
        return out

    def to_data_columns(self, grad: np.ndarray, data: FamilyData) -> np.ndarray:
        """A ``[n, F_fitted]`` derivative w.r.t. the fitted share columns, laid out as ``data.P``'s columns."""
        names = list(data.families or [str(j) for j in range(data.P.shape[1])])
        fams = self.features()
        if names == fams:
            return grad
        out = np.zeros((grad.shape[0], len(names)))
        for i, f in enumerate(fams):
            if f in names:
                out[:, names.index(f)] = grad[:, i]
        return out

    def requirements(self) -> dict[str, int]:
        req = {"runs": 3, "mixtures": 2}
        if self.fixed is not None:
            req.update({k: 2 for k in ("N", "D") if self.uses(k)})
        return req


def columns(theta: np.ndarray) -> tuple[np.ndarray, bool]:
    """``theta`` as ``[m, k]`` and whether it was one vector (to squeeze the result back)."""
    theta = np.asarray(theta, dtype=float)
    return np.atleast_2d(theta), theta.ndim == 1


def share_logs(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the shares are positive, and their logs (0 where they are not): what ``powers`` needs of the runs."""
    pos = h > 0
    return pos, np.log(np.where(pos, h, 1.0))


def powers(h: np.ndarray, g: np.ndarray, logs: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """h^g and h^g·log h with 0^g = 0 and 0·log 0 = 0 (a family with no share adds nothing), broadcasting;
    ``logs``: ``share_logs(h)``, if at hand."""
    pos, logh = share_logs(h) if logs is None else logs
    hg = np.where(pos, np.exp(g * logh), 0.0)
    return hg, hg * logh
