"""The study's NeMo 2 backend: each planned run is the rung's NeMo pretraining recipe on the family blend,
with the fitting callback appending the run's record (tagged with its purpose, phase and mixture) to the
study's results store. The orchestration (resume, live refit, phase 2, report) is the study's own.

In process (the inline executor) every run still gets a process of its own (``mlsl_nemo.run_task``): megatron's
global state (the microbatch calculator above all) does not survive a second ``llm.pretrain`` with another
batch shape in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.placement import single_process_env
from nemo_mlsl.recipes import load
from nemo_mlsl.study.backend import RunSpec

LOG_TAIL_LINES = 40


class NeMoBackend:
    name = "nemo"
    adaptive = True  # a study's adaptive arm: the recipe's NeMoAdaptiveMixtureCallback decides its intervals

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
                               record_extra=spec.tags, tb_root=spec.tb_root, adaptive=r.adaptive or None)

    def command(self, task_file: Path) -> list[str]:
        """The process that runs one serialized task."""
        return [sys.executable, "-m", "mlsl_nemo.run_task", str(task_file)]

    def train(self, spec: RunSpec) -> None:
        """On this machine's GPU, in a process of its own (one process: the single-GPU case); its output goes to
        ``OUT/train.log``. A failed run leaves no record (the study names it); the log's tail is shown."""
        if self.gpus_per_run * self.nodes_per_run > 1:
            raise ConfigError(f"a run on {self.gpus_per_run * self.nodes_per_run} GPUs needs one process per GPU: use "
                              "--executor local (torchrun) or slurm, not inline")
        from mlsl_nemo.run_task import save_task

        out = Path(spec.out)
        task_file = save_task(self.task(spec), out / "task.json.zlib")
        env = {**os.environ, **single_process_env({})}  # a fresh port: another job on this host may hold any other
        log = out / "train.log"
        with log.open("w") as fh:
            code = subprocess.run(self.command(task_file), env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
            print(f"run {spec.run_id} failed (exit {code}); the end of {log}:\n{tail}", file=sys.stderr, flush=True)

    def describe(self, spec: RunSpec) -> str:
        return str(self.task(spec))
