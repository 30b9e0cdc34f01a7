"""Ctrl-C and SIGTERM end a command with a word and the shell's exit code (130, 143), not a traceback or exit 1.

While ``interrupts()`` is active, SIGINT and SIGTERM raise ``Interrupted`` in the main thread. It is a
``KeyboardInterrupt``, so every cleanup written for Ctrl-C runs for both (Lightning tears its trainer down, a child
process is killed by ``subprocess.run``) — and Lightning, which turns a KeyboardInterrupt into ``exit(1)``, or its
own SIGTERM handling into ``exit()`` with no code, cannot hide which signal it was: ``signum`` keeps the first.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@dataclass
class Received:
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)

    @property
    def word(self) -> str:
        return NAMES.get(self.signum or signal.SIGINT, f"ended by signal {self.signum}")


@contextlib.contextmanager
def interrupts() -> Iterator[Received]:
    received = Received()
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        if received.signum is None:
            received.signum = signum
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in NAMES}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)
