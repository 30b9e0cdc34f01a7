"""Joint family law (He et al. 2024): ``L_i(N, D, p_i) = (E_i + A_i/N^α_i + B_i/D^β_i) · p_i^(-γ_i)``.

Parameterised with a = log A and b = log B for conditioning; γ_i is shared across N and D.
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.laws.base import Law, Param
from nemo_mlsl.observations import FamilyData


class JointFamilyLaw(Law):
    name = "joint_family"
    formula = "L_i(N,D,p_i) = (E_i + A_i/N^α_i + B_i/D^β_i) · p_i^(-γ_i)"

    def params(self, data: FamilyData) -> list[Param]:
        top = float(data.loss.min())
        return [
            Param("E", 0.0, top, (0.0, 0.5 * top, 0.9 * top)),
            Param("a", -5.0, 40.0, (0.0, 5.0, 10.0, 20.0)),
            Param("alpha", 0.0, 2.5, (0.1, 0.3, 0.6, 1.0)),
            Param("b", -5.0, 40.0, (0.0, 5.0, 10.0, 20.0)),
            Param("beta", 0.0, 2.5, (0.1, 0.3, 0.6, 1.0)),
            Param("gamma", -0.5, 2.0, (0.0, 0.1, 0.3)),
        ]

    def _terms(self, theta: np.ndarray, data: FamilyData):
        theta = np.asarray(theta, dtype=float)
        E, a, alpha, b, beta, gamma = (theta[..., i : i + 1] for i in range(6))
        tn = np.exp(a - alpha * np.log(data.N))
        td = np.exp(b - beta * np.log(data.D))
        return E, tn, td, gamma, E + tn + td

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        _, _, _, gamma, c = self._terms(theta, data)
        return np.log(c) - gamma * np.log(data.p)

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        _, tn, td, _, c = self._terms(theta, data)
        return np.stack(
            [1 / c, tn / c, -np.log(data.N) * tn / c, td / c, -np.log(data.D) * td / c, -np.log(data.p)], axis=1
        )

    def requirements(self) -> dict[str, int]:
        return {"runs": 8, "p": 2, "N": 2, "D": 2}

    def scale_term(self, theta: np.ndarray, N: float, D: float) -> float:
        """c_i(N, D) = E + A N^-α + B D^-β: the family's loss at p_i = 1."""
        E, a, alpha, b, beta, _ = theta
        return float(E + np.exp(a - alpha * np.log(N)) + np.exp(b - beta * np.log(D)))
