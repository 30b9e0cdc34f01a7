"""olmix swarm files as olmix writes them: ``ratios.csv`` (one column per domain) and ``metrics.csv`` (one column
per metric), each with a leading unnamed pandas index column, then ``run``, ``name`` and ``index``, then the data
columns; rows pair by ``run`` (``run_id`` in some swarms). As olmix's own loader does, the identifier columns
(``run``, ``run_id``, ``name``, ``index``) and unnamed columns are neither shares nor metrics. The files carry no
model size or token count: N and D are given. Metric columns map to targets by ``metric_pattern`` (default: the
whole name); metrics it does not match are left out (a swarm's metrics file holds every evaluation; the pattern
picks the targets), and said so. The metrics are downstream targets, not training domains, so only laws that predict a target from the
whole mixture fit them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair

ID_COLUMNS = ("run", "run_id")
LABEL_COLUMNS = ("run", "run_id", "name", "index")  # what olmix's loader skips besides unnamed columns


def import_olmix(swarm: str, N: float, D: float, *, metric_pattern: str = r"(?P<family>.+)",
                 domain_pattern: str = r"(?P<family>.+)", warnings: list[str] | None = None,
                 notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Records from the swarm directory ``swarm`` (holding ``ratios.csv`` and ``metrics.csv``)."""
    root = Path(swarm)
    if not (root / "ratios.csv").is_file() or not (root / "metrics.csv").is_file():
        raise ConfigError(f"{swarm!r} is not an olmix swarm directory: it needs ratios.csv and metrics.csv")
    spec = CsvPairSpec(str(root / "ratios.csv"), str(root / "metrics.csv"), index=ID_COLUMNS, share_pattern=domain_pattern,
                       loss_pattern=metric_pattern, N=N, D=D, ignore=LABEL_COLUMNS, source="olmix",
                       skip_unmatched_losses=True)
    records = import_csv_pair(spec)
    if warnings is not None:
        warnings.extend(spec.warnings)
    if notes is not None:
        notes.extend(spec.notes)
    return records
