"""Tokens consumed per family and language, realized ratios and epochs so far, logged with training metrics."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch

from nemo_mlsl.distributed import reduce_language_sums


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
        total = float(counts.sum()) or 1.0
        fams: dict[str, list[float]] = {}
        out: dict[str, float] = {}
        for lang, n in zip(self.languages, counts.tolist()):
            f = fams.setdefault(self.family_of[lang], [0.0, 0.0])
            f[0] += n
            f[1] += self.train_tokens[lang]
            out[f"mixture_language/{lang}/ratio"] = n / total
        for fam, (n, avail) in sorted(fams.items()):
            out[f"mixture/{fam}/ratio"] = n / total
            out[f"mixture/{fam}/tokens"] = n
            out[f"mixture/{fam}/epochs"] = n / max(1.0, avail)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = state["counts"].clone()
