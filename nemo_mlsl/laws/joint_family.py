"""Joint family law (He et al. 2024): ``L_i(N, D, p_i) = (E_i + A_i/N^α_i + B_i/D^β_i) · p_i^(-γ_i)``.

Parameterised with a = log A and b = log B for conditioning; γ_i is shared across N and D.
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.laws.base import Law, Param
from nemo_mlsl.laws.chinchilla import scale_jacobian, scale_logs, scale_params, scale_terms
from nemo_mlsl.fitting.observations import FamilyData


class JointFamilyLaw(Law):
    name = "joint_family"
    formula = "L_i(N,D,p_i) = (E_i + A_i/N^α_i + B_i/D^β_i) · p_i^(-γ_i)"
    separable = True
    extrapolates_nd = True

    def params(self, data: FamilyData) -> list[Param]:
        return scale_params(data) + [Param("gamma", 0.0, 2.5, (0.0, 0.1, 0.3))]

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        gamma = theta[..., 5:6] if theta.ndim == 2 else theta[5]
        return np.log(scale_terms(theta, data)[-1]) - gamma * np.log(data.p)

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return np.column_stack([scale_jacobian(theta, data), -np.log(data.p)])

    def evaluator(self, data: FamilyData):
        logs, log_p = scale_logs(data), np.log(data.p)
        minus_log_p = -log_p

        def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            terms = scale_terms(theta, data, logs)
            lp = np.log(terms[-1]) - np.asarray(theta, dtype=float)[5] * log_p
            return lp, np.column_stack([scale_jacobian(theta, data, terms, logs), minus_log_p])

        return evaluate

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """d log L_i / d p_j = -γ_i / p_i for j = i, else 0 (the family's own share alone)."""
        out = np.zeros((len(data.p), data.P.shape[1]))
        out[:, data.index] = -float(np.asarray(theta)[5]) / data.p
        return out

    def requirements(self) -> dict[str, int]:
        return {"runs": 8, "p": 2, "N": 2, "D": 2}
