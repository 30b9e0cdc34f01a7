"""TensorBoard event logs of Megatron-LM runs with named validation sets: the final value of each scalar
``lm loss validation-<name>`` is that set's loss. Names map to families by ``name_pattern``; a run's shares,
N and D come from a table (one row per run directory name) or, for a single run, from the command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers import MappingError, compile_pattern, family_of, make_record

TAG = re.compile(r"lm loss validation-(?P<name>.+)")


def validation_losses(logdir: str) -> dict[str, float]:
    """{validation-set name: loss at the last logged step} of one run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        m = TAG.fullmatch(tag)
        if m and not m.group("name").endswith(" ppl"):
            events = acc.Scalars(tag)
            if events:
                out[m.group("name")] = float(max(events, key=lambda e: e.step).value)
    return out


def import_tensorboard(logdirs: Sequence[str], runs: Mapping[str, Mapping[str, Any]], *,
                       name_pattern: str = r"(?P<family>.+)", warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """One record per log directory; ``runs[dir name]`` holds its ``ratios``, ``N`` and ``D``."""
    rx = compile_pattern(name_pattern, "--name-pattern")
    records, notes = [], [] if warnings is None else warnings
    for d in logdirs:
        path = Path(d)
        if not path.is_dir():
            raise ConfigError(f"log directory {d!r} does not exist")
        run = path.name
        if run not in runs:
            raise MappingError(f"run {run!r} (log directory {d}) has no row in the runs table (known: {sorted(runs)[:5]})")
        losses_by_name = validation_losses(d)
        if not losses_by_name:
            raise MappingError(f"run {run!r}: no scalar 'lm loss validation-<name>' in {d}; was it logged with named "
                               "validation sets?")
        losses: dict[str, float] = {}
        for name, loss in sorted(losses_by_name.items()):
            fam = family_of(rx, name)
            if fam is None:
                raise MappingError(f"run {run!r}: validation set {name!r} does not match --name-pattern {name_pattern!r}")
            if fam in losses:
                raise MappingError(f"run {run!r}: two validation sets map to family {fam!r}; give one set per family")
            losses[fam] = loss
        meta = runs[run]
        records.append(make_record(run, meta["N"], meta["D"], meta["ratios"], losses, "tensorboard", notes))
    return records


def runs_table(path: str, *, index: str = "run", share_pattern: str = r"(?P<family>.+)", N: float | None = None,
               D: float | None = None, N_column: str | None = "N", D_column: str | None = "D") -> dict[str, dict[str, Any]]:
    """{run: {ratios, N, D}} from a CSV with one row per run directory name (shares by ``share_pattern``)."""
    from nemo_mlsl.importers.csv_pair import _map_columns, number, read_table

    cols, rows = read_table(path, "--runs-table")
    if index not in cols:
        raise MappingError(f"{path}: no column {index!r} naming the run directories (columns: {cols})")
    size_cols = {c for c in (N_column, D_column) if c and c in cols}
    shares = _map_columns([c for c in cols if c != index and c not in size_cols], compile_pattern(share_pattern, "--share-pattern"),
                          path, "--share-pattern", allow_many=True)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        run = row[index]
        ratios: dict[str, float] = {}
        for col, fam in shares.items():
            ratios[fam] = ratios.get(fam, 0.0) + number(row[col], f"{path}: run {run!r}, column {col!r}")
        size = {}
        for key, value, col in (("N", N, N_column), ("D", D, D_column)):
            if value is not None:
                size[key] = float(value)
            elif col in size_cols:
                size[key] = number(row[col], f"{path}: run {run!r}, column {col!r}")
            else:
                raise ConfigError(f"give {key} for every run: --{key} VALUE or a column {col!r} in {path}")
        out[run] = {"ratios": ratios, **size}
    return out
