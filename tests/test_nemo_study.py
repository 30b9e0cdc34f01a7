"""`mlsl study --backend nemo` end to end on CPU: the real NeMo backend builds every run's recipe, a stand-in
launcher plays each run through the recipe's own Trainer and callbacks (tests/nemo_standin.py), and the one
study orchestration resumes, fits, plans phase 2 and reports, as it does for the CPU backend."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import read_json, require_nemo
from nemo_mlsl.results import ResultsStore
from nemo_standin import STUDY_FOR_STANDINS as STUDY

require_nemo()
pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def driver(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "nemo_standin.py"), str(config), str(out), *extra], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "standin.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "study"
    proc = driver(config, out)
    text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, text[-4000:]
    return out


def test_the_nemo_backend_study_reaches_its_report(reference):
    from nemo_standin import check_standin_study

    check_standin_study(reference, "nemo")
    plan = {r["run_id"]: r for r in read_json(reference / "plan.json")["runs"]}
    for rec in ResultsStore(reference).read():  # the records came through the data step, the reduction and the monitor
        assert len(rec["language_loss"]) == 4
        for fam, p in plan[rec["run_id"]]["ratios"].items():  # realized on NeMo's blend, close to what was planned
            assert rec["realized_ratios"].get(fam, 0.0) == pytest.approx(p, abs=0.03), (rec["run_id"], fam)


def test_resume_after_a_kill_trains_only_the_missing_runs(config, reference, tmp_path):
    out = tmp_path / "killed"
    proc = driver(config, out, "--delay", "0.7")
    store = out / "results.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not store.exists() or len(store.read_text().splitlines()) < 6):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["run_id"] for r in ResultsStore(out).read()}
    assert 6 <= len(before) < 21
    again = driver(config, out, "--resume")
    text, _ = again.communicate(timeout=900)
    assert again.returncode == 0, text[-4000:]
    assert f"phase 1: {17 - len(before)} of 17 runs to train ({len(before)} already recorded)" in text
    recs = ResultsStore(out).read()  # raises on a duplicate run_id
    want = {r["run_id"]: r for r in ResultsStore(reference).read()}
    assert sorted(r["run_id"] for r in recs) == sorted(want)
    for r in recs:
        assert r["family_loss"] == pytest.approx(want[r["run_id"]]["family_loss"], rel=1e-12)
    a, b = read_json(out / "fit" / "fit.json"), read_json(reference / "fit" / "fit.json")
    for fam in a["families"]:
        assert a["families"][fam]["params"] == pytest.approx(b["families"][fam]["params"], rel=1e-9)


def test_a_short_family_is_capped_at_the_largest_rung_and_the_report_says_so(lopsided_data, tmp_path):
    """Little data in one family: the optimum sits at its data cap at the confirm D, the uniform baseline cannot be
    trained there (it would repeat that family past the recipe's max_data_epochs) and is left out with the reason."""
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.fitting.optimize import RatioProblem, solve_kkt
    from nemo_mlsl.recipes import load
    from nemo_standin import GAMMA

    m = Manifest.load(lopsided_data)
    fams = sorted(m.families)
    epochs = load("cpu_250k").train.max_data_epochs
    free = solve_kkt(RatioProblem(np.ones(3), np.array([GAMMA[f] for f in fams]), np.full(3, 0.02), np.ones(3)))
    D = int(epochs * m.family_tokens()["amber"] / (0.6 * free[fams.index("amber")]))
    cfg = {**STUDY, "corpus": {"prepared": str(lopsided_data)}, "tokens": [4000, 8000], "confirm_tokens": D}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    proc = driver(tmp_path / "s.yaml", tmp_path / "out")
    text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, text[-4000:]
    assert "baseline uniform is not trained: it samples amber at 0.333 above its data cap" in text
    s = read_json(tmp_path / "out" / "summary.json")
    t = load("cpu_250k").train
    cap = epochs * m.family_tokens()["amber"] / (t.steps_for(D) * t.global_batch_size * t.seq_length)  # whole steps
    assert s["binding_caps"] == ["amber"] and s["data_caps"]["amber"] == pytest.approx(cap)
    assert s["optimal_ratios"]["amber"] == pytest.approx(cap, abs=1e-9)
    assert set(s["comparison"]) == {"optimal"} and "uniform" in s["skipped_baselines"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"**Data caps bind**: amber at {cap:.3f}" in md and "Baseline `uniform` was not trained" in md
    assert "**Binding at the optimum: amber**" in (tmp_path / "out" / "fit" / "report.md").read_text()


def test_inline_nemo_runs_of_two_batch_shapes_each_train_in_a_process_of_their_own(synth_data, tmp_path):
    """NeMoBackend.train on two rungs whose batch shapes differ (1 and 4 microbatches per step): NeMo's own llm.pretrain
    trains each, real model and all (the CPU in place of the GPU: tests/nemo_standin.py), in a process of its own; in
    one process megatron's microbatch calculator refused the second. Each record comes from the real validation loop
    (family data step, per-language loss reduction) and the mixture monitor; TensorBoard logs go to the study's tb/."""
    import math

    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.recipes import load
    from nemo_mlsl.study.plan import PlannedRun
    from nemo_mlsl.study.runner import execute
    from nemo_standin import cpu_nemo_backend

    ratios = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}
    n = load("cpu_15k").params(256).non_embedding
    runs = [PlannedRun("small-batch", "design", "cpu_15k", 4 * 8 * 128, ratios, 1, n),
            PlannedRun("large-batch", "design", "cpu_15k", 4 * 16 * 128, ratios, 2, n)]
    execute(runs, tmp_path, Manifest.load(synth_data), cpu_nemo_backend(),
            overrides={"large-batch": ("train.global_batch_size=16", "train.micro_batch_size=4")})
    records = {r["run_id"]: r for r in ResultsStore(tmp_path / "results.jsonl").read()}
    assert sorted(records) == ["large-batch", "small-batch"], (tmp_path / "runs" / "large-batch" / "train.log").read_text()[-3000:]
    for run_id, rec in records.items():
        assert rec["steps"] == 4 and rec["backend"] == "nemo" and rec["purpose"] == "design"
        assert set(rec["family_loss"]) == set(ratios) and len(rec["language_loss"]) == 6
        for loss in rec["family_loss"].values():  # an untrained model: about ln(vocab) per token
            assert abs(loss - math.log(256)) < 1.0
        assert set(rec["realized_ratios"]) == set(ratios) and sum(rec["realized_ratios"].values()) == pytest.approx(1.0)
        assert list((tmp_path / "tb" / run_id).glob("events.out.tfevents.*"))
        assert not (tmp_path / "runs" / run_id / "tb_logs").exists()
