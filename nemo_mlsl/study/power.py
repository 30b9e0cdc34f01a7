"""Statistical power of the confirmation: what gain a study can tell from seed noise, and how many seeds it takes.

The confirmation trains the optimum and every baseline with the same ``n`` seeds (paired), so a seed's effect on
both runs cancels in their difference d_bs = T_b,s − T_opt,s (T: the objective's total loss). The report's test
(``confirm``): the gain over baseline b is the mean d̄_b; the noise of one seed's difference is the std s of the
paired differences pooled over the B baselines (each around its own mean, ν = B·(n−1) degrees of freedom), so
se = s/√n; "beyond noise" means |d̄_b| > k·se, with k chosen so that a baseline exactly as good as the optimum is
called beyond noise with the probability of a ±2σ normal threshold (4.55%, two-sided).

Every baseline's difference shares the optimum's run of the same seed, so the B differences of one seed are
correlated (ρ = 1/2 when every run has the same noise): s² is not a χ²_ν/ν multiple of the true variance.
Its exact law, for n seeds and B baselines, is sd²·(a·χ²_{n−1} + b·χ²_{(B−1)(n−1)})/ν with a = (B+1)/2 and
b = 1/2 (the eigenvalues of the differences' correlation, 1 + (B−1)/2 once and 1/2 B−1 times, per contrast between
seeds), independent of the means d̄_b. The threshold k, the power, the detectable gain and the seeds needed are all
computed from that law (``prob_called``: a Gauss–Legendre quadrature over the two χ² in their quantiles, exact to
~1e-5; for one baseline it is the noncentral t itself), so a gain stated as detectable is called beyond noise
with the stated probability (checked by simulating whole confirmations through ``confirm`` in tests/test_power.py).

With one seed there is no paired difference to measure: the noise of a difference is then √2·σ·T (σ: the std of
log loss between the phase-1 seed repeats, taken as known; no credit for pairing) and the threshold 2. Before
any pairing is measured, the planned per-seed noise of a difference is that same √2·σ, in relative units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.optimize import brentq

Z_VERDICT = 2.0  # a difference beyond the ±2σ level of its noise is "beyond noise"
POWER = 0.8  # the probability with which a "detectable" gain is called beyond noise
ASSUMED_SIGMA = 0.015  # std of log loss between seeds when neither measured nor given (CPU rungs, docs/science.md §5)
MAX_SEEDS = 10_000
QUADRATURE_NODES = 64  # per χ²: the power is exact to ~1e-5 (tests/test_power.py checks it against the noncentral t)
VERDICTS = {1: "optimal better, beyond noise", -1: "baseline better, beyond noise", 0: "within noise"}


def level(z: float = Z_VERDICT) -> float:
    """Two-sided confidence level of a ±z normal threshold (2 → 0.9545)."""
    return float(2 * stats.norm.cdf(z) - 1)


def unpaired_sd(sigma: float, total: float = 1.0) -> float:
    """Per-seed noise of the difference of two runs' totals when pairing is not credited: √2·σ·total."""
    return math.sqrt(2.0) * sigma * total


def _check(seeds: int, baselines: int) -> None:
    if seeds < 1 or baselines < 1:
        raise ValueError(f"seeds and baselines must be >= 1, got {seeds} and {baselines}")


def pooled_dof(seeds: int, baselines: int = 1) -> int:
    """Degrees of freedom of the pooled paired std: B·(n−1)."""
    return baselines * (seeds - 1)


@lru_cache(maxsize=256)
def _noise_ratio(seeds: int, baselines: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights of s/sd, the pooled estimate over the true per-seed noise (n >= 2):
    s²/sd² = (a·X1 + b·X2)/ν, X1 ~ χ²_{n−1}, X2 ~ χ²_{(B−1)(n−1)}, a = (B+1)/2, b = 1/2; Gauss–Legendre nodes
    in the quantiles of X1 and X2."""
    x, w = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    u, w = (x + 1) / 2, w / 2
    m1, m2, nu = seeds - 1, (baselines - 1) * (seeds - 1), pooled_dof(seeds, baselines)
    x1 = stats.chi2.ppf(u, m1)
    if m2 == 0:  # one baseline: s²/sd² = χ²_{n−1}/(n−1)
        return np.sqrt(x1 / nu), w
    x2 = stats.chi2.ppf(u, m2)
    q = (baselines + 1) / 2 * x1[:, None] + 0.5 * x2[None, :]
    return np.sqrt(q / nu).ravel(), np.outer(w, w).ravel()


def _prob_quadrature(delta: float, seeds: int, baselines: int, k: float) -> float:
    """E[Φ(δ − k·s/sd)] over the law of s/sd: the probability that d̄/se exceeds k (d̄ is independent of s)."""
    s, w = _noise_ratio(seeds, baselines)
    return float(np.dot(w, stats.norm.cdf(delta - k * s)))


def prob_called(delta: float, seeds: int, baselines: int, k: float) -> float:
    """P(d̄_b/se > k) for one baseline when its true gain is ``delta`` noise units of the mean (δ = g·√n/sd):
    the probability that the report calls it "optimal better, beyond noise"."""
    _check(seeds, baselines)
    if seeds == 1:
        return float(stats.norm.sf(k - delta))
    if baselines == 1:
        nu = seeds - 1
        return float(stats.nct.sf(k, nu, delta) if delta else stats.t.sf(k, nu))
    return _prob_quadrature(delta, seeds, baselines, k)


@lru_cache(maxsize=1024)
def threshold(seeds: int, baselines: int = 1, z: float = Z_VERDICT) -> float:
    """The verdict's multiplier k: ``z`` with one seed (known noise), else the quantile at which a baseline as
    good as the optimum is called beyond noise (either way) with probability 2·Φ(−z), under the pooled estimate's
    exact law (one baseline: the t quantile with n−1 dof)."""
    _check(seeds, baselines)
    if seeds == 1:
        return float(z)
    tail = float(stats.norm.sf(z))
    if baselines == 1:
        return float(stats.t.isf(tail, seeds - 1))
    hi = float(stats.t.isf(tail, seeds - 1))  # the fewest dof of any part: a k beyond which the tail is smaller
    return float(brentq(lambda k: prob_called(0.0, seeds, baselines, k) - tail, z, hi, xtol=1e-12))


def power_of(gain: float, sd: float, seeds: int, baselines: int = 1, z: float = Z_VERDICT) -> float:
    """Probability that a true gain ``gain`` (in the units of ``sd``, the noise of one seed's difference) is called
    "optimal better, beyond noise" by the confirmation of ``seeds`` paired seeds and ``baselines`` baselines."""
    if sd <= 0:
        return 1.0 if gain > 0 else 0.0
    return prob_called(gain * math.sqrt(seeds) / sd, seeds, baselines, threshold(seeds, baselines, z))


@lru_cache(maxsize=1024)
def _detectable_delta(seeds: int, baselines: int, power: float, z: float) -> float:
    k = threshold(seeds, baselines, z)
    if seeds == 1:
        return k + float(stats.norm.ppf(power))
    f = lambda d: prob_called(d, seeds, baselines, k) - power  # noqa: E731
    hi = k + float(stats.norm.ppf(power)) + 1.0
    while f(hi) < 0:
        hi *= 2
    return float(brentq(f, 0.0, hi, xtol=1e-10))


def detectable_gain(sd: float, seeds: int, baselines: int = 1, power: float = POWER, z: float = Z_VERDICT) -> float:
    """Smallest true gain that the confirmation of ``seeds`` paired seeds and ``baselines`` baselines (noise ``sd``
    per seed's difference) calls beyond noise with probability ``power``: δ·sd/√n, δ solving prob_called = power."""
    _check(seeds, baselines)
    return _detectable_delta(seeds, baselines, power, z) * sd / math.sqrt(seeds)


def seeds_needed(gain: float | None, sd: float, baselines: int = 1, power: float = POWER, z: float = Z_VERDICT,
                 one_seed: bool = False) -> int | None:
    """Fewest paired seeds at which a true gain ``gain`` is called beyond noise with probability ``power`` by the
    report's test (noise measured by the paired differences: n >= 2, where the power grows with n). With
    ``one_seed`` a single seed counts too (its noise √2·σ from phase 1, taken as known): a planned confirmation of
    one seed. None when the gain is not positive or needs more than MAX_SEEDS."""
    if gain is None or gain <= 0 or not math.isfinite(gain):
        return None
    if sd <= 0:
        return 1 if one_seed else 2
    if one_seed and power_of(gain, sd, 1, baselines, z) >= power:
        return 1
    ok = lambda n: power_of(gain, sd, n, baselines, z) >= power  # noqa: E731
    if not ok(MAX_SEEDS):
        return None
    lo, hi = 1, 2  # ok(lo) is False (or lo is below the range), ok(hi) decides
    while not ok(hi):
        lo, hi = hi, min(2 * hi, MAX_SEEDS)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Confirmation:
    """The report's test of the optimum against each baseline, for one study or a stack of simulated ones
    (leading axes ``...``): mean paired difference, its noise and the verdict."""

    difference: np.ndarray  # [..., B] mean of the paired differences d_bs = T_b,s − T_opt,s
    se: np.ndarray | None  # [..., B] noise of that mean; None: no noise estimate
    sd: np.ndarray | None  # [..., B] noise of one seed's difference
    threshold: np.ndarray  # [B] the verdict's multiplier k
    seeds: np.ndarray  # [B] paired seeds of each baseline
    dof: int  # of the pooled paired std (0: the noise came from σ, or none)
    pooled: int  # baselines in the pooled std

    def calls(self) -> np.ndarray:
        """+1 optimal better beyond noise, −1 baseline better beyond noise, 0 within noise ([..., B])."""
        if self.se is None:
            raise ValueError("no noise estimate: no call")
        band = self.threshold * self.se
        return np.where(self.difference > band, 1, np.where(self.difference < -band, -1, 0))


def confirm(diffs: np.ndarray, fallback_sd: np.ndarray | None = None) -> Confirmation:
    """The confirmation's test on paired differences ``diffs[..., B, n]`` (NaN where a baseline lacks a seed).

    The per-seed noise is the std of the differences pooled over the baselines with >= 2 seeds (each around its
    own mean) and the threshold ``threshold(n, B)`` for that estimator; without two seeds anywhere it is
    ``fallback_sd`` ([B], √2·σ·T of each baseline) with the threshold ``Z_VERDICT`` (the noise taken as known)."""
    d = np.asarray(diffs, dtype=float)
    have = np.isfinite(d)
    seeds = have.reshape(-1, *d.shape[-2:])[0].sum(axis=-1)  # every study of a stack shares the seeds it has
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(have, d, 0.0).sum(axis=-1) / seeds  # NaN for a baseline without any seed
    multi = seeds >= 2
    dof = int((seeds[multi] - 1).sum())
    sd = None
    if dof:
        dev = np.where(have & multi[:, None], d - mean[..., None], 0.0)
        s = np.sqrt((dev ** 2).sum(axis=(-1, -2)) / dof)
        if np.all(s > 0):
            sd = np.broadcast_to(s[..., None], mean.shape)
            k = np.array([threshold(int(n), int(multi.sum())) if n >= 2 else Z_VERDICT for n in seeds])
            return Confirmation(mean, sd / np.sqrt(np.maximum(seeds, 1)), sd, k, seeds, dof, int(multi.sum()))
    if fallback_sd is not None:
        sd = np.broadcast_to(np.asarray(fallback_sd, dtype=float), mean.shape)
        return Confirmation(mean, sd / np.sqrt(np.maximum(seeds, 1)), sd, np.full(len(seeds), Z_VERDICT), seeds, 0, 0)
    return Confirmation(mean, None, None, np.full(len(seeds), Z_VERDICT), seeds, 0, 0)


def verdict(call: int | None) -> str:
    """The report's words for a call of ``Confirmation.calls`` (None: no noise estimate)."""
    return "unknown (no seed repeats)" if call is None else VERDICTS[int(call)]


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
    baselines: int = 1  # the baselines whose paired differences the confirmation pools

    @property
    def detectable(self) -> bool | None:
        """Whether the planned seeds suffice: exactly when ``seeds_needed`` <= ``seeds`` (one definition)."""
        if self.predicted_gain is None:
            return None
        return self.seeds_needed is not None and self.seeds_needed <= self.seeds

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
    """One ``PowerLine`` per baseline, in relative units (the total's level cancels: sd = √2·σ per seed), for the
    confirmation's own test: ``seeds`` paired seeds, the noise pooled over ``len(baselines)`` baselines."""
    sd, b = unpaired_sd(sigma), max(1, len(baselines))
    det = detectable_gain(sd, seeds, b, power)
    return [PowerLine(name, predicted.get(name), det, seeds,
                      seeds_needed(predicted.get(name), sd, b, power, one_seed=seeds == 1), sigma, sigma_source, b)
            for name in baselines]


def total(losses: Mapping[str, float], units: Mapping[str, float], objective: str,
          weights: Mapping[str, float] | None = None) -> float:
    """The objective's total over families: Σ w_f L_f/Z_f (normalized) or Σ w_f L_f (raw); ``weights`` are the
    optimizer's (``fit.json``'s ``optimal.weights``; 1 each when not given)."""
    w = {f: float((weights or {}).get(f, 1.0)) for f in units}
    if objective == "normalized":
        return float(sum(w[f] * losses[f] / units[f] for f in units if w[f]))
    return float(sum(w[f] * losses[f] for f in units if w[f]))


def predicted_gains(fit_doc: Mapping[str, Any], mixtures: Mapping[str, Mapping[str, float]], N: float, D: float,
                    objective: str) -> dict[str, float]:
    """Relative gain (baseline − optimum)/baseline of the fitted law's total at (N, D), per non-optimal mixture."""
    from nemo_mlsl.fitting.optimize import predicted_losses, unit_losses

    z = unit_losses(fit_doc, N, D)
    w = (fit_doc.get("optimal") or {}).get("weights")
    tot = {name: total(predicted_losses(fit_doc, r, N, D), z, objective, w) for name, r in mixtures.items()}
    return {name: (t - tot["optimal"]) / t for name, t in tot.items() if name != "optimal"}


def describe(lines: Sequence[PowerLine]) -> list[str]:
    """Human lines for the dry run and the terminal: one per baseline."""
    out = []
    for p in lines:
        pred = f"{100 * p.predicted_gain:+.2f}%" if p.predicted_gain is not None else "unknown"
        out.append(f"  vs {p.baseline:<18} predicted gain {pred:>8}  detectable gain {100 * p.detectable_gain:.2f}% "
                   f"({p.seeds} paired seed(s)): {p.verdict}")
    return out
