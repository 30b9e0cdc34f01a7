"""Family power law at fixed (N, D): ``L_i(p) = L*_i · p^(-γ_i)`` (He et al. 2024).

Runs at several (N, D) settings share one γ_i and get one L*_i per setting, so the fit itself
tests the paper's claim that γ_i does not depend on N and D. The settings are the law's layout,
fixed at fit time: it predicts only at those settings (``joint_family`` extrapolates in N and D).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nemo_mlsl.errors import FitError
from nemo_mlsl.laws.base import Law, Param
from nemo_mlsl.fitting.observations import FamilyData


def settings(data: FamilyData) -> list[tuple[float, float]]:
    return sorted(set(zip(data.N.tolist(), data.D.tolist())))


def setting_name(N: float, D: float) -> str:
    return f"log_Lstar[N={N:.6g},D={D:.6g}]"


def match_setting(fitted: list[tuple[float, float]], N: float, D: float) -> int | None:
    """Index of the fitted setting equal to (N, D) up to rounding, or None."""
    for i, (n, d) in enumerate(fitted):
        if np.isclose(n, N, rtol=1e-9) and np.isclose(d, D, rtol=1e-9):
            return i
    return None


class FamilyPowerLaw(Law):
    name = "family_power"
    formula = "L_i(p) = L*_i · p^(-γ_i)"
    separable = True

    def layout(self, data: FamilyData) -> dict[str, Any]:
        return {"settings": [[n, d] for n, d in settings(data)]}

    def _settings(self) -> list[tuple[float, float]]:
        return [(float(n), float(d)) for n, d in self.fixed_layout()["settings"]]

    def params(self, data: FamilyData) -> list[Param]:
        lo = float(np.log(data.loss.min())) - 1.0
        hi = float(np.log(data.loss.max())) + 1.0
        out = [Param("gamma", 0.0, 2.5, (0.0, 0.1, 0.3))]
        for n, d in self._settings():
            out.append(Param(setting_name(n, d), lo, hi, (float(np.log(data.loss.mean())),)))
        return out

    def start_grid(self, data: FamilyData) -> np.ndarray:
        """γ from its grid; each L* starts at its setting's mean of log L + γ·log p (one row per γ, however many settings)."""
        grid = super().start_grid(data)
        s = self._setting_index(data)
        logs, logp = np.log(data.loss), np.log(np.maximum(data.p, 1e-12))
        for row in grid:
            adj = logs + row[0] * logp
            row[1:] = [adj[s == i].mean() if np.any(s == i) else row[1 + i] for i in range(len(row) - 1)]
        return grid

    def _setting_index(self, data: FamilyData) -> np.ndarray:
        fitted = self._settings()
        ref = np.array(fitted, dtype=float).reshape(-1, 2)
        # One vectorized comparison ([n, settings]): this runs at every objective evaluation.
        hit = np.isclose(data.N[:, None], ref[None, :, 0], rtol=1e-9) & np.isclose(data.D[:, None], ref[None, :, 1], rtol=1e-9)
        missing = ~hit.any(axis=1)
        if missing.any():
            n, d = float(data.N[missing][0]), float(data.D[missing][0])
            known = ", ".join(f"(N={a:.6g}, D={b:.6g})" for a, b in fitted)
            raise FitError(
                f"law 'family_power' has one L* per (N, D) setting it was fitted on ({known}) and cannot predict at "
                f"N={n:.6g}, D={d:.6g}; fit 'joint_family' to extrapolate in N and D"
            )
        return hit.argmax(axis=1)

    def has_every_setting(self, data: FamilyData) -> bool:
        return len(set(self._setting_index(data).tolist())) == len(self._settings())

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        s = self._setting_index(data)
        return theta[..., 1:][..., s] - theta[..., :1] * np.log(data.p)

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return self._jacobian(self._setting_index(data), data, len(theta))

    @staticmethod
    def _jacobian(s: np.ndarray, data: FamilyData, k: int) -> np.ndarray:
        jac = np.zeros((len(data.p), k))
        jac[:, 0] = -np.log(data.p)
        jac[np.arange(len(s)), 1 + s] = 1.0
        return jac

    def evaluator(self, data: FamilyData):
        """log L is linear in theta: the setting of each run, log p and the whole Jacobian are computed once."""
        s, log_p = self._setting_index(data), np.log(data.p)
        jac = self._jacobian(s, data, 1 + len(self._settings()))
        jac.flags.writeable = False

        def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            theta = np.asarray(theta, dtype=float)
            return theta[..., 1:][..., s] - theta[..., :1] * log_p, jac

        return evaluate

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """d log L_i / d p_j = -γ_i / p_i for j = i, else 0 (the family's own share alone)."""
        out = np.zeros((len(data.p), data.P.shape[1]))
        out[:, data.index] = -float(np.asarray(theta)[0]) / data.p
        return out

    def unidentifiable(self, data: FamilyData) -> str | None:
        if not self.has_every_setting(data):
            return "a fitted (N, D) setting has no run: its L* is not identifiable"
        return super().unidentifiable(data)

    def requirements(self) -> dict[str, int]:
        return {"runs": 3, "p": 2}
