"""The study on a real Slurm cluster (tests/slurm_cluster.py starts one on localhost), its CPU runs submitted as
Slurm jobs through NeMo-Run's Slurm executor: every run recorded once, two jobs in flight at a time, and a job
cancelled mid-study trained again by --resume. The study is started as a user would, from its own working
directory with relative paths (config, prepared data, --out); the jobs run elsewhere and must find the data."""

import os
import subprocess
import sys
import time
from datetime import datetime

import pytest
import yaml

import slurm_cluster
from conftest import read_json
from nemo_mlsl.results import ResultsStore

pytestmark = pytest.mark.slow

STUDY = {
    "name": "slurm", "corpus": {"prepared": "data"},  # relative to the directory the study is started from
    "ladder": {"fit": ["cpu_15k", "cpu_60k"], "confirm": "cpu_250k"}, "tokens": [20000, 40000], "confirm_tokens": 40000,
    "design": {"mixtures": 2, "floor": 0.05, "independence": {"ratio": 0.3, "mixtures": 2, "floor": 0.15},
               "repeats": {"seeds": 1, "points": 1}},
    "baselines": [], "objective": {"type": "normalized", "min_ratio": 0.02}, "law": "joint_family", "bootstrap": 10,
    "executor": {"type": "slurm", "max_parallel": 2, "partition": "debug", "cpus_per_task": 1, "time": "00:30:00"},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    gaps = slurm_cluster.missing()
    if gaps or os.geteuid() != 0:
        why = f"a local Slurm cluster needs root and {', '.join(gaps) or 'root'}: apt-get install slurmctld slurmd slurm-client " \
              "slurmdbd munge mariadb-server (.ci/run does)"
        if os.environ.get("MLSL_REQUIRE_SLURM"):
            pytest.fail(why)
        pytest.skip(why)
    c = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


def study(cluster, home, *extra):
    """``mlsl study --config study.yaml --out out`` started in ``home``."""
    return subprocess.Popen([sys.executable, "-m", "nemo_mlsl.cli", "study", "--config", "study.yaml", "--out", "out",
                             "--no-progress", *extra], cwd=home, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def user_directory(root):
    """A user's working directory: the study config and the prepared data (3 families x 1 language), side by side."""
    from nemo_mlsl.data.prepare import PrepareConfig, prepare
    from nemo_mlsl.data.synth import SynthConfig, generate

    home = root / "home"
    generate(SynthConfig(families=3, languages_per_family=1, docs=300, seed=4), home / "raw")
    prepare(PrepareConfig(inputs=[str(home / "raw")], out=str(home / "data"), families_yaml=str(home / "raw" / "families.yaml"),
                          vocab_size=256, workers=1, progress=False))
    (home / "study.yaml").write_text(yaml.safe_dump(STUDY))
    return home


def _overlap(jobs) -> int:
    """The most jobs running at the same moment, from accounting's start and end times."""
    events = []
    for j in jobs:
        if j["start"] not in ("Unknown", "None") and j["end"] not in ("Unknown", "None"):
            events += [(datetime.fromisoformat(j["start"]), 1), (datetime.fromisoformat(j["end"]), -1)]
    most = now = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        now += step
        most = max(most, now)
    return most


def test_a_study_through_nemo_runs_slurm_executor(cluster, tmp_path):
    home = user_directory(tmp_path)
    out = home / "out"
    proc = study(cluster, home)
    cancelled = None
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        queue = cluster.squeue()
        if cancelled is None and len(queue) >= 4:  # phase 1 is submitted: cancel a queued run in the middle
            cancelled = queue[3]
            cluster.cancel(cancelled["id"])
        time.sleep(0.5)
    text = proc.stdout.read()
    assert cancelled is not None, text[-3000:]
    assert proc.returncode == 2 and "ended without a record" in text and "--resume" in text, text[-3000:]
    recorded = {r["run_id"] for r in ResultsStore(out).read()}
    plan = read_json(out / "plan.json")
    phase1 = {r["run_id"] for r in plan["runs"] if r["phase"] == 1}
    lost = phase1 - recorded
    assert len(lost) == 1 and lost.pop() in cancelled["name"]

    again = study(cluster, home, "--resume")
    text, _ = again.communicate(timeout=900)
    assert again.returncode == 0, text[-3000:]
    assert f"phase 1: 1 of {len(phase1)} runs to train ({len(phase1) - 1} already recorded)" in text
    records = ResultsStore(out).read()  # raises on a duplicate run_id
    plan = read_json(out / "plan.json")
    assert sorted(r["run_id"] for r in records) == sorted(r["run_id"] for r in plan["runs"])
    assert all(r["purpose"] == p["purpose"] for r, p in zip(sorted(records, key=lambda r: r["run_id"]),
                                                             sorted(plan["runs"], key=lambda r: r["run_id"])))
    jobs = [j for j in cluster.jobs() if any(r["run_id"] in j["name"] for r in plan["runs"])]
    assert len([j for j in jobs if j["state"] == "COMPLETED"]) == len(plan["runs"]), jobs
    assert not any(j["id"] == cancelled["id"] and j["state"] == "COMPLETED" for j in jobs)
    assert _overlap(jobs) == 2  # --max-parallel 2: two in flight, never more
    assert (out / "report.md").exists() and read_json(out / "summary.json")["runs"] == len(plan["runs"])
    assert all(r["N"] > 0 and set(r["family_loss"]) == {"amber", "cobalt", "jade"} for r in records)
