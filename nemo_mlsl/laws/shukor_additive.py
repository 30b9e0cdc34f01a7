"""Additive mixture law (Shukor et al. 2025, arXiv 2507.09404): ``L_i = E_i + A_i/N^α_i + B_i/D^β_i + 1/Σ_j C_ij h_j^γ_ij``.

h is the mixture (every family's share). The mixture term adds to the Chinchilla terms, so the optimal
mixture does not depend on N or D (∂²L/∂N∂h = ∂²L/∂D∂h = 0); ``shukor_joint`` lets the mixture modulate
the data term instead. C_ij = exp(c_ij) > 0 and γ_ij > 0, so a family with no share adds nothing to the sum
and a target with no share of its own keeps a finite loss through the others' C_ij h_j^γ_ij. The N and D
terms are present only where the fitted runs vary N and D (see ``cross``).
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.laws.base import Param
from nemo_mlsl.laws.cross import CrossFamilyLaw, columns, powers, share_logs
from nemo_mlsl.fitting.observations import FamilyData


class ShukorAdditiveLaw(CrossFamilyLaw):
    name = "shukor_additive"
    formula = "L_i = E_i + A_i/N^α_i + B_i/D^β_i + 1/Σ_j C_ij h_j^γ_ij   (N, D terms where the runs vary them)"
    joint = False  # the mixture divides the data term instead of adding its own (shukor_joint)

    def params(self, data: FamilyData) -> list[Param]:
        top = float(data.loss.min())
        out = [Param("E", 0.0, top, (0.0, 0.5 * top, 0.9 * top))]
        if self.uses("N"):
            out += [Param("a", -10.0, 40.0, (0.0, 5.0, 10.0)), Param("alpha", 0.0, 2.5, (0.1, 0.3, 0.6))]
        if self.uses("D"):
            if not self.joint:
                out.append(Param("b", -10.0, 40.0, (0.0, 5.0, 10.0)))
            out.append(Param("beta", 0.0, 2.5, (0.1, 0.3, 0.6)))
        out += [Param(f"c[{f}]", -30.0, 30.0, (0.0,), tie="c") for f in self.features()]
        out += [Param(f"gamma[{f}]", 0.01, 3.0, (0.3, 1.0), tie="g") for f in self.features()]
        return out

    def _index(self) -> dict[str, int]:
        names = ["E"] + (["a", "alpha"] if self.uses("N") else []) + (([] if self.joint else ["b"]) + ["beta"] if self.uses("D") else [])
        return {n: i for i, n in enumerate(names)}

    def _consts(self, data: FamilyData) -> dict[str, np.ndarray]:
        """What the law needs of the runs alone: the shares in the fitted order, which are positive and their logs
        (for h^γ), and log(N/N0), log(D/D0) where used."""
        h = self.shares(data)
        return {"h": h, "logs": share_logs(h[None, :, :]), **{k: self.log_scale(data, k) for k in ("N", "D") if self.uses(k)}}

    def _parts(self, theta: np.ndarray, data: FamilyData, c: dict[str, np.ndarray] | None = None):
        """Pieces of the law for ``[m, k]`` parameters: scale terms, X (numerator of the mixture term), C·h^γ, Σ."""
        c = self._consts(data) if c is None else c
        th, one = columns(theta)
        ix = self._index()
        F = len(self.features())
        k = len(ix)
        h = c["h"]
        C = np.exp(th[:, k : k + F])                 # [m, F]
        g = th[:, k + F : k + 2 * F]                  # [m, F]
        hg, hglog = powers(h[None, :, :], g[:, None, :], c["logs"])  # [m, n, F]
        terms = C[:, None, :] * hg
        sigma = terms.sum(axis=2)                     # [m, n]
        tn = np.exp(th[:, ix["a"], None] - th[:, ix["alpha"], None] * c["N"]) if self.uses("N") else 0.0
        td = 0.0
        if self.uses("D") and not self.joint:
            td = np.exp(th[:, ix["b"], None] - th[:, ix["beta"], None] * c["D"])
        X = np.exp(-th[:, ix["beta"], None] * c["D"]) if (self.joint and self.uses("D")) else np.ones((1, len(data.N)))
        L = th[:, :1] + tn + td + X / sigma
        return th, one, ix, F, k, h, C, g, terms, hglog, sigma, tn, td, X, L

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        out = np.log(self._parts(theta, data)[-1])
        return out[0] if out.shape[0] == 1 and np.ndim(theta) == 1 else out

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return self._jacobian(self._parts(theta, data), self._consts(data))

    def _jacobian(self, parts, c: dict[str, np.ndarray]) -> np.ndarray:
        th, _, ix, F, k, h, C, g, terms, hglog, sigma, tn, td, X, L = parts
        L, sigma, X, terms = L[0], sigma[0], X[0], terms[0]
        n = len(L)
        jac = np.zeros((n, k + 2 * F))
        jac[:, 0] = 1.0
        if self.uses("N"):
            jac[:, ix["a"]] = tn[0]
            jac[:, ix["alpha"]] = -c["N"] * tn[0]
        if self.uses("D"):
            if self.joint:
                jac[:, ix["beta"]] = -c["D"] * X / sigma
            else:
                jac[:, ix["b"]] = td[0]
                jac[:, ix["beta"]] = -c["D"] * td[0]
        q = (X / sigma**2)[:, None]
        jac[:, k : k + F] = -q * terms
        jac[:, k + F :] = -q * C[0][None, :] * hglog[0]
        return jac / L[:, None]

    def evaluator(self, data: FamilyData):
        """The shares, their logs and the log sizes once per fit; the law's parts once per step, for both."""
        c = self._consts(data)

        def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            parts = self._parts(theta, data, c)
            out = np.log(parts[-1])
            return (out[0] if out.shape[0] == 1 and np.ndim(theta) == 1 else out), self._jacobian(parts, c)

        return evaluate

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        th, _, ix, F, k, h, C, g, terms, hglog, sigma, tn, td, X, L = self._parts(theta, data)
        hh = np.maximum(h, 1e-12)
        dsig = C[0][None, :] * g[0][None, :] * hh ** (g[0][None, :] - 1.0)  # d Σ / d h_j
        grad = -(X[0] / sigma[0] ** 2 / L[0])[:, None] * dsig
        return self.to_data_columns(grad, data)

    def start_grid(self, data: FamilyData) -> np.ndarray:
        """Scale terms and γ from their grids; every c_ij at the level that makes the mixture term the mean remainder."""
        grid = super().start_grid(data)
        th, _, ix, F, k, h, C, g, terms, hglog, sigma, tn, td, X, L = self._parts(grid, data)
        rest = data.loss[None, :] - grid[:, :1] - tn - td
        rest = np.maximum(rest, 1e-3 * data.loss[None, :])
        # X / (C·Σ_j h_j^γ) = rest with one C for all families: log C = log X - log Σ_j h_j^γ - log rest
        hsum = (terms / C[:, None, :]).sum(axis=2)
        level = (np.log(X) - np.log(hsum) - np.log(rest)).mean(axis=1, keepdims=True)
        grid[:, k : k + F] = level
        return grid
