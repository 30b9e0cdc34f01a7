"""The study's Megatron-Bridge backend: each planned run is ``mlsl train --backend bridge`` (the rung's
``ConfigContainer`` on the family blend, Bridge's ``pretrain()``), whose callback appends the run's record,
tagged with its purpose, phase and mixture, to the study's results store. In process for one GPU
(``--executor inline``); as a NeMo-Run ``Script`` under ``torchrun`` (local) or Slurm for more, so a job runs
exactly the command a user could type. The orchestration (resume, live refit, phase 2, report) is the study's own.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.study.backend import RunSpec, train_arguments


class BridgeBackend:
    name = "bridge"
    adaptive = True  # a study's adaptive arm: mlsl train --backend bridge --adaptive POLICY

    def __init__(self, gpus_per_run: int = 1, nodes_per_run: int = 1):
        self.gpus_per_run = gpus_per_run
        self.nodes_per_run = nodes_per_run

    def arguments(self, spec: RunSpec) -> list[str]:
        return train_arguments(spec, backend=["--backend", "bridge"],
                               extra=["--nodes", str(self.nodes_per_run), "--gpus-per-node", str(self.gpus_per_run)])

    def command(self, spec: RunSpec) -> list[str]:
        return [sys.executable, "-m", "nemo_mlsl.cli", *self.arguments(spec)]

    def request(self, spec: RunSpec):
        from mlsl_bridge.train import BridgeRequest

        r = spec.run
        return BridgeRequest(recipe=r.rung, data=spec.data, ratios=r.ratios, out=spec.out, tokens=r.tokens, seed=r.seed,
                             within=spec.within, run_id=spec.run_id, tb_root=spec.tb_root, store=spec.store,
                             report_dir=spec.report_dir, law=spec.law, bootstrap=0, overrides=list(spec.overrides),
                             num_nodes=self.nodes_per_run, gpus_per_node=self.gpus_per_run, extra_record=dict(spec.tags),
                             adaptive=r.adaptive or None)

    def train(self, spec: RunSpec) -> None:
        """In this process, on this machine's GPU (one process: the single-GPU case)."""
        from mlsl_bridge.train import train

        if self.gpus_per_run * self.nodes_per_run > 1:
            raise ConfigError(f"a run on {self.gpus_per_run * self.nodes_per_run} GPUs needs one process per GPU: use "
                              "--executor local (torchrun) or slurm, not inline")
        train(self.request(spec))

    def task(self, spec: RunSpec) -> Any:
        """``python -m nemo_mlsl.cli train --backend bridge ...`` as a NeMo-Run ``Script`` (torchrun wraps it for GPUs),
        with this interpreter's directory first on PATH so that ``python`` and ``torchrun`` are the Bridge environment's."""
        import nemo_run as run

        bin_dir = str(Path(sys.executable).parent)
        return run.Script(path="nemo_mlsl.cli", args=self.arguments(spec), m=True, entrypoint="python",
                          env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})

    def describe(self, spec: RunSpec) -> str:
        """The command, and the run's ``ConfigContainer`` built and validated by Bridge (so a dry run catches a bad
        layout or blend before any job is queued)."""
        from mlsl_bridge.recipe import validated
        from mlsl_bridge.train import build_run

        run = build_run(self.request(spec)).run
        validated(run.config, self.gpus_per_run * self.nodes_per_run)
        return (shlex.join(self.command(spec)) + f"\n# ConfigContainer validated by Megatron-Bridge for {self.gpus_per_run * self.nodes_per_run} "
                f"GPU(s): {run.steps:,} steps x {run.recipe.train.global_batch_size} x {run.recipe.train.seq_length} tokens, "
                f"layers: {run.impl}, validation languages: {', '.join(run.blend['validation_languages'])}")
