"""TensorBoard event logs of Megatron-LM runs with named validation sets: the final value of each scalar
``lm loss validation-<name>`` is that set's loss. Names map to families by ``name_pattern``; a run's shares,
N and D come from a table (one row per run directory name) or, for a single run, from the command line.

Event files are read record by record with tensorboard's own record reader, which checks each record's length and
its two CRC32C checksums. A run killed while writing leaves its last record cut mid-way (or a checksum that fails);
TensorBoard's loaders stop there silently. Here the run still imports, from the records before the damage, with a
warning naming the run, the file, where it broke and the last step read: a loss from step 95 of a 199-step run is
not mistaken for the final one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers import MappingError, compile_pattern, family_of, make_record

TAG = re.compile(r"lm loss validation-(?P<name>.+)")
RECORD_OVERHEAD = 16  # bytes around each record's payload: length (8), its CRC (4), the payload's CRC (4)


@dataclass
class Damage:
    """Where an event file stops being readable: byte ``offset`` of ``size``, and tensorboard's reason."""

    file: str
    offset: int
    size: int
    reason: str


@dataclass
class EventLog:
    """One run directory's validation losses at their last logged step, and any damaged event files."""

    losses: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    damaged: list[Damage] = field(default_factory=list)

    @property
    def last_step(self) -> int | None:
        return max(self.steps.values()) if self.steps else None


def event_files(logdir: Path) -> list[Path]:
    """The run's event files (``*tfevents*`` directly in it), in the order TensorBoard reads them."""
    return sorted(p for p in logdir.iterdir() if p.is_file() and "tfevents" in p.name)


def read_records(path: Path) -> tuple[list[bytes], Damage | None]:
    """Every complete record of one event file, and where it is damaged (a record cut short, a CRC failure)."""
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    reader = PyRecordReader_New(str(path))
    records, offset = [], 0
    try:
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                return records, None
            except errors.DataLossError as err:
                reason = str(getattr(err, "message", err)).replace(str(path), "").strip().removeprefix("has ") or "unreadable"
                return records, Damage(path.name, offset, path.stat().st_size, reason)
            rec = reader.record()
            records.append(rec)
            offset += len(rec) + RECORD_OVERHEAD
    finally:
        reader.file_handle.close()


def scalar_value(value) -> float | None:
    """A summary value's scalar (``simple_value`` of older writers, a 0-d tensor of newer ones), or None."""
    from tensorboard import data_compat
    from tensorboard.util import tensor_util

    if value.HasField("simple_value"):
        return float(value.simple_value)
    migrated = data_compat.migrate_value(value)
    if migrated.HasField("tensor"):
        arr = tensor_util.make_ndarray(migrated.tensor)
        if arr.size == 1 and arr.dtype.kind in "fiu":
            return float(arr.reshape(()))
    return None


def read_log(logdir: str) -> EventLog:
    """The validation losses of one run directory at their last logged step (a later record of the same step wins)."""
    from tensorboard.compat.proto import event_pb2

    log = EventLog()
    for path in event_files(Path(logdir)):
        records, damage = read_records(path)
        if damage:
            log.damaged.append(damage)
        for raw in records:
            event = event_pb2.Event.FromString(raw)
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                m = TAG.fullmatch(value.tag)
                if not m or m.group("name").endswith(" ppl"):
                    continue
                v = scalar_value(value)
                name = m.group("name")
                if v is not None and event.step >= log.steps.get(name, -1):
                    log.losses[name], log.steps[name] = v, int(event.step)
    return log


def validation_losses(logdir: str) -> dict[str, float]:
    """{validation-set name: loss at the last logged step} of one run's event files."""
    return read_log(logdir).losses


def damage_warning(run: str, log: EventLog) -> str:
    d = log.damaged[0]
    more = f" (and {len(log.damaged) - 1} more damaged file(s))" if len(log.damaged) > 1 else ""
    return (f"warning: run {run!r}: event file {d.file} is truncated or corrupt at byte {d.offset} of {d.size} ({d.reason})"
            f"{more}; imported the losses of step {log.last_step}, the last step read: the run may have gone on "
            "past it (check the log, or re-import once it is complete)")


def import_tensorboard(logdirs: Sequence[str], runs: Mapping[str, Mapping[str, Any]], *,
                       name_pattern: str = r"(?P<family>.+)", warnings: list[str] | None = None,
                       notes: list[str] | None = None) -> list[dict[str, Any]]:
    """One record per log directory; ``runs[dir name]`` holds its ``ratios``, ``N`` and ``D``. A damaged event file
    is a warning in ``notes`` (the run, the file, the byte, the last step read); ``warnings`` gets renormalizations."""
    rx = compile_pattern(name_pattern, "--name-pattern")
    records, renorm = [], [] if warnings is None else warnings
    for d in logdirs:
        path = Path(d)
        if not path.is_dir():
            raise ConfigError(f"log directory {d!r} does not exist")
        run = path.name
        if run not in runs:
            raise MappingError(f"run {run!r} (log directory {d}) has no row in the runs table (known: {sorted(runs)[:5]})")
        log = read_log(d)
        if not log.losses:
            broken = (f"; its event file {log.damaged[0].file} is truncated or corrupt at byte {log.damaged[0].offset} "
                      f"({log.damaged[0].reason})") if log.damaged else ""
            raise MappingError(f"run {run!r}: no scalar 'lm loss validation-<name>' in {d}{broken}; was it logged with "
                               "named validation sets?")
        if log.damaged and notes is not None:
            notes.append(damage_warning(run, log))
        losses: dict[str, float] = {}
        for name, loss in sorted(log.losses.items()):
            fam = family_of(rx, name)
            if fam is None:
                raise MappingError(f"run {run!r}: validation set {name!r} does not match --name-pattern {name_pattern!r}")
            if fam in losses:
                raise MappingError(f"run {run!r}: two validation sets map to family {fam!r}; give one set per family")
            losses[fam] = loss
        meta = runs[run]
        records.append(make_record(run, meta["N"], meta["D"], meta["ratios"], losses, "tensorboard", renorm))
    return records


def runs_table(path: str, *, index: str = "run", share_pattern: str = r"(?P<family>.+)", N: float | None = None,
               D: float | None = None, N_column: str | None = "N", D_column: str | None = "D") -> dict[str, dict[str, Any]]:
    """{run: {ratios, N, D}} from a CSV with one row per run directory name (shares by ``share_pattern``)."""
    from nemo_mlsl.importers.csv_pair import _map_columns, number, read_table

    table = read_table(path, "--runs-table")
    cols, rows = table.columns, table.rows
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
