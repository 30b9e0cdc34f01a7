"""A mixture schedule in Megatron-Bridge's data path (``mlsl train --backend bridge --schedule FILE``).

``ScheduledDataset`` is a dataset config that Bridge's own ``get_dataset_provider`` hands its sample counts
to (Bridge's ``DatasetProvider`` contract): the training set is the core's ``ScheduledBlend`` (each interval's
samples from megatron-core's blend builder, joined into one dataset whose ``dataset_id`` indexes the run's one
table of training datasets), sized by Bridge's ``train_iters`` x global batch size; validation and test are the
family blend's, built by Bridge's registered GPT provider exactly as for a run on ``--ratios``.

With ``adaptive`` the schedule holds only the first interval: the training set is ``DecidedSamples`` over the
run's whole length (Bridge's sampler is sized by ``train_iters`` x the global batch), its later intervals added at
their boundaries by ``mlsl_bridge.adaptive.AdaptiveMixtureCallback`` (``live``: the ``ScheduledBlend`` it extends,
the one the run was built with), and a sample of an interval not decided yet is refused, never replaced.

``ScheduledMixture`` is the realised mixture after a step (the callback's ``mixture/*`` scalars and the
record's ``realized_ratios``) and ``schedule_record`` the record's ``schedule``: both counted with megatron's
own index builder (``blended_counts``, each interval's first samples), which draws greedily, so they equal
the joined dataset's ``dataset_id`` counts without the trainer's dataset at hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlsl_bridge.compat import ensure_importable
from nemo_mlsl.data.blend import BlendConfig, blended_counts
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.data.schedule import DecidedSamples, MixtureSchedule, ScheduledBlend
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.metrics import mixture_summary

ensure_importable()

from megatron.bridge.data.base import DatasetBuildContext, DatasetProvider  # noqa: E402
from megatron.bridge.training.config import GPTDatasetConfig  # noqa: E402


def scheduled_blend(data: str | Path, schedule: MixtureSchedule, within: str, seq_length: int, seed: int,
                    max_epochs: float, global_batch_size: int, where: str = "schedule") -> ScheduledBlend:
    """The core's ``ScheduledBlend`` of a prepared data directory: every interval's ratios checked against the data
    (errors name ``where``'s interval and field)."""
    return ScheduledBlend(Manifest.load(data), BlendConfig({}, within, seq_length, seed, max_epochs), schedule,
                          global_batch_size, where=where)


@dataclass(kw_only=True)
class ScheduledDataset(DatasetProvider):
    """Bridge's dataset config for a run on a mixture schedule. ``blend`` is the family blend (training prefixes
    weighted by the schedule's mean ratios: the run's table of training datasets; every language's validation
    prefix), from which Bridge builds the validation and test sets."""

    blend: GPTDatasetConfig
    data_dir: str
    schedule: dict[str, Any]  # MixtureSchedule.to_dict()
    within: str = "natural"
    global_batch_size: int = 1
    max_epochs: float = 4.0
    adaptive: bool = False  # the schedule is the first interval; AdaptiveMixtureCallback adds the next ones

    @property
    def seq_length(self) -> int:
        return self.blend.seq_length

    @property
    def random_seed(self) -> int:
        return self.blend.random_seed

    @property
    def tokenizer(self) -> Any:  # Bridge's setup hands the dataset config its tokenizer
        return self.blend.tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.blend.tokenizer = value

    def finalize(self) -> None:
        super().finalize()
        self.blend.finalize()

    def mixture_schedule(self) -> MixtureSchedule:
        return MixtureSchedule.from_dict(self.schedule)

    def build_datasets(self, context: DatasetBuildContext) -> tuple[Any, Any, Any]:
        if self.adaptive:
            return self._build_adaptive(context)
        sched = scheduled_blend(self.data_dir, self.mixture_schedule(), self.within, self.seq_length, self.random_seed,
                                self.max_epochs, self.global_batch_size)
        if context.train_samples != sched.train_samples:
            raise ConfigError(f"Megatron-Bridge asks for {context.train_samples} training samples, but the schedule holds "
                              f"{sched.schedule.steps} steps x {self.global_batch_size} = {sched.train_samples}; the "
                              "schedule's last until_step must be train.train_iters and its global batch Bridge's")
        self.built = sched.build(1, self.blend.path_to_cache)  # not a field: the config prints without it
        return (self.built.train, *self._evaluation(context))

    def _build_adaptive(self, context: DatasetBuildContext) -> tuple[Any, Any, Any]:
        """The first interval built, inside ``DecidedSamples`` of the run's length (``live``: the run's own
        ``ScheduledBlend``, else one rebuilt from ``schedule``, as for a config loaded from YAML)."""
        from nemo_mlsl.data.manifest import Manifest
        from nemo_mlsl.data.blend import BlendConfig

        sched = getattr(self, "live", None)
        if sched is None:
            config = BlendConfig({}, self.within, self.seq_length, self.random_seed, self.max_epochs)
            sched = ScheduledBlend(Manifest.load(self.data_dir), config, MixtureSchedule.from_dict(self.schedule),
                                   self.global_batch_size, where=None, open_ended=True)
            self.live = sched
        if context.train_samples < sched.train_samples:
            raise ConfigError(f"Megatron-Bridge asks for {context.train_samples} training samples, fewer than the adaptive "
                              f"run's first interval ({sched.schedule.steps} steps x {self.global_batch_size}); lower the "
                              "interval or raise train.train_iters")
        self.built = sched.build(1, self.blend.path_to_cache)
        return (DecidedSamples(self.built, context.train_samples), *self._evaluation(context))

    def _evaluation(self, context: DatasetBuildContext) -> tuple[Any, Any]:
        """Validation and test: the family blend's, built by Bridge's registered GPT provider."""
        from megatron.bridge.data.utils import pretrain_train_valid_test_datasets_provider

        evaluation = copy.copy(self.blend)
        evaluation.blend_per_split = [None, *self.blend.blend_per_split[1:]]
        _, valid, test = pretrain_train_valid_test_datasets_provider([0, context.valid_samples, context.test_samples],
                                                                      evaluation)
        return valid, test


class ScheduledMixture:
    """The realised mixture after ``step`` steps of a schedule: every interval's draws so far, as
    ``mixture/<family>/{ratio,tokens,epochs}`` (the ``TrainingMixture`` of a one-interval run)."""

    def __init__(self, sched: ScheduledBlend, family_of: Mapping[str, str], train_tokens: Mapping[str, int]):
        self.sched, self.family_of, self.train_tokens = sched, dict(family_of), dict(train_tokens)

    def counts(self, step: int) -> np.ndarray:
        """Samples drawn from each of the run's training datasets in steps ``[0, step)``."""
        run = {(lang, prefix): i for i, (lang, prefix, _) in enumerate(self.sched.blend.train_parts)}
        out = np.zeros(len(run), dtype=np.int64)
        gbs = self.sched.global_batch_size
        for iv, blend in zip(self.sched.schedule.intervals, self.sched.interval_blends):
            n = (min(step, iv.until_step) - iv.start_step) * gbs
            if n <= 0:
                break
            drawn = blended_counts([w for _, _, w in blend.train_parts], n)
            for (lang, prefix, _), c in zip(blend.train_parts, drawn.tolist()):
                out[run[(lang, prefix)]] += c
        return out

    def __call__(self, step: int) -> dict[str, float]:
        seq = self.sched.config.seq_length
        return mixture_summary((self.counts(step) * seq).tolist(), self.sched.train_languages, self.family_of,
                               self.train_tokens)


def schedule_record(sched: ScheduledBlend) -> dict[str, Any]:
    """The record's ``schedule``: every interval with its targets and the family shares its samples realised (the
    CPU backend's field)."""
    out = sched.schedule.to_dict()
    for iv, blend in zip(out["intervals"], sched.interval_blends):
        n = (iv["until_step"] - iv["start_step"]) * sched.global_batch_size
        drawn = blended_counts([w for _, _, w in blend.train_parts], n)
        realized = {f: 0.0 for f in sched.manifest.families}
        for (lang, _, _), c in zip(blend.train_parts, drawn.tolist()):
            realized[sched.manifest.family_of(lang)] += c / n
        iv["realized"] = dict(sorted(realized.items()))
    return out
