"""Progress of a long fit (law selection's folds, bootstrap replicates): a bar on a terminal, else one line per step."""

from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm.auto import tqdm

from nemo_mlsl.terminal import interactive


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class FitProgress:
    """One tqdm bar per phase (``start``) on a terminal; otherwise (``show=False``, or output piped to a file or a
    log) each finished step's line through ``log``, so lines never run into each other. ``note`` lines show in
    both modes (above the bar on a terminal)."""

    def __init__(self, show: bool = True, log: Callable[[str], None] = _stderr):
        self.show, self.log = show, log
        self.bar = None
        self.started = time.perf_counter()

    def start(self, total: int, desc: str) -> None:
        self.close()
        self.started = time.perf_counter()
        if self.show and interactive():
            self.bar = tqdm(total=total, desc=desc, unit="fit", dynamic_ncols=True, leave=False)

    def step(self, line: str | None = None, n: int = 1) -> None:
        """``n`` steps done; ``line`` says what (logged off a terminal; a step without a line is only counted)."""
        if self.bar is not None:
            self.bar.update(n)
            if line:
                self.bar.set_postfix_str(line[:60], refresh=True)
        elif self.show and line:
            self.log(f"{line}  ({time.perf_counter() - self.started:.0f}s elapsed)")

    def note(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        elif self.show:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

