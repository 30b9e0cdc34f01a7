"""Tokens consumed per family and language, realized ratios and epochs so far, logged with training metrics."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch

from nemo_mlsl.distributed import reduce_language_sums
from nemo_mlsl.metrics import mixture_summary


class MixtureMonitorCallback(pl.Callback):
    """Counts loss-bearing tokens of each training batch by ``dataset_id``; logs every ``every`` steps."""

    def __init__(self, languages: Sequence[str], family_of: Mapping[str, str], train_tokens: Mapping[str, int], every: int = 10):
        self.languages = list(languages)
        self.family_of = dict(family_of)
        self.train_tokens = dict(train_tokens)
        self.every = every
        self.counts = torch.zeros(len(self.languages), dtype=torch.float64)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counts.index_add_(0, batch["dataset_id"].long().cpu(), batch["loss_mask"].double().sum(1).cpu())
        if trainer.global_step % self.every == 0:
            for key, value in self.summary(reduce_language_sums(self.counts)).items():
                pl_module.log(key, value, batch_size=1)

    def summary(self, counts: torch.Tensor) -> dict[str, float]:
        return mixture_summary(counts.tolist(), self.languages, self.family_of, self.train_tokens)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = state["counts"].clone()
