import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlsl_lightning.train import TrainRequest, train
from nemo_mlsl.results import ResultsStore


def test_callback_appends_records_refits_and_logs(synth_data, tmp_path):
    store = tmp_path / "study" / "results.jsonl"
    mixes = [{"alpha": 0.6, "beta": 0.2, "gamma": 0.2}, {"alpha": 0.2, "beta": 0.6, "gamma": 0.2}, {"alpha": 0.2, "beta": 0.2, "gamma": 0.6}]
    for i, r in enumerate(mixes):
        train(TrainRequest("cpu_100k", str(synth_data), r, str(tmp_path / f"run{i}"), max_steps=4, progress=False, store=str(store),
                           law="family_power", bootstrap=5, run_id=f"run{i}"))
        assert len(ResultsStore(store).read()) == i + 1
        assert (tmp_path / "study" / "fit" / "fit.json").exists() == (i == 2)
    doc = json.loads((tmp_path / "study" / "fit" / "fit.json").read_text())
    assert doc["law"] == "family_power" and doc["n_runs"] == 3 and "optimal" in doc
    acc = EventAccumulator(str(tmp_path / "run2" / "tb"), size_guidance={"images": 4, "tensors": 10})
    acc.Reload()
    assert {"fit/alpha/gamma", "fit/optimal_ratio/beta", "fit/gamma/predicted_loss"} <= set(acc.Tags()["scalars"])
    assert "fit/loss_vs_ratio" in acc.Tags()["images"]
