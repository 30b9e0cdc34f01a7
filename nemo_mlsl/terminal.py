"""Whether progress may redraw a line in place: only on a terminal. Piped to a file or a CI log, a bar's carriage
returns do not return, and its redraws run into each other on one line; there, progress is one line per event."""

from __future__ import annotations

import sys
from typing import TextIO


def interactive(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default: stderr, where tqdm draws) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
