"""Creating outputs: the one place that makes an output directory (or a file's directory), with a named error where
that cannot be done, and that writes files atomically with the permissions every other file of a run gets.

``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 directories whatever the umask; a file renamed into
place keeps them, so a teammate on a shared file system could read a run's ``metrics.jsonl`` but not its
``result.json``. Everything written here honours the umask instead, as ``open()`` does.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nemo_mlsl.errors import ConfigError


def umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere it is set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def honour_umask(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode ``open()`` (0666) or ``mkdir()`` (0777) would have given it under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def _blocker(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a directory."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def check_output(path: str | Path, what: str) -> Path:
    """Refuse, by name, an output path that no directory can be made for (a file is in the way), creating nothing:
    for what a dry run only describes, or what another process will write."""
    path = Path(path)
    blocker = _blocker(path.parent)
    if blocker is not None:
        raise ConfigError(f"{what} {str(path)!r}: {str(blocker)!r} is a file, not a directory, so nothing can be written "
                          f"under it; choose another {what}")
    return path


def output_dir(path: str | Path, what: str, *, create: bool = True) -> Path:
    """Create the directory ``path`` (and its parents) for output; ``what`` names it for the user (``--out``). A named
    error where a file is in the way or the directory cannot be made. ``create=False``: only its parent is made (the
    caller moves a finished directory into place)."""
    path = Path(path)
    blocker = _blocker(path)
    if blocker is not None:
        where = "" if blocker == path else ", so nothing can be written under it"
        raise ConfigError(f"{what} {str(path)!r}: {str(blocker)!r} is a file, not a directory{where}; choose another {what}")
    try:
        (path if create else path.parent).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{what} {str(path)!r} cannot be created ({err.strerror}); choose another {what}") from None
    return path


def output_file(path: str | Path, what: str) -> Path:
    """A file path to write (``what`` names it: ``--plot``), its directory created; a named error where that cannot be done."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; give a file name (e.g. {str(path / ('x' + (path.suffix or '.out')))!r})")
    blocker = _blocker(path.parent)
    if blocker is not None:
        raise ConfigError(f"{what} {str(path)!r}: {str(blocker)!r} is a file, not a directory, so nothing can be written "
                          f"under it; choose another {what}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{what} {str(path)!r}: its directory cannot be created ({err.strerror}); choose another {what}") from None
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` through a temporary file beside ``path`` and rename: readers never see half a file, and the file
    gets the umask's permissions like any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON (indented, sorted keys, UTF-8) atomically (``write_bytes_atomic``)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
