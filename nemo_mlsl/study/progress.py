"""One progress display per study: runs done of all planned, elapsed time, and an ETA from this session's pace."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from tqdm.auto import tqdm

from nemo_mlsl.terminal import interactive


class StudyProgress:
    """A tqdm bar over the study's runs on a terminal; otherwise (``show=False``, or output piped to a file or log)
    one log line per finished run, so lines never run into each other."""

    def __init__(self, total: int, show: bool, log: Callable[[str], None], initial: int = 0):
        self.bar = None
        self.total, self.show, self.log = total, show, log
        self.initial = initial  # recorded before this session (--resume)
        self.count = 0
        self.started = time.time()
        if show and interactive():
            self.bar = tqdm(total=total, initial=initial, desc="study", unit="run", dynamic_ncols=True)

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value
        if getattr(self, "bar", None) is not None:
            self.bar.total = value
            self.bar.refresh()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.log(line)

    def eta(self) -> float | None:
        if not self.count:
            return None
        return (time.time() - self.started) / self.count * max(0, self.total - self.initial - self.count)

    def done(self, spec: Any, record: Mapping[str, Any] | None) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(spec.run_id, refresh=True)
            return
        losses = " ".join(f"{f}={v:.3f}" for f, v in sorted((record or {}).get("family_loss", {}).items()))
        eta = self.eta()
        self.log(f"[{self.initial + self.count}/{self.total}] {spec.run_id} done  {losses}  "
                 f"({time.time() - self.started:.0f}s elapsed" + (f", ETA {eta:.0f}s)" if eta is not None else ")"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
