"""An adaptive mixture on the NeMo path: the recipe starts the data module on the first interval and
``NeMoAdaptiveMixtureCallback`` decides each next one at its boundary's validation, with the CPU path's policy code;
bad settings are refused by name where they enter; and inside NeMo's own ``llm.pretrain`` (the CPU in place of the GPU:
tests/nemo_standin.py) each decided interval's samples are exactly what ``BuiltSchedule.interval_audit`` counts for
it, ``schedule.json`` holds the decisions, and two runs consume the same samples."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import read_json, require_nemo, run_cli
from nemo_mlsl.errors import ConfigError

require_nemo()
HERE = Path(__file__).parent
SMALL = ["train.global_batch_size=8", "train.micro_batch_size=4"]  # two microbatches a step
START = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}
# what the test policy decides at each boundary (any history): shares no other interval has
PLAN = {2: {"amber": 0.1, "cobalt": 0.3, "jade": 0.6}, 4: {"amber": 0.3, "cobalt": 0.7}}
POLICY = "nemo_test_fixed"


def fixed_policy(ctx):
    """The ratios ``PLAN`` holds for the boundary the history ends at, with what the policy was shown as evidence."""
    from nemo_mlsl.policies import Decision

    last = ctx.history[-1]
    return Decision(dict(PLAN[last.step]), {"step": last.step, "points": len(ctx.history),
                                            "seen_loss": dict(last.family_loss), "drawn": dict(last.family_tokens),
                                            "remaining": ctx.remaining_tokens})


def register() -> None:
    from nemo_mlsl.registry import POLICIES

    POLICIES.register(POLICY, fixed_policy)


@pytest.fixture
def test_policy():
    from nemo_mlsl.registry import POLICIES

    register()
    yield POLICY
    POLICIES._extra.pop(POLICY, None)


def recipe(data, adaptive, steps=6, ratios=START, overrides=SMALL, **kw):
    from mlsl_nemo.recipe import pretrain_recipe

    return pretrain_recipe("cpu_15k", str(data), ratios, num_gpus_per_node=1, max_steps=steps, overrides=overrides,
                           adaptive=adaptive, **kw)


def test_the_recipe_starts_the_data_module_on_the_first_interval(synth_data, test_policy):
    from mlsl_nemo.callback import NeMoAdaptiveMixtureCallback

    r = recipe(synth_data, {"policy": test_policy, "interval": 2})
    assert r.data.adaptive is True and r.data.num_workers == 0
    assert r.data.schedule == {"intervals": [{"start_step": 0, "until_step": 2, "ratios": START, "reason": "initial",
                                              "evidence": {}}]}
    (cb,) = [c for c in r.trainer.callbacks if c.__fn_or_cls__ is NeMoAdaptiveMixtureCallback]
    assert (cb.policy, cb.interval, cb.max_steps, cb.min_share, cb.smoothing, cb.max_change) == (test_policy, 2, 6, 0.02, 0.5, 1.0)
    assert r.trainer.val_check_interval == 2  # the recipe's val_every (1000) does not divide the interval: every boundary
    assert recipe(synth_data, {"policy": test_policy, "interval": 4}, steps=12,
                  overrides=SMALL + ["train.val_every=2"]).trainer.val_check_interval == 2  # a divisor is kept


@pytest.mark.parametrize("adaptive, message", [
    ({"policy": "nope", "interval": 2}, "unknown policy 'nope'; available: "),
    ({"interval": 2}, "adaptive: give the policy by name"),
    ({"policy": "ado"}, "adaptive: interval must be a whole number of steps >= 1"),
    ({"policy": "ado", "interval": 0}, "adaptive: interval must be a whole number of steps >= 1"),
    ({"policy": "ado", "interval": 2.5}, "adaptive: interval must be a whole number of steps >= 1"),
    ({"policy": "ado", "interval": 2, "min_share": 1.0}, "adaptive: min_share must be in [0, 1), got 1.0"),
    ({"policy": "ado", "interval": 2, "smoothing": -0.1}, "adaptive: smoothing must be in [0, 1], got -0.1"),
    ({"policy": "ado", "interval": 2, "max_change": 0}, "adaptive: max_change must be in (0, 1]"),
    ({"policy": "ado", "interval": 2, "max_change": "big"}, "adaptive: max_change must be a number, got 'big'"),
    ({"policy": "ado", "interval": 2, "every": 3}, "adaptive: unknown field(s) ['every']"),
])
def test_bad_adaptive_settings_are_refused_by_name_when_the_recipe_is_built(synth_data, adaptive, message):
    with pytest.raises(ConfigError) as err:
        recipe(synth_data, adaptive)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_an_adaptive_recipe_needs_first_ratios_the_data_has(synth_data):
    for kw, message in [({"ratios": None}, "adaptive: give the first interval's ratios"),
                        ({"ratios": {"onyx": 1.0}}, "unknown family 'onyx' in ratios"),
                        ({"schedule": {"intervals": [{"ratios": START}]}}, "adaptive: an adaptive run starts from ratios")]:
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
            recipe(synth_data, {"policy": "ado", "interval": 2}, **kw)


def test_the_callback_refuses_a_validation_cadence_that_misses_a_boundary(test_policy):
    from types import SimpleNamespace

    from mlsl_nemo.callback import NeMoAdaptiveMixtureCallback

    cb = NeMoAdaptiveMixtureCallback(test_policy, interval=4, max_steps=12)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(adaptive=True), val_check_interval=3)
    with pytest.raises(ConfigError, match=r"^adaptive interval: the trainer's val_check_interval \(3\) must divide the "
                                          r"interval \(4 steps\)"):
        cb.on_fit_start(trainer, None)


def test_an_undecided_sample_is_refused_not_replaced(synth_data, test_policy):
    import fiddle as fdl

    from mlsl_nemo.data_module import UndecidedSample
    from nemo_mlsl.data.blend import one_process_group

    dm = fdl.build(recipe(synth_data, {"policy": test_policy, "interval": 2}).data)
    with one_process_group():
        dm.build(trainer_max_steps=6, trainer_val_check_interval=2, trainer_limit_val_batches=1, trainer_limit_test_batches=1)
    assert len(dm._train_ds) == 6 * 8 and len(dm.built.train) == 2 * 8  # NeMo's sampler is sized by the whole run
    dm._train_ds[15]
    with pytest.raises(UndecidedSample, match=r"^adaptive mixture: sample 16 \(step 2\) was read before its interval was "
                                              r"decided \(decided: steps 0-2\)"):
        dm._train_ds[16]
    with pytest.raises(IndexError):
        dm._train_ds[48]
    dm.extend(PLAN[2], 4, POLICY, {})
    assert dm._train_ds[16]["tokens"] is not None and len(dm.built.train) == 32


def test_recipes_build_takes_adaptive_and_refuses_bad_values_in_one_line(synth_data):
    out = run_cli("recipes", "build", "cpu_15k", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.3,jade=0.2",
                  "--adaptive", "ado", "--interval", "50", "--min-share", "0.05", "--dry-run").stdout
    assert "NeMoAdaptiveMixtureCallback" in out and "'reason': 'initial'" in out and "# warning" not in out
    for args, message in [
        (("--adaptive", "nope", "--interval", "50", "--ratios", "amber=1"), "unknown policy 'nope'"),
        (("--adaptive", "ado", "--ratios", "amber=1"), "--adaptive needs --interval STEPS >= 1"),
        (("--adaptive", "ado", "--interval", "50"), "--adaptive starts from --ratios"),
        (("--adaptive", "ado", "--interval", "50", "--ratios", "amber=1", "--smoothing", "2"),
         "--min-share must be in [0, 1) and --smoothing in [0, 1]; got None, 2.0"),
        (("--adaptive", "ado", "--interval", "50", "--ratios", "amber=1", "--max-change", "nan"), "--max-change must be in (0, 1]"),
        (("--interval", "50", "--ratios", "amber=1"), "--interval set(s) an --adaptive run"),
    ]:
        proc = run_cli("recipes", "build", "cpu_15k", "--data", synth_data, *args, "--dry-run", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"mlsl recipes: error: {message}"), proc.stderr
    # a backend whose build trains no adaptive mixture (a third-party one) refuses --adaptive by name
    from argparse import Namespace
    from types import SimpleNamespace

    from nemo_mlsl.cli.recipes import check_mixture

    a = Namespace(adaptive="ado", interval=50, min_share=None, smoothing=None, max_change=None, schedule=None,
                  ratios="amber=1", backend="mine")
    with pytest.raises(ConfigError, match=r"^--adaptive: mlsl recipes build --backend mine trains no adaptive mixture "
                                          r"yet; --adaptive builds on: bridge, nemo "):
        check_mixture(a, SimpleNamespace(build_adaptive=False, build_schedules=True))


def train_adaptive(data, out: Path, policy: str):
    """NeMo's own llm.pretrain on the adaptive recipe in a process of its own (the test policy registered there), every
    consumed microbatch's dataset_id recorded; returns (task, the consumed lines, the run's log directory)."""
    from mlsl_nemo.run_task import save_task
    from nemo_mlsl.placement import single_process_env
    from nemo_standin import on_cpu
    import nemo_run as run

    out.mkdir(parents=True)
    consumed = out / "consumed.jsonl"
    task = on_cpu(recipe(data, {"policy": policy, "interval": 2}, dir=str(out / "run"), name="adapt",
                         store=str(out / "results.jsonl"), law=None, tb_root=str(out / "tb")))
    task.model.config.data_step_fn = run.Config(__import__("nemo_standin").RecordingDataStep, out=str(consumed))
    task_file = save_task(task, out / "task.json.zlib")
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_nemo_adaptive as t; t.register(); "
            "import nemo_standin; sys.exit(nemo_standin.run_task_on_cpu(sys.argv[1]))")
    log = out / "train.log"
    with log.open("w") as fh:
        rc = subprocess.run([sys.executable, "-c", code, str(task_file)], env={**os.environ, **single_process_env({})},
                            stdout=fh, stderr=subprocess.STDOUT, cwd=str(HERE)).returncode
    assert rc == 0, log.read_text()[-4000:]
    return task, [json.loads(line) for line in consumed.read_text().splitlines()], out / "run" / "adapt"


@pytest.mark.slow
def test_llm_pretrain_trains_each_decided_interval_on_its_audited_samples(synth_data, tmp_path, test_policy):
    """Three intervals of two steps, the second and third decided by the policy at steps 2 and 4 (after validation
    there) inside NeMo's own llm.pretrain: the dataset_id of every sample the model trained on, interval by interval,
    counts exactly what ``BuiltSchedule.interval_audit`` counts for the decided schedule; schedule.json holds the
    decisions with the validation losses the policy was shown; a second run consumes the same samples."""
    import fiddle as fdl

    from nemo_mlsl.data.blend import one_process_group
    from nemo_mlsl.results import ResultsStore

    task, lines, log_dir = train_adaptive(synth_data, tmp_path / "a", test_policy)
    saved = read_json(log_dir / "schedule.json")["intervals"]
    assert [(iv["start_step"], iv["until_step"], iv["reason"]) for iv in saved] == [(0, 2, "initial"), (2, 4, test_policy),
                                                                                    (4, 6, test_policy)]
    assert saved[0]["ratios"] == START
    for iv in saved[1:]:
        assert iv["ratios"] == pytest.approx({**dict.fromkeys(START, 0.0), **PLAN[iv["start_step"]]}, abs=1e-12)
    history = [json.loads(line) for line in (log_dir / "adaptive_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4, 6]  # every boundary's validation, and the last
    for iv, h in zip(saved[1:], history):
        ev = iv["evidence"]
        assert ev["step"] == h["step"] and ev["seen_loss"] == h["family_loss"] and ev["points"] == h["step"] // 2
        assert set(ev["max_share"]) == {"amber", "cobalt", "jade"} and sum(ev["drawn"].values()) == h["step"] * 8 * 128
        assert ev["remaining"] == (6 - h["step"]) * 8 * 128

    # the decided schedule rebuilt as the run built it (its first interval, then each decision), and audited
    dm = fdl.build(task.data)
    with one_process_group():
        dm.build(trainer_max_steps=6, trainer_val_check_interval=2, trainer_limit_val_batches=1, trainer_limit_test_batches=1)
    for iv in saved[1:]:
        dm.extend(PLAN[iv["start_step"]], iv["until_step"], iv["reason"], iv["evidence"])
    assert [iv.to_dict() for iv in dm.schedule.intervals] == saved
    langs = task.trainer.callbacks[1].languages  # the monitor's table: the joined dataset's dataset_id
    ids = [i for line in lines if line["train"] for i in line["ids"]]
    assert len(ids) == 6 * 8 and any(not line["train"] for line in lines)  # every training sample; validation apart
    for k in range(3):
        audit = dm.built.interval_audit(k)
        got = Counter(langs[i] for i in ids[k * 16:(k + 1) * 16])
        assert {l: got.get(l, 0) for l in audit["languages"]} == {l: a["samples"] for l, a in audit["languages"].items()}, k
        assert {f: a["target"] for f, a in audit["families"].items() if a["target"]} == pytest.approx(
            saved[k]["ratios"] if k == 0 else {f: p for f, p in PLAN[2 * k].items() if p}, abs=1e-12)
    (rec,) = ResultsStore(tmp_path / "a" / "results.jsonl").read()
    assert rec["steps"] == 6 and rec["ratios"] == pytest.approx(dm.schedule.mean_ratios(), abs=1e-12)
    assert [iv["until_step"] for iv in rec["schedule"]["intervals"]] == [2, 4, 6]

    _, again, log_again = train_adaptive(synth_data, tmp_path / "b", test_policy)
    assert again == lines  # the same samples, training and validation, in the same order
    assert read_json(log_again / "schedule.json")["intervals"] == saved  # the same decisions, on the same losses


@pytest.mark.slow
def test_a_studys_adaptive_arm_trains_on_the_nemo_backend_and_its_report_reads_it(synth_data, tmp_path):
    """The study's adaptive arm as the study plans it (mixture ``adaptive:ado``, its policy settings), trained by the
    study's own NeMoBackend.train: NeMo's llm.pretrain in a process of its own (the CPU standing in for the GPU), the
    real ``ado`` policy deciding at steps 2, 4 and 6 from the run's validation losses (at 6, from its fitted curves). The record carries what the study's
    report needs of an arm (``adaptive``, the decided ``schedule``, the tags), and the report's history reads the run's
    ``adaptive_history.jsonl``."""
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.recipes import load
    from nemo_mlsl.results import ResultsStore
    from nemo_mlsl.study.plan import PlannedRun
    from nemo_mlsl.study.report import _history
    from nemo_mlsl.study.runner import execute
    from nemo_standin import cpu_nemo_backend

    settings = {"policy": "ado", "interval": 2, "min_share": 0.05, "smoothing": 0.5}
    n = load("cpu_15k").params(256).non_embedding
    arm = PlannedRun("confirm-adaptive-s0", "confirm", "cpu_15k", 8 * 8 * 128, START, 1, n, phase=2, mixture="adaptive:ado",
                     adaptive=settings)
    execute([arm], tmp_path, Manifest.load(synth_data), cpu_nemo_backend(), law=None,
            overrides={arm.run_id: tuple(SMALL)})
    log = tmp_path / "runs" / arm.run_id / "train.log"
    (rec,) = ResultsStore(tmp_path / "results.jsonl").read()
    assert rec["backend"] == "nemo" and rec["mixture"] == "adaptive:ado" and rec["purpose"] == "confirm", log.read_text()[-3000:]
    assert {k: v for k, v in rec["adaptive"].items() if k != "decision_s"} == {**settings, "max_change": 1.0, "decisions": 3}
    ivs = rec["schedule"]["intervals"]
    assert [(iv["start_step"], iv["until_step"], iv["reason"]) for iv in ivs] == [
        (0, 2, "initial"), (2, 4, "ado"), (4, 6, "ado"), (6, 8, "ado")]
    assert "fits" in ivs[3]["evidence"] and ivs[3]["ratios"] != ivs[2]["ratios"]  # three validations: a decision from fits
    for iv in ivs[1:]:
        ev = iv["evidence"]  # ado fits once it has enough validations; before that it keeps the ratios and says why
        assert ev["policy"] == "ado" and (set(ev["fits"]) == set(START) if "fits" in ev else "fewer than" in ev["kept"])
        assert min(iv["ratios"].values()) >= 0.05 - 1e-9 and sum(iv["ratios"].values()) == pytest.approx(1.0)
    assert rec["ratios"] == pytest.approx({f: sum(iv["ratios"][f] * 2 for iv in ivs) / 8 for f in START}, abs=1e-12)
    history = _history(tmp_path, arm.run_id)
    assert [h["step"] for h in history] == [2, 4, 6, 8] and history[-1]["family_loss"] == pytest.approx(rec["family_loss"])


class StopAt:
    """Ends training after ``step`` steps as NeMo's preemption callback ends a run it was asked to stop (the last
    checkpoint is saved as training ends); a Lightning callback, built in the training process."""

    def __new__(cls, step: int):
        import lightning.pytorch as pl

        class _StopAt(pl.Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.global_step >= step:
                    trainer.should_stop = True

        return _StopAt()


def train_ado(data, out: Path, attempt: str, stop_at: int | None = None, steps: int = 8):
    """The ado policy every 2 steps for ``steps`` steps inside NeMo's llm.pretrain (a process of its own), NeMo's
    checkpoints every 3 steps in ``out/runs/r`` (a study's layout); the consumed samples of this attempt in ``out/consumed-<attempt>.jsonl``.
    Started again on the same ``out``, the run resumes from its last checkpoint."""
    from mlsl_nemo.run_task import save_task
    from nemo_mlsl.placement import single_process_env
    from nemo_standin import on_cpu
    import nemo_run as run

    out.mkdir(parents=True, exist_ok=True)
    consumed = out / f"consumed-{attempt}.jsonl"
    task = on_cpu(recipe(data, {"policy": "ado", "interval": 2, "min_share": 0.05}, steps=steps, dir=str(out / "runs" / "r"),
                         name="adapt", store=str(out / "results.jsonl"), law=None, tb_root=str(out / "tb")))
    task.model.config.data_step_fn = run.Config(__import__("nemo_standin").RecordingDataStep, out=str(consumed))
    if stop_at is not None:
        task.trainer.callbacks.append(run.Config(StopAt, step=stop_at))
    task_file = save_task(task, out / f"task-{attempt}.json.zlib")
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import nemo_standin; "
            "sys.exit(nemo_standin.run_task_on_cpu(sys.argv[1], checkpoint_every=3))")
    log = out / f"train-{attempt}.log"
    with log.open("w") as fh:
        rc = subprocess.run([sys.executable, "-c", code, str(task_file)], env={**os.environ, **single_process_env({})},
                            stdout=fh, stderr=subprocess.STDOUT, cwd=str(HERE)).returncode
    assert rc == 0, log.read_text()[-4000:]
    return [json.loads(line) for line in consumed.read_text().splitlines()], out / "runs" / "r" / "adapt"


@pytest.mark.slow
def test_a_resumed_adaptive_nemo_run_reads_the_samples_and_makes_the_decisions_of_an_uninterrupted_one(synth_data, tmp_path):
    """NeMo's llm.pretrain with the ado policy every 2 steps, stopped after step 5 (inside the third interval, which the
    policy decided at step 4) and started again: NeMo resumes from its checkpoint at step 5, whose data module state
    holds the decided intervals and whose callback state holds the validation history. The training samples of the two
    attempts, in order, are those of an uninterrupted run, and so are every decision (ratios and evidence), the history
    and the record."""
    from nemo_mlsl.results import ResultsStore
    from nemo_mlsl.study.report import _history

    full, full_dir = train_ado(synth_data, tmp_path / "full", "whole")
    first, run_dir = train_ado(synth_data, tmp_path / "cut", "first", stop_at=5)
    assert not (tmp_path / "cut" / "results.jsonl").exists() or not ResultsStore(tmp_path / "cut" / "results.jsonl").read()
    held = read_json(run_dir / "schedule.json")["intervals"]
    assert [iv["until_step"] for iv in held] == [2, 4, 6]  # stopped inside an interval the policy decided
    second, _ = train_ado(synth_data, tmp_path / "cut", "second")
    train_ids = lambda lines: [line["ids"] for line in lines if line["train"]]  # noqa: E731
    assert len(train_ids(first)) == 5 * 2 and len(train_ids(second)) == 3 * 2  # two microbatches a step
    assert train_ids(first) + train_ids(second) == train_ids(full)
    whole = read_json(full_dir / "schedule.json")["intervals"]
    assert [(iv["start_step"], iv["until_step"], iv["reason"]) for iv in whole] == [
        (0, 2, "initial"), (2, 4, "ado"), (4, 6, "ado"), (6, 8, "ado")]
    assert "fits" in whole[3]["evidence"]  # the decision after the resume is one from fitted curves
    assert read_json(run_dir / "schedule.json")["intervals"] == whole
    (a,), (b,) = ResultsStore(tmp_path / "full" / "results.jsonl").read(), ResultsStore(tmp_path / "cut" / "results.jsonl").read()
    assert a["schedule"] == b["schedule"] and a["family_loss"] == b["family_loss"] and a["ratios"] == b["ratios"]
    assert a["adaptive"]["decisions"] == 3 and b["adaptive"]["decisions"] == 1  # each attempt counts its own (step 6 here)
    hist = lambda out: [(h["step"], h["family_loss"]) for h in _history(out, "r")]  # noqa: E731  (the report's reader)
    assert (tmp_path / "cut" / "runs" / "r" / "adapt" / "run_0" / "adaptive_history.jsonl").is_file()  # NeMo moved it
    assert hist(tmp_path / "cut") == hist(tmp_path / "full") and [s for s, _ in hist(tmp_path / "full")] == [2, 4, 6, 8]
