"""Megatron-Bridge callback: per-family validation metrics, the run's record and the live fit.

At every evaluation (``on_eval_end``, whose ``total_loss_dict`` holds Bridge's reduced entries) it turns the
per-language entries of ``FamilyForwardStep`` into family and language metrics and logs them with the names
the other backends use (``val_family/<family>/{loss,bpb,ppl}``, ``val_language/<code>/...``, and the realized
mixture ``mixture/<family>/{ratio,tokens,epochs}``) on Bridge's TensorBoard writer. At the final evaluation (step = ``train_iters``) the last rank appends the run's record
to the study's results store and refits (``nemo_mlsl.fitting.live``). ``on_train_end`` fires before that final
evaluation, so nothing is recorded there.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from mlsl_bridge.compat import ensure_importable
from mlsl_bridge.forward_step import language_sums
from mlsl_bridge.validation import FixedValidation
from nemo_mlsl.data.blend import blended_counts
from nemo_mlsl.fitting.live import LiveFit
from nemo_mlsl.metrics import family_metrics, mixture_summary

ensure_importable()

from megatron.bridge.training.callbacks import Callback  # noqa: E402


def _is_last_rank() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == dist.get_world_size() - 1


class BridgeRunRecord:
    """The run's record, with the same fields as the CPU and NeMo paths' (``backend: bridge``)."""

    def __init__(self, run_id: str, recipe: str, N: int, N_total: int, tokens_per_step: int, ratios: Mapping[str, float],
                 seed: int, flops_per_token: int, family_tokens: Mapping[str, int] | None = None, within: str = "natural",
                 transformer_impl: str | None = None, extra: Mapping[str, Any] | None = None):
        self.fields = dict(run_id=run_id, recipe=recipe, N=N, N_total=N_total, ratios=dict(ratios), seed=seed, within=within,
                           family_tokens=dict(family_tokens or {}))
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.transformer_impl = transformer_impl
        self.extra = dict(extra or {})
        self.started = time.time()

    def __call__(self, step: int, metrics: Mapping[str, Any], mixture: Mapping[str, float] | None = None) -> dict[str, Any]:
        tokens = step * self.tokens_per_step
        realized = {k.split("/")[1]: v for k, v in (mixture or {}).items() if k.startswith("mixture/") and k.endswith("/ratio")}
        return {**self.fields, "D": tokens, "steps": step, "flops": self.flops_per_token * tokens,
                "family_loss": {f: v["loss"] for f, v in metrics["families"].items()},
                "family_bpb": {f: v["bpb"] for f, v in metrics["families"].items()},
                "language_loss": {l: v["loss"] for l, v in metrics["languages"].items()},
                "language_bpb": {l: v["bpb"] for l, v in metrics["languages"].items()},
                "wall_time_s": round(time.time() - self.started, 3), "backend": "bridge",
                **({"realized_ratios": realized} if realized else {}),
                **({"transformer_impl": self.transformer_impl} if self.transformer_impl else {}), **self.extra}


class TrainingMixture:
    """The realized mixture after ``step`` steps: the blend's own draws (``blended_counts``) over the training
    prefixes, as ``mixture/<family>/{ratio,tokens,epochs}`` (Bridge does not hand callbacks its dataset)."""

    def __init__(self, languages: Sequence[str], weights: Sequence[float], family_of: Mapping[str, str],
                 train_tokens: Mapping[str, int], seq_length: int, global_batch_size: int):
        self.languages, self.weights = list(languages), list(weights)
        self.family_of, self.train_tokens = dict(family_of), dict(train_tokens)
        self.seq_length, self.global_batch_size = seq_length, global_batch_size

    def __call__(self, step: int) -> dict[str, float]:
        counts = blended_counts(self.weights, step * self.global_batch_size)
        return mixture_summary((counts * self.seq_length).tolist(), self.languages, self.family_of, self.train_tokens)


class FamilyValidationCallback(Callback):
    def __init__(self, languages: Sequence[str], family_of: Mapping[str, str], bytes_per_token: Mapping[str, float],
                 make_record: BridgeRunRecord | None = None, live_fit: LiveFit | None = None,
                 hparams: Mapping[str, Any] | None = None, mixture: TrainingMixture | None = None,
                 validation: FixedValidation | None = None):
        self.languages = list(languages)
        self.family_of = dict(family_of)
        self.bytes_per_token = dict(bytes_per_token)
        self.make_record = make_record
        self.live_fit = live_fit
        self.hparams = dict(hparams or {})
        self.mixture = mixture
        self.validation = validation  # the forward step's FixedValidation: every evaluation from sample 0
        self.last: dict[str, Any] | None = None
        self.last_step: int | None = None  # the step of ``last`` (an adaptive run's decision reads the evaluation there)
        self.record: dict[str, Any] | None = None

    def on_train_start(self, context) -> None:
        writer = context.state.tensorboard_logger
        if writer is not None and self.hparams:
            from nemo_mlsl.tb_layout import custom_scalars_layout, write_hparams

            writer.add_custom_scalars(custom_scalars_layout())
            write_hparams(writer, self.hparams)

    def on_eval_start(self, context) -> None:
        if self.validation is not None:
            self.validation.start(context.state, context.model)

    def on_test_start(self, context) -> None:
        self.on_eval_start(context)

    def on_eval_end(self, context) -> None:
        sums = language_sums(context.total_loss_dict or {}, self.languages)
        if sums is None:
            return  # not the last pipeline stage: Bridge reduced nothing here
        state = context.state
        self.last = family_metrics(sums, self.languages, self.family_of, self.bytes_per_token)
        step = self.last_step = state.train_state.step
        writer = state.tensorboard_logger
        mix = self.mixture(step) if self.mixture is not None else None
        if writer is not None:
            for kind, key in (("families", "val_family"), ("languages", "val_language")):
                for name, m in self.last[kind].items():
                    for metric in ("loss", "bpb", "ppl"):
                        writer.add_scalar(f"{key}/{name}/{metric}", float(m[metric]), step)
            for key, value in (mix or {}).items():
                writer.add_scalar(key, value, step)
        final = step >= state.cfg.train.train_iters
        if not final or self.record is not None or self.make_record is None or not _is_last_rank():
            return
        self.record = self.make_record(step, self.last, mix)
        if self.live_fit is not None:
            self.live_fit.record(self.record)
            if writer is not None:
                self.live_fit.log_to(writer, step, self.record)
