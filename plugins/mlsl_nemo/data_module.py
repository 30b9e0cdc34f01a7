"""``FamilyPreTrainingDataModule``: NeMo's ``PreTrainingDataModule`` with the study's fixed validation set.

NeMo sizes the validation blend by the run's number of evaluations, so megatron's shuffle, and with it the
samples Lightning's evaluation reads first, changes with the run's length. Here training is NeMo's own;
validation and test are ``nemo_mlsl.data.blend.validation_set`` (fixed count, fixed seed) padded to whole
global batches (``ValidationWindow``). NeMo's sampler starts validation at sample 0 and Lightning restarts it
at every evaluation, so every evaluation of every run reads the same samples in the same order.
"""

from __future__ import annotations

from typing import Any

from nemo.collections.llm.gpt.data.pre_training import PreTrainingDataModule

from nemo_mlsl.data.blend import ValidationWindow, validation_set
from nemo_mlsl.data.manifest import Manifest


class FamilyPreTrainingDataModule(PreTrainingDataModule):
    """``PreTrainingDataModule(paths=..., ...)`` plus ``data_dir`` (the prepared data) and ``val_samples_per_language``."""

    def __init__(self, *args: Any, data_dir: str, val_samples_per_language: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.data_dir = data_dir
        self.val_samples_per_language = val_samples_per_language

    def build(self, trainer_max_steps: int, trainer_val_check_interval: int, trainer_limit_val_batches: Any,
              trainer_limit_test_batches: Any) -> None:
        # NeMo's training blend; its validation and test blends at one batch each (replaced just below)
        super().build(trainer_max_steps, trainer_max_steps + 1, 1, 1)
        fixed = validation_set(Manifest.load(self.data_dir), self.val_samples_per_language, self.seq_length,
                               self.index_mapping_dir)
        if self.create_attention_mask:  # NeMo asks for one where TransformerEngine is missing (megatron's local attention)
            fixed = _CausalMask(fixed, self.seq_length)
        self._validation_ds = ValidationWindow(fixed, self.data_sampler.global_batch_size)
        self._test_ds = ValidationWindow(fixed, self.data_sampler.global_batch_size)


class _CausalMask:
    """The fixed validation samples with the causal ``attention_mask`` megatron's GPTDataset adds when asked to."""

    def __init__(self, samples: Any, seq_length: int):
        import torch

        self.samples = samples
        self.mask = torch.tril(torch.ones((seq_length, seq_length))).unsqueeze(0) < 0.5

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict:
        return {**self.samples[idx], "attention_mask": self.mask}
