"""Run records from two CSV files: shares per run and losses per run, joined by an index column.

Share and loss columns are mapped to families by regular expressions (a named group ``family``, or the
whole column name); several share columns of one family are summed (languages into their family). N and D
are given, or read from columns of either file. An empty loss cell means the run was not evaluated there.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers import MappingError, compile_pattern, family_of, make_record


@dataclass
class CsvPairSpec:
    shares: str
    losses: str
    index: str | Sequence[str] = "index"  # the join column (a list: the first one present)
    share_pattern: str = r"(?P<family>.+)"
    loss_pattern: str = r"(?P<family>.+)"
    N: float | None = None
    D: float | None = None
    N_column: str | None = None
    D_column: str | None = None
    ignore: Sequence[str] = ()  # further columns that are neither shares nor losses (labels, seeds)
    run_prefix: str = ""
    source: str = "csv"
    warnings: list[str] = field(default_factory=list)


def read_table(path: str, what: str) -> tuple[list[str], list[dict[str, str]]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path!r} does not exist")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise MappingError(f"{what} {path!r} has no header row")
        return [c.strip() for c in reader.fieldnames], [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]


def number(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise MappingError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise MappingError(f"{where}: {text!r} is not a finite number")
    return v


def _index_column(columns: list[str], spec: CsvPairSpec, path: str) -> str:
    names = [spec.index] if isinstance(spec.index, str) else list(spec.index)
    found = next((c for c in names if c in columns), None)
    if found is None:
        raise MappingError(f"{path}: no index column {' or '.join(map(repr, names))} (columns: {columns}); pass --index NAME")
    return found


def _size(row: dict[str, str], other: dict[str, str], column: str | None, value: float | None, what: str, run: str) -> float:
    if value is not None:
        return float(value)
    if column is None:
        raise ConfigError(f"give {what} for every run: --{what} VALUE or --{what}-column NAME")
    text = row.get(column, other.get(column))
    if text is None:
        raise MappingError(f"run {run!r}: no column {column!r} for {what} in either file")
    return number(text, f"run {run!r}, column {column!r}")


def import_csv_pair(spec: CsvPairSpec) -> list[dict[str, Any]]:
    share_cols, share_rows = read_table(spec.shares, "--shares")
    loss_cols, loss_rows = read_table(spec.losses, "--losses")
    s_idx, l_idx = _index_column(share_cols, spec, spec.shares), _index_column(loss_cols, spec, spec.losses)
    skip = {s_idx, l_idx, *(c for c in (spec.N_column, spec.D_column) if c), *spec.ignore}
    s_rx, l_rx = compile_pattern(spec.share_pattern, "--share-pattern"), compile_pattern(spec.loss_pattern, "--loss-pattern")
    share_map = _map_columns([c for c in share_cols if c not in skip], s_rx, spec.shares, "--share-pattern", allow_many=True)
    loss_map = _map_columns([c for c in loss_cols if c not in skip], l_rx, spec.losses, "--loss-pattern", allow_many=False)
    losses_by_run = {}
    for row in loss_rows:
        run = row.get(l_idx, "")
        if run in losses_by_run:
            raise MappingError(f"{spec.losses}: run {run!r} appears twice in column {l_idx!r}")
        losses_by_run[run] = row
    extra = sorted(set(losses_by_run) - {r.get(s_idx, "") for r in share_rows})
    if extra:
        raise MappingError(f"{spec.losses}: run(s) {extra[:5]} have losses but no shares in {spec.shares}")
    records = []
    for row in share_rows:
        run = row.get(s_idx, "")
        if run not in losses_by_run:
            raise MappingError(f"{spec.shares}: run {run!r} has shares but no losses in {spec.losses} (column {l_idx!r})")
        lrow = losses_by_run[run]
        shares: dict[str, float] = {}
        for col, fam in share_map.items():
            shares[fam] = shares.get(fam, 0.0) + number(row.get(col, ""), f"{spec.shares}: run {run!r}, column {col!r}")
        losses = {fam: number(lrow[col], f"{spec.losses}: run {run!r}, column {col!r}")
                  for col, fam in loss_map.items() if lrow.get(col, "") != ""}
        N = _size(row, lrow, spec.N_column, spec.N, "N", run)
        D = _size(row, lrow, spec.D_column, spec.D, "D", run)
        records.append(make_record(f"{spec.run_prefix}{run}", N, D, shares, losses, spec.source, spec.warnings))
    if not records:
        raise MappingError(f"{spec.shares}: no runs")
    return records


def _map_columns(columns: list[str], rx, path: str, flag: str, allow_many: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for col in columns:
        fam = family_of(rx, col)
        if fam is None:
            raise MappingError(f"{path}: column {col!r} does not match {flag} {rx.pattern!r}; "
                               "fix the pattern or list the column in --ignore")
        if not allow_many and fam in out.values():
            first = next(c for c, f in out.items() if f == fam)
            raise MappingError(f"{path}: columns {first!r} and {col!r} both map to family {fam!r} under {flag} {rx.pattern!r}")
        out[col] = fam
    if not out:
        raise MappingError(f"{path}: no column left to map with {flag} {rx.pattern!r}")
    return out
