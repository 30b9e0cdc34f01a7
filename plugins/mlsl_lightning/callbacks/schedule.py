"""The mixture schedule on the CPU path: TensorBoard's ``schedule/FAM/ratio`` at every step boundary, and an adaptive
run's policy, which decides the next interval at each boundary from the run's validation history."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger


class ScheduleCallback(pl.Callback):
    """At the first batch of each interval, logs every family's ratio (0 included) at the interval's first step; a
    resumed run logs only the boundaries it reaches itself (the ones before were logged by the run it continues).
    ``dm``: the data module, read at each batch (an adaptive run's schedule grows)."""

    def __init__(self, dm: Any):
        self.dm = dm
        self.logged: set[int] = set()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        step, schedule = trainer.global_step, self.dm.schedule
        if step in self.logged or step not in schedule.boundaries or trainer.global_rank != 0:
            return
        self.logged.add(step)
        ratios = self.dm.scheduled.interval_blends[schedule.index_at(step)].family_ratios
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for fam, p in sorted(ratios.items()):
                    logger.experiment.add_scalar(f"schedule/{fam}/ratio", float(p), step)


class AdaptiveMixtureCallback(pl.Callback):
    """At each boundary of an adaptive run (every ``interval`` steps), after the validation there, asks the policy for
    the next interval's ratios from the run's validation history (``metrics.jsonl``: the fixed validation set only)
    and each family's tokens drawn so far, within each family's data cap; the data module builds the interval and the
    schedule is rewritten (``schedule.json``). A run resumed at a boundary decides there again, from the same history."""

    def __init__(self, dm: Any, name: str, policy: Callable, interval: int, max_steps: int, metrics: str | Path,
                 schedule_path: str | Path, min_share: float, smoothing: float, max_change: float = 1.0):
        self.dm, self.name, self.policy = dm, name, policy
        self.interval, self.max_steps = int(interval), int(max_steps)
        self.metrics, self.schedule_path = Path(metrics), Path(schedule_path)
        self.min_share, self.smoothing, self.max_change = float(min_share), float(smoothing), float(max_change)
        self.seconds, self.decisions = 0.0, 0  # the policy's cost: its decisions and the building of each next interval

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._decide(trainer)  # a run resumed at a boundary whose decision its checkpoint does not hold

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._decide(trainer)

    def losses(self, step: int) -> dict[int, dict[str, float]]:
        """The validation history up to ``step`` (``metrics.jsonl``: the fixed validation set only), step -> family ->
        loss."""
        lines: dict[int, dict] = {}
        if self.metrics.is_file():
            for line in self.metrics.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                if rec["step"] <= step:
                    # the first validation of a step counts: a resumed run validates again where it restarts (Lightning
                    # re-runs the validation its checkpoint was saved before), and a decision must read what the run
                    # it continues read
                    lines.setdefault(rec["step"], rec)
        return {s: rec["family_loss"] for s, rec in lines.items()}

    def _decide(self, trainer: pl.Trainer) -> None:
        from nemo_mlsl.policies import next_interval

        dm, step = self.dm, trainer.global_step
        if step != dm.schedule.steps or step >= self.max_steps:
            return
        t0 = time.perf_counter()
        ratios, until, evidence = next_interval(self.policy, dm.scheduled, self.losses(step), step=step,
                                                interval=self.interval, max_steps=self.max_steps, min_share=self.min_share,
                                                smoothing=self.smoothing, max_change=self.max_change)
        dm.extend(ratios, until, self.name, evidence)
        self.seconds += time.perf_counter() - t0
        self.decisions += 1
        if trainer.global_rank == 0:
            dm.schedule.write(self.schedule_path)
