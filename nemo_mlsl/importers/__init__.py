"""Run records from the formats public run sets come in: a pair of CSV files (shares, losses), olmix's swarm
files and TensorBoard logs of Megatron-LM runs. Each importer returns results-store records
(``nemo_mlsl.results``) and raises ``MappingError`` naming the column, run or name it cannot map."""

from __future__ import annotations

import re
from typing import Any, Mapping

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.results import validate_record
from nemo_mlsl.fitting.shares import normalize_shares


class MappingError(ConfigError):
    """A column, run or validation-set name an importer cannot map to a family, a share, a loss, N or D."""


def compile_pattern(pattern: str, flag: str) -> re.Pattern[str]:
    """A regex with a named group ``family`` (or none: the whole match is the family)."""
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"{flag} {pattern!r} is not a regular expression ({err})") from None
    if rx.groups and "family" not in rx.groupindex:
        raise ConfigError(f"{flag} {pattern!r}: name the group that holds the family, e.g. 'loss_(?P<family>.+)'")
    return rx


def family_of(rx: re.Pattern[str], name: str) -> str | None:
    """The family ``name`` maps to under ``rx`` (full match), or None."""
    m = rx.fullmatch(name)
    if not m:
        return None
    return m.group("family") if "family" in rx.groupindex else m.group(0)


def make_record(run_id: str, N: float, D: float, shares: Mapping[str, float], losses: Mapping[str, float], source: str,
                warnings: list[str]) -> dict[str, Any]:
    """A validated results-store record; shares summing to 1 within 1% are renormalized (noted in ``warnings``)."""
    ratios, warning = normalize_shares(dict(shares), f"run {run_id!r}")
    if warning:
        warnings.append(warning)
    if not losses:
        raise MappingError(f"run {run_id!r} has no loss for any family; check the loss pattern")
    rec = {"run_id": run_id, "N": float(N), "D": float(D), "ratios": ratios, "family_loss": dict(losses), "source": source}
    validate_record(rec, f"run {run_id!r}")
    return rec
