"""One process at a time in an output directory: ``mlsl study`` holds its ``--out`` for its whole life, ``mlsl train``
its run directory, ``mlsl transfer run`` its ``--runs``. A second process is refused at once with one line naming the
holder (pid, host, command, since when).

The lock is ``DIR/mlsl.lock``: an exclusive ``flock`` (released by the kernel however the holder ends) on a file that
says who holds it, removed on a clean release (a taker checks that the file it locked is still the one at that path,
so a removal can never let two in). A file that names a holder no process holds the lock of is stale: left by a process of this host that died, it is taken over with a warning; left by a process of another host
(whose end this host cannot see), it is refused, and the message says which file to remove once that process is gone.
Re-entrant within a process (a study's inline runs lock their run directories inside the study's lock).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nemo_mlsl.errors import ConfigError, MLSLWarning
from nemo_mlsl.outputs import output_dir

LOCK_NAME = "mlsl.lock"
_held: dict[Path, tuple[int, int]] = {}  # lock file -> (pid, depth) of what this process holds


class LockWarning(MLSLWarning):
    """A stale lock was taken over."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    since: str

    @classmethod
    def me(cls, command: str | None = None) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), command or this_command(), time.strftime("%Y-%m-%d %H:%M:%S %Z"))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (`{self.command}`, since {self.since})"

    def alive(self) -> bool:
        """Whether its process still runs (only knowable on its own host)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return True


def this_command() -> str:
    """This process's command line, as the user typed it (``mlsl study ...`` also when run as ``python -m nemo_mlsl.cli``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("mlsl", "__main__.py"):
        return shlex.join(["mlsl", *argv[1:]])
    return shlex.join(argv) or "python"


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
        return Holder(int(doc["pid"]), str(doc["host"]), str(doc["command"]), str(doc["since"]))
    except (ValueError, KeyError, TypeError):
        return Holder(-1, "an unknown host", f"unreadable lock file ({text[:60]!r})", "an unknown time")


def _write(fd: int, holder: Holder) -> None:
    data = (json.dumps(holder.__dict__) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _flock(fd: int) -> bool | None:
    """Try the exclusive flock without waiting: True (taken), False (held by another), None (not supported here)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


@contextlib.contextmanager
def hold(directory: str | Path, what: str = "--out", command: str | None = None) -> Iterator[Path]:
    """Hold ``directory`` (created if needed) for the duration; ``what`` names it in messages (``--out``)."""
    directory = output_dir(directory, what)
    path = (directory / LOCK_NAME).resolve()
    pid, depth = _held.get(path, (None, 0))
    if pid == os.getpid():  # this process holds it already
        _held[path] = (pid, depth + 1)
        try:
            yield directory
        finally:
            _held[path] = (pid, depth)
        return
    fd = _acquire(path, directory, what, command)
    _held[path] = (os.getpid(), 0)
    try:
        yield directory
    finally:
        _held.pop(path, None)
        try:
            path.unlink()  # a clean release (while still locked: a taker that opened this file sees it gone and retries)
        except OSError:
            os.ftruncate(fd, 0)  # cannot remove it: empty says nobody holds it
        finally:
            os.close(fd)  # and the flock goes with the descriptor


def _acquire(path: Path, directory: Path, what: str, command: str | None) -> int:
    """The descriptor of the locked file, holding this process's name; a named error where another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            locked = _flock(fd)
            if locked and not _same_file(fd, path):  # released (and removed) between our open and our flock: again
                os.close(fd)
                continue
            _take(fd, locked, path, directory, what, command)
            return fd
        except BaseException:
            os.close(fd)
            raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def _take(fd: int, locked: bool | None, path: Path, directory: Path, what: str, command: str | None) -> None:
    previous = _read(fd)
    here = socket.gethostname()
    if locked is False:
        holder = previous.describe() if previous else "another process (it has not said which yet)"
        raise ConfigError(f"{what} {directory} is in use by {holder}; wait for it to end or stop it, or choose another {what}")
    if previous is not None:
        if previous.host != here:
            raise ConfigError(f"{what} {directory} is in use by {previous.describe()} according to {path}; wait for it to "
                              f"end or stop it (once that process is gone, remove {path}), or choose another {what}")
        if locked is None and previous.alive():  # no flock here: the pid is all there is to go by
            raise ConfigError(f"{what} {directory} is in use by {previous.describe()}; wait for it to end or stop it, or "
                              f"choose another {what}")
        warnings.warn(f"{what} {directory}: took over the lock {path} left by {previous.describe()}, which ended without "
                      "releasing it", LockWarning, stacklevel=4)
    _write(fd, Holder.me(command))
