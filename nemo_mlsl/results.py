"""The results store: append-only JSONL, one run per line, safe under concurrent writers and crashes, at any size.

Beside ``STORE`` (``results.jsonl``) live

- ``STORE.lock``: the file lock every append (and the snapshot a read starts from) holds;
- ``STORE.index``: a cache (SQLite) of the run ids and of how many bytes of the store it covers, so that an append
  refuses a duplicate run id and writes its line without re-reading the store: its cost does not grow with the store.
  Before each use it is checked against the store (the file's identity, its size, the bytes at the start and just
  before the end it covers) and caught up by reading only the bytes appended since (another writer, a line added by
  hand); a store that was truncated or rewritten is indexed again from scratch. Deleting it is always safe;
- ``STORE.torn``: the last lines that crashes cut short, set aside (never silently dropped).

An append writes its complete line with a single ``write`` and ``fsync``, after a newline if the store's last line
lacks one. A last line without a newline that is not JSON is what a crash mid-write leaves: it is moved to
``STORE.torn`` with a warning naming both files, so ``--resume`` and ``mlsl fit`` carry on. Any other malformed line
is an error naming its line number. Reading streams the records (``iter_records``), so a store of a million runs is
read in bounded memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

from filelock import FileLock

from nemo_mlsl.errors import ConfigError, DataError, MLSLWarning

REQUIRED = ("run_id", "N", "D", "ratios", "family_loss")
INDEX_VERSION = 1
FINGERPRINT = 64  # bytes at the start of the store and just before the end the index covers, compared before each use


class StoreWarning(MLSLWarning):
    """Something in a results store was set aside (a torn last line); the message names the file and where it went."""


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


@dataclass
class _Snapshot:
    """The store as one locked look found it: ``end`` bytes of complete records (plus ``pending``, a last record
    without its newline), and, with an index, the run ids that appear more than once (id -> offset of the first)."""

    end: int = 0
    lines: int = 0
    pending: tuple[int, dict[str, Any]] | None = None  # (offset, record) of a last line that lacks its newline
    unended: bool = False  # the store's last line (a record, or blanks) lacks its newline: the next append ends it first
    duplicates: dict[str, int] | None = None  # None: no index (a full scan finds them)
    index: "_Index | None" = None


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); FileLock where there is no ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # Windows
        with FileLock(str(path)):
            yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _boot() -> str:
    """This host and its boot: an index written in an earlier boot may have lost unsynced writes in a crash."""
    import socket

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: the system's boot time stands in
        try:
            import psutil

            boot = str(int(psutil.boot_time()))
        except Exception:  # noqa: BLE001 - without either, a crash of the OS is not detected (the index stays a cache)
            boot = "unknown"
    return f"{socket.gethostname()}:{boot}"


BOOT = _boot()


@dataclass
class _Index:
    """The SQLite cache of run ids. Only ever used under the store's file lock, so SQLite's own locking is off
    (``nolock``: it misbehaves on network file systems). Its writes are not synced (``synchronous=OFF``, which keeps an
    append at a fraction of a millisecond): its rollback journal survives a killed process, and what only an operating
    system crash could lose or break is caught by the boot it records (``BOOT``): an index last written before this
    host last booted is rebuilt from the store, which every append does sync."""

    conn: sqlite3.Connection
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> "_Index":
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?nolock=1", uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=OFF")
            if conn.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
                with _transaction(conn):
                    for table in ("meta", "ids", "dups"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
                    conn.execute("CREATE TABLE ids (run_id TEXT PRIMARY KEY, offset INTEGER NOT NULL) WITHOUT ROWID")
                    conn.execute("CREATE TABLE dups (run_id TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID")
                    conn.execute(f"PRAGMA user_version = {INDEX_VERSION}")
            row = conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
            meta = json.loads(row[0]) if row else {}
        except BaseException:
            conn.close()
            raise
        return cls(conn, meta)

    def close(self) -> None:
        self.conn.close()

    def reset(self) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM ids")
            self.conn.execute("DELETE FROM dups")
            self.conn.execute("DELETE FROM meta")
        self.meta = {}

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return _transaction(self.conn)

    def add(self, run_id: str, offset: int) -> None:
        cur = self.conn.execute("INSERT INTO ids VALUES (?, ?) ON CONFLICT(run_id) DO NOTHING", (run_id, offset))
        if cur.rowcount == 0:
            self.conn.execute("INSERT INTO dups VALUES (?, 2) ON CONFLICT(run_id) DO UPDATE SET n = n + 1", (run_id,))

    def has(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM ids WHERE run_id = ?", (run_id,)).fetchone() is not None

    def first_offset(self, run_id: str) -> int | None:
        row = self.conn.execute("SELECT offset FROM ids WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else int(row[0])

    def duplicates(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT d.run_id, i.offset FROM dups d JOIN ids i USING (run_id)").fetchall())

    def ids(self) -> set[str]:
        return {r for (r,) in self.conn.execute("SELECT run_id FROM ids")}

    def set_meta(self, **values: Any) -> None:
        """What the index covers: one row, replaced whole."""
        self.conn.execute("INSERT INTO meta VALUES ('state', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (json.dumps(values, sort_keys=True),))
        self.meta = dict(values)


def _last_line_start(fh: BinaryIO, size: int) -> int:
    """The offset just after the last newline of the file's first ``size`` bytes (0 if there is none)."""
    pos = size
    while pos > 0:
        step = min(1 << 16, pos)
        fh.seek(pos - step)
        k = fh.read(step).rfind(b"\n")
        if k >= 0:
            return pos - step + k + 1
        pos -= step
    return 0


def _fingerprint(fh: BinaryIO, end: int) -> tuple[str, str]:
    """The first and the last ``FINGERPRINT`` bytes of ``[0, end)``, in hex."""
    fh.seek(0)
    head = fh.read(min(FINGERPRINT, end))
    fh.seek(max(0, end - FINGERPRINT))
    return head.hex(), fh.read(min(FINGERPRINT, end)).hex()


class ResultsStore:
    """``path`` is the JSONL file; ``STUDY_DIR`` resolves to ``STUDY_DIR/results.jsonl``. The object holds only its
    path (a lock, an index connection are opened per use), so it can be pickled and deep-copied (NeMo deep-copies
    the callbacks that hold one)."""

    # Each append is on disk (fsync) when it returns. Only what a test of many appends measures may switch it off
    # (locking and indexing are the same without it: the processes of a host share its page cache).
    fsync: bool = True

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path / "results.jsonl" if path.is_dir() else path

    @property
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The store's exclusive lock, ``STORE.lock`` (``flock``: any process, thread or host, as FileLock takes it).
        A fresh one per use: the store holds only its path."""
        return _flock(Path(str(self.path) + ".lock"))

    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + ".index")

    @property
    def torn_path(self) -> Path:
        return self.path.with_name(self.path.name + ".torn")

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- parsing -----------------------------------------------------------------------------------------
    def _parse(self, raw: bytes, lineno: int, offset: int) -> dict[str, Any] | None:
        """The record on one line (None for a blank line); a named error for anything else."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path}:{lineno}: not UTF-8 text (byte {offset + err.start} of the file); is it a results "
                            "store written by mlsl train / mlsl study? Fix or remove that line") from None
        if not text.strip():
            return None
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{self.path}:{lineno}: malformed JSON ({err.msg}); fix or remove that line") from None
        if not isinstance(rec, dict):
            raise DataError(f"{self.path}:{lineno}: expected a JSON object per line")
        validate_record(rec, f"{self.path}:{lineno}")
        return rec

    def _lines(self, fh: BinaryIO, start: int, end: int, lineno: int) -> Iterator[tuple[int, int, bytes]]:
        """(line number, offset, bytes without the newline) of the lines in ``[start, end)``; the last one may lack its newline."""
        fh.seek(start)
        pos = start
        while pos < end:
            raw = fh.readline(end - pos) if end - pos < (1 << 20) else fh.readline()
            if not raw:
                return
            raw = raw[: end - pos]
            yield lineno, pos, raw[:-1] if raw.endswith(b"\n") else raw
            pos += len(raw)
            lineno += 1

    # -- the locked look: torn last line, index caught up ------------------------------------------------
    def _open_index(self) -> _Index | None:
        """The index, or None where it cannot be used (the store's directory read-only, a broken file that cannot be
        replaced): the store then works by scanning, as before there was one."""
        for attempt in range(2):
            try:
                return _Index.open(self.index_path)
            except (sqlite3.Error, OSError):
                if attempt:
                    return None
                try:
                    self.index_path.unlink()  # a cache: a broken one is rebuilt
                except OSError:
                    return None
        return None

    def _snapshot(self) -> _Snapshot:
        """Under the lock: set a torn last line aside, bring the index up to date with the store, return what is there."""
        if not self.path.exists():
            if self.index_path.exists():
                idx = self._open_index()
                if idx is not None:
                    idx.reset()
                    return _Snapshot(index=idx)
            return _Snapshot()
        if self.path.is_dir():
            raise DataError(f"{self.path} is a directory; give a results.jsonl or the study directory holding one")
        idx = self._open_index()
        try:
            return self._look(idx)
        except sqlite3.Error:
            if idx is not None:
                idx.close()
            try:
                self.index_path.unlink()
            except OSError:
                pass
            return self._look(self._open_index())
        except BaseException:
            if idx is not None:
                idx.close()
            raise

    def _look(self, idx: _Index | None) -> _Snapshot:
        with open(self.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            size = st.st_size
            start, lines = 0, 0
            if idx is None:  # nothing to catch up: only the last line matters here (a full read parses the rest)
                start = _last_line_start(fh, size)
            elif self._covers(idx.meta, fh, st):
                start, lines = int(idx.meta["size"]), int(idx.meta.get("lines", 0))
            elif idx.meta:
                idx.reset()  # truncated, rewritten, replaced, or last written before a crash of this host: index it again
            end, pending, unended = start, None, False
            with idx.transaction() if idx is not None and (start < size or not idx.meta) else contextlib.nullcontext():
                for lineno, offset, raw in self._lines(fh, start, size, lines + 1):
                    if offset + len(raw) == size:  # the last line, without its newline
                        kind, rec = self._last_line(raw, lineno)
                        if kind == "torn":
                            self._set_aside(offset, raw)
                            st = os.fstat(fh.fileno())
                        else:
                            unended = True
                            pending = (offset, rec) if rec is not None else None
                        break
                    if idx is not None:
                        rec = self._parse(raw, lineno, offset)
                        if rec is not None:
                            idx.add(rec["run_id"], offset)
                    end, lines = offset + len(raw) + 1, lineno
                if idx is not None and (end != start or not idx.meta):
                    self._cover(idx, fh, st, end, lines)
        return _Snapshot(end=end, lines=lines, pending=pending, unended=unended, index=idx)

    @staticmethod
    def _duplicates(snap: _Snapshot) -> dict[str, int] | None:
        """The run ids that appear more than once (id -> offset of the first), from the index (None without one)."""
        if snap.index is None:
            return None
        dups = snap.index.duplicates()
        if snap.pending is not None:
            first = snap.index.first_offset(snap.pending[1]["run_id"])
            if first is not None:
                dups[snap.pending[1]["run_id"]] = first
        return dups

    @staticmethod
    def _covers(meta: Mapping[str, Any], fh: BinaryIO, st: os.stat_result) -> bool:
        """Whether the index still describes the store's first ``meta['size']`` bytes."""
        if meta.get("version") != INDEX_VERSION or not isinstance(meta.get("size"), int):
            return False
        host, _, _ = str(meta.get("boot")).rpartition(":")
        rebooted = meta.get("boot") != BOOT and host == BOOT.rpartition(":")[0]  # (another host's boots are not known here)
        if rebooted or not (0 <= meta["size"] <= st.st_size and meta.get("ino") == st.st_ino and meta.get("dev") == st.st_dev):
            return False
        if meta["size"] == st.st_size and meta.get("mtime") != st.st_mtime_ns:
            return False  # written to since, but no longer: edited in place
        return _fingerprint(fh, meta["size"]) == (meta.get("head"), meta.get("tail"))

    @staticmethod
    def _cover(idx: _Index, fh: BinaryIO, st: os.stat_result, end: int, lines: int) -> None:
        head, tail = _fingerprint(fh, end)
        idx.set_meta(version=INDEX_VERSION, size=end, lines=lines, ino=st.st_ino, dev=st.st_dev, mtime=st.st_mtime_ns,
                     head=head, tail=tail, boot=BOOT)

    def _last_line(self, raw: bytes, lineno: int) -> tuple[str, dict[str, Any] | None]:
        """A last line without its newline: ``('torn', None)`` if it is not JSON (a write cut short), else
        ``('record', rec)`` (the newline alone is missing) or ``('blank', None)``."""
        if not raw.strip():
            return "blank", None
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "torn", None
        if not isinstance(rec, dict):
            raise DataError(f"{self.path}:{lineno}: expected a JSON object per line")
        validate_record(rec, f"{self.path}:{lineno}")
        return "record", rec

    def _set_aside(self, offset: int, raw: bytes) -> None:
        """Move a torn last line (``raw`` at ``offset``, no newline) to ``STORE.torn`` and cut it from the store."""
        side = self.torn_path
        try:
            with open(side, "ab") as fh:
                fh.write(raw + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.truncate(self.path, offset)
        except OSError as err:
            raise DataError(f"{self.path}: its last line was cut short ({len(raw)} bytes without a newline, as a crash "
                            f"mid-write leaves it) and could not be set aside in {side} ({err.strerror}); move those bytes "
                            "out of the store by hand") from None
        warnings.warn(f"{self.path}: its last line was cut short ({len(raw)} bytes without a newline, as a crash mid-write "
                      f"leaves it); it was moved to {side} and the store's complete records are kept", StoreWarning,
                      stacklevel=4)

    # -- reading -----------------------------------------------------------------------------------------
    def iter_records(self, dedupe: bool = False) -> Iterator[dict[str, Any]]:
        """Every record, streamed in store order (memory does not grow with the store); duplicate ``run_id``s are an
        error unless ``dedupe`` (then the first wins). Records appended while the iteration runs are not included."""
        if not self.path.exists() and not self.path.parent.exists():
            return iter(())
        with self.lock:
            snap = self._snapshot()
            try:
                snap.duplicates = self._duplicates(snap)
            finally:
                if snap.index is not None:
                    snap.index.close()
        if snap.duplicates and not dedupe:
            first = min(snap.duplicates, key=snap.duplicates.get)
            raise DataError(f"{self.path}: run_id {first!r} appears more than once; pass --dedupe to keep the first")
        return self._stream(snap, dedupe)

    def _stream(self, snap: _Snapshot, dedupe: bool) -> Iterator[dict[str, Any]]:
        seen: set[str] | None = set() if snap.duplicates is None else None
        dups = snap.duplicates or {}
        if not (snap.end or snap.pending):
            return
        with open(self.path, "rb") as fh:
            for lineno, offset, raw in self._lines(fh, 0, snap.end, 1):
                rec = self._parse(raw, lineno, offset)
                if rec is None:
                    continue
                rid = rec["run_id"]
                if seen is not None:
                    if rid in seen:
                        if not dedupe:
                            raise DataError(f"{self.path}: run_id {rid!r} appears more than once; pass --dedupe to keep the first")
                        continue
                    seen.add(rid)
                elif rid in dups and dups[rid] != offset:
                    continue
                yield rec
        if snap.pending is not None:
            rid = snap.pending[1]["run_id"]
            if seen is not None and rid in seen and not dedupe:
                raise DataError(f"{self.path}: run_id {rid!r} appears more than once; pass --dedupe to keep the first")
            if (seen is None or rid not in seen) and not (rid in dups and dups[rid] != snap.pending[0]):
                yield snap.pending[1]

    def read(self, dedupe: bool = False) -> list[dict[str, Any]]:
        """All records as a list (``iter_records`` streams them)."""
        return list(self.iter_records(dedupe=dedupe))

    def run_ids(self) -> set[str]:
        """The run ids in the store (from the index: the store is not read)."""
        if not self.path.exists():
            return set()
        with self.lock:
            snap = self._snapshot()
            try:
                if snap.index is None:
                    return {r["run_id"] for r in self._stream(snap, dedupe=True)}
                ids = snap.index.ids()
            finally:
                if snap.index is not None:
                    snap.index.close()
        if snap.pending is not None:
            ids.add(snap.pending[1]["run_id"])
        return ids

    # -- writing -----------------------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any], *, skip_existing: bool = False) -> bool:
        """Append one record; returns False if it exists and ``skip_existing``, raises if it exists otherwise."""
        return self._append([record], skip_existing=skip_existing) == 1

    def extend(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append every record not yet in the store (one lock for all); returns how many were added."""
        return self._append(list(records), skip_existing=True)

    def _append(self, records: list[Mapping[str, Any]], *, skip_existing: bool) -> int:
        from nemo_mlsl.outputs import output_file

        lines = []
        for r in records:
            validate_record(r)
            lines.append((str(r["run_id"]), (json.dumps(dict(r), sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")))
        if not lines:
            return 0
        output_file(self.path, "results store")
        with self.lock:
            snap = self._snapshot()
            try:
                return self._write(snap, lines, skip_existing)
            finally:
                if snap.index is not None:
                    snap.index.close()

    def _write(self, snap: _Snapshot, lines: list[tuple[str, bytes]], skip_existing: bool) -> int:
        """Under the lock: write each line whose run id is new, one ``write`` and ``fsync`` each; index them."""
        idx = snap.index
        scanned = None if idx is not None else {r["run_id"] for r in self._stream(snap, dedupe=True)}
        this_call: set[str] = set()
        if snap.pending is not None:
            this_call.add(snap.pending[1]["run_id"])
        new: list[tuple[str, int]] = []  # (run id, offset of its line) of the records written, for the index
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            pos = os.fstat(fd).st_size
            for rid, data in lines:
                if rid in this_call or (rid in scanned if scanned is not None else idx.has(rid)):
                    if skip_existing:
                        continue
                    raise ConfigError(f"run_id {rid!r} is already in {self.path}; run ids must be unique")
                # a last line without its newline (a store cut with `head -c -1`, written by another tool) is ended first
                prefix = b"\n" if snap.unended and not new else b""
                n = os.write(fd, prefix + data)
                if n != len(prefix) + len(data):
                    # A short write (disk full, quota) leaves part of a line: cut it off so the store stays whole.
                    os.ftruncate(fd, pos)
                    raise DataError(f"{self.path}: wrote {n} of {len(prefix) + len(data)} bytes of run {rid!r} (disk full?); "
                                    "the partial line was removed, nothing more was recorded")
                if self.fsync:
                    os.fsync(fd)
                new.append((rid, pos + len(prefix)))
                this_call.add(rid)
                pos += n
        finally:
            os.close(fd)
        if idx is not None and new:
            ended = [(snap.pending[1]["run_id"], snap.pending[0])] if snap.pending is not None else []
            self._index_appended(idx, ended + new, snap.lines + int(snap.unended) + len(new), pos)
        return len(new)

    def _index_appended(self, idx: _Index, written: list[tuple[str, int]], lines: int, end: int) -> None:
        """Record what this append completed (run ids at the offsets of their lines), the store's new end and line count."""
        with open(self.path, "rb") as fh, idx.transaction():
            for rid, offset in written:
                idx.add(rid, offset)
            self._cover(idx, fh, os.fstat(fh.fileno()), end, lines)
