"""NeMo-Run's local executor with --max-parallel K: each of the K concurrent GPU jobs gets its own GPUs
(``CUDA_VISIBLE_DEVICES``), read here from the environment each job was really started with (no GPU needed:
the job only writes down its environment); too few GPUs is a named error; job handles are kept as jobs launch."""

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import require_nemo
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.study.backend import RunSpec
from nemo_mlsl.study.config import ExecutorConfig
from nemo_mlsl.study.plan import PlannedRun

require_nemo()  # NeMo-Run comes with the NeMo extra
pytestmark = pytest.mark.slow  # NeMo-Run starts real jobs (torchrun): about 30 s

PROBE = """import json, os, sys
rank = os.environ.get("LOCAL_RANK", "0")
keys = ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
jobs = sys.argv[2]  # the study's job handles, as saved when this job started
saved = sorted(json.load(open(jobs))) if os.path.exists(jobs) else []
with open(os.path.join(sys.argv[1], f"env-{rank}.json"), "w") as fh:
    json.dump({**{k: os.environ.get(k) for k in keys}, "saved_handles": saved}, fh)
"""


class EnvProbeBackend:
    """A GPU backend (one process per GPU under torchrun, as the NeMo backend's jobs) whose job writes its environment."""

    name = "probe"

    def __init__(self, probe, gpus_per_run: int, jobs_file):
        self.probe, self.gpus_per_run, self.jobs_file = probe, gpus_per_run, jobs_file

    def task(self, spec: RunSpec):
        import nemo_run as run

        return run.Script(path=str(self.probe), args=[spec.out, str(self.jobs_file)], entrypoint="python")


def _torch_bins() -> list[str]:
    """Where ``torchrun`` lives: beside this Python, or in the environment torch is installed in."""
    import torch

    return [str(Path(sys.executable).parent), str(Path(torch.__file__).parents[4] / "bin")]


def _specs(tmp_path, n):
    runs = [PlannedRun(f"r{i}", "design", "cpu_15k", 1000, {"amber": 1.0}, i, 1) for i in range(n)]
    return [RunSpec(run=r, data=str(tmp_path), out=str(tmp_path / "runs" / r.run_id), store=str(tmp_path / "results.jsonl"),
                    tb_root=str(tmp_path / "tb"), report_dir=str(tmp_path / "fit_live")) for r in runs]


def _env(tmp_path, run_id, rank) -> dict:
    return json.loads((tmp_path / "runs" / run_id / f"env-{rank}.json").read_text())


def test_the_local_executor_gives_each_concurrent_job_its_own_gpus(tmp_path, monkeypatch):
    from mlsl_nemo.launcher import NeMoRunLauncher

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setenv("PATH", os.pathsep.join([*_torch_bins(), os.environ["PATH"]]))  # the executor starts `torchrun`
    launcher = NeMoRunLauncher(ExecutorConfig(type="local", max_parallel=2, gpus_per_run=2), tmp_path / "jobs", poll_s=0.2)
    backend = EnvProbeBackend(probe, gpus_per_run=2, jobs_file=launcher.jobs_file)
    specs = _specs(tmp_path, 4)
    launcher.launch(backend, specs, lambda spec: None)
    seen = {}
    for i, spec in enumerate(specs):
        envs = [_env(tmp_path, spec.run_id, rank) for rank in range(2)]
        assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
        seen[spec.run_id] = envs[0]["CUDA_VISIBLE_DEVICES"]
        assert envs[1]["CUDA_VISIBLE_DEVICES"] == seen[spec.run_id]
    # runs 0 and 1 run together (and 2 and 3): disjoint GPUs; run i+2 starts after run i, on run i's GPUs
    assert seen == {"r0": "0,1", "r1": "2,3", "r2": "0,1", "r3": "2,3"}
    # each job's handle is kept as it launches: the second pair started with the first pair's handles saved
    assert all(set(_env(tmp_path, r, 0)["saved_handles"]) >= {"r0", "r1"} for r in ("r2", "r3"))
    handles = json.loads(launcher.jobs_file.read_text())
    assert sorted(handles) == ["r0", "r1", "r2", "r3"] and all(h.startswith("local_persistent://") for h in handles.values())

    with pytest.raises(ConfigError, match="--max-parallel 3 x gpus_per_run 2 = 6 GPUs"):
        NeMoRunLauncher(ExecutorConfig(type="local", max_parallel=3, gpus_per_run=2), tmp_path / "jobs2").launch(
            backend, _specs(tmp_path / "b", 3), lambda spec: None)
