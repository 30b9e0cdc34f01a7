"""An adaptive mixture on Megatron-Bridge (``mlsl train --backend bridge --adaptive POLICY --interval STEPS``).

``AdaptiveMixtureCallback`` runs after ``FamilyValidationCallback`` at every evaluation. At a boundary (the end of the
schedule decided so far, before the run's last step) the policy (``nemo_mlsl.policies``) decides the next interval's
ratios from the run's validation history with the CPU path's ``boundary_decision``, and the training set's
``ScheduledBlend`` (``ScheduledDataset.live``) builds that interval's samples before Bridge's loader reads them.

Every rank decides, from the same inputs: the per-family losses are Bridge's reduced ones (summed over the
data-parallel ranks), computed on the last pipeline stage and broadcast to the others; the tokens drawn so far come
from the joined dataset's ``dataset_id``, the same on every rank. Rank 0 keeps the history
(``adaptive_history.jsonl``) and rewrites ``schedule.json`` in the run directory after each decision; the run's record
carries the decided schedule with each interval's realised shares, its mean ratios and the policy's settings and cost.

Every checkpoint Bridge saves (``on_checkpoint_save``, after the evaluation of its step, so a boundary's decision is
in it) gets the state the decisions need beside it: ``adaptive_state/step_<step>.json`` in the run directory, the
schedule decided so far and the validation history. A resumed run reads the file of the step Bridge restored
(``on_data_init_start``: after the checkpoint is loaded, before the training set is built), rebuilds those intervals and
continues to the samples and decisions of an uninterrupted run; a checkpoint without one is refused by name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from mlsl_bridge.compat import ensure_importable
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.policies import ADAPTIVE_HISTORY_FILE

ensure_importable()

from megatron.bridge.training.callbacks import Callback  # noqa: E402

STATE_DIR = "adaptive_state"  # beside every checkpoint: the schedule and the history at its step


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def pipeline_broadcast(values: list[float] | None, n: int) -> list[float]:
    """``values`` (known on the last pipeline stage only; None elsewhere) on every rank of the pipeline group."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if values is None:
            raise RuntimeError("no per-family losses on a single process")
        return list(values)
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        if values is None:
            raise RuntimeError("the last pipeline stage has no per-family losses")
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values if values is not None else [0.0] * n, dtype=torch.float64, device=device)
    dist.broadcast(t, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                   group=parallel_state.get_pipeline_model_parallel_group())
    return t.cpu().tolist()


class AdaptiveMixtureCallback(Callback):
    """Decides each next interval of an adaptive Bridge run at its boundary's evaluation (see the module)."""

    def __init__(self, dataset: Any, family: Any, settings: Mapping[str, Any], max_steps: int, out: str | Path,
                 families: list[str], record: Any = None):
        from nemo_mlsl.policies import policy

        self.dataset, self.family = dataset, family  # ScheduledDataset (its ``live`` blend), FamilyValidationCallback
        self.settings = dict(settings)
        self.name, self.policy = self.settings["policy"], policy(self.settings["policy"])
        self.interval, self.max_steps = int(self.settings["interval"]), int(max_steps)
        self.out, self.families, self.record = Path(out), list(families), record
        self.losses: dict[int, dict[str, float]] = {}  # step -> family -> validation loss (the first evaluation of a step)
        self.seconds, self.decisions = 0.0, 0
        self.every = 1  # Bridge's evaluation interval (on_train_start)

    @property
    def scheduled(self):
        return self.dataset.live

    def state_path(self, step: int) -> Path:
        return self.out / STATE_DIR / f"step_{int(step):09d}.json"

    def on_checkpoint_save(self, context) -> None:
        """The schedule decided so far and the history, for the checkpoint of this step (rank 0 writes it)."""
        from nemo_mlsl.outputs import write_json_atomic

        if _rank() == 0:
            step = context.state.train_state.step
            write_json_atomic(self.state_path(step), {"step": step, "schedule": self.scheduled.schedule.to_dict(),
                                                      "losses": {str(k): v for k, v in sorted(self.losses.items())}})

    def on_data_init_start(self, context) -> None:
        """A resumed run: the intervals and the history its checkpoint's step held, before the training set is built."""
        step = context.state.train_state.step
        path = self.state_path(step)
        if step == 0 or not path.is_file():
            return  # on_train_start refuses a resumed step past the first interval without it
        saved = json.loads(path.read_text(encoding="utf-8"))
        self.scheduled.replay(saved["schedule"], f"resume with the run's own --ratios and --interval ({path} holds the "
                                                 "checkpoint's), or start it in a new --out")
        self.losses = {int(k): {f: float(v) for f, v in loss.items()} for k, loss in saved["losses"].items()}

    def on_train_start(self, context) -> None:
        step = context.state.train_state.step
        if step > self.scheduled.schedule.steps:
            raise ConfigError(f"adaptive mixture: this run resumes at step {step}, but the intervals it can rebuild end at "
                              f"step {self.scheduled.schedule.steps}: {self.state_path(step)} (the state saved with "
                              "Bridge's checkpoint of that step) is missing; restore it or start the run in a new --out")
        cfg = context.state.cfg
        every = cfg.validation.eval_interval
        if not every or self.interval % every:
            raise ConfigError(f"adaptive interval: Bridge's validation.eval_interval ({every!r}) must divide the interval "
                              f"({self.interval} steps): each decision reads the evaluation at its boundary")
        if getattr(getattr(cfg, "checkpoint", None), "async_save", False):
            raise ConfigError("adaptive mixture: checkpoint.async_save must be false (the decisions saved beside a "
                              "checkpoint are those of its step, which an asynchronous save finishes steps later)")
        self.every = int(every)
        self._update_record()
        if step == 0:
            self._log_ratios(context, 0, self.scheduled.schedule.intervals[0].ratios)

    @staticmethod
    def _log_ratios(context, step: int, ratios: Mapping[str, float]) -> None:
        """The ratio trajectory on TensorBoard (``schedule/<family>/ratio`` at each interval's first step, the CPU path's
        name)."""
        writer = context.state.tensorboard_logger
        if writer is not None:
            for fam, p in sorted(ratios.items()):
                writer.add_scalar(f"schedule/{fam}/ratio", float(p), step)

    def on_eval_end(self, context) -> None:
        step = context.state.train_state.step
        last = self.family.last if self.family.last_step == step else None  # None off the last pipeline stage
        values = None if last is None else [float(last["families"][f]["loss"]) for f in self.families]
        losses = dict(zip(self.families, pipeline_broadcast(values, len(self.families))))
        if step % self.every and step != self.max_steps:
            return  # off the run's cadence (a stopped run's last evaluation): no uninterrupted run has it
        if step not in self.losses:
            self.losses[step] = losses
            if _rank() == 0:
                self.out.mkdir(parents=True, exist_ok=True)
                with (self.out / ADAPTIVE_HISTORY_FILE).open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": step, "family_loss": losses}, sort_keys=True) + "\n")
        self._decide(context, step)

    def _decide(self, context, step: int) -> None:
        from nemo_mlsl.data.schedule import SCHEDULE_FILE
        from nemo_mlsl.policies import next_interval

        s = self.scheduled
        if step != s.schedule.steps or step >= self.max_steps:
            return
        t0 = time.perf_counter()
        ratios, until, evidence = next_interval(self.policy, s, self.losses, step=step, interval=self.interval,
                                                max_steps=self.max_steps, min_share=self.settings["min_share"],
                                                smoothing=self.settings["smoothing"], max_change=self.settings["max_change"])
        s.extend(ratios, until, self.name, evidence, self.dataset.blend.path_to_cache)
        self.seconds += time.perf_counter() - t0
        self.decisions += 1
        self._update_record()
        self._log_ratios(context, step, s.schedule.intervals[-1].ratios)
        if _rank() == 0:
            s.schedule.write(self.out / SCHEDULE_FILE)

    def _update_record(self) -> None:
        """The record's schedule (each decided interval with its realised shares), its ratios (the decided schedule's
        steps-weighted mean) and the policy's settings and cost, as the other backends record them."""
        if self.record is None:
            return
        from mlsl_bridge.schedule import schedule_record

        self.record.fields["ratios"] = self.scheduled.schedule.mean_ratios()
        self.record.extra["schedule"] = schedule_record(self.scheduled)
        self.record.extra["adaptive"] = {**{k: self.settings[k] for k in ("policy", "interval", "min_share", "smoothing",
                                                                          "max_change")},
                                         "decisions": self.decisions, "decision_s": round(self.seconds, 4)}
