"""Where a job runs on a host: its own free rendezvous port, its own slice of the visible GPUs."""

import json
import os
import socket
import sys

import pytest

from conftest import require_nemo
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.placement import gpu_slices, single_process_env, visible_gpus
from nemo_mlsl.study.backend import RunSpec
from nemo_mlsl.study.plan import PlannedRun


def test_gpu_slices_split_the_visible_gpus_and_refuse_too_few():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "4,5, 6,7"}) == ["4", "5", "6", "7"]
    assert visible_gpus({}, count=2) == ["0", "1"] and visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_slices(["4", "5", "6", "7"], 2, 2) == ["4,5", "6,7"]
    assert gpu_slices(["0", "1", "2"], 1, 3) == ["0", "1", "2"]
    with pytest.raises(ConfigError, match=r"--max-parallel 3 x gpus_per_run 2 = 6 GPUs, but this host has 4 visible"):
        gpu_slices(["0", "1", "2", "3"], 2, 3)


def test_a_single_process_rendezvous_is_on_a_free_port():
    with socket.socket() as busy:  # another job's rendezvous, listening on this host
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = single_process_env({})
        assert env["MASTER_PORT"] != str(taken) and (env["RANK"], env["WORLD_SIZE"]) == ("0", "1")
        with socket.socket() as mine:  # free: this job can bind it
            mine.bind(("127.0.0.1", int(env["MASTER_PORT"])))
    assert single_process_env({"MASTER_PORT": "1234"})["MASTER_PORT"] == "1234"  # under a launcher that chose one


def test_each_inline_nemo_run_gets_its_own_process_and_port(tmp_path):
    """NeMoBackend.train starts a process per run (here one that writes down its rendezvous variables) on a free port,
    while another job holds one."""
    require_nemo()  # NeMo-Run comes with the NeMo extra
    import nemo_run as run

    from mlsl_nemo.study import NeMoBackend

    class Probe(NeMoBackend):
        def task(self, spec):  # a serializable task; the process below writes its environment instead of training
            return run.Partial(os.path.join, "runs", spec.run_id)

        def command(self, task_file):
            code = ("import json, os, sys; json.dump({k: os.environ[k] for k in ('MASTER_PORT', 'RANK', 'WORLD_SIZE')} | "
                    "{'pid': os.getpid(), 'task': os.path.exists(sys.argv[1])}, open(sys.argv[2], 'w'))")
            return [sys.executable, "-c", code, str(task_file), str(task_file.parent / "env.json")]

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        seen = []
        for i in range(2):
            planned = PlannedRun(f"r{i}", "design", "cpu_15k", 1000, {"amber": 1.0}, i, 1)
            spec = RunSpec(planned, data=str(tmp_path), out=str(tmp_path / f"r{i}"), store=str(tmp_path / "s.jsonl"),
                           tb_root=str(tmp_path / "tb"), report_dir=str(tmp_path / "fit"))
            Probe().train(spec)
            seen.append(json.loads((tmp_path / f"r{i}" / "env.json").read_text()))
    assert all(e["task"] and e["RANK"] == "0" and e["WORLD_SIZE"] == "1" for e in seen)
    assert seen[0]["pid"] != seen[1]["pid"]
    assert taken not in {e["MASTER_PORT"] for e in seen} and "29533" not in {e["MASTER_PORT"] for e in seen}
