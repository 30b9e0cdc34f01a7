"""Appends every (non-sanity) validation's per-family metrics to ``RUN/metrics.jsonl`` (in a scheduled run, with the
ratios of the interval that trained the last step)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping

import lightning.pytorch as pl

from mlsl_lightning.callbacks.family_validation import FamilyValidationCallback


class RunLogCallback(pl.Callback):
    def __init__(self, path: str | Path, source: FamilyValidationCallback, tokens_per_step: int,
                 ratios_at: Callable[[int], Mapping[str, float]] | None = None):
        self.path = Path(path)
        self.ratios_at = ratios_at  # a scheduled run: the family ratios that trained up to a step
        self.source = source
        self.tokens_per_step = tokens_per_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.source.last is None or trainer.global_rank != 0:
            return
        m = self.source.last
        line = {
            "step": trainer.global_step,
            "tokens": trainer.global_step * self.tokens_per_step,
            "family_loss": {f: v["loss"] for f, v in m["families"].items()},
            "family_bpb": {f: v["bpb"] for f, v in m["families"].items()},
            "language_loss": {l: v["loss"] for l, v in m["languages"].items()},
        }
        if self.ratios_at is not None:
            line["ratios"] = dict(self.ratios_at(trainer.global_step))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
