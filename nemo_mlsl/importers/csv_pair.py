"""Run records from two CSV files: shares per run and losses per run, joined by an index column.

Share and loss columns are mapped to families by regular expressions (a named group ``family``, or the
whole column name); several share columns of one family are summed (languages into their family). N and D
are given, or read from columns of either file. An empty loss cell means the run was not evaluated there.

Files are read as spreadsheets and pandas write them: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped,
the separator is detected (``,``, ``;``, tab or ``|``: the one that splits every line of the file's start into the
header's number of fields), a ``;``- or tab-separated file whose numbers have decimal commas (``0,25``) is read as
such, and a column without a name (the index pandas writes first, ``Unnamed: 0`` once read back) is skipped. What
was detected, where it is not the default, is said in ``notes``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers import MappingError, compile_pattern, family_of, make_record

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
SNIFF_LINES = 50  # lines of a file's start the separator must split consistently
DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+(?:[eE][-+]?\d+)?")
UNNAMED = re.compile(r"Unnamed: \d+(?:_level_\d+)?")  # how pandas names a header cell that was empty


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
    skip_unmatched_losses: bool = False  # loss columns the pattern does not match are left out (noted), not an error
    warnings: list[str] = field(default_factory=list)  # runs whose shares were renormalized
    notes: list[str] = field(default_factory=list)  # how the files were read, where not the default


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, str]]
    unnamed: list[int]  # positions of columns without a name (skipped)


def is_unnamed(column: str) -> bool:
    return column == "" or bool(UNNAMED.fullmatch(column))


def sniff_delimiter(lines: list[str]) -> str:
    """The separator that splits every line of ``lines`` (a file's start) into the header's number of fields, more
    than one; among several, the one giving the most fields; ',' when none does (a one-column file)."""
    best, best_fields = ",", 1
    for delim in DELIMITERS:
        rows = [r for r in csv.reader(lines, delimiter=delim) if r]
        if not rows or len(rows[0]) < 2 or any(len(r) != len(rows[0]) for r in rows[1:]):
            continue
        if len(rows[0]) > best_fields:
            best, best_fields = delim, len(rows[0])
    return best


def read_table(path: str, what: str, notes: list[str] | None = None) -> Table:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path!r} does not exist")
    raw = p.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise MappingError(f"{what} {path!r} is not UTF-8 text (byte {err.start}); save it as CSV UTF-8") from None
    lines = text.splitlines(keepends=True)
    delim = sniff_delimiter(lines[:SNIFF_LINES])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    header = next(reader, None)
    if not header:
        raise MappingError(f"{what} {path!r} has no header row")
    columns = [c.strip() for c in header]
    body = [r for r in reader if any(cell.strip() for cell in r)]
    for i, r in enumerate(body):
        if len(r) != len(columns):
            raise MappingError(f"{what} {path!r}, line {i + 2}: {len(r)} fields where the header has {len(columns)} "
                               f"(separator {DELIMITER_NAMES[delim]})")
    decimal_comma = delim != "," and any(DECIMAL_COMMA.fullmatch(c.strip()) for r in body for c in r)
    if decimal_comma:
        body = [[c.strip().replace(",", ".") if DECIMAL_COMMA.fullmatch(c.strip()) else c for c in r] for r in body]
    unnamed = [j for j, c in enumerate(columns) if is_unnamed(c)]
    named = [c for c in columns if not is_unnamed(c)]
    dup = sorted({c for c in named if named.count(c) > 1})
    if dup:
        raise MappingError(f"{what} {path!r}: column {dup[0]!r} appears more than once in the header")
    said = ([f"a UTF-8 byte-order mark"] if bom else []) + \
           ([f"{DELIMITER_NAMES[delim]} separators"] if delim != "," else []) + (["decimal commas"] if decimal_comma else []) + \
           ([f"{len(unnamed)} column(s) without a name skipped (position {', '.join(str(j + 1) for j in unnamed)}: "
             "a pandas index)"] if unnamed else [])
    if said and notes is not None:
        notes.append(f"read {p.name}: {', '.join(said)}")
    rows = [{c: cell.strip() for j, (c, cell) in enumerate(zip(columns, r)) if j not in unnamed} for r in body]
    return Table(named, rows, unnamed)


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
    shares_t, losses_t = read_table(spec.shares, "--shares", spec.notes), read_table(spec.losses, "--losses", spec.notes)
    share_cols, share_rows, loss_cols, loss_rows = shares_t.columns, shares_t.rows, losses_t.columns, losses_t.rows
    s_idx, l_idx = _index_column(share_cols, spec, spec.shares), _index_column(loss_cols, spec, spec.losses)
    skip = {s_idx, l_idx, *(c for c in (spec.N_column, spec.D_column) if c), *spec.ignore}
    s_rx, l_rx = compile_pattern(spec.share_pattern, "--share-pattern"), compile_pattern(spec.loss_pattern, "--loss-pattern")
    share_map = _map_columns([c for c in share_cols if c not in skip], s_rx, spec.shares, "--share-pattern", allow_many=True)
    loss_names = [c for c in loss_cols if c not in skip]
    if spec.skip_unmatched_losses:
        left_out = [c for c in loss_names if family_of(l_rx, c) is None]
        loss_names = [c for c in loss_names if c not in left_out]
        if left_out and loss_names:
            spec.notes.append(f"{len(loss_names)} of the {len(loss_names) + len(left_out)} columns of {Path(spec.losses).name} "
                              f"match --loss-pattern {l_rx.pattern!r} and are imported ({len(left_out)} left out)")
        elif left_out:
            raise MappingError(f"{spec.losses}: no column matches --loss-pattern {l_rx.pattern!r} (columns: {left_out[:5]}"
                               f"{' ...' if len(left_out) > 5 else ''})")
    loss_map = _map_columns(loss_names, l_rx, spec.losses, "--loss-pattern", allow_many=False)
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
