"""Predictions from a saved fit: the planted law's losses, bootstrap intervals around them, hold-out metrics."""

import json

import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.fitting.lawfit import LawFit, fit
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.predict import prediction_metrics, predict_runs, query_record
from test_fitting import planted


def truth_loss(t, i, N, D, p):
    return (t["E"][i] + np.exp(t["a"][i]) / N ** t["alpha"][i] + np.exp(t["b"][i]) / D ** t["beta"][i]) * p ** -t["gamma"][i]


@pytest.fixture(scope="module")
def saved():
    recs, t, fams = planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 3e8, 1e9), per=2, noise=0.003)
    lf = fit("joint_family", Observations.from_records(recs), bootstrap=20, seed=0)
    return LawFit.from_dict(json.loads(json.dumps(lf.to_dict()))), t, fams  # as read back from fit.json


def test_a_query_gives_the_planted_loss_inside_its_interval(saved):
    lf, t, fams = saved
    N, D, p = 5e6, 5e8, {"f0": 0.3, "f1": 0.7}
    preds = predict_runs(lf, [query_record(N, D, p, lf)])
    assert [e["family"] for e in preds] == fams and all("observed" not in e for e in preds)
    for i, e in enumerate(preds):
        want = truth_loss(t, i, N, D, p[fams[i]])
        assert e["predicted"] == pytest.approx(want, rel=0.01)
        assert e["lo"] < e["predicted"] < e["hi"] and e["hi"] / e["lo"] < 1.1
    assert prediction_metrics(preds) is None


def test_runs_with_observed_losses_are_scored_like_a_holdout(saved):
    lf, t, fams = saved
    rng = np.random.default_rng(7)
    new = []
    for k, (N, D) in enumerate([(2e6, 2e8), (5e6, 2e8), (2e6, 6e8), (5e6, 6e8)] * 2):
        p = rng.dirichlet([2, 2]).clip(0.05)
        p /= p.sum()
        loss = {f: truth_loss(t, i, N, D, p[i]) * np.exp(rng.normal(0, 0.003)) for i, f in enumerate(fams)}
        new.append({"run_id": f"new{k}", "N": N, "D": D, "ratios": dict(zip(fams, p)), "family_loss": loss})
    new[0]["family_loss"].pop("f1")  # a run may report a subset of families
    preds = predict_runs(lf, new)
    assert sum("observed" in e for e in preds) == 2 * len(new) - 1
    m = prediction_metrics(preds)
    assert m["families"]["f0"]["n"] == len(new) and m["families"]["f1"]["n"] == len(new) - 1
    assert m["overall"]["mape"] < 1.5 and m["overall"]["r2"] > 0.9 and set(m["overall"]) == {"r2", "rmse_log", "mape", "n"}
    err = [abs(e["predicted"] / e["observed"] - 1) for e in preds if "observed" in e]
    assert np.mean(err) * 100 == pytest.approx(m["overall"]["mape"])


def test_a_query_with_an_unknown_family_or_shares_off_by_more_than_one_percent_is_refused(saved):
    lf, _, _ = saved
    with pytest.raises(ConfigError, match="'xx'.*mixture does not have"):
        query_record(1e6, 1e8, {"f0": 0.5, "xx": 0.5}, lf)
    with pytest.raises(ConfigError, match="sum to 0.9"):
        query_record(1e6, 1e8, {"f0": 0.5, "f1": 0.4}, lf)
    rec = query_record(1e6, 1e8, {"f0": 0.5, "f1": 0.496}, lf)  # within 1%: renormalized
    assert sum(rec["ratios"].values()) == pytest.approx(1.0)
