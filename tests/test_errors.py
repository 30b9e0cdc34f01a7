"""Bad input gets a named error (exit code 2, message naming the field and the fix), never a traceback."""

import json

import numpy as np
import pytest

from conftest import have_bridge, run_cli
from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.results import ResultsStore


def fails(*args):
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_optimize_on_a_corrupt_or_missing_fit(tmp_path):
    (tmp_path / "fit.json").write_text('{"law": "joint_family", "families": {')
    assert "is not valid JSON" in fails("optimize", "--fit", tmp_path / "fit.json", "--N", "1e6", "--D", "1e8")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert "is not a fit.json (it needs 'law' and 'families')" in fails("optimize", "--fit", tmp_path / "other.json")
    assert "does not exist; write it with `mlsl fit" in fails("optimize", "--fit", tmp_path / "nope.json")


def test_optimize_caps_need_a_budget(tmp_path, synth_data):
    (tmp_path / "fit.json").write_text(json.dumps({"law": "joint_family", "families": {}}))
    assert "give the token budget --D" in fails("optimize", "--fit", tmp_path / "fit.json", "--data", synth_data)
    assert "--max-epochs needs --data DIR" in fails("optimize", "--fit", tmp_path / "fit.json", "--max-epochs", "2")


def test_transfer_score_without_a_plan(tmp_path):
    err = fails("transfer", "score", "--runs", tmp_path)
    assert f"{tmp_path / 'plan.json'} does not exist" in err and "mlsl transfer design" in err


def test_crossover_inputs(tmp_path):
    err = fails("crossover", "--pretrain", tmp_path / "none.jsonl", "--finetune", tmp_path / "none.jsonl", "--N", "1e6")
    assert "none.jsonl does not exist: give the metrics.jsonl of a finished run" in err
    assert "crossover --published needs the model size: --N" in fails("crossover", "--published")


def test_plan_languages_from_zero():
    assert "must be > 0; got --from 0 --to 4" in fails("plan-languages", "--from", "0", "--to", "4")


def test_fit_on_a_store_that_does_not_exist(tmp_path):
    err = fails("fit", "--runs", tmp_path / "missing.jsonl", "--out", tmp_path / "fit")
    assert "no results store there" in err and "missing.jsonl does not exist" in err


@pytest.mark.parametrize("bad,match", [
    ({"N": True}, "N must be a positive number, got True"),
    ({"ratios": {"a": 1.5, "b": -0.5}}, r"ratios\['b'\] = -0.5; a ratio is a number in \[0, 1\]"),
    ({"ratios": {"a": True, "b": False}}, r"ratios\['a'\] = True"),
    ({"family_loss": {"a": True, "b": 3.0}}, r"family_loss\['a'\] = True is not a positive finite loss"),
])
def test_store_refuses_booleans_and_negative_ratios(tmp_path, bad, match):
    rec = {"run_id": "r1", "N": 1e6, "D": 1e8, "ratios": {"a": 0.5, "b": 0.5}, "family_loss": {"a": 3.0, "b": 3.5}, **bad}
    with pytest.raises(ConfigError, match=match):
        ResultsStore(tmp_path / "s.jsonl").append(rec)
    assert not (tmp_path / "s.jsonl").exists()


def test_a_short_write_is_rolled_back(tmp_path, monkeypatch):
    import os

    store = ResultsStore(tmp_path / "s.jsonl")
    good = {"run_id": "r1", "N": 1e6, "D": 1e8, "ratios": {"a": 1.0}, "family_loss": {"a": 3.0}}
    store.append(good)
    before = store.path.read_bytes()
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[: len(data) // 2]))
    with pytest.raises(DataError, match=r"wrote \d+ of \d+ bytes of run 'r2' \(disk full\?\); the partial line was removed"):
        store.append(dict(good, run_id="r2"))
    monkeypatch.undo()
    assert store.path.read_bytes() == before and [r["run_id"] for r in store.read()] == ["r1"]


def test_the_store_survives_pickling_and_deepcopy(tmp_path):
    import copy
    import pickle

    store = ResultsStore(tmp_path / "s.jsonl")
    store.append({"run_id": "first", "N": 1.0, "D": 1.0, "ratios": {"a": 1.0}, "family_loss": {"a": 1.0}})  # takes the lock
    for clone in (copy.deepcopy(store), pickle.loads(pickle.dumps(store))):
        clone.append({"run_id": f"r{id(clone)}", "N": 1.0, "D": 1.0, "ratios": {"a": 1.0}, "family_loss": {"a": 1.0}})
    assert len(store.read()) == 3


def test_optimize_with_data_caps_puts_a_short_family_exactly_at_its_cap(tmp_path, lopsided_data):
    """The user path: `mlsl optimize --data DIR --D ... --max-epochs ...` on a fit of that data's families."""
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.fitting.lawfit import fit
    from nemo_mlsl.fitting.observations import Observations
    from nemo_mlsl.fitting.optimize import optimal_from_fit
    from test_fitting import planted

    synth_data = lopsided_data
    m = Manifest.load(synth_data)
    fams = sorted(m.families)
    recs, _, names = planted(families=len(fams))
    rename = dict(zip(names, fams))
    recs = [dict(r, ratios={rename[k]: v for k, v in r["ratios"].items()}, family_loss={rename[k]: v for k, v in r["family_loss"].items()})
            for r in recs]
    doc = fit("joint_family", Observations.from_records(recs), bootstrap=5).to_dict()
    (tmp_path / "fit.json").write_text(json.dumps(doc, sort_keys=True))
    free = optimal_from_fit(doc, N=3e7, D=1e9)["ratios"]
    tokens = m.family_tokens()
    short = min(fams, key=lambda f: tokens[f] / free[f])  # the family whose data runs out first
    assert short == "amber"
    D = tokens[short] / (0.7 * free[short])  # one epoch of it is 70% of what the law wants
    out = json.loads(run_cli("optimize", "--fit", tmp_path / "fit.json", "--N", "3e7", "--D", str(D), "--data", synth_data,
                             "--max-epochs", "1", "--json").stdout)
    assert out["ratios"][short] == pytest.approx(tokens[short] / D, rel=1e-12)
    assert out["binding_caps"] == [short] and sum(out["ratios"].values()) == pytest.approx(1.0, abs=1e-12)
    text = run_cli("optimize", "--fit", tmp_path / "fit.json", "--N", "3e7", "--D", str(D), "--data", synth_data,
                   "--max-epochs", "1").stdout
    assert f"data cap {tokens[short] / D:.4f} (binding)" in text
    assert np.isclose(sum(out["ratios"].values()), 1.0)


@pytest.mark.skipif(have_bridge(), reason="this environment has Megatron-Bridge")
def test_bridge_backend_outside_its_environment(tmp_path):
    """The CPU/NeMo environment has no Megatron-Bridge: every --backend bridge says where it lives."""
    for args in (("recipes", "build", "atlas_s00", "--backend", "bridge", "--dry-run"),
                 ("train", "--backend", "bridge", "--recipe", "cpu_15k", "--data", tmp_path, "--ratios", "a=1", "--out", tmp_path / "r"),
                 ("study", "--config", "studies/default.yaml", "--out", tmp_path / "s", "--backend", "bridge", "--dry-run")):
        assert "needs Megatron-Bridge, which lives in its own Python 3.12 environment: run `make setup-bridge`" in fails(*args)
