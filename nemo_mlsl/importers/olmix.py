"""olmix swarm files: ``ratios.csv`` (one column per domain) and ``metrics.csv`` (one column per metric), joined
on ``run`` or ``run_id``; an optional ``name`` column labels runs. The files carry no model size or token
count: N and D are given. Metric columns map to families by ``metric_pattern`` (default: the whole name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair

ID_COLUMNS = ("run", "run_id")


def import_olmix(swarm: str, N: float, D: float, *, metric_pattern: str = r"(?P<family>.+)",
                 domain_pattern: str = r"(?P<family>.+)", warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """Records from the swarm directory ``swarm`` (holding ``ratios.csv`` and ``metrics.csv``)."""
    root = Path(swarm)
    if not (root / "ratios.csv").is_file() or not (root / "metrics.csv").is_file():
        raise ConfigError(f"{swarm!r} is not an olmix swarm directory: it needs ratios.csv and metrics.csv")
    spec = CsvPairSpec(str(root / "ratios.csv"), str(root / "metrics.csv"), index=ID_COLUMNS, share_pattern=domain_pattern,
                       loss_pattern=metric_pattern, N=N, D=D, ignore=("name",), source="olmix")
    records = import_csv_pair(spec)
    if warnings is not None:
        warnings.extend(spec.warnings)
    return records
