"""Testing the family-independence hypothesis (He et al. 2024, Hypothesis 1) on the user's runs.

Controlled test: among runs that share (N, D) and the ratio of family f while the other families'
ratios vary, f's log loss should vary no more than seed noise. The spread (standard deviation of
log loss across those mixtures) is compared with the seed-noise standard deviation σ through
s²(n-1)/σ² ~ χ²(n-1); the effect is reported in percent with a 95% interval.
Residual check: for a fitted joint law, the correlation of family i's residuals with the other
families' ratios (zero when independence holds), with Fisher-z intervals.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from nemo_mlsl.fitting.observations import Observations


def seed_noise(obs: Observations) -> dict[str, Any]:
    """Pooled within-configuration std of log loss over runs that differ only by seed."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for r in range(len(obs)):
        groups[(obs.N[r], obs.D[r], tuple(np.round(obs.P[r], 6)))].append(r)
    reps = [g for g in groups.values() if len(g) > 1]
    if not reps:
        return {"sigma": None, "dof": 0, "groups": 0}
    logs = np.log(obs.L)  # NaN where a run has no loss on a family: those cells are left out
    ss = sum(np.nansum((logs[g] - np.nanmean(logs[g], axis=0)) ** 2) for g in reps)
    dof = sum(int(max(0, np.isfinite(logs[g][:, j]).sum() - 1)) for g in reps for j in range(obs.L.shape[1]))
    if dof == 0:
        return {"sigma": None, "dof": 0, "groups": 0}
    return {"sigma": float(np.sqrt(ss / dof)), "dof": int(dof), "groups": len(reps)}


def controlled_test(obs: Observations, sigma: float | None, alpha: float = 0.05) -> list[dict[str, Any]]:
    """One entry per (family, N, D, fixed ratio) group with at least 3 distinct mixtures. Groups at a fixed
    ratio of 0 are skipped: He et al.'s hypothesis is about families that are trained on (at p = 0 a family's
    loss is all transfer, which the cross-family laws model), and runs without a loss on the family too."""
    out = []
    logs = np.log(obs.family_losses())  # each family's loss on itself, aligned with its share column
    for j, fam in enumerate(obs.families):
        groups: dict[tuple, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
        for r in range(len(obs)):
            if obs.P[r, j] <= 0 or not np.isfinite(logs[r, j]):
                continue
            groups[(obs.N[r], obs.D[r], round(float(obs.P[r, j]), 6))][tuple(np.round(obs.P[r], 6))].append(r)
        for (N, D, pf), mixtures in sorted(groups.items()):
            if len(mixtures) < 3:
                continue
            y = np.array([logs[idx, j].mean() for idx in mixtures.values()])
            n = len(y)
            s = float(y.std(ddof=1))
            entry: dict[str, Any] = {"family": fam, "N": N, "D": D, "fixed_ratio": pf, "mixtures": n,
                                     "spread_pct": 100 * s, "range_pct": 100 * float(np.exp(y.max() - y.min()) - 1)}
            lo, hi = stats.chi2.ppf([1 - alpha / 2, alpha / 2], n - 1)
            entry["spread_ci_pct"] = [100 * s * np.sqrt((n - 1) / lo), 100 * s * np.sqrt((n - 1) / hi)]
            if sigma:
                # Means of k seeds have noise σ/√k; use the smallest repeat count present (conservative).
                k = min(len(idx) for idx in mixtures.values())
                sig = sigma / np.sqrt(k)
                chi = s * s * (n - 1) / (sig * sig)
                entry.update({"noise_pct": 100 * sig, "p_value": float(stats.chi2.sf(chi, n - 1))})
                entry["independent"] = bool(entry["p_value"] >= alpha)
            else:
                entry.update({"noise_pct": None, "p_value": None, "independent": None})
            out.append(entry)
    return out


def residual_correlations(obs: Observations, residuals: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """corr(residual of family i, ratio of family k) for k ≠ i, with 95% Fisher-z intervals."""
    out = []
    n = len(obs)
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
            "passed": bool(decided) and all(t["independent"] for t in decided)}
