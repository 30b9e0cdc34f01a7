"""A serialisable ``make_record`` for the fitting callback on the NeMo path (a class, so run.Config can hold it)."""

from __future__ import annotations

from typing import Any, Mapping


class NeMoRunRecord:
    """Builds the run's results-store record from the NeMo family validation callback's last metrics."""

    def __init__(self, run_id: str, recipe: str, N: int, N_total: int, tokens_per_step: int, ratios: Mapping[str, float],
                 seed: int, flops_per_token: int):
        self.fields = dict(run_id=run_id, recipe=recipe, N=N, N_total=N_total, ratios=dict(ratios), seed=seed)
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token

    def __call__(self, trainer) -> dict[str, Any] | None:
        from mlsl_nemo.callback import NeMoFamilyValidationCallback

        cb = next((c for c in trainer.callbacks if isinstance(c, NeMoFamilyValidationCallback)), None)
        if cb is None or cb.last is None:
            return None
        tokens = trainer.global_step * self.tokens_per_step
        return {**self.fields, "D": tokens, "steps": trainer.global_step, "flops": self.flops_per_token * tokens,
                "family_loss": {f: v["loss"] for f, v in cb.last["families"].items()},
                "family_bpb": {f: v["bpb"] for f, v in cb.last["families"].items()},
                "language_loss": {l: v["loss"] for l, v in cb.last["languages"].items()}}
