"""A mixture schedule: family ratios that change at chosen step boundaries (issue #26's foundation).

A ``MixtureSchedule`` is a list of intervals, each ``[start_step, until_step)`` with its own family ratios and the
reason for them (``"fixed"`` for a schedule given up front; a policy's name and evidence for one decided during the
run). ``ScheduledBlend`` builds each interval's samples with megatron-core's own blend builder, exactly as
``FamilyBlend.build`` builds one run's blend (so each interval realises its shares exactly), with that interval's
sample count (its steps x the global batch size) and a seed derived from the run's seed and the interval's index
(interval 0 keeps the run's seed: a one-interval schedule, i.e. ``--ratios``, reads the samples it always read).
The intervals are joined into one dataset of fixed length: sample ``i`` is interval ``k``'s sample ``i - start_k``,
its ``dataset_id`` mapped to one table of training datasets for the whole run (the union of the intervals').

The schedule round-trips through JSON (``to_dict`` / ``from_dict``): a run writes it to its directory
(``schedule.json``) and into every checkpoint, so a resumed run reads exactly the samples an uninterrupted one reads.

File form (YAML or JSON; ``mlsl train --schedule FILE``)::

    intervals:
      - {until_step: 100, ratios: {amber: 0.7, cobalt: 0.2, jade: 0.1}}
      - {until_step: 300, ratios: {amber: 0.4, cobalt: 0.4, jade: 0.2}}
      - {ratios: {amber: 0.2, cobalt: 0.4, jade: 0.4}}    # no until_step: to the end of the run

An interval may also carry ``reason`` (default ``fixed``) and ``evidence`` (a mapping: a policy's record).
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.data.blend import BlendConfig, BuiltBlend, FamilyBlend, audit_drawn, validation_set
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import validate_ratios
from nemo_mlsl.mixtures.core import RATIO_TOLERANCE
from nemo_mlsl.typed_config import typed

SCHEDULE_FILE = "schedule.json"
SHAPE = "intervals: [{until_step: STEP, ratios: {family: ratio, ...}}, ...] (the last interval may omit until_step)"


@dataclass(frozen=True)
class IntervalSpec:
    """One interval as a user writes it (``until_step`` omitted: to the end of the run)."""

    ratios: dict[str, float]
    until_step: int | None = None
    reason: str = "fixed"
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Interval:
    """Steps ``[start_step, until_step)`` trained on ``ratios``; ``reason`` and ``evidence`` say why."""

    start_step: int
    until_step: int
    ratios: dict[str, float]
    reason: str = "fixed"
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.until_step - self.start_step

    def to_dict(self) -> dict[str, Any]:
        return {"start_step": self.start_step, "until_step": self.until_step, "ratios": dict(self.ratios),
                "reason": self.reason, "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class MixtureSchedule:
    """The run's intervals, back to back from step 0 to ``steps``."""

    intervals: tuple[Interval, ...]

    @property
    def steps(self) -> int:
        return self.intervals[-1].until_step

    @property
    def boundaries(self) -> list[int]:
        """The first step of every interval (0 first)."""
        return [iv.start_step for iv in self.intervals]

    def index_at(self, step: int) -> int:
        """The interval that trains step ``step`` (0-based optimizer steps)."""
        return max(0, min(len(self.intervals) - 1, bisect.bisect_right(self.boundaries, int(step)) - 1))

    def ratios_at(self, step: int) -> dict[str, float]:
        return dict(self.intervals[self.index_at(step)].ratios)

    def mean_ratios(self) -> dict[str, float]:
        """Each family's share of the whole run's samples (intervals weighted by their steps)."""
        fams = sorted({f for iv in self.intervals for f in iv.ratios})
        return {f: sum(iv.ratios.get(f, 0.0) * iv.steps for iv in self.intervals) / self.steps for f in fams}

    def to_dict(self) -> dict[str, Any]:
        return {"intervals": [iv.to_dict() for iv in self.intervals]}

    @classmethod
    def one_interval(cls, ratios: Mapping[str, float], steps: int, reason: str = "fixed") -> "MixtureSchedule":
        """The schedule of a run on one mixture (``--ratios``)."""
        return cls((Interval(0, int(steps), dict(ratios), reason),))

    @classmethod
    def from_dict(cls, data: Any, steps: int | None = None, where: str = "schedule",
                  default_steps: int | None = None) -> "MixtureSchedule":
        """A schedule from its file form or its ``to_dict`` form. ``steps``: the run's length, which an open last
        interval runs to and a given last ``until_step`` must equal (None: the schedule's own end, or
        ``default_steps`` for an open last interval). Boundaries must increase and every interval
        must hold at least one step (one global batch); the ratios are checked against the data by
        ``ScheduledBlend``."""
        if isinstance(data, Mapping) and set(data) - {"intervals"}:
            raise ConfigError(f"{where}: unknown field(s) {sorted(set(data) - {'intervals'})}; expected {SHAPE}")
        items = data.get("intervals") if isinstance(data, Mapping) else None
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where} has no intervals; expected {SHAPE}")
        specs = []
        for k, item in enumerate(items):
            if isinstance(item, Mapping):
                item = {key: v for key, v in item.items() if key != "start_step"}  # the to_dict form carries it
            specs.append(typed(IntervalSpec, item, f"{where} intervals[{k}]"))
        intervals, start = [], 0
        for k, spec in enumerate(specs):
            name = f"{where} intervals[{k}].until_step"
            end = spec.until_step
            if end is None:
                if k != len(specs) - 1:
                    raise ConfigError(f"{name} is missing; only the last interval may leave it out (it then runs to the "
                                      "end of the run)")
                if steps is None and default_steps is None:
                    raise ConfigError(f"{name} is missing and the run's length is not known; give the last interval's "
                                      "until_step or the run's --max-steps")
                end = int(steps if steps is not None else default_steps)
            if end == start:
                raise ConfigError(f"{name} = {end} leaves interval {k} without steps (it starts at step {start}); an "
                                  "interval needs at least one step, i.e. one global batch: raise until_step or drop the "
                                  "interval")
            if end < start:
                raise ConfigError(f"{name} = {end} is before the interval's start (step {start}, the previous "
                                  "interval's until_step); boundaries must increase: list the intervals in step order")
            if not spec.reason.strip():
                raise ConfigError(f"{where} intervals[{k}].reason is empty; say why (e.g. fixed)")
            intervals.append(Interval(start, int(end), dict(spec.ratios), spec.reason, dict(spec.evidence)))
            start = int(end)
        schedule = cls(tuple(intervals))
        if steps is not None and schedule.steps != int(steps):
            raise ConfigError(f"{where} intervals[{len(specs) - 1}].until_step = {schedule.steps}, but the run trains "
                              f"{int(steps)} steps (--max-steps / --tokens / the recipe); make the last interval end at "
                              f"step {int(steps)} or leave its until_step out")
        return schedule

    @classmethod
    def load(cls, path: str | Path, steps: int | None = None, default_steps: int | None = None) -> "MixtureSchedule":
        """A schedule file (YAML or JSON), with errors naming the file, the field and the fix."""
        from nemo_mlsl.userfiles import read_yaml

        return cls.from_dict(read_yaml(path, "--schedule", SHAPE), steps, where=f"--schedule {str(path)!r}:",
                             default_steps=default_steps)

    def write(self, path: str | Path) -> None:
        from nemo_mlsl.outputs import write_json_atomic

        write_json_atomic(path, self.to_dict())


def interval_seed(seed: int, k: int) -> int:
    """Interval ``k``'s blend seed: the run's seed for interval 0 (a one-interval run reads the samples a plain run
    reads), else a hash of (seed, k), so intervals do not share one shuffle."""
    if k == 0:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"mlsl-schedule/{int(seed)}/{k}".encode()).digest()[:4], "little") % (2**31 - 1)


def drawn_family_tokens(manifest: Manifest, train_languages: Sequence[str], dataset_index: Any, samples: int,
                        seq_length: int) -> dict[str, float]:
    """Each family's tokens in the first ``samples`` samples of a joined dataset's ``dataset_index`` (an index into
    ``train_languages``): what an adaptive run has drawn by a boundary (every backend's policy reads this)."""
    fams = sorted(manifest.families)
    fam_of_id = np.asarray([fams.index(manifest.family_of(l)) for l in train_languages], dtype=np.int64)
    drawn = np.asarray(dataset_index[:samples], dtype=np.int64)
    counts = np.bincount(fam_of_id[drawn], minlength=len(fams)) if len(drawn) else np.zeros(len(fams))
    return {f: float(counts[i]) * seq_length for i, f in enumerate(fams)}


class ScheduledDataset:
    """The intervals' megatron blends joined: sample ``i`` is interval ``k``'s sample ``i - start_k``, its
    ``dataset_id`` mapped into the run's one table of training datasets."""

    def __init__(self, parts: Sequence[tuple[int, int, Any, np.ndarray]]):
        self.parts = list(parts)  # (start sample, samples, dataset, id map: interval id -> run id)
        self.starts = [p[0] for p in self.parts]
        self.length = sum(p[1] for p in self.parts)
        self.dataset_index = np.concatenate([idmap[np.asarray(ds.dataset_index[:n], dtype=np.int64)]
                                             for _, n, ds, idmap in self.parts]).astype(np.int64)

    def append(self, n: int, dataset: Any, idmap: np.ndarray) -> None:
        """The next interval's ``n`` samples, after the last ones (an adaptive run's interval, decided at its start)."""
        self.parts.append((self.length, n, dataset, idmap))
        self.starts.append(self.length)
        self.length += n
        self.dataset_index = np.concatenate([self.dataset_index,
                                             idmap[np.asarray(dataset.dataset_index[:n], dtype=np.int64)]]).astype(np.int64)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        k = bisect.bisect_right(self.starts, idx) - 1
        start, _, ds, idmap = self.parts[k]
        sample = dict(ds[idx - start])
        sample["dataset_id"] = np.int16(idmap[int(sample["dataset_id"])])
        return sample


@dataclass
class BuiltSchedule(BuiltBlend):
    """A ``BuiltBlend`` over the whole run (targets: the schedule's mean ratios) plus each interval's blend."""

    schedule: MixtureSchedule | None = None
    interval_blends: list[FamilyBlend] = field(default_factory=list)
    global_batch_size: int = 1

    def interval_audit(self, k: int) -> dict[str, dict]:
        """The ``mlsl blend`` audit of interval ``k``, counted over its samples in the joined dataset."""
        iv = self.schedule.intervals[k]
        lo, hi = iv.start_step * self.global_batch_size, iv.until_step * self.global_batch_size
        return {**audit_drawn(self.interval_blends[k], self.train_languages, self.train.dataset_index[lo:hi]),
                "start_step": iv.start_step, "until_step": iv.until_step}


def schedule_record(schedule: MixtureSchedule, built: BuiltSchedule | None) -> dict[str, Any]:
    """A run record's ``schedule``: every interval with its targets and, once built, the family shares its samples
    realised (every backend's record carries this form)."""
    out = schedule.to_dict()
    if built is not None:
        for k, iv in enumerate(out["intervals"]):
            iv["realized"] = {f: a["realized"] for f, a in built.interval_audit(k)["families"].items()}
    return out


class ScheduledBlend:
    """A family blend whose ratios follow ``schedule``; validated against the data at construction."""

    def __init__(self, manifest: Manifest, config: BlendConfig, schedule: MixtureSchedule, global_batch_size: int,
                 where: str | None = "schedule", open_ended: bool = False):
        """``where``: how errors name the schedule (None: a one-interval run from ``--ratios``, whose errors are the
        blend's own). ``open_ended``: intervals are added during the run (``extend``), so the table of training
        datasets holds every language with data (any family may be drawn later)."""
        if global_batch_size < 1:
            raise ConfigError(f"global_batch_size must be >= 1, got {global_batch_size}")
        self.manifest, self.config, self.schedule, self.global_batch_size = manifest, config, schedule, int(global_batch_size)
        self.where = where
        self.interval_blends = []
        for k, iv in enumerate(schedule.intervals):
            cfg = BlendConfig(iv.ratios, config.within, config.seq_length, interval_seed(config.seed, k), config.max_epochs,
                              config.normalize)
            try:
                self.interval_blends.append(FamilyBlend(manifest, cfg))
            except ConfigError as err:
                if where is None:
                    raise
                raise ConfigError(f"{where} intervals[{k}].ratios (steps {iv.start_step}-{iv.until_step}): {err}") from None
        # the whole run as one blend: its targets are each family's share of all samples, its training datasets the
        # union of the intervals' (a language any interval draws), which the joined dataset's dataset_id indexes
        self.open_ended = open_ended
        self.built: BuiltSchedule | None = None
        if open_ended:
            fam_tokens = manifest.family_tokens()
            table = {f: 1.0 for f in sorted(manifest.families) if fam_tokens.get(f, 0) > 0}
            self.blend = FamilyBlend(manifest, BlendConfig(table, config.within, config.seq_length, config.seed,
                                                           config.max_epochs, normalize=True))
            return
        if len(self.interval_blends) == 1:
            self.blend = self.interval_blends[0]
            return
        steps = [iv.steps for iv in schedule.intervals]
        fams = sorted(manifest.families)
        mean = {f: sum(b.family_ratios.get(f, 0.0) * s for b, s in zip(self.interval_blends, steps)) / sum(steps) for f in fams}
        self.blend = FamilyBlend(manifest, BlendConfig(mean, config.within, config.seq_length, config.seed, config.max_epochs,
                                                       normalize=True))

    @property
    def train_samples(self) -> int:
        return self.schedule.steps * self.global_batch_size

    @property
    def family_ratios(self) -> dict[str, float]:
        """Each family's share of the run's samples (the schedule's mean)."""
        return self.blend.family_ratios

    @property
    def train_languages(self) -> list[str]:
        return self.blend.train_languages

    @property
    def validation_languages(self) -> list[str]:
        return self.blend.validation_languages

    def check_epochs(self) -> dict[str, float]:
        """The data caps over the whole schedule: every family and language, all intervals' draws added up."""
        try:
            return self.blend.check_epochs(self.train_samples)
        except ConfigError as err:
            if self.where is None:
                raise
            raise ConfigError(f"{self.where}: over the whole schedule (its steps-weighted mean ratios): {err}") from None

    def extend(self, ratios: Mapping[str, float], until_step: int, reason: str, evidence: Mapping[str, Any],
               cache_dir: str | Path | None = None) -> Interval:
        """Add the interval ``[current end, until_step)`` on ``ratios`` (an adaptive run's next interval) and, when
        built, build its samples."""
        if not self.open_ended:
            raise RuntimeError("extend: this schedule was given whole")
        k, start = len(self.schedule.intervals), self.schedule.steps
        if until_step <= start:
            raise ConfigError(f"the next interval must end after step {start}, got until_step {until_step}")
        fams = sorted(self.manifest.families)
        if set(ratios) <= set(fams):  # every family, in one order: the same ratios build the same blend bit for bit
            ratios = {f: float(ratios.get(f, 0.0)) for f in fams}
        cfg = BlendConfig(dict(ratios), self.config.within, self.config.seq_length, interval_seed(self.config.seed, k),
                          self.config.max_epochs, normalize=True)
        blend = FamilyBlend(self.manifest, cfg)
        # the interval keeps the ratios it was given where they sum to 1 (a policy's decision): normalising is not
        # idempotent in floating point, so a resumed run replaying the recorded ratios must not divide them again
        kept = dict(ratios) if abs(sum(ratios.values()) - 1.0) <= RATIO_TOLERANCE else dict(blend.family_ratios)
        iv = Interval(start, int(until_step), kept, reason, dict(evidence))
        self.interval_blends.append(blend)
        self.schedule = MixtureSchedule((*self.schedule.intervals, iv))
        if self.built is not None:
            n = iv.steps * self.global_batch_size
            self.built.train.append(n, blend.build_train(n, cache_dir), self._idmap(blend))
            self.built.schedule, self.built.train_samples = self.schedule, self.train_samples
        return iv

    def replay(self, saved: Mapping[str, Any], fix: str, cache_dir: str | Path | None = None) -> None:
        """A checkpoint's schedule (``MixtureSchedule.to_dict()``) rebuilt here: its first interval must be this run's
        (``fix`` says how to resume otherwise), each later one not here yet is added as it was decided (every backend's
        resume of an adaptive run)."""
        first, *later = saved["intervals"]
        if first != self.schedule.intervals[0].to_dict():
            raise ConfigError(f"the checkpoint's first interval differs from this run's ratios / interval; {fix}")
        for iv in later[len(self.schedule.intervals) - 1:]:
            self.extend(iv["ratios"], iv["until_step"], iv["reason"], iv["evidence"], cache_dir)

    def drawn_tokens(self, step: int) -> dict[str, float]:
        """Each family's tokens in the run's first ``step`` steps, once built (what an adaptive run has drawn by then)."""
        return drawn_family_tokens(self.manifest, self.train_languages, self.built.train.dataset_index,
                                   step * self.global_batch_size, self.config.seq_length)

    def _idmap(self, blend: FamilyBlend) -> np.ndarray:
        index = {(lang, prefix): i for i, (lang, prefix, _) in enumerate(self.blend.train_parts)}
        return np.asarray([index[(lang, prefix)] for lang, prefix, _ in blend.train_parts], dtype=np.int64)

    def build(self, val_samples_per_language: int, cache_dir: str | Path | None = None) -> BuiltSchedule:
        if val_samples_per_language < 1:
            raise ConfigError("val_samples_per_language must be >= 1")
        epochs = {} if self.open_ended else self.check_epochs()
        run_parts = self.blend.train_parts
        index = {(lang, prefix): i for i, (lang, prefix, _) in enumerate(run_parts)}
        parts = []
        for iv, blend in zip(self.schedule.intervals, self.interval_blends):
            n = iv.steps * self.global_batch_size
            ds = blend.build_train(n, cache_dir)
            if len(ds) < n:
                raise RuntimeError(f"megatron built {len(ds)} samples for interval steps {iv.start_step}-{iv.until_step}, "
                                   f"fewer than its {n}")
            idmap = np.asarray([index[(lang, prefix)] for lang, prefix, _ in blend.train_parts], dtype=np.int64)
            parts.append((iv.start_step * self.global_batch_size, n, ds, idmap))
        train = ScheduledDataset(parts)
        val = validation_set(self.manifest, val_samples_per_language, self.config.seq_length, cache_dir)
        self.built = BuiltSchedule(self.blend, train, val, epochs, self.train_samples, schedule=self.schedule,
                                   interval_blends=self.interval_blends, global_batch_size=self.global_batch_size)
        return self.built


class UndecidedSample(RuntimeError):
    """A sample of an interval the adaptive run's policy has not decided yet was asked for."""


class DecidedSamples:
    """An adaptive run's training samples (every backend's): ``len`` is the whole run's (what NeMo's and Bridge's
    samplers are sized by); the samples of the intervals decided so far are the joined dataset's, a later one is
    refused by name, never replaced."""

    def __init__(self, built: BuiltSchedule, length: int):
        self.built, self.length = built, int(length)

    @property
    def dataset_index(self) -> Any:
        return self.built.train.dataset_index  # the decided samples (the monitor reads the consumed ones)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        idx = int(idx)
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        decided = len(self.built.train)
        if idx >= decided:
            gbs = self.built.global_batch_size
            raise UndecidedSample(f"adaptive mixture: sample {idx} (step {idx // gbs}) was read before its interval was "
                                  f"decided (decided: steps 0-{decided // gbs}); the next interval is decided at the "
                                  "boundary's validation (the evaluation interval must divide the "
                                  "mixture's), and an adaptive run's loader must read no further ahead (num_workers=0)")
        return self.built.train[idx]


def adaptive_start(manifest: Manifest, config: BlendConfig, ratios: Mapping[str, float] | str | None, interval: int,
                   steps: int, global_batch_size: int, check_epochs: bool = True) -> "ScheduledBlend":
    """An adaptive run's open-ended schedule holding its first interval: ``ratios`` (checked against the data, its
    errors the blend's) for ``interval`` steps (at most the run's ``steps``); every backend's start."""
    from nemo_mlsl.mixtures import parse_ratios

    if ratios is None:
        raise ConfigError("adaptive: give the first interval's ratios (ratios='fam=p,...' / --ratios)")
    if isinstance(ratios, str):
        ratios = parse_ratios(ratios)
    first = MixtureSchedule.one_interval(dict(ratios), min(int(interval), int(steps)), reason="initial")
    scheduled = ScheduledBlend(manifest, config, first, global_batch_size, where=None, open_ended=True)
    if check_epochs:
        scheduled.interval_blends[0].check_epochs(first.steps * global_batch_size)
    return scheduled
