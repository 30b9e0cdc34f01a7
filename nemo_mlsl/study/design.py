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


def independence_design(n: int, families: Sequence[str], fixed: str, ratio: float, floor: float, seed: int) -> list[dict[str, float]]:
    """``fixed`` held at ``ratio`` while the other families share the rest along a space-filling design."""
    if fixed not in families:
        raise ConfigError(f"design.independence.family {fixed!r} is not in the data; families: {list(families)}")
    others = [f for f in families if f != fixed]
    if not others:
        raise ConfigError("the independence design needs at least two families")
    rest = 1.0 - ratio
    sub = simplex_sobol(n, others, min(floor / rest, 0.99 / len(others)), seed + 7919)
    return [_rounded({fixed: ratio, **{f: rest * q for f, q in s.items()}}) for s in sub]


def _rounded(r: dict[str, float]) -> dict[str, float]:
    """Round to 6 decimals and put the rounding error on the largest ratio, so ratios sum to 1 exactly."""
    out = {f: round(v, 6) for f, v in r.items()}
    big = max(out, key=out.get)
    out[big] = round(out[big] + 1.0 - sum(out.values()), 9)
    return out
