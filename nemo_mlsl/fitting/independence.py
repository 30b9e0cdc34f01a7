"""Testing the family-independence hypothesis (He et al. 2024, Hypothesis 1) on the user's runs.

Controlled test: among runs that share (N, D) and the ratio of family f while the other families' ratios vary,
f's log loss should vary no more than seed noise. Per group, a one-way analysis of variance: the spread of the
mixtures' mean log losses, Σ_i k_i (ȳ_i − ȳ)²/(n − 1) (k_i seeds of mixture i, ȳ their seed-weighted mean), is
compared with the study's seed-noise variance σ̂² (pooled within repeated configurations, ν degrees of freedom):
under independence their ratio is F(n − 1, ν)-distributed (σ̂ is estimated, so not χ²). The p-values of all the
groups tested are corrected for multiplicity by Holm's step-down method (family-wise error ≤ α under any
dependence between the tests; they share σ̂), and a group is "violated" when its Holm-adjusted p-value is below α.
The effect is reported in percent with a 95% interval.

The level is exact when the seed noise of log loss is normal with one variance for every family and configuration
and independent between the families of a run (σ̂ then has its ν = Σ (runs − 1) dof over families and repeated
configurations); tests/test_independence.py checks it by simulation, and how far it moves when the families of a
run share their noise.

Residual check: for a fitted joint law, the correlation of family i's residuals with the other families' ratios
(zero when independence holds), with Fisher-z intervals.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from nemo_mlsl.fitting.observations import Observations

ALPHA = 0.05
CORRECTION = "Holm"


def repeat_groups(obs: Observations) -> list[np.ndarray]:
    """Run indices of each configuration (N, D, ratios) trained more than once (with other seeds)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for r in range(len(obs)):
        groups[(obs.N[r], obs.D[r], tuple(np.round(obs.P[r], 6)))].append(r)
    return [np.array(g) for g in groups.values() if len(g) > 1]


def pooled_within(logs: np.ndarray, reps: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Within-configuration sum of squares of log loss ([...]) and its dof, over the repeated configurations and the
    families with a loss (``logs[..., run, family]``, NaN where a run has no loss on a family)."""
    ss = np.zeros(logs.shape[:-2])
    dof = 0
    for g in reps:
        x = logs[..., g, :]
        have = np.isfinite(x)
        count = have.reshape(-1, *x.shape[-2:])[0].sum(axis=0)  # finite cells per family (same in every stack)
        mean = np.where(have, x, 0.0).sum(axis=-2, keepdims=True) / np.maximum(count, 1)
        ss = ss + np.where(have, (x - mean) ** 2, 0.0).sum(axis=(-1, -2))
        dof += int(np.maximum(count - 1, 0).sum())
    return ss, dof


def seed_noise(obs: Observations) -> dict[str, Any]:
    """Pooled within-configuration std of log loss over runs that differ only by seed, and its dof."""
    reps = repeat_groups(obs)
    if not reps:
        return {"sigma": None, "dof": 0, "groups": 0}
    ss, dof = pooled_within(np.log(obs.L), reps)
    if dof == 0:
        return {"sigma": None, "dof": 0, "groups": 0}
    return {"sigma": float(np.sqrt(ss / dof)), "dof": int(dof), "groups": len(reps)}


@dataclass(frozen=True)
class ControlledGroup:
    """Runs at one (N, D) with family ``family``'s ratio fixed at ``fixed_ratio``: ``mixtures`` lists each distinct
    mixture's run indices (its seeds)."""

    family: str
    index: int
    N: float
    D: float
    fixed_ratio: float
    mixtures: tuple[np.ndarray, ...]

    @property
    def seeds(self) -> np.ndarray:
        return np.array([len(m) for m in self.mixtures])

    def means(self, logs: np.ndarray) -> np.ndarray:
        """Each mixture's mean log loss over its seeds ([..., n])."""
        return np.stack([logs[..., m, self.index].mean(axis=-1) for m in self.mixtures], axis=-1)

    def between(self, logs: np.ndarray) -> np.ndarray:
        """Σ_i k_i (ȳ_i − ȳ)² with ȳ the seed-weighted mean: σ²·χ²(n−1) under independence ([...])."""
        y, k = self.means(logs), self.seeds
        grand = (y * k).sum(axis=-1, keepdims=True) / k.sum()
        return (k * (y - grand) ** 2).sum(axis=-1)


def controlled_groups(obs: Observations) -> list[ControlledGroup]:
    """One group per (family, N, D, fixed ratio) with at least 3 distinct mixtures. Groups at a fixed ratio of 0 are
    skipped: He et al.'s hypothesis is about families that are trained on (at p = 0 a family's loss is all transfer,
    which the cross-family laws model), and runs without a loss on the family too."""
    out = []
    logs = np.log(obs.family_losses())  # each family's loss on itself, aligned with its share column
    for j, fam in enumerate(obs.families):
        groups: dict[tuple, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
        for r in range(len(obs)):
            if obs.P[r, j] <= 0 or not np.isfinite(logs[r, j]):
                continue
            groups[(obs.N[r], obs.D[r], round(float(obs.P[r, j]), 6))][tuple(np.round(obs.P[r], 6))].append(r)
        for (N, D, pf), mixtures in sorted(groups.items()):
            if len(mixtures) >= 3:
                out.append(ControlledGroup(fam, j, float(N), float(D), pf, tuple(np.array(i) for i in mixtures.values())))
    return out


def f_p_values(logs: np.ndarray, groups: Sequence[ControlledGroup], sigma2: np.ndarray, dof: float) -> np.ndarray:
    """Each group's p-value ([..., G]): P(F(n−1, dof) >= between/(n−1)/σ̂²); a σ known exactly (dof = inf): the
    χ²(n−1) tail of between/σ²."""
    cols = []
    for g in groups:
        n = len(g.mixtures)
        if np.isinf(dof):
            cols.append(stats.chi2.sf(g.between(logs) / sigma2, n - 1))
        else:
            cols.append(stats.f.sf(g.between(logs) / (n - 1) / sigma2, n - 1, dof))
    return np.stack(cols, axis=-1) if cols else np.zeros((*np.shape(sigma2), 0))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis: the family-wise error of "adjusted < α" is ≤ α."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    if m == 0:
        return p
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    ranked = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def controlled_test(obs: Observations, noise: Mapping[str, Any] | float | None, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """One entry per controlled group (``controlled_groups``). ``noise`` is ``seed_noise(obs)`` (σ̂ and its dof: the
    F test), or a σ known from elsewhere (a number: the χ² test, dof = inf), or None (no verdict)."""
    logs = np.log(obs.family_losses())  # aligned with the share columns, as the groups' indices are
    groups = controlled_groups(obs)
    if isinstance(noise, (int, float)):
        sigma, dof = float(noise), float("inf")
    else:
        sigma, dof = (noise or {}).get("sigma"), int((noise or {}).get("dof") or 0)
    p = holm_p = None
    if sigma and dof and groups:
        p = f_p_values(logs, groups, np.float64(sigma) ** 2, dof)
        holm_p = holm(p)
    out = []
    for i, g in enumerate(groups):
        y = g.means(logs)
        n = len(y)
        s = float(y.std(ddof=1))
        entry: dict[str, Any] = {"family": g.family, "N": g.N, "D": g.D, "fixed_ratio": g.fixed_ratio, "mixtures": n,
                                 "seeds": g.seeds.tolist(), "spread_pct": 100 * s,
                                 "range_pct": 100 * float(np.exp(y.max() - y.min()) - 1)}
        lo, hi = stats.chi2.ppf([1 - alpha / 2, alpha / 2], n - 1)
        entry["spread_ci_pct"] = [100 * s * np.sqrt((n - 1) / lo), 100 * s * np.sqrt((n - 1) / hi)]
        if p is not None:
            # the noise of a mixture's mean, σ/√k_i, in rms over the group's mixtures: the spread expected without an effect
            entry.update({"noise_pct": 100 * float(sigma * np.sqrt(np.mean(1.0 / g.seeds))), "noise_dof": dof if np.isfinite(dof) else None,
                          "p_value": float(p[i]), "p_holm": float(holm_p[i]), "tests": len(groups),
                          "independent": bool(holm_p[i] >= alpha)})
        else:
            entry.update({"noise_pct": None, "noise_dof": None, "p_value": None, "p_holm": None, "tests": len(groups),
                          "independent": None})
        out.append(entry)
    return out


def residual_correlations(obs: Observations, residuals: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """corr(residual of family i, ratio of family k) for k ≠ i, with 95% Fisher-z intervals."""
    out = []
    for i, fam in enumerate(obs.families):
        if fam not in residuals:
            continue
        full = np.asarray(residuals[fam], dtype=float)
        ok = np.isfinite(full)  # NaN: the run has no loss on fam
        res, m = full[ok], int(ok.sum())
        for k, other in enumerate(obs.families):
            if k == i or m < 4 or np.std(obs.P[ok, k]) == 0 or np.std(res) == 0:
                continue
            r = float(np.corrcoef(res, obs.P[ok, k])[0, 1])
            z, se = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1 / np.sqrt(m - 3)
            out.append({"family": fam, "other": other, "r": r, "ci": [float(np.tanh(z - 1.96 * se)), float(np.tanh(z + 1.96 * se))]})
    return out


def summarize(tests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    decided = [t for t in tests if t.get("independent") is not None]
    return {"groups": len(tests), "tested": len(decided), "violations": [t for t in decided if not t["independent"]],
            "passed": bool(decided) and all(t["independent"] for t in decided), "correction": CORRECTION}
