"""He et al.'s joint family law with transfer between families: ``L_i = (E_i + A_i/N^α_i + B_i/D^β_i) · s_i^(-γ_i)``,
``s_i = p_i + Σ_{j≠i} τ_ij p_j``.

At τ = 0 this is ``joint_family``: a family's loss depends on its own share alone and is infinite at p_i = 0.
With τ_ij > 0 a share of family j counts as τ_ij of a share of family i (the effective share, after ATLAS's
effective data D_t + Σ_j τ_j D_j): a family with no share of its own keeps a finite loss through its relatives,
and the optimum trades a family's own share against its relatives'. τ_ij ∈ [0, 1]: another family's token is
worth at most one of the family's own. γ_i stays one exponent across N and D (He et al.'s invariance), so the
mixture effect is multiplicative: the same for every model size. The effective share is floored at 1e-6 so the
law stays finite where a family and all its relatives have no share.

The law needs the target's own share (a family the runs trained on): a task or a language outside the mixture
takes a whole-mixture law. The N and D terms are present only if the fitted runs vary N and D (see ``cross``),
in units of the fitted runs' geometric mean sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nemo_mlsl.fitting.observations import FamilyData
from nemo_mlsl.laws.base import Param
from nemo_mlsl.laws.cross import CrossFamilyLaw, columns

S_FLOOR = 1e-6


class TransferFamilyLaw(CrossFamilyLaw):
    name = "transfer_family"
    formula = "L_i = (E_i + A_i/N^α_i + B_i/D^β_i) · (p_i + Σ_j≠i τ_ij p_j)^(-γ_i)   (N, D terms where the runs vary them)"

    @property
    def own_share(self) -> bool:
        return True

    def layout(self, data: FamilyData) -> dict[str, Any]:
        out = super().layout(data)
        out["own"] = data.family if data.family in out["families"] else None  # no family: ``check`` refuses it by name
        return out

    def others(self) -> list[str]:
        own = self.fixed_layout()["own"]
        return [f for f in self.features() if f != own]

    def params(self, data: FamilyData) -> list[Param]:
        top = float(data.loss.min())
        out = [Param("E", 0.0, top, (0.0, 0.5 * top, 0.9 * top))]
        if self.uses("N"):
            out += [Param("a", -12.0, 6.0, (-2.0, -0.5, 0.5)), Param("alpha", 0.0, 2.5, (0.1, 0.3, 0.6))]
        if self.uses("D"):
            out += [Param("b", -12.0, 6.0, (-2.0, -0.5, 0.5)), Param("beta", 0.0, 2.5, (0.1, 0.3, 0.6))]
        out.append(Param("gamma", 0.0, 2.5, (0.05, 0.2, 0.5)))
        out += [Param(f"tau[{f}]", 0.0, 1.0, (0.05, 0.3, 0.7), tie="tau") for f in self.others()]
        return out

    def _consts(self, data: FamilyData) -> dict[str, Any]:
        """What the law needs of the runs alone: the own share, the others' shares, and log(N/N0), log(D/D0) where used."""
        P = self.shares(data)
        fams = self.features()
        own = fams.index(self.fixed_layout()["own"])
        rest = [j for j in range(len(fams)) if j != own]
        return {"own": P[:, own], "rest": P[:, rest], "rest_idx": rest, "own_idx": own,
                **{k: self.log_scale(data, k) for k in ("N", "D") if self.uses(k)}}

    def _parts(self, theta: np.ndarray, data: FamilyData, c: dict[str, Any] | None = None):
        c = self._consts(data) if c is None else c
        th, one = columns(theta)
        k, terms = 1, {}
        C = th[:, :1] + 0.0
        for key in ("N", "D"):
            if self.uses(key):
                terms[key] = np.exp(th[:, k : k + 1] - th[:, k + 1 : k + 2] * c[key])
                C = C + terms[key]
                k += 2
        gamma = th[:, k : k + 1]
        tau = th[:, k + 1 :]
        s_raw = c["own"][None, :] + tau @ c["rest"].T
        s = np.maximum(s_raw, S_FLOOR)
        C = np.broadcast_to(C, s.shape)  # one column where the runs vary neither N nor D
        logL = np.log(C) - gamma * np.log(s)
        return th, one, C, terms, gamma, tau, s, s_raw > S_FLOOR, logL

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        parts = self._parts(theta, data)
        return parts[-1][0] if parts[1] else parts[-1]

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        c = self._consts(data)
        return self._jacobian(self._parts(theta, data, c), c)

    def _jacobian(self, parts, c: dict[str, Any]) -> np.ndarray:
        _, _, C, terms, gamma, tau, s, live, _ = parts
        C, s, live, g = C[0], s[0], live[0], float(gamma[0, 0])
        cols = [1.0 / C]
        for key in ("N", "D"):
            if self.uses(key):
                t = terms[key][0]
                cols += [t / C, -c[key] * t / C]
        cols.append(-np.log(s))
        jac = np.column_stack(cols)
        dtau = np.where(live[:, None], -g * c["rest"] / s[:, None], 0.0)
        return np.column_stack([jac, dtau])

    def evaluator(self, data: FamilyData):
        """The shares and log sizes once per fit; the law's parts once per step, for the value and the Jacobian."""
        c = self._consts(data)

        def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            parts = self._parts(theta, data, c)
            return parts[-1][0], self._jacobian(parts, c)

        return evaluate

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """d log L_i / d p_j = -γ_i τ_ij / s_i (τ_ii = 1), 0 where the effective share is at its floor."""
        c = self._consts(data)
        _, _, _, _, gamma, tau, s, live, _ = self._parts(theta, data, c)
        weight = np.ones(len(self.features()))
        weight[c["rest_idx"]] = tau[0]
        g = np.where(live[0][:, None], -float(gamma[0, 0]) * weight[None, :] / s[0][:, None], 0.0)
        return self.to_data_columns(g, data)

    def requirements(self) -> dict[str, int]:
        req = {"runs": 3, "p": 2, "mixtures": 2}
        if self.fixed is not None:
            req.update({k: 2 for k in ("N", "D") if self.uses(k)})
        return req
