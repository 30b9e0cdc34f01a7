"""Per-language validation sums inside NeMo's own loss reduction (last pipeline stage only).

``forward`` adds ``[2, languages]`` (loss sum, token count) for the microbatch; ``reduce`` keeps NeMo's
``val_loss`` unchanged, all-reduces the sums once per step over data+context parallel ranks (never
tensor parallel: those hold identical losses) and accumulates them over the validation epoch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from nemo_mlsl.distributed import microbatch_language_sums


@functools.lru_cache(maxsize=None)
def make_reduction_class():
    """Build the subclass lazily (importing this module needs no NeMo), once: callers compare with ``isinstance``."""
    from nemo.lightning.megatron_parallel import MaskedTokenLossReduction

    class FamilyMaskedTokenLossReduction(MaskedTokenLossReduction):
        def __init__(self, num_languages: int, group_fn: Callable[[], Any] | None = None):
            super().__init__(validation_step=True)
            self.num_languages = num_languages
            self.group_fn = group_fn
            self.acc: torch.Tensor | None = None

        def forward(self, batch: dict, forward_out: torch.Tensor):
            loss_sum, num_tokens, out = super().forward(batch, forward_out)
            ids = batch.get("dataset_id")
            if ids is None and self.num_languages == 1:
                # one validation prefix: megatron builds a plain GPTDataset, whose samples carry no dataset_id
                ids = torch.zeros(forward_out.shape[0], dtype=torch.long, device=forward_out.device)
            if ids is not None:
                out["language_sums"] = microbatch_language_sums(forward_out, batch["loss_mask"], ids, self.num_languages)
            return loss_sum, num_tokens, out

        def reduce(self, losses_reduced_per_micro_batch):
            loss = super().reduce(losses_reduced_per_micro_batch)
            parts = [x["language_sums"] for x in losses_reduced_per_micro_batch if "language_sums" in x]
            if parts:
                sums = torch.stack(parts).sum(0)
                if torch.distributed.is_initialized():
                    group = self.group_fn() if self.group_fn else None
                    torch.distributed.all_reduce(sums, group=group)
                self.acc = sums if self.acc is None else self.acc + sums
            return loss

    return FamilyMaskedTokenLossReduction
