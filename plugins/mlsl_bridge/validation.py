"""The study's fixed validation set as Megatron-Bridge's evaluation reads it.

Bridge sizes its validation blend by the run's number of evaluations and reads it through a cyclic, shuffled
sampler whose position carries over from one evaluation to the next, so each evaluation, the recorded one
included, sees another window of another blend. ``FixedValidation`` replaces that stream in evaluation only:
the core's ``validation_set`` padded to whole global batches (``ValidationWindow``), this rank's data-parallel
share cut by Bridge's own sequential sampler (``build_pretraining_data_loader``), restarted at every evaluation.
"""

from __future__ import annotations

from typing import Any, Iterator

from mlsl_bridge.compat import ensure_importable
from nemo_mlsl.data.blend import ValidationWindow, validation_set
from nemo_mlsl.data.manifest import Manifest

ensure_importable()


class FixedValidation:
    """One evaluation's microbatches for this rank; ``start`` (the callback's ``on_eval_start``) goes back to sample 0.

    ``start`` also builds the set the first time: megatron's dataset builder synchronises all ranks, and every rank
    (every pipeline stage) fires ``on_eval_start`` together, while only the first and last stages read batches.
    Each evaluation reads exactly one window (``eval_iters`` x the evaluation's global batch), so a window that
    runs out also starts over: the same samples in the same order at every evaluation."""

    def __init__(self, data_dir: str, samples_per_language: int, seq_length: int):
        self.data_dir, self.samples_per_language, self.seq_length = data_dir, samples_per_language, seq_length
        self._loader: Any = None
        self._iter: Iterator | None = None

    def start(self, state: Any, model: Any) -> None:
        """At the start of every evaluation, on every rank."""
        if self._loader is None:
            self._loader = self._build(state, model)
        self._iter = None

    def _build(self, state: Any, model: Any) -> Any:
        from megatron.bridge.data.samplers import build_pretraining_data_loader
        from megatron.bridge.training.utils.pg_utils import get_pg_collection

        cfg = state.cfg
        gbs = cfg.validation.eval_global_batch_size or cfg.train.global_batch_size
        mbs = cfg.validation.eval_micro_batch_size or cfg.train.micro_batch_size
        fixed = validation_set(Manifest.load(self.data_dir), self.samples_per_language, self.seq_length,
                               getattr(cfg.dataset, "path_to_cache", None))
        dp = get_pg_collection(model).dp  # Bridge's evaluation shards over data-parallel ranks (not context-parallel)
        return build_pretraining_data_loader(
            ValidationWindow(fixed, gbs), 0, "single", mbs, cfg.dataset.num_workers, False,
            pin_memory=cfg.dataset.pin_memory, persistent_workers=cfg.dataset.persistent_workers,
            data_parallel_rank=dp.rank(), data_parallel_size=dp.size(), drop_last=True)

    def iterator(self, state: Any, model: Any) -> Iterator:
        """The stream this rank's evaluation reads now (the same object until the next ``start``); built here only
        where nothing called ``start`` (one process)."""
        if self._loader is None:
            self._loader = self._build(state, model)
        if self._iter is None:
            self._iter = _Window(self._loader)
        return self._iter


class _Window:
    """Passes over the window's loader; a pass that ends starts the next one from sample 0."""

    def __init__(self, loader: Any):
        self.loader = loader
        self._it = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)
