"""Log-linear regression in the shares (the baseline of RegMix and olmix): ``log L_i = Σ_j w_ij p_j + c_N log N + c_D log D``.

Because Σ_j p_j = 1 the intercept is the common part of the w_ij (an explicit b_i would be the same degree of
freedom twice): b_i + Σ_j w_ij p_j = Σ_j (w_ij + b_i) p_j. The log N and log D terms are present only where the
fitted runs vary them (see ``cross``). Linear in its parameters: the start is the least-squares solution and
the Huber fit refines it. A family with no share contributes nothing; nothing is infinite at p = 0.
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.laws.base import Param
from nemo_mlsl.laws.cross import CrossFamilyLaw
from nemo_mlsl.fitting.observations import FamilyData


class LogLinearLaw(CrossFamilyLaw):
    name = "loglinear"
    formula = "log L_i = Σ_j w_ij p_j + c_N,i log N + c_D,i log D   (log N, log D terms where the runs vary them)"

    def params(self, data: FamilyData) -> list[Param]:
        out = [Param(f"w[{f}]", -20.0, 20.0, (0.0,)) for f in self.features()]
        out += [Param(f"c_{k}", -2.0, 2.0, (0.0,)) for k in ("N", "D") if self.uses(k)]
        return out

    def design(self, data: FamilyData) -> np.ndarray:
        """The regressors ``[n, k]``: shares, then log N and log D where used (d log L / d theta)."""
        cols = [self.shares(data)] + [self.log_scale(data, k)[:, None] for k in ("N", "D") if self.uses(k)]
        return np.hstack(cols)

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return np.asarray(theta, dtype=float) @ self.design(data).T

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return self.design(data)

    def evaluator(self, data: FamilyData):
        """Linear in theta: the design matrix, which is the Jacobian, is built once."""
        X = self.design(data)
        X.flags.writeable = False
        XT = X.T

        def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.asarray(theta, dtype=float) @ XT, X

        return evaluate

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        F = len(self.features())
        w = np.asarray(theta, dtype=float)[:F]
        return self.to_data_columns(np.broadcast_to(w, (len(data.N), F)).copy(), data)

    def start_grid(self, data: FamilyData) -> np.ndarray:
        X = self.design(data)
        sol, *_ = np.linalg.lstsq(X, np.log(data.loss), rcond=None)
        return sol[None, :]
