"""A mixture schedule on the NeMo path: the recipe carries it to NeMo's data module, which trains on the intervals'
joined dataset (``ScheduledBlend``) with the validation set unchanged; bad schedules are refused by name where they
enter; and inside NeMo's own ``llm.pretrain`` (the CPU in place of the GPU: tests/nemo_standin.py) the samples the
model consumed in each interval are exactly what ``mlsl blend --schedule`` audits for it."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import read_json, require_nemo, run_cli
from nemo_mlsl.errors import ConfigError

require_nemo()
HERE = Path(__file__).parent
SMALL = ["train.global_batch_size=8", "train.micro_batch_size=4"]  # two microbatches a step
SCHEDULE = {"intervals": [{"until_step": 2, "ratios": {"amber": 0.7, "cobalt": 0.2, "jade": 0.1}},
                          {"until_step": 4, "ratios": {"amber": 0.1, "cobalt": 0.3, "jade": 0.6}},
                          {"ratios": {"amber": 0.3, "cobalt": 0.7}}]}


def recipe(data, schedule=SCHEDULE, steps=6, **kw):
    from mlsl_nemo.recipe import pretrain_recipe

    return pretrain_recipe("cpu_15k", str(data), None, num_gpus_per_node=1, max_steps=steps, overrides=SMALL,
                           schedule=schedule, **kw)


def built_data_module(config, steps):
    import fiddle as fdl

    from nemo_mlsl.data.blend import one_process_group

    dm = fdl.build(config)
    with one_process_group():
        dm.build(trainer_max_steps=steps, trainer_val_check_interval=steps, trainer_limit_val_batches=1,
                 trainer_limit_test_batches=1)
    return dm


def blend_audit(data, schedule_file: Path, steps: int) -> dict:
    """``mlsl blend --schedule``'s audit of every interval, as a user runs it."""
    return json.loads(run_cli("blend", "--data", data, "--schedule", schedule_file, "--samples", steps * 8,
                              "--global-batch-size", 8, "--seq-length", 128, "--seed", 1234, "--max-epochs", 8,
                              "--json").stdout)


def test_the_recipe_carries_the_schedule_into_nemos_data_module(synth_data, tmp_path):
    from mlsl_nemo.callback import NeMoScheduleCallback

    r = recipe(synth_data)
    assert r.data.schedule["intervals"][2] == {"start_step": 4, "until_step": 6, "ratios": {"amber": 0.3, "cobalt": 0.7},
                                               "reason": "fixed", "evidence": {}}
    assert any(c.__fn_or_cls__ is NeMoScheduleCallback for c in r.trainer.callbacks)
    mean = {"amber": (0.7 + 0.1 + 0.3) / 3, "cobalt": (0.2 + 0.3 + 0.7) / 3, "jade": (0.1 + 0.6) / 3}
    hp = next(c for c in r.trainer.callbacks if "Hparams" in c.__fn_or_cls__.__name__).hparams
    assert {f: hp[f"ratio/{f}"] for f in mean} == pytest.approx(mean)
    dm = built_data_module(r.data, 6)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SCHEDULE))
    audit = blend_audit(synth_data, tmp_path / "s.yaml", 6)
    langs = r.trainer.callbacks[1].languages  # the monitor's table: the joined dataset's dataset_id
    ids = np.asarray(dm._train_ds.dataset_index[:48])
    for k, iv in enumerate(audit["intervals"]):
        got = Counter(langs[i] for i in ids[k * 16:(k + 1) * 16])
        assert {l: got.get(l, 0) for l in iv["languages"]} == {l: a["samples"] for l, a in iv["languages"].items()}
    # the validation set is the one a run on fixed ratios validates on, sample for sample
    from mlsl_nemo.recipe import pretrain_recipe

    plain = pretrain_recipe("cpu_15k", str(synth_data), "amber=0.5,cobalt=0.3,jade=0.2", num_gpus_per_node=1, max_steps=6,
                            overrides=SMALL)
    fixed = built_data_module(plain.data, 6)._validation_ds
    assert len(dm._validation_ds) == len(fixed)
    for i in (0, 7, len(fixed) - 1):
        a, b = dm._validation_ds[i], fixed[i]
        assert set(a) == set(b) and all(np.array_equal(np.asarray(a[key]), np.asarray(b[key])) for key in a)


@pytest.mark.parametrize("schedule, steps, message", [
    ({"intervals": [{"until_step": 2, "ratios": {"amber": 1.0}}, {"until_step": 5, "ratios": {"jade": 1.0}}]}, 6,
     "schedule intervals[1].until_step = 5, but the run trains 6 steps"),
    ({"intervals": [{"until_step": 2, "ratios": {"amber": 1.0}}, {"until_step": 2, "ratios": {"jade": 1.0}},
                    {"ratios": {"cobalt": 1.0}}]}, 6,
     "schedule intervals[1].until_step = 2 leaves interval 1 without steps"),
    ({"intervals": [{"until_step": 2, "ratios": {"amber": 1.0}}, {"ratios": {"onyx": 1.0}}]}, 6,
     "schedule intervals[1].ratios (steps 2-6): unknown family 'onyx' in ratios; the data has: amber, cobalt, jade"),
    ({"intervals": [{"until_step": 2, "ratios": {"amber": 1.0}}, {"ratios": {"jade": 0.6}}]}, 6,
     "schedule intervals[1].ratios (steps 2-6): ratios sum to 0.6, not 1"),
])
def test_a_bad_schedule_is_refused_by_name_when_the_recipe_is_built(synth_data, schedule, steps, message):
    with pytest.raises(ConfigError) as err:
        recipe(synth_data, schedule, steps)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_data_module_checks_the_schedule_against_the_trainers_max_steps(synth_data):
    """A recipe whose trainer.max_steps was changed after it was built: the data module refuses, naming the field."""
    with pytest.raises(ConfigError, match=r"^schedule intervals\[2\].until_step = 6, but the run trains 8 steps"):
        built_data_module(recipe(synth_data).data, 8)


def test_recipes_build_takes_a_schedule_file_and_refuses_bad_input_in_one_line(synth_data, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"intervals": [{"until_step": 50, "ratios": {"amber": 0.8, "cobalt": 0.2}},
                                                  {"ratios": {"jade": 1.0}}]}))
    out = run_cli("recipes", "build", "cpu_15k", "--data", synth_data, "--schedule", good, "--dry-run").stdout
    assert "NeMoScheduleCallback" in out and "'until_step': 200" in out and "# warning" not in out
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({"intervals": [{"until_step": 50, "ratios": {"amber": 1.0}}]}))
    for args, message in [
        (("--schedule", short), f"--schedule {str(short)!r}: intervals[0].until_step = 50, but the run trains 200 steps"),
        (("--schedule", good, "--ratios", "amber=1"), "give --ratios or --schedule, not both"),
        (("--adaptive", "ado", "--ratios", "amber=1"), "--adaptive needs --interval STEPS >= 1"),
    ]:
        proc = run_cli("recipes", "build", "cpu_15k", "--data", synth_data, *args, "--dry-run", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith(f"mlsl recipes: error: {message}"), proc.stderr


def test_nemos_cli_factory_takes_a_schedule_file(synth_data, tmp_path, monkeypatch):
    """``nemo llm pretrain --factory "mlsl_<rung>(data=..., schedule=FILE)"``: the file, checked against the rung's
    steps, replaces the ratios (also $MLSL_RATIOS)."""
    from mlsl_nemo.factories import _make

    monkeypatch.setenv("MLSL_RATIOS", "amber=1")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SCHEDULE))
    r = _make("cpu_15k")(data=str(synth_data), schedule=str(path))
    assert [iv["until_step"] for iv in r.data.schedule["intervals"]] == [2, 4, 200]
    assert r.trainer.max_steps == 200


@pytest.mark.slow
def test_llm_pretrain_consumes_each_intervals_audited_samples(synth_data, tmp_path):
    """NeMo's own llm.pretrain trains the scheduled recipe (a real model, the CPU in place of the GPU, in a process of
    its own as the study's runs are): the dataset_id of every sample the data step handed the model during training,
    interval by interval, counts exactly what `mlsl blend --schedule` audits; schedule.json and the record's intervals
    (with the shares they realised) are the run's."""
    from mlsl_nemo.run_task import save_task
    from nemo_mlsl.placement import single_process_env
    from nemo_mlsl.results import ResultsStore
    from nemo_standin import on_cpu
    import nemo_run as run

    consumed = tmp_path / "consumed.jsonl"
    task = on_cpu(recipe(synth_data, dir=str(tmp_path / "run"), name="sched", store=str(tmp_path / "results.jsonl"),
                         law=None, tb_root=str(tmp_path / "tb")))
    task.model.config.data_step_fn = run.Config(__import__("nemo_standin").RecordingDataStep, out=str(consumed))
    task_file = save_task(task, tmp_path / "task.json.zlib")
    log = tmp_path / "train.log"
    with log.open("w") as fh:
        code = subprocess.run([sys.executable, str(HERE / "nemo_standin.py"), "run-task", str(task_file)],
                              env={**os.environ, **single_process_env({})}, stdout=fh, stderr=subprocess.STDOUT).returncode
    assert code == 0, log.read_text()[-4000:]

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SCHEDULE))
    audit = blend_audit(synth_data, tmp_path / "s.yaml", 6)
    langs = task.trainer.callbacks[1].languages
    lines = [json.loads(line) for line in consumed.read_text().splitlines()]
    ids = [i for line in lines if line["train"] for i in line["ids"]]
    assert len(ids) == 6 * 8 and any(not line["train"] for line in lines)  # every training sample; validation apart
    for k, iv in enumerate(audit["intervals"]):
        got = Counter(langs[i] for i in ids[k * 16:(k + 1) * 16])
        assert {l: got.get(l, 0) for l in iv["languages"]} == {l: a["samples"] for l, a in iv["languages"].items()}, k
    (rec,) = ResultsStore(tmp_path / "results.jsonl").read()
    assert rec["steps"] == 6 and rec["backend"] == "nemo"
    whole = audit["whole"]["families"]  # the mixture monitor read the joined dataset's sample index
    assert rec["ratios"] == pytest.approx({f: a["target"] for f, a in whole.items()}, abs=1e-12)
    assert rec["realized_ratios"] == pytest.approx({f: a["realized"] for f, a in whole.items()}, abs=1e-12)
    for k, (iv, want) in enumerate(zip(rec["schedule"]["intervals"], audit["intervals"])):
        assert (iv["start_step"], iv["until_step"]) == (2 * k, 2 * k + 2)
        assert iv["realized"] == pytest.approx({f: a["realized"] for f, a in want["families"].items()}, abs=1e-12)
    saved = read_json(tmp_path / "run" / "sched" / "schedule.json")
    assert saved == {"intervals": [{k: v for k, v in iv.items() if k != "realized"} for iv in rec["schedule"]["intervals"]]}
