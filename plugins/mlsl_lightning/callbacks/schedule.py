"""TensorBoard: the mixture schedule's target ratio per family, logged at every step boundary (``schedule/FAM/ratio``)."""

from __future__ import annotations

from typing import Mapping, Sequence

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nemo_mlsl.data.schedule import MixtureSchedule


class ScheduleCallback(pl.Callback):
    """At the first batch of each interval, logs every family's ratio (0 included) at the interval's first step; a
    resumed run logs only the boundaries it reaches itself (the ones before were logged by the run it continues)."""

    def __init__(self, schedule: MixtureSchedule, family_ratios: Sequence[Mapping[str, float]]):
        self.schedule = schedule
        self.family_ratios = [dict(r) for r in family_ratios]  # each interval's validated ratios, every family
        self.logged: set[int] = set()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step in self.logged or step not in self.schedule.boundaries or trainer.global_rank != 0:
            return
        self.logged.add(step)
        k = self.schedule.index_at(step)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for fam, p in sorted(self.family_ratios[k].items()):
                    logger.experiment.add_scalar(f"schedule/{fam}/ratio", float(p), step)
