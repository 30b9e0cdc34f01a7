"""Family power law at fixed (N, D): ``L_i(p) = L*_i · p^(-γ_i)`` (He et al. 2024).

Runs at several (N, D) settings share one γ_i and get one L*_i per setting, so the fit itself
tests the paper's claim that γ_i does not depend on N and D.
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.laws.base import Law, Param
from nemo_mlsl.observations import FamilyData


def settings(data: FamilyData) -> list[tuple[float, float]]:
    return sorted(set(zip(data.N.tolist(), data.D.tolist())))


class FamilyPowerLaw(Law):
    name = "family_power"
    formula = "L_i(p) = L*_i · p^(-γ_i)"

    def params(self, data: FamilyData) -> list[Param]:
        lo = float(np.log(data.loss.min())) - 1.0
        hi = float(np.log(data.loss.max())) + 1.0
        out = [Param("gamma", -0.5, 2.0, (0.0, 0.1, 0.3))]
        for n, d in settings(data):
            out.append(Param(f"log_Lstar[N={n:.6g},D={d:.6g}]", lo, hi, (float(np.log(data.loss.mean())),)))
        return out

    def _setting_index(self, data: FamilyData) -> np.ndarray:
        index = {s: i for i, s in enumerate(settings(data))}
        return np.array([index[(n, d)] for n, d in zip(data.N.tolist(), data.D.tolist())])

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        s = self._setting_index(data)
        return theta[..., 1:][..., s] - theta[..., :1] * np.log(data.p)

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        s = self._setting_index(data)
        jac = np.zeros((len(data.p), len(theta)))
        jac[:, 0] = -np.log(data.p)
        jac[np.arange(len(s)), 1 + s] = 1.0
        return jac

    def requirements(self) -> dict[str, int]:
        return {"runs": 3, "p": 2}
