"""Statistical power of the confirmation: what gain a study can tell from seed noise, and how many seeds it takes.

The confirmation trains the optimum and every baseline with the same seeds (paired), so a seed's effect on
both runs cancels in their difference. With ``n`` paired seeds and a per-seed noise ``sd`` of the difference
of total losses, the mean difference has noise ``sd/√n``; a difference beyond ``Z_VERDICT`` (2) times that
noise is called "beyond noise". The smallest gain the confirmation detects with probability ``power`` is
``(k + z_power)·sd/√n`` (normal approximation; ``k`` is the 2σ threshold, or the t quantile of the same level
when ``sd`` is estimated from few degrees of freedom); the seeds a gain ``g`` needs is the smallest ``n`` whose
paired t-test at that level reaches ``power`` (noncentral t). Before any pairing is measured the per-seed
noise of a difference is planned as ``√2·σ`` of the total (σ: std of log loss between seeds; no credit taken
for pairing); after the confirmation it is the pooled std of the paired differences themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

Z_VERDICT = 2.0  # a difference beyond 2σ of its noise is "beyond noise"
POWER = 0.8  # the probability with which a "detectable" gain is called beyond noise
ASSUMED_SIGMA = 0.015  # std of log loss between seeds when neither measured nor given (CPU rungs, docs/science.md §5)
MAX_SEEDS = 10_000


def level(z: float = Z_VERDICT) -> float:
    """Two-sided confidence level of a ±z normal threshold (2 → 0.9545)."""
    return float(2 * stats.norm.cdf(z) - 1)


def threshold(dof: float | None, z: float = Z_VERDICT) -> float:
    """The verdict's multiplier: ``z`` for a known noise (dof None or infinite), else the t quantile of the same level."""
    if dof is None or not math.isfinite(dof):
        return z
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return float(stats.t.ppf(stats.norm.cdf(z), dof))


def unpaired_sd(sigma: float, total: float = 1.0) -> float:
    """Per-seed noise of the difference of two runs' totals when pairing is not credited: √2·σ·total."""
    return math.sqrt(2.0) * sigma * total


def detectable_gain(sd: float, seeds: int, power: float = POWER, z: float = Z_VERDICT, dof: float | None = None) -> float:
    """Smallest true gain that the mean of ``seeds`` paired differences (each of noise ``sd``) calls beyond noise
    with probability ``power``: (k + z_power)·sd/√n."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return (threshold(dof, z) + float(stats.norm.ppf(power))) * sd / math.sqrt(seeds)


def seeds_needed(gain: float, sd: float, power: float = POWER, z: float = Z_VERDICT, t_test: bool = True) -> int | None:
    """Fewest paired seeds for which a true gain ``gain`` is called beyond noise with probability ``power``.

    ``t_test``: the noise is estimated from the n paired differences themselves (paired t-test, n-1 dof,
    noncentral t power); otherwise it is known (normal approximation, n = ((z + z_power)·sd/gain)²).
    None when the gain is not positive (no number of seeds detects it)."""
    if gain <= 0 or not math.isfinite(gain):
        return None
    if sd <= 0:
        return 1
    zp = float(stats.norm.ppf(power))
    n_normal = max(1, math.ceil(((z + zp) * sd / gain) ** 2 - 1e-9))
    if not t_test:
        return n_normal
    alpha = 2 * (1 - stats.norm.cdf(z))
    n = max(2, n_normal)
    while n <= MAX_SEEDS:
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = gain / sd * math.sqrt(n)
        if stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= power:
            return n
        n += 1
    return None


def verdict(difference: float, se: float | None, k: float) -> str:
    """The report's words for a baseline-minus-optimum difference with noise ``se`` of its mean."""
    if se is None:
        return "unknown (no seed repeats)"
    if difference > k * se:
        return "optimal better, beyond noise"
    if difference < -k * se:
        return "baseline better, beyond noise"
    return "within noise"


@dataclass(frozen=True)
class PowerLine:
    """The power check of one baseline: predicted gain, what the confirmation can detect, the seeds it uses and needs."""

    baseline: str
    predicted_gain: float | None  # relative: (baseline − optimum) / baseline, from the fitted law
    detectable_gain: float  # relative, at ``power``
    seeds: int
    seeds_needed: int | None
    sigma: float
    sigma_source: str  # measured | given | assumed

    @property
    def detectable(self) -> bool | None:
        return None if self.predicted_gain is None else self.predicted_gain >= self.detectable_gain

    @property
    def verdict(self) -> str:
        if self.predicted_gain is None:
            return "the predicted gain is known once phase 1 has fitted the law"
        if self.predicted_gain <= 0:
            return "the law predicts no gain: a correct confirmation says within noise (or baseline better)"
        if self.detectable:
            return "detectable"
        need = f"{self.seeds_needed} seeds" if self.seeds_needed else "more seeds than any budget"
        return f"NOT detectable with {self.seeds} seed(s): needs {need} (confirm_seeds)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detectable": self.detectable, "verdict": self.verdict}


def power_lines(predicted: Mapping[str, float | None], sigma: float, sigma_source: str, seeds: int,
                baselines: Sequence[str], power: float = POWER) -> list[PowerLine]:
    """One ``PowerLine`` per baseline, in relative units (the total's level cancels: sd = √2·σ per seed)."""
    sd = unpaired_sd(sigma)
    out = []
    for b in baselines:
        g = predicted.get(b)
        out.append(PowerLine(b, g, detectable_gain(sd, seeds, power), seeds,
                             seeds_needed(g, sd, power) if g is not None else None, sigma, sigma_source))
    return out


def pooled_paired_sd(diffs: Mapping[str, Sequence[float]]) -> tuple[float | None, int]:
    """Pooled within-baseline std of the per-seed differences (each baseline around its own mean), and its dof."""
    ss, dof = 0.0, 0
    for d in diffs.values():
        d = np.asarray(d, float)
        if len(d) > 1:
            ss += float(((d - d.mean()) ** 2).sum())
            dof += len(d) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def total(losses: Mapping[str, float], units: Mapping[str, float], objective: str) -> float:
    """The objective's total over families: Σ L_f/Z_f (normalized) or Σ L_f (raw)."""
    return float(sum(losses[f] / units[f] for f in units)) if objective == "normalized" else float(sum(losses[f] for f in units))


def predicted_gains(fit_doc: Mapping[str, Any], mixtures: Mapping[str, Mapping[str, float]], N: float, D: float,
                    objective: str) -> dict[str, float]:
    """Relative gain (baseline − optimum)/baseline of the fitted law's total at (N, D), per non-optimal mixture."""
    from nemo_mlsl.fitting.optimize import predicted_losses, unit_losses

    z = unit_losses(fit_doc, N, D)
    tot = {name: total(predicted_losses(fit_doc, r, N, D), z, objective) for name, r in mixtures.items()}
    return {name: (t - tot["optimal"]) / t for name, t in tot.items() if name != "optimal"}


def describe(lines: Sequence[PowerLine]) -> list[str]:
    """Human lines for the dry run and the terminal: one per baseline."""
    out = []
    for p in lines:
        pred = f"{100 * p.predicted_gain:+.2f}%" if p.predicted_gain is not None else "unknown"
        out.append(f"  vs {p.baseline:<18} predicted gain {pred:>8}  detectable gain {100 * p.detectable_gain:.2f}% "
                   f"({p.seeds} paired seed(s)): {p.verdict}")
    return out
