"""Shares as published: rounded by their authors, so they sum to 1 only approximately."""

from __future__ import annotations

import math
from typing import Mapping

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.fitting.observations import RENORMALIZE_TOLERANCE as SUM_TOLERANCE  # one tolerance for records and imports


def normalize_shares(shares: Mapping[str, float], where: str) -> tuple[dict[str, float], str | None]:
    """``shares`` scaled to sum to 1, and a warning naming ``where`` if they did not already (within 1e-9).
    Negative or non-finite shares, or a sum off by more than 1%, are a ConfigError naming ``where``."""
    bad = {f: v for f, v in shares.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
    if bad:
        raise ConfigError(f"{where}: shares must be finite numbers >= 0, got {bad}")
    total = float(sum(shares.values()))
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ConfigError(f"{where}: shares sum to {total:.6g}, more than {SUM_TOLERANCE:.0%} away from 1; "
                          "give shares of the whole mixture")
    out = {f: float(v) / total for f, v in shares.items()}
    warning = f"{where}: shares summed to {total:.6g}; renormalized to 1" if abs(total - 1.0) > 1e-9 else None
    return out, warning
