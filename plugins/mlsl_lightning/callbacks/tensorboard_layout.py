"""TensorBoard: one multi-line chart per metric across families, and hparams for the HParams view."""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from nemo_mlsl.tb_layout import custom_scalars_layout

__all__ = ["TensorBoardLayoutCallback", "custom_scalars_layout"]


class TensorBoardLayoutCallback(pl.Callback):
    """Writes the custom-scalars layout and the run's hparams (ratios, N, D, recipe) at fit start."""

    def __init__(self, hparams: Mapping[str, Any]):
        self.hparams = dict(hparams)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and trainer.global_rank == 0:
                logger.experiment.add_custom_scalars(custom_scalars_layout())
                logger.log_hyperparams(self.hparams, {"hp/final_val_loss": float("nan")})
