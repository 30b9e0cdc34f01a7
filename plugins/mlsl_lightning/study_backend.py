"""The study's CPU backend: each run is ``mlsl train`` on the Lightning CPU path.

In process it calls ``train()`` directly; as a NeMo-Run task it is the same ``mlsl train`` command line
(``run.Script``), so a local or Slurm executor runs exactly what a user could type.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from nemo_mlsl.study.backend import RunSpec, train_arguments


def adaptive_request(settings: dict[str, Any] | None) -> dict[str, Any]:
    """TrainRequest fields of an adaptive arm's run (none for a static mixture)."""
    if not settings:
        return {}
    return {"adaptive": settings["policy"], "interval": int(settings["interval"]), "min_share": float(settings["min_share"]),
            "smoothing": float(settings["smoothing"]), "max_change": float(settings.get("max_change", 1.0))}


class CPUBackend:
    name = "cpu"
    gpus_per_run = 0
    adaptive = True  # a planned run with a policy (a study's adaptive arm) trains through mlsl train --adaptive

    def __init__(self, progress: bool = False):
        self.progress = progress  # Lightning's bar per run: off inside a study (the study has its own)

    def train(self, spec: RunSpec) -> None:
        from mlsl_lightning.train import TrainRequest, train

        r = spec.run
        train(TrainRequest(recipe=r.rung, data=spec.data, ratios=r.ratios, out=spec.out, tokens=r.tokens, seed=r.seed,
                           run_id=spec.run_id, tb_root=spec.tb_root, store=spec.store, report_dir=spec.report_dir, law=spec.law,
                           bootstrap=0, within=spec.within, progress=self.progress, overrides=list(spec.overrides),
                           extra_record=dict(spec.tags), **adaptive_request(r.adaptive)))

    def command(self, spec: RunSpec) -> list[str]:
        return [sys.executable, "-m", "nemo_mlsl.cli", *train_arguments(spec, extra=["--no-progress"])]

    def task(self, spec: RunSpec) -> Any:
        import nemo_run as run

        return run.Script(inline=shlex.join(self.command(spec)))

    def describe(self, spec: RunSpec) -> str:
        return shlex.join(self.command(spec))
