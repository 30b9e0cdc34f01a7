"""``FamilyPreTrainingDataModule``: NeMo's ``PreTrainingDataModule`` with the study's fixed validation set, and
optionally a mixture schedule for training.

NeMo sizes the validation blend by the run's number of evaluations, so megatron's shuffle, and with it the
samples Lightning's evaluation reads first, changes with the run's length. Here training is NeMo's own;
validation and test are ``nemo_mlsl.data.blend.validation_set`` (fixed count, fixed seed) padded to whole
global batches (``ValidationWindow``). NeMo's sampler starts validation at sample 0 and Lightning restarts it
at every evaluation, so every evaluation of every run reads the same samples in the same order.

With ``schedule`` (a ``MixtureSchedule``'s dict form, which NeMo-Run serialises) training reads
``ScheduledBlend``'s joined dataset instead of NeMo's blend: each interval's samples from megatron's own blend
builder, sized by NeMo's global batch size, one ``dataset_id`` table for the run. NeMo's sampler reads it in
order, so the samples of steps ``[start, until)`` are exactly that interval's.

With ``adaptive=True`` the schedule holds only the first interval; ``NeMoAdaptiveMixtureCallback`` adds each next one at
its boundary (``extend``), and every checkpoint keeps the intervals decided so far (``state_dict``), which a resumed run
rebuilds before it reads a sample. NeMo's sampler is sized when the loader is made, so the training dataset reports the run's
whole length (``max_steps`` x the global batch) from the start, and a sample of an interval not decided yet is refused
(``UndecidedSample``), never replaced. The recipe reads it with ``num_workers=0`` (a worker process would hold a copy
made before the decisions).
"""

from __future__ import annotations

from typing import Any, Mapping

from nemo.collections.llm.gpt.data.pre_training import PreTrainingDataModule

from nemo_mlsl.data.blend import DEFAULT_MAX_EPOCHS, BlendConfig, ValidationWindow, validation_set
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.data.schedule import BuiltSchedule, DecidedSamples, MixtureSchedule, ScheduledBlend, UndecidedSample
from nemo_mlsl.errors import ConfigError

__all__ = ["FamilyPreTrainingDataModule", "DecidedSamples", "UndecidedSample"]


class FamilyPreTrainingDataModule(PreTrainingDataModule):
    """``PreTrainingDataModule(paths=..., ...)`` plus ``data_dir`` (the prepared data), ``val_samples_per_language``
    and, for a scheduled run, ``schedule`` with the blend's ``within`` and ``max_data_epochs``."""

    def __init__(self, *args: Any, data_dir: str, val_samples_per_language: int, schedule: Mapping[str, Any] | None = None,
                 within: str = "natural", max_data_epochs: float = DEFAULT_MAX_EPOCHS, adaptive: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.data_dir = data_dir
        self.val_samples_per_language = val_samples_per_language
        self.schedule_spec = dict(schedule) if schedule is not None else None
        self.within = within
        self.max_data_epochs = max_data_epochs
        self.schedule: MixtureSchedule | None = None  # the validated schedule, once built
        self.built: BuiltSchedule | None = None
        self.adaptive = bool(adaptive)  # the schedule is the first interval; the policy's callback adds the next ones
        self.scheduled: ScheduledBlend | None = None
        if self.adaptive and self.schedule_spec is None:
            raise ConfigError("an adaptive data module starts from a schedule holding its first interval")

    def build(self, trainer_max_steps: int, trainer_val_check_interval: int, trainer_limit_val_batches: Any,
              trainer_limit_test_batches: Any) -> None:
        if self.schedule_spec is None:
            # NeMo's training blend; its validation and test blends at one batch each (replaced just below)
            super().build(trainer_max_steps, trainer_max_steps + 1, 1, 1)
            fixed = validation_set(Manifest.load(self.data_dir), self.val_samples_per_language, self.seq_length,
                                   self.index_mapping_dir)
        else:
            self.built = self._build_schedule(trainer_max_steps)
            self._train_ds, fixed = self.built.train, self.built.validation
            if self.adaptive:
                self._train_ds = DecidedSamples(self.built, trainer_max_steps * self.data_sampler.global_batch_size)
            if self.create_attention_mask:
                self._train_ds = _CausalMask(self._train_ds, self.seq_length)
        if self.create_attention_mask:  # NeMo asks for one where TransformerEngine is missing (megatron's local attention)
            fixed = _CausalMask(fixed, self.seq_length)
        self._validation_ds = ValidationWindow(fixed, self.data_sampler.global_batch_size)
        self._test_ds = ValidationWindow(fixed, self.data_sampler.global_batch_size)

    def _build_schedule(self, max_steps: int) -> BuiltSchedule:
        """The schedule checked against the trainer's ``max_steps`` and the data, its intervals built (an adaptive
        run: its first interval, which must end by ``max_steps``)."""
        self.schedule = MixtureSchedule.from_dict(self.schedule_spec, None if self.adaptive else max_steps, where="schedule")
        if self.adaptive and self.schedule.steps > max_steps:
            raise ConfigError(f"schedule: the adaptive run's first interval ends at step {self.schedule.steps}, after the "
                              f"run's last ({max_steps}); lower the interval or raise max_steps")
        config = BlendConfig({}, self.within, self.seq_length, self.seed, self.max_data_epochs)
        self.scheduled = ScheduledBlend(Manifest.load(self.data_dir), config, self.schedule,
                                        self.data_sampler.global_batch_size, open_ended=self.adaptive)
        return self.scheduled.build(self.val_samples_per_language, self.index_mapping_dir)

    def state_dict(self) -> dict[str, Any]:
        """NeMo's state (the consumed samples) and, for a scheduled run, the schedule trained so far: an adaptive run's
        checkpoint holds the intervals decided before it, so a resumed run reads the samples it would have read."""
        state = super().state_dict()
        if self.schedule is not None:
            state["schedule"] = self.schedule.to_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """A checkpoint's state: an adaptive run's decided intervals rebuilt as they were (after its first, which this
        run's recipe builds: they must agree); a fixed schedule must be this run's."""
        super().load_state_dict(dict(state_dict))
        saved = state_dict.get("schedule")
        if saved is None or self.schedule is None:
            return
        if not self.adaptive:
            if saved != self.schedule.to_dict():
                raise ConfigError("the checkpoint was trained on another mixture schedule than this run's; resume with "
                                  "the run's own schedule (its schedule.json) or start it in a new log directory")
            return
        self.scheduled.replay(saved, "resume with the run's own --ratios and --interval, or start it in a new log "
                                     "directory", self.index_mapping_dir)
        self.schedule = self.scheduled.schedule

    def extend(self, ratios: Mapping[str, float], until_step: int, reason: str, evidence: Mapping[str, Any]):
        """An adaptive run's next interval ``[current end, until_step)`` on ``ratios``, its samples built now."""
        if not self.adaptive or self.scheduled is None:
            raise RuntimeError("extend: only a built adaptive data module takes a next interval")
        iv = self.scheduled.extend(ratios, until_step, reason, evidence, self.index_mapping_dir)
        self.schedule = self.scheduled.schedule
        return iv


class _CausalMask:
    """Samples with the causal ``attention_mask`` megatron's GPTDataset adds when asked to (``dataset_index``, the
    blend's sample index the mixture monitor reads, passed through)."""

    def __init__(self, samples: Any, seq_length: int):
        import torch

        self.samples = samples
        self.mask = torch.tril(torch.ones((seq_length, seq_length))).unsqueeze(0) < 0.5

    @property
    def dataset_index(self) -> Any:
        return getattr(self.samples, "dataset_index", None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict:
        return {**self.samples[idx], "attention_mask": self.mask}
