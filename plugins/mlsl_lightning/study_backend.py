"""The study's CPU backend: each run is ``mlsl train`` on the Lightning CPU path.

In process it calls ``train()`` directly; as a NeMo-Run task it is the same ``mlsl train`` command line
(``run.Script``), so a local or Slurm executor runs exactly what a user could type.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from nemo_mlsl.study.backend import RunSpec, train_arguments


class CPUBackend:
    name = "cpu"
    gpus_per_run = 0

    def __init__(self, progress: bool = False):
        self.progress = progress  # Lightning's bar per run: off inside a study (the study has its own)

    def train(self, spec: RunSpec) -> None:
        from mlsl_lightning.train import TrainRequest, train

        r = spec.run
        train(TrainRequest(recipe=r.rung, data=spec.data, ratios=r.ratios, out=spec.out, tokens=r.tokens, seed=r.seed,
                           run_id=spec.run_id, tb_root=spec.tb_root, store=spec.store, report_dir=spec.report_dir, law=spec.law,
                           bootstrap=0, within=spec.within, progress=self.progress, overrides=list(spec.overrides),
                           extra_record=dict(spec.tags)))

    def command(self, spec: RunSpec) -> list[str]:
        return [sys.executable, "-m", "nemo_mlsl.cli", *train_arguments(spec, extra=["--no-progress"])]

    def task(self, spec: RunSpec) -> Any:
        import nemo_run as run

        return run.Script(inline=shlex.join(self.command(spec)))

    def describe(self, spec: RunSpec) -> str:
        return shlex.join(self.command(spec))
