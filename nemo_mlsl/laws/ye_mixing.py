"""Data mixing law (Ye et al., ICLR 2025, arXiv 2403.16952) with N and D: ``L_i = E_i + S_i(N, D)·exp(Σ_j t_ij p_j)``.

At one (N, D) this is their law ``L_i = c_i + k_i exp(Σ_j t_ij p_j)`` with c_i = E_i and k_i = S_i. Their
nested use of scaling laws (fit each mixture's loss in steps and model size, extrapolate, then fit the
mixing law at the target scale) is folded into one form: the mixture scales the reducible loss, whose size
follows a Chinchilla-style ``S_i = N^-α_i + B_i D^-β_i`` in the runs' N and D. Because Σ_j p_j = 1,
k_i and a common shift of the t_ij are one degree of freedom: the amplitude of the first scale term is fixed
to 1 and lives in the t_ij (so t_ij here = Ye's t_ij + log k_i at one scale). The N and D terms are present
only if the fitted runs vary N and D (see ``cross``); with neither, ``L_i = E_i + exp(Σ_j t_ij p_j)``.
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.laws.base import Param
from nemo_mlsl.laws.cross import CrossFamilyLaw, columns
from nemo_mlsl.fitting.observations import FamilyData


class YeMixingLaw(CrossFamilyLaw):
    name = "ye_mixing"
    formula = "L_i = E_i + (N^-α_i + B_i/D^β_i)·exp(Σ_j t_ij p_j)   (N, D terms where the runs vary them)"

    def params(self, data: FamilyData) -> list[Param]:
        top = float(data.loss.min())
        out = [Param("E", 0.0, top, (0.0, 0.5 * top, 0.9 * top))]
        out += [Param(f"t[{f}]", -30.0, 60.0, (0.0,), tie="t") for f in self.features()]
        if self.uses("N"):
            out.append(Param("alpha", 0.0, 2.5, (0.1, 0.3, 0.6)))
        if self.uses("D"):
            if self.uses("N"):
                out.append(Param("b", -10.0, 40.0, (0.0, 5.0, 10.0)))
            out.append(Param("beta", 0.0, 2.5, (0.1, 0.3, 0.6)))
        return out

    def _consts(self, data: FamilyData) -> dict[str, np.ndarray]:
        """What the law needs of the runs alone: the shares in the fitted order and log(N/N0), log(D/D0) where used."""
        return {"P": self.shares(data), **{k: self.log_scale(data, k) for k in ("N", "D") if self.uses(k)}}

    def _scale(self, th: np.ndarray, data: FamilyData, F: int, c: dict[str, np.ndarray] | None = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """S(N, D) as ``[m, n]`` and its terms (for the Jacobian)."""
        c = self._consts(data) if c is None else c
        k = 1 + F
        S = np.zeros((len(th), len(data.N)))
        terms: dict[str, np.ndarray] = {}
        if self.uses("N"):
            terms["N"] = np.exp(-th[:, k : k + 1] * c["N"])
            S = S + terms["N"]
            k += 1
        if self.uses("D"):
            b = th[:, k : k + 1] if self.uses("N") else 0.0
            k += 1 if self.uses("N") else 0
            terms["D"] = np.exp(b - th[:, k : k + 1] * c["D"])
            S = S + terms["D"]
        if not terms:
            S = S + 1.0
        return S, terms

    def _parts(self, theta: np.ndarray, data: FamilyData, c: dict[str, np.ndarray] | None = None):
        c = self._consts(data) if c is None else c
        th, one = columns(theta)
        P = c["P"]
        F = P.shape[1]
        M = np.exp(th[:, 1 : 1 + F] @ P.T)
        S, terms = self._scale(th, data, F, c)
        L = th[:, :1] + M * S
        return th, one, P, F, M, S, terms, L

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        _, one, _, _, _, _, _, L = self._parts(theta, data)
        out = np.log(L)
        return out[0] if one else out

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return self._jacobian(self._parts(theta, data), self._consts(data))

    def _jacobian(self, parts, c: dict[str, np.ndarray]) -> np.ndarray:
        th, _, P, F, M, S, terms, L = parts
        M, S, L = M[0], S[0], L[0]
        cols = [np.ones_like(L), (M * S)[:, None] * P]
        if self.uses("N"):
            cols.append((-M * c["N"] * terms["N"][0])[:, None])
        if self.uses("D"):
            td = M * terms["D"][0]
            if self.uses("N"):
                cols.append(td[:, None])
            cols.append((-c["D"] * td)[:, None])
        jac = np.column_stack(cols)
        return jac / L[:, None]

    def evaluator(self, data: FamilyData):
        """The shares and log sizes once per fit; the law's parts once per step, for the value and the Jacobian."""
        c = self._consts(data)

        def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            parts = self._parts(theta, data, c)
            return np.log(parts[-1])[0], self._jacobian(parts, c)

        return evaluate

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        th, _, P, F, M, S, _, L = self._parts(theta, data)
        g = (M[0] * S[0] / L[0])[:, None] * th[0, 1 : 1 + F][None, :]
        return self.to_data_columns(g, data)

    def start_grid(self, data: FamilyData) -> np.ndarray:
        """E and the scale exponents from their grids; every t_ij at the level that matches the mean log of L - E."""
        grid = super().start_grid(data)
        F = len(self.features())
        S, _ = self._scale(grid, data, F)
        rest = np.log(np.maximum(data.loss[None, :] - grid[:, :1], 1e-3 * data.loss[None, :]))
        grid[:, 1 : 1 + F] = (rest - np.log(S)).mean(axis=1, keepdims=True)
        return grid
