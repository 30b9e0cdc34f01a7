"""A serialisable ``make_record`` for the fitting callback on the NeMo path (a class, so run.Config can hold it).

It builds the same record as the CPU path (``mlsl train``): N, D, ratios, per-family and per-language
losses, realized ratios from the blend's sample index, available tokens (for ATLAS's repetition term),
the layer implementation, a scheduled run's intervals with the shares each realised, and the study's tags
(``purpose``, ``phase``, ``mixture``)."""

from __future__ import annotations

import time
from typing import Any, Mapping


class NeMoRunRecord:
    def __init__(self, run_id: str, recipe: str, N: int, N_total: int, tokens_per_step: int, ratios: Mapping[str, float],
                 seed: int, flops_per_token: int, family_tokens: Mapping[str, int] | None = None, within: str = "natural",
                 extra: Mapping[str, Any] | None = None):
        self.fields = dict(run_id=run_id, recipe=recipe, N=N, N_total=N_total, ratios=dict(ratios), seed=seed, within=within,
                           family_tokens=dict(family_tokens or {}))
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.extra = dict(extra or {})
        self.started = time.time()

    @staticmethod
    def adaptive(trainer) -> dict[str, Any]:
        """An adaptive run's policy settings, its decisions and their seconds (the CPU record's ``adaptive``)."""
        from mlsl_nemo.callback import NeMoAdaptiveMixtureCallback

        cb = next(c for c in trainer.callbacks if isinstance(c, NeMoAdaptiveMixtureCallback))
        return {"policy": cb.name, "interval": cb.interval, "min_share": cb.min_share, "smoothing": cb.smoothing,
                "max_change": cb.max_change, "decisions": cb.decisions, "decision_s": round(cb.seconds, 4)}

    def __call__(self, trainer) -> dict[str, Any] | None:
        from mlsl_nemo.callback import NeMoFamilyValidationCallback, NeMoMixtureMonitorCallback
        from nemo_mlsl.data.schedule import schedule_record

        cb = next((c for c in trainer.callbacks if isinstance(c, NeMoFamilyValidationCallback)), None)
        if cb is None or cb.last is None:
            return None
        mon = next((c for c in trainer.callbacks if isinstance(c, NeMoMixtureMonitorCallback)), None)
        mix = mon.summary(trainer) if mon is not None else None
        dm = getattr(trainer, "datamodule", None)
        schedule = getattr(dm, "schedule", None)
        impl = getattr(getattr(trainer.lightning_module, "config", None), "mlsl_transformer_impl", None)
        tokens = trainer.global_step * self.tokens_per_step
        adaptive = getattr(dm, "adaptive", False) and schedule is not None  # its ratios: the decided schedule's mean
        return {**self.fields, **({"ratios": schedule.mean_ratios()} if adaptive else {}),
                "D": tokens, "steps": trainer.global_step, "flops": self.flops_per_token * tokens,
                "family_loss": {f: v["loss"] for f, v in cb.last["families"].items()},
                "family_bpb": {f: v["bpb"] for f, v in cb.last["families"].items()},
                "language_loss": {l: v["loss"] for l, v in cb.last["languages"].items()},
                "language_bpb": {l: v["bpb"] for l, v in cb.last["languages"].items()},
                "wall_time_s": round(time.time() - self.started, 3), "backend": "nemo",
                **({"realized_ratios": {k.split("/")[1]: v for k, v in mix.items() if k.startswith("mixture/") and k.endswith("/ratio")}}
                   if mix else {}),
                **({"schedule": schedule_record(schedule, dm.built)} if schedule is not None else {}),
                **({"adaptive": self.adaptive(trainer)} if adaptive else {}),
                **({"transformer_impl": impl} if impl else {}), **self.extra}
