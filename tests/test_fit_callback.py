import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlsl_lightning.train import TrainRequest, train
from nemo_mlsl.results import ResultsStore


def _events(path):
    acc = EventAccumulator(str(path), size_guidance={"images": 4, "tensors": 10, "scalars": 0})
    acc.Reload()
    return acc


def test_callback_appends_records_refits_and_logs(synth_data, tmp_path):
    store = tmp_path / "study" / "results.jsonl"
    mixes = [{"amber": 0.6, "cobalt": 0.2, "jade": 0.2}, {"amber": 0.2, "cobalt": 0.6, "jade": 0.2}, {"amber": 0.2, "cobalt": 0.2, "jade": 0.6}]
    for i, r in enumerate(mixes):
        train(TrainRequest("cpu_100k", str(synth_data), r, str(tmp_path / f"run{i}"), max_steps=4, progress=False, store=str(store),
                           law="family_power", bootstrap=5, run_id=f"run{i}"))
        assert len(ResultsStore(store).read()) == i + 1
        assert (tmp_path / "study" / "fit" / "fit.json").exists() == (i == 2)
    doc = json.loads((tmp_path / "study" / "fit" / "fit.json").read_text())
    assert doc["law"] == "family_power" and doc["n_runs"] == 3 and "optimal" in doc
    acc = _events(tmp_path / "run2" / "tb")
    assert {"fit/amber/gamma", "fit/optimal_ratio/cobalt", "fit/jade/predicted_loss"} <= set(acc.Tags()["scalars"])
    assert "fit/loss_vs_ratio" in acc.Tags()["images"]
    # the logged prediction for this run is the law's: L* of its (N, D) setting times p^-gamma, from fit.json
    rec = ResultsStore(store).read()[2]
    for fam in ("amber", "cobalt", "jade"):
        params = doc["families"][fam]["params"]
        want = np.exp(params[f"log_Lstar[N={rec['N']:.6g},D={rec['D']:.6g}]"]) * rec["ratios"][fam] ** -params["gamma"]
        got = acc.Scalars(f"fit/{fam}/predicted_loss")[-1].value
        assert got == pytest.approx(want, rel=1e-6)
        assert acc.Scalars(f"fit/{fam}/gamma")[-1].value == pytest.approx(params["gamma"], rel=1e-6)
        assert acc.Scalars(f"fit/{fam}/observed_loss")[-1].value == pytest.approx(rec["family_loss"][fam], rel=1e-6)


def test_a_failing_fit_never_fails_the_training_run(synth_data, tmp_path):
    """A store with a record that cannot be fitted (no loss on any family): the record is appended, the fit
    fails with a ConfigError, and the run still finishes, with the error in TensorBoard text."""
    store = ResultsStore(tmp_path / "study" / "results.jsonl")
    store.append({"run_id": "other", "N": 1e5, "D": 1e6, "ratios": {"klingon": 1.0}, "family_loss": {}})
    res = train(TrainRequest("cpu_100k", str(synth_data), {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}, str(tmp_path / "run"),
                             max_steps=3, progress=False, store=str(store.path), law="family_power", run_id="mine"))
    assert res["steps"] == 3 and (tmp_path / "run" / "result.json").exists()
    assert [r["run_id"] for r in store.read()] == ["other", "mine"]
    acc = _events(tmp_path / "run" / "tb")
    text = [e for e in acc.Tensors("fit/status/text_summary")]
    assert text and b"fit callback error" in text[-1].tensor_proto.string_val[0]
