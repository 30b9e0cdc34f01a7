"""``NeMoFamilyValidationCallback``: installs the per-language loss reduction on every model chunk,
broadcasts the epoch's sums from the last pipeline stage and logs per-family and per-language metrics
with the same names as the CPU path (``val_family/<family>/loss``, ``.../bpb``, ``val_language/<code>/...``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch

from nemo_mlsl.metrics import family_metrics


def _dp_cp_group():
    from megatron.core import parallel_state

    return parallel_state.get_data_parallel_group(with_context_parallel=True)


class NeMoFamilyValidationCallback(pl.Callback):
    def __init__(self, languages: Sequence[str], family_of: Mapping[str, str], bytes_per_token: Mapping[str, float]):
        self.languages = list(languages)
        self.family_of = dict(family_of)
        self.bytes_per_token = dict(bytes_per_token)
        self.last: dict[str, Any] | None = None

    def _install(self, trainer: pl.Trainer) -> None:
        from mlsl_nemo.loss_reduction import make_reduction_class

        cls = make_reduction_class()
        for chunk in trainer.strategy.model:
            if not isinstance(getattr(chunk, "_validation_loss_reduction", None), cls):
                chunk._validation_loss_reduction = cls(len(self.languages), _dp_cp_group)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._install(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._install(trainer)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        for chunk in trainer.strategy.model:
            red = getattr(chunk, "_validation_loss_reduction", None)
            if red is not None:
                red.acc = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        from megatron.core import parallel_state

        red = getattr(pl_module, "_validation_loss_reduction", None)
        acc = red.acc if red is not None and red.acc is not None else None
        sums = acc if acc is not None else torch.zeros(2, len(self.languages), dtype=torch.float64, device=torch.cuda.current_device())
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            torch.distributed.broadcast(sums, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                        group=parallel_state.get_pipeline_model_parallel_group())
        if trainer.sanity_checking:
            return
        self.last = family_metrics(sums.T.cpu().numpy(), self.languages, self.family_of, self.bytes_per_token)
        for kind, key in (("families", "val_family"), ("languages", "val_language")):
            for name, m in self.last[kind].items():
                for metric in ("loss", "bpb"):
                    pl_module.log(f"{key}/{name}/{metric}", float(m[metric]), batch_size=1, sync_dist=False, rank_zero_only=False)
