"""The study's NeMo 2 backend: each planned run is the rung's NeMo pretraining recipe on the family blend,
with the fitting callback appending the run's record (tagged with its purpose, phase and mixture) to the
study's results store. The orchestration (resume, live refit, phase 2, report) is the study's own.
"""

from __future__ import annotations

import os
from typing import Any

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.recipes import load
from nemo_mlsl.study.backend import RunSpec


class NeMoBackend:
    name = "nemo"

    def __init__(self, gpus_per_run: int = 1, nodes_per_run: int = 1):
        self.gpus_per_run = gpus_per_run
        self.nodes_per_run = nodes_per_run

    def task(self, spec: RunSpec) -> Any:
        """``run.Partial(llm.pretrain, ...)`` for this run."""
        from mlsl_nemo.recipe import pretrain_recipe

        r = spec.run
        steps = load(r.rung, spec.overrides, num_nodes=self.nodes_per_run, gpus_per_node=self.gpus_per_run).train.steps_for(r.tokens)
        return pretrain_recipe(r.rung, spec.data, r.ratios, within=spec.within, num_nodes=self.nodes_per_run,
                               num_gpus_per_node=self.gpus_per_run, dir=spec.out, name=spec.run_id, overrides=spec.overrides,
                               store=spec.store, seed=r.seed, max_steps=steps, law=spec.law, report_dir=spec.report_dir,
                               record_extra=spec.tags)

    def train(self, spec: RunSpec) -> None:
        """In this process, on this machine's GPU (one process: the single-GPU case)."""
        import fiddle as fdl

        if self.gpus_per_run * self.nodes_per_run > 1:
            raise ConfigError(f"a run on {self.gpus_per_run * self.nodes_per_run} GPUs needs one process per GPU: use "
                              "--executor local (torchrun) or slurm, not inline")
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "LOCAL_RANK": "0",
                           "WORLD_SIZE": "1"}.items():
            os.environ.setdefault(key, value)
        fdl.build(self.task(spec))()

    def describe(self, spec: RunSpec) -> str:
        return str(self.task(spec))
