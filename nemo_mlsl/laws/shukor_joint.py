"""Joint mixture law (Shukor et al. 2025, arXiv 2507.09404, as read here): the mixture modulates the data term,
``L_i = E_i + A_i/N^α_i + 1/(D^β_i · Σ_j C_ij h_j^γ_ij)``.

Read as effective data: D_eff = D·(Σ_j C_ij h_j^γ_ij)^(1/β_i), so the best mixture depends on D (the
cross-derivative ∂²L/∂D∂h is not zero, unlike ``shukor_additive``). The amplitude B_i of the data term and
the scale of the C_ij are one degree of freedom: B_i = 1 and the C_ij carry it. Runs at one D have no D term
and this law is then ``shukor_additive`` without its B/D^β term.
"""

from __future__ import annotations

from nemo_mlsl.laws.shukor_additive import ShukorAdditiveLaw


class ShukorJointLaw(ShukorAdditiveLaw):
    name = "shukor_joint"
    formula = "L_i = E_i + A_i/N^α_i + 1/(D^β_i · Σ_j C_ij h_j^γ_ij)   (N, D terms where the runs vary them)"
    joint = True
