"""The results store: append-only JSONL, one run per line, safe under concurrent writers.

Each append takes an exclusive file lock, re-reads the store to refuse duplicate ``run_id``s,
then writes one complete line with a single ``write`` and ``fsync``. Reading never drops a line
silently: a malformed one is an error naming its line number.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from filelock import FileLock

from nemo_mlsl.errors import ConfigError, DataError

REQUIRED = ("run_id", "N", "D", "ratios", "family_loss")


def _number(v: Any) -> bool:
    """A JSON number (bool is an int to Python, never a loss, a ratio or a size)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_record(rec: Mapping[str, Any], where: str = "record") -> None:
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}; a run record needs {list(REQUIRED)}")
    if not isinstance(rec["run_id"], str) or not rec["run_id"]:
        raise ConfigError(f"{where}: run_id must be a non-empty string")
    for key in ("N", "D"):
        v = rec[key]
        if not _number(v) or v <= 0:
            raise ConfigError(f"{where} ({rec['run_id']}): {key} must be a positive number, got {v!r}")
    if not isinstance(rec["ratios"], Mapping) or not isinstance(rec["family_loss"], Mapping):
        raise ConfigError(f"{where} ({rec['run_id']}): ratios and family_loss must be objects {{family: value}}")
    for fam, v in rec["ratios"].items():
        if not _number(v) or v < 0:
            raise ConfigError(f"{where} ({rec['run_id']}): ratios[{fam!r}] = {v!r}; a ratio is a number in [0, 1]")
    total = sum(float(v) for v in rec["ratios"].values())
    if abs(total - 1) > 0.01:
        # Within 1%: shares rounded by their authors; Observations renormalizes them and says which runs.
        raise ConfigError(f"{where} ({rec['run_id']}): ratios sum to {total:.8g}, not 1 (more than 1% off, so not rounding); "
                          "fix the record's ratios")
    for fam, v in rec["family_loss"].items():
        if not _number(v) or v <= 0:
            raise ConfigError(f"{where} ({rec['run_id']}): family_loss[{fam!r}] = {v!r} is not a positive finite loss")


class ResultsStore:
    """``path`` is the JSONL file; ``STUDY_DIR`` resolves to ``STUDY_DIR/results.jsonl``."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path / "results.jsonl" if path.is_dir() else path

    @property
    def lock(self) -> FileLock:
        """A fresh lock object per use: the store holds only its path, so it can be pickled and deep-copied
        (NeMo deep-copies the callbacks that hold one; a held FileLock carries a thread lock)."""
        return FileLock(str(self.path) + ".lock")

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def _read_unlocked(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        try:
            lines = self.path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 may sit inside a JSON string
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path} is not a results store (not UTF-8 text at byte {err.start}); give a results.jsonl "
                            "written by mlsl train / mlsl study") from None
        except IsADirectoryError:
            raise DataError(f"{self.path} is a directory; give a results.jsonl or the study directory holding one") from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{self.path}:{lineno}: malformed JSON ({err.msg}); fix or remove that line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{self.path}:{lineno}: expected a JSON object per line")
            validate_record(rec, f"{self.path}:{lineno}")
            records.append(rec)
        return records

    def read(self, dedupe: bool = False) -> list[dict[str, Any]]:
        """All records; duplicate ``run_id``s are an error unless ``dedupe`` (then the first wins)."""
        with self.lock:
            records = self._read_unlocked()
        seen: dict[str, int] = {}
        out = []
        for i, rec in enumerate(records):
            rid = rec["run_id"]
            if rid in seen:
                if not dedupe:
                    raise DataError(f"{self.path}: run_id {rid!r} appears more than once; pass --dedupe to keep the first")
                continue
            seen[rid] = i
            out.append(rec)
        return out

    def run_ids(self) -> set[str]:
        return {r["run_id"] for r in self.read(dedupe=True)}

    def append(self, record: Mapping[str, Any], *, skip_existing: bool = False) -> bool:
        """Append one record; returns False if it exists and ``skip_existing``, raises if it exists otherwise."""
        validate_record(record)
        line = json.dumps(dict(record), sort_keys=True, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            existing = {r["run_id"] for r in self._read_unlocked()}
            if record["run_id"] in existing:
                if skip_existing:
                    return False
                raise ConfigError(f"run_id {record['run_id']!r} is already in {self.path}; run ids must be unique")
            data = line.encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, data)
                if written != len(data):
                    # A short write (disk full, quota) leaves part of a line: cut it off again so the store stays whole.
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
                    raise DataError(f"{self.path}: wrote {written} of {len(data)} bytes of run {record['run_id']!r} "
                                    "(disk full?); the partial line was removed, nothing was recorded")
                os.fsync(fd)
            finally:
                os.close(fd)
        return True

    def extend(self, records: Iterable[Mapping[str, Any]]) -> int:
        return sum(self.append(r, skip_existing=True) for r in records)
