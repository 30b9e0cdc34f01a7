"""Ratio designs on the simplex: space-filling (scrambled Sobol), the controlled independence design, baselines."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy.stats import qmc

from nemo_mlsl.errors import ConfigError


def simplex_sobol(n: int, families: Sequence[str], floor: float, seed: int) -> list[dict[str, float]]:
    """``n`` scrambled-Sobol points mapped to the simplex (uniform via -log spacings), each ratio >= ``floor``."""
    k = len(families)
    if k * floor >= 1:
        raise ConfigError(f"design.floor {floor} x {k} families >= 1: lower the floor")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balance warnings for n not a power of two
        u = qmc.Sobol(d=k, scramble=True, seed=seed).random(n)
    e = -np.log1p(-np.clip(u, 1e-12, 1 - 1e-12))
    p = e / e.sum(axis=1, keepdims=True)
    p = floor + (1 - k * floor) * p
    return [_rounded(dict(zip(families, row))) for row in p]


def leave_one_out(n: int, families: Sequence[str], floor: float, seed: int) -> list[dict[str, float]]:
    """``n`` mixtures that each give one family no share at all: the families are left out in turn (the first
    ``n % len(families)`` once more than the others), and the families left in share the mixture as a
    scrambled-Sobol point, each >= ``floor``. What a law with terms for transfer between families (a finite loss
    at p_i = 0) learns most from: how much a family gains from the others alone."""
    k = len(families)
    if k < 2:
        raise ConfigError("design.zeros needs at least two families (a mixture must train on something)")
    per = [len(range(j, n, k)) for j in range(k)]
    points = {j: simplex_sobol(per[j], [f for f in families if f != families[j]], floor, seed + 104729 * (j + 1))
              for j in range(k) if per[j]}
    out = []
    for i in range(n):
        j = i % k
        out.append({families[j]: 0.0, **points[j][i // k]})
    return [{f: r[f] for f in families} for r in out]


def independence_design(n: int, families: Sequence[str], fixed: str, ratio: float, floor: float, seed: int) -> list[dict[str, float]]:
    """``fixed`` held at ``ratio`` while the other families share the rest, as differently as possible:
    first each other family in turn gets all it can (the rest at ``floor``), then the even split, then
    scrambled-Sobol points; a controlled test has the most power when the others vary the most."""
    if fixed not in families:
        raise ConfigError(f"design.independence.family {fixed!r} is not in the data; families: {list(families)}")
    others = [f for f in families if f != fixed]
    if not others:
        raise ConfigError("the independence design needs at least two families")
    rest = 1.0 - ratio
    if floor * len(others) >= rest:
        raise ConfigError(f"design.independence.floor {floor} x {len(others)} other families >= {rest:.3g} left by the fixed ratio")
    points: list[dict[str, float]] = []
    for heavy in others:
        points.append({f: (rest - floor * (len(others) - 1)) if f == heavy else floor for f in others})
    points.append({f: rest / len(others) for f in others})
    if n > len(points):
        sub = simplex_sobol(n - len(points), others, floor / rest, seed + 7919)
        points += [{f: rest * q for f, q in s.items()} for s in sub]
    return [_rounded({fixed: ratio, **p}, protect=fixed) for p in points[:n]]


def _rounded(r: dict[str, float], protect: str | None = None) -> dict[str, float]:
    """Round to 6 decimals and put the rounding error on the largest ratio (never ``protect``), so ratios sum to 1."""
    out = {f: round(v, 6) for f, v in r.items()}
    big = max((f for f in out if f != protect), key=out.get)
    out[big] = round(out[big] + 1.0 - sum(out.values()), 9)
    return out
