"""Per-family and per-language validation loss, perplexity and bits per byte at every validation.

Runs after each validation batch (accumulating ``[languages, 2]`` sums from the model's
``validation_step`` outputs) and at validation end (one data-parallel reduction, then logging).
It never changes ``val_loss``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from nemo_mlsl.distributed import reduce_language_sums
from nemo_mlsl.metrics import family_metrics


class FamilyValidationCallback(pl.Callback):
    def __init__(self, languages: Sequence[str], family_of: Mapping[str, str], bytes_per_token: Mapping[str, float]):
        self.languages = list(languages)
        self.family_of = dict(family_of)
        self.bytes_per_token = dict(bytes_per_token)
        self.sums = torch.zeros(len(self.languages), 2, dtype=torch.float64)
        self.last: dict[str, Any] | None = None
        self.last_step: int | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sums = torch.zeros(len(self.languages), 2, dtype=torch.float64)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        ids = outputs["dataset_id"].long().cpu()
        self.sums[:, 0].index_add_(0, ids, outputs["loss_sum"].double().cpu())
        self.sums[:, 1].index_add_(0, ids, outputs["tokens"].double().cpu())

    def compute(self, sums: torch.Tensor | np.ndarray) -> dict[str, Any]:
        return family_metrics(np.asarray(sums), self.languages, self.family_of, self.bytes_per_token)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sums = reduce_language_sums(self.sums)
        if trainer.sanity_checking:
            return
        self.last = self.compute(sums)
        self.last_step = trainer.global_step
        pl_module.log_dict({f"{key}/{name}/{metric}": float(m[metric])
                            for kind, key in (("families", "val_family"), ("languages", "val_language"))
                            for name, m in self.last[kind].items() for metric in ("loss", "bpb", "ppl")},
                           batch_size=1, sync_dist=False)
