"""NeMo 2 callbacks: per-family validation, the realized mixture, and the run's hparams.

``NeMoFamilyValidationCallback`` installs the per-language loss reduction on every model chunk,
broadcasts the epoch's sums from the last pipeline stage and logs per-family and per-language metrics
with the CPU path's names (``val_family/<family>/loss``, ``.../bpb``, ``val_language/<code>/...``).
``NeMoMixtureMonitorCallback`` counts the samples the run has consumed in the blend's own sample index
and logs ``mixture/<family>/{ratio,tokens,epochs}`` like the CPU path's monitor.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from nemo_mlsl.metrics import family_metrics, mixture_summary
from nemo_mlsl.policies import ADAPTIVE_HISTORY_FILE


def _dp_cp_group():
    from megatron.core import parallel_state

    return parallel_state.get_data_parallel_group(with_context_parallel=True)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


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

        red = getattr(pl_module, "_validation_loss_reduction", None)  # chunk 0: where NeMo calls reduce()
        acc = red.acc if red is not None and red.acc is not None else None
        sums = acc if acc is not None else torch.zeros(2, len(self.languages), dtype=torch.float64, device=_device())
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            # every rank takes part; only the last stage computed losses (global rank 0 sits on stage 0)
            torch.distributed.broadcast(sums, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                        group=parallel_state.get_pipeline_model_parallel_group())
        if trainer.sanity_checking:
            return
        self.last = family_metrics(sums.T.cpu().numpy(), self.languages, self.family_of, self.bytes_per_token)
        for kind, key in (("families", "val_family"), ("languages", "val_language")):
            for name, m in self.last[kind].items():
                for metric in ("loss", "bpb", "ppl"):
                    pl_module.log(f"{key}/{name}/{metric}", float(m[metric]), batch_size=1, sync_dist=False, rank_zero_only=False)


def consumed_language_samples(dataset: Any, consumed: int, n_languages: int) -> np.ndarray:
    """Samples drawn per training language in the first ``consumed`` samples of a megatron blend (its
    ``dataset_index``; a single-prefix ``GPTDataset`` has none: every sample is language 0)."""
    index = getattr(dataset, "dataset_index", None)
    if index is None:
        out = np.zeros(n_languages)
        out[0] = min(consumed, len(dataset))
        return out
    return np.bincount(np.asarray(index[: max(0, consumed)], dtype=np.int64), minlength=n_languages).astype(float)


class NeMoMixtureMonitorCallback(pl.Callback):
    """Realized family shares over the samples consumed so far, from the blend's own sample index.

    Every data-parallel rank reads its slice of the same global sample sequence, so the first
    ``global_step x global_batch_size`` entries of the index are exactly what the whole run has consumed."""

    def __init__(self, languages: Sequence[str], family_of: Mapping[str, str], train_tokens: Mapping[str, int],
                 seq_length: int, global_batch_size: int, every: int = 10):
        self.languages = list(languages)
        self.family_of = dict(family_of)
        self.train_tokens = dict(train_tokens)
        self.seq_length = seq_length
        self.global_batch_size = global_batch_size
        self.every = max(1, every)
        self.last: dict[str, float] | None = None

    def summary(self, trainer: pl.Trainer) -> dict[str, float] | None:
        dataset = getattr(trainer.datamodule, "_train_ds", None) if getattr(trainer, "datamodule", None) else None
        if dataset is None:
            return None
        counts = consumed_language_samples(dataset, trainer.global_step * self.global_batch_size, len(self.languages))
        return mixture_summary((counts * self.seq_length).tolist(), self.languages, self.family_of, self.train_tokens)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every and trainer.global_step != trainer.max_steps:
            return
        self.last = self.summary(trainer)
        if self.last:
            for key, value in self.last.items():
                pl_module.log(key, value, batch_size=1, sync_dist=False, rank_zero_only=True)


class NeMoHparamsCallback(pl.Callback):
    """The run's hparams (ratios, N, D, recipe, seed, the layer implementation used) and the custom-scalars layout."""

    def __init__(self, hparams: Mapping[str, Any]):
        self.hparams = dict(hparams)

    def on_fit_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        from nemo_mlsl.tb_layout import custom_scalars_layout

        impl = getattr(getattr(pl_module, "config", None), "mlsl_transformer_impl", None)
        if impl:
            self.hparams["transformer_impl"] = impl
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and trainer.global_rank == 0:
                logger.experiment.add_custom_scalars(custom_scalars_layout())
                logger.log_hyperparams(self.hparams)


class NeMoScheduleCallback(pl.Callback):
    """A scheduled run's ``schedule.json`` in NeMo's log directory (the schedule the data module trains on, checked
    against the trainer's ``max_steps``), written by global rank 0 when training starts."""

    def on_fit_start(self, trainer, pl_module) -> None:
        from pathlib import Path

        from nemo.utils.app_state import AppState

        from nemo_mlsl.data.schedule import SCHEDULE_FILE

        schedule = getattr(getattr(trainer, "datamodule", None), "schedule", None)
        if schedule is None or trainer.global_rank != 0:
            return
        log_dir = AppState().log_dir or trainer.default_root_dir
        schedule.write(Path(log_dir) / SCHEDULE_FILE)


class NeMoAdaptiveMixtureCallback(pl.Callback):
    """An adaptive mixture on NeMo: at each boundary (every ``interval`` steps), at the end of the validation there,
    the policy ``policy`` (``nemo_mlsl.policies``, as the CPU path's ``AdaptiveMixtureCallback``: the same
    ``boundary_decision``) decides the next interval's ratios from the run's validation history, which the data module
    then builds. The history is the per-family losses of ``NeMoFamilyValidationCallback.last`` (reduced over the
    data-parallel ranks: the same on every rank, so every rank decides the same), kept here and in the log directory
    (``adaptive_history.jsonl``); global rank 0 rewrites ``schedule.json`` after each decision.

    A resumed run rebuilds the intervals its checkpoint held (the data module's state) and reads the history its
    decisions read from ``adaptive_history.jsonl`` (the first validation of each step counts: a resumed run validates
    again where it restarts, and its decision must be the one the run it continues made)."""

    def __init__(self, policy: str, interval: int, max_steps: int, min_share: float = 0.02, smoothing: float = 0.5,
                 max_change: float = 1.0):
        from nemo_mlsl.policies import policy as get_policy

        self.name, self.policy = policy, get_policy(policy)
        self.interval, self.max_steps = int(interval), int(max_steps)
        self.min_share, self.smoothing, self.max_change = float(min_share), float(smoothing), float(max_change)
        self.losses: dict[int, dict[str, float]] = {}  # step -> family -> validation loss (the first validation of a step)
        self.seconds, self.decisions = 0.0, 0

    @staticmethod
    def _dm(trainer):
        dm = getattr(trainer, "datamodule", None)
        if not getattr(dm, "adaptive", False):
            raise RuntimeError("NeMoAdaptiveMixtureCallback needs an adaptive FamilyPreTrainingDataModule (adaptive=True)")
        return dm

    def on_fit_start(self, trainer, pl_module) -> None:
        from nemo_mlsl.errors import ConfigError

        self._dm(trainer)
        every = trainer.val_check_interval
        if not isinstance(every, int) or every < 1 or self.interval % every:
            raise ConfigError(f"adaptive interval: the trainer's val_check_interval ({every!r}) must divide the interval "
                              f"({self.interval} steps): each decision reads the validation at its boundary; set "
                              f"trainer.val_check_interval to {self.interval} or a divisor of it")

    def on_train_start(self, trainer, pl_module) -> None:
        """A resumed run: the validation history its decisions read (``adaptive_history.jsonl``, the first validation of
        each step), and the intervals its checkpoint held (the data module rebuilt them) must reach this step."""
        from nemo_mlsl.errors import ConfigError

        dm = self._dm(trainer)
        step = trainer.global_step
        if step == 0:
            return
        for s, loss in self._saved_history(trainer).items():  # the checkpoint's own history first
            self.losses.setdefault(s, loss)
        if step > dm.schedule.steps:
            raise ConfigError(f"adaptive mixture: this run resumes at step {step}, but its checkpoint holds the intervals "
                              f"to step {dm.schedule.steps} only (a checkpoint written before the schedule was kept in "
                              "it); start the run in a new log directory")
        if step == dm.schedule.steps and step in self.losses:
            self._decide(trainer, step)  # resumed at a boundary whose decision its checkpoint was saved before

    def state_dict(self) -> dict[str, Any]:
        """The validation history the decisions read, kept in every checkpoint."""
        return {"losses": {str(s): dict(loss) for s, loss in sorted(self.losses.items())}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.losses = {int(s): {f: float(v) for f, v in loss.items()} for s, loss in state_dict.get("losses", {}).items()}

    def _saved_history(self, trainer) -> dict[int, dict[str, float]]:
        """``adaptive_history.jsonl`` of this run and of its earlier attempts (NeMo's logger moves an earlier attempt's
        files into ``run_<k>/`` when a run resumes in its log directory), the first validation of each step."""
        from nemo_mlsl.policies import read_history

        log_dir = self._log_dir(trainer)
        attempts = sorted(log_dir.glob(f"run_*/{ADAPTIVE_HISTORY_FILE}"), key=lambda p: int(p.parent.name[4:])
                          if p.parent.name[4:].isdigit() else 0)
        rows = read_history([*attempts, log_dir / ADAPTIVE_HISTORY_FILE])
        return {s: {f: float(v) for f, v in row["family_loss"].items()} for s, row in rows.items()}

    def _log_dir(self, trainer):
        from pathlib import Path

        from nemo.utils.app_state import AppState

        return Path(AppState().log_dir or trainer.default_root_dir)

    def on_validation_end(self, trainer, pl_module) -> None:
        import json

        if trainer.sanity_checking:
            return
        fam_cb = next((c for c in trainer.callbacks if isinstance(c, NeMoFamilyValidationCallback)), None)
        if fam_cb is None or fam_cb.last is None:
            raise RuntimeError("NeMoAdaptiveMixtureCallback needs NeMoFamilyValidationCallback's per-family losses")
        step = trainer.global_step
        every = trainer.val_check_interval
        if step % every and step != self.max_steps:
            return  # off the run's cadence (the validation a stopped or preempted run ends with): no uninterrupted run has it
        if step not in self.losses:
            self.losses[step] = {f: float(v["loss"]) for f, v in fam_cb.last["families"].items()}
            if trainer.global_rank == 0:
                path = self._log_dir(trainer) / ADAPTIVE_HISTORY_FILE
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": step, "family_loss": self.losses[step]}, sort_keys=True) + "\n")
        self._decide(trainer, step)

    def _decide(self, trainer, step: int) -> None:
        import time

        from nemo_mlsl.data.schedule import SCHEDULE_FILE
        from nemo_mlsl.policies import next_interval

        dm = self._dm(trainer)
        if step != dm.schedule.steps or step >= self.max_steps:
            return
        t0 = time.perf_counter()
        ratios, until, evidence = next_interval(self.policy, dm.scheduled, self.losses, step=step, interval=self.interval,
                                                max_steps=self.max_steps, min_share=self.min_share,
                                                smoothing=self.smoothing, max_change=self.max_change)
        dm.extend(ratios, until, self.name, evidence)
        self.seconds += time.perf_counter() - t0
        self.decisions += 1
        if trainer.global_rank == 0:
            dm.schedule.write(self._log_dir(trainer) / SCHEDULE_FILE)
