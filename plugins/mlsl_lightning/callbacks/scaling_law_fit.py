"""``ScalingLawFitCallback``: at a run's final validation, append its record to the study's results
store, refit the law once enough runs exist, rewrite the report, and log the fit to TensorBoard
(``nemo_mlsl.fitting.live``, shared with the Megatron-Bridge backend). It never fails the training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nemo_mlsl.fitting.live import LiveFit


class ScalingLawFitCallback(pl.Callback):
    def __init__(
        self,
        store: str | Path,
        report_dir: str | Path,
        make_record: Callable[[pl.Trainer], Mapping[str, Any] | None],
        *,
        law: str | None = "joint_family",
        bootstrap: int = 50,
        tokens: Mapping[str, float] | None = None,
        fit_kwargs: Mapping[str, Any] | None = None,
        figures: tuple[str, ...] | None = ("loss_vs_ratio",),
    ):
        self.live = LiveFit(store, report_dir, law=law, bootstrap=bootstrap, tokens=tokens, fit_kwargs=fit_kwargs, figures=figures)
        self.make_record = make_record

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step < (trainer.max_steps or 0) or trainer.global_rank != 0:
            return
        record = None
        try:
            record = self.make_record(trainer)
            if record is None:
                return
            self.live.record(record)
        except Exception as err:  # noqa: BLE001 - a failed record must never fail the training run
            self.live.fail(err)
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is not None:
            self.live.log_to(tb.experiment, trainer.global_step, record)
