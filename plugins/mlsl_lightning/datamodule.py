"""``FamilyBlendDataModule``: the family-ratio blend as a Lightning data module.

Used by the CPU trainer directly. On the NeMo path ``nemo_mlsl.data.blend.blend_paths`` hands the same
flattened weights to NeMo's ``PreTrainingDataModule`` (whose ``MegatronDataSampler`` contract it then meets).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler

from nemo_mlsl.data.blend import BlendConfig
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.data.schedule import BuiltSchedule, MixtureSchedule, ScheduledBlend
from nemo_mlsl.errors import ConfigError


class ResumableSequentialSampler(Sampler[int]):
    """Indices ``start, start+1, ...``: the blend is already shuffled, so the order is the sample index.

    ``len`` stays the full length so Lightning's restored position in the epoch (batches already
    seen) plus what is left adds up; only the first pass after a resume starts at ``start``.
    """

    def __init__(self, length: int, start: int = 0):
        self.length = length
        self.start = start

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(range(start, self.length))

    def __len__(self) -> int:
        return self.length


class _Indices:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> int:
        return int(idx)


class _IndexBatch:
    """A batch of sample indices (kept out of Lightning's device transfer until it becomes samples)."""

    def __init__(self, indices: list[int]):
        self.indices = indices


def _index_collate(indices: list[int]) -> _IndexBatch:
    return _IndexBatch(list(indices))


def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    out = {}
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        out[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])
    out["dataset_id"] = torch.tensor([int(s["dataset_id"]) for s in samples], dtype=torch.long)
    return out


class FamilyBlendDataModule(pl.LightningDataModule):
    """Train on the family blend; validate on one equal-per-language blend of every validation split.

    ``schedule`` (a ``MixtureSchedule`` over ``max_steps``) changes the ratios at its step boundaries; without one the
    run is one interval on ``ratios``. The schedule is saved in every checkpoint, and a checkpoint of another schedule
    is refused: a resumed run reads the samples of the uninterrupted one."""

    def __init__(
        self,
        data_dir: str,
        ratios: Mapping[str, float] | None,
        *,
        within: str = "natural",
        seq_length: int = 128,
        micro_batch_size: int = 16,
        global_batch_size: int = 16,
        max_steps: int = 100,
        val_samples_per_language: int = 16,
        seed: int = 1234,
        max_epochs: float = 4.0,
        normalize: bool = False,
        schedule: MixtureSchedule | None = None,
        schedule_where: str = "schedule",
        adaptive: bool = False,
    ):
        super().__init__()
        if global_batch_size % micro_batch_size:
            raise ValueError(f"global_batch_size {global_batch_size} must be a multiple of micro_batch_size {micro_batch_size}")
        if (ratios is None) == (schedule is None):
            raise ConfigError("give the run's family ratios or its schedule (--ratios or --schedule), not both")
        if schedule is not None and not adaptive and schedule.steps != max_steps:
            raise ConfigError(f"the schedule ends at step {schedule.steps} but the run trains {max_steps} steps; make its last "
                              f"interval end at step {max_steps}")
        self.manifest = Manifest.load(data_dir)
        self.adaptive = adaptive  # the schedule is its first interval; a policy adds the next ones during the run
        self.schedule = schedule if schedule is not None else MixtureSchedule.one_interval(ratios, max_steps)
        if adaptive and schedule is None:
            raise ConfigError("an adaptive run starts from a schedule holding its first interval")
        self.scheduled = ScheduledBlend(self.manifest, BlendConfig(dict(ratios or {}), within, seq_length, seed, max_epochs,
                                                                   normalize),
                                        self.schedule, global_batch_size, where=None if schedule is None else schedule_where,
                                        open_ended=adaptive)
        self.blend = self.scheduled.blend  # the whole run: its mean ratios and its training datasets
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.max_steps = max_steps
        self.val_samples_per_language = val_samples_per_language
        self.consumed_samples = 0
        self.built: BuiltSchedule | None = None
        if not adaptive:
            self.scheduled.check_epochs()  # fail before any model is built
        else:
            self.scheduled.interval_blends[0].check_epochs(self.schedule.steps * global_batch_size)

    @property
    def train_samples(self) -> int:
        return self.max_steps * self.global_batch_size

    @property
    def families(self) -> list[str]:
        return sorted(self.manifest.families)

    @property
    def validation_languages(self) -> list[str]:
        return self.blend.validation_languages

    @property
    def train_languages(self) -> list[str]:
        return self.blend.train_languages

    def setup(self, stage: str | None = None) -> None:
        if self.built is None:
            self.built = self.scheduled.build(self.val_samples_per_language)

    def train_dataloader(self) -> DataLoader:
        """The run's ``max_steps`` global batches, no more: megatron's blend holds a few samples beyond the ones asked
        for, and a loader over all of them had one batch more than the run trains (Lightning's bar counted to 20/21)."""
        self.setup()
        if self.adaptive:  # sample indices now, samples at the step: the next interval is decided after the loader fetched
            sampler = ResumableSequentialSampler(self.train_samples, self.consumed_samples)
            return DataLoader(_Indices(self.train_samples), batch_size=self.micro_batch_size, sampler=sampler,
                              collate_fn=_index_collate)
        sampler = ResumableSequentialSampler(min(len(self.built.train), self.train_samples), self.consumed_samples)
        return DataLoader(self.built.train, batch_size=self.micro_batch_size, sampler=sampler, collate_fn=_collate)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """An adaptive run's training batch of sample indices becomes its samples here, at the step that trains it
        (Lightning fetches one batch ahead, before the validation that decides the next interval)."""
        if isinstance(batch, _IndexBatch):
            return _collate([self.built.train[int(i)] for i in batch.indices])
        return batch

    def extend(self, ratios: Mapping[str, float], until_step: int, reason: str, evidence: Mapping[str, Any]):
        iv = self.scheduled.extend(ratios, until_step, reason, evidence)
        self.schedule = self.scheduled.schedule
        return iv

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.built.validation, batch_size=self.micro_batch_size, shuffle=False, collate_fn=_collate)

    def state_dict(self) -> dict[str, Any]:
        step = self.trainer.global_step if self.trainer is not None else 0
        return {"consumed_samples": step * self.global_batch_size, "schedule": self.schedule.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("schedule")
        if self.adaptive and saved is not None:  # the intervals decided before the checkpoint, rebuilt as they were
            self.scheduled.replay(saved, "resume with the run's own options, or start a new --out")
            self.schedule = self.scheduled.schedule
        elif saved is not None and saved != self.schedule.to_dict():
            raise ConfigError("the checkpoint was trained on another mixture schedule than this run's; resume with the run's "
                              "own --ratios / --schedule (its schedule.json), or start a new --out")
        self.consumed_samples = int(state.get("consumed_samples", 0))
