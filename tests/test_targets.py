"""Targets that are not families: a run's training shares are the features, its evaluated targets (a task, a held-out
set, a language outside the mixture) what is predicted; and fit.json round trips that predict as the fit in memory."""

import json

import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.fitting.lawfit import LawFit, fit
from nemo_mlsl.fitting.observations import FamilyData, Observations
from nemo_mlsl.fitting.optimize import optimal_from_fit
from nemo_mlsl.fitting.predict import predict_runs, query_record
from nemo_mlsl.fitting.selection import select_law
from nemo_mlsl.laws.atlas import saturate
from test_mixture_laws import records as cross_records
from test_mixture_laws import shares, ye_loss

FAMS = ("f0", "f1", "f2")
# The task's loss: Ye et al.'s mixing law at one scale, L = E + exp(Σ_j t_j p_j), with its minimum inside the simplex.
TASK = {"E": 1.1, "t": np.array([-0.4, -1.6, -0.9])}


def task_loss(P: np.ndarray) -> np.ndarray:
    return TASK["E"] + np.exp(P @ TASK["t"])


def task_records(runs=60, seed=0, noise=0.001):
    """Runs at one (N, D) with Dirichlet mixtures; each evaluated on the families' own losses and on 'task', which no
    run trains on."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(3, 1.2), size=runs)
    L = task_loss(P) * np.exp(rng.normal(0, noise, runs))
    return [{"run_id": f"r{i}", "N": 1e7, "D": 1e9, "ratios": dict(zip(FAMS, map(float, p))),
             "family_loss": {"task": float(l), **{f: float(3.0 - 0.5 * p[j]) for j, f in enumerate(FAMS)}}}
            for i, (p, l) in enumerate(zip(P, L))]


def test_shares_and_targets_are_separate_columns():
    obs = Observations.from_records(task_records(8))
    assert obs.families == FAMS and obs.targets == ("f0", "f1", "f2", "task")
    assert obs.P.shape == (8, 3) and obs.L.shape == (8, 4)
    assert obs.own_index("task") == -1 and obs.own_index("f1") == 1
    data = FamilyData.of(obs, "task")
    assert not data.has_own_share and np.all(data.p == 0) and data.P.shape == (8, 3)
    assert np.allclose(obs.family_losses(), obs.L[:, :3])


def test_a_target_that_is_no_family_recovers_its_planted_law_and_its_optimum_matches_a_grid_search():
    """The task's loss is a known function of the whole mixture; a law of that form (ye_mixing: E + exp(Σ t_j p_j)
    at one scale) fitted to it gives its parameters back, and the optimum for the task alone is the grid's best."""
    recs = [{**r, "family_loss": {"task": r["family_loss"]["task"]}} for r in task_records(60, seed=1)]
    lf = fit("ye_mixing", Observations.from_records(recs), bootstrap=20, seed=0)
    got = lf.fits["task"].params
    assert got["E"] == pytest.approx(TASK["E"], rel=0.02)
    for j, f in enumerate(FAMS):
        assert got[f"t[{f}]"] == pytest.approx(TASK["t"][j], abs=0.03)
    # The optimum for the task (raw loss; no family targets in this fit), against a 1%-grid over the simplex.
    doc = json.loads(json.dumps(lf.to_dict()))
    opt = optimal_from_fit(doc, N=1e7, D=1e9, objective="raw")
    assert opt["solver"] == "slsqp" and "ci" in opt
    grid = np.array([(a, b, 1 - a - b) for a in np.arange(0, 1.001, 0.01) for b in np.arange(0, 1.001 - a, 0.01)])
    fitted = lf.fits["task"]
    pred = np.exp(fitted.law.log_predict(fitted.theta, FamilyData.at("task", FAMS, np.full(len(grid), 1e7), np.full(len(grid), 1e9), grid)))
    best = grid[np.argmin(pred)]
    p = np.array([opt["ratios"][f] for f in FAMS])
    assert np.abs(p - best).max() <= 0.011  # the grid's resolution
    assert float(np.exp(fitted.law.log_predict(fitted.theta, FamilyData.at("task", FAMS, [1e7], [1e9], p[None])))[0]) <= pred.min() + 1e-9
    # the planted law's own optimum (on its exp term alone: all weight on the family with the most negative t)
    assert max(opt["ratios"], key=opt["ratios"].get) == FAMS[int(np.argmin(TASK["t"]))]


def test_laws_that_need_the_targets_own_share_refuse_it_by_name_and_say_which_can():
    obs = Observations.from_records(task_records(30))
    for law in ("joint_family", "family_power", "chinchilla"):
        with pytest.raises(FitError, match=r"'task' is no training family.*'loglinear', 'shukor_additive'.*'ye_mixing'"):
            fit(law, obs)
    lf = fit("loglinear", obs)  # a law of the whole mixture fits every target, family or not
    assert set(lf.fits) == {"f0", "f1", "f2", "task"} and lf.mixture == FAMS
    sel = select_law(obs, ["joint_family", "ye_mixing", "loglinear"], folds=3)
    by = {s.spec: s for s in sel.scores}
    assert "no training family" in by["joint_family"].skipped and sel.chosen in ("ye_mixing", "loglinear")


def test_a_fit_of_tasks_predicts_a_query_and_reports_a_target_that_is_no_family(tmp_path):
    from nemo_mlsl.fitting.report import fit_and_report

    rep = fit_and_report(task_records(40), tmp_path, law="ye_mixing", bootstrap=10, objective="raw")
    assert rep.doc["mixture"] == list(FAMS) and set(rep.doc["families"]) == {"f0", "f1", "f2", "task"}
    assert set(rep.optimal["ratios"]) == set(FAMS)  # the simplex is over the training families only
    md = (tmp_path / "report.md").read_text()
    assert "1 of the 4 targets are no training family" in md and "`task`" in md
    lf = LawFit.from_dict(json.loads((tmp_path / "fit.json").read_text()))
    (pred,) = [e for e in predict_runs(lf, [query_record(1e7, 1e9, {"f0": 0.3, "f1": 0.45, "f2": 0.25}, lf)]) if e["family"] == "task"]
    assert pred["predicted"] == pytest.approx(task_loss(np.array([[0.3, 0.45, 0.25]]))[0], rel=0.005)  # noise 0.1%
    assert pred["lo"] < pred["predicted"] < pred["hi"]


# -- fit.json round trips ------------------------------------------------------------------------------------------


def _repeating_atlas_records(seed=0):
    """Three families; 't' has few unique tokens, so its larger shares repeat it for many epochs (the repetition term)."""
    rng = np.random.default_rng(seed)
    U = {"t": 2e7, "u": 5e8, "v": 5e8}
    recs = []
    for N in (1e6, 3e6, 1e7, 3e7):
        for D in (3e7, 1e8, 3e8):
            for _ in range(3):
                p = np.maximum(rng.dirichlet(np.full(3, 1.5)), 0.05)
                p /= p.sum()
                deff = saturate(np.array([p[0] * D]), U["t"], 1.5)[0] + 0.3 * p[1] * D + 0.05 * p[2] * D
                L = (1.2 + 300 / N ** 0.3 + 900 / deff ** 0.3) * np.exp(rng.normal(0, 0.003))
                recs.append({"run_id": f"r{len(recs)}", "N": N, "D": D, "ratios": {"t": p[0], "u": p[1], "v": p[2]},
                             "family_loss": {"t": L}, "family_tokens": U})
    return recs


ROUND_TRIP = {
    "joint_family": lambda: __import__("test_fitting").planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 1e9), per=2)[0],
    "family_power": lambda: __import__("test_fitting").planted(families=2, Ns=(1e6, 1e7), Ds=(1e8,), per=4)[0],
    "chinchilla:total": lambda: __import__("test_fitting").planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 3e8, 1e9), per=2)[0],
    "ye_mixing": lambda: cross_records(ye_loss, per=4),
    "shukor_additive": lambda: cross_records(ye_loss, per=4),
    "shukor_joint": lambda: cross_records(ye_loss, per=4),
    "loglinear": lambda: cross_records(ye_loss, per=4),
    "atlas:2": _repeating_atlas_records,
}


@pytest.mark.parametrize("spec", sorted(ROUND_TRIP))
def test_fit_json_round_trip_predicts_as_the_fit_in_memory(spec):
    """Every law, ATLAS with repetition included: the saved fit predicts the fitted runs, a query and the optimum as
    the in-memory fit does."""
    recs = ROUND_TRIP[spec]()
    obs = Observations.from_records(recs)
    lf = fit(spec, obs, bootstrap=5, seed=0)
    loaded = LawFit.from_dict(json.loads(json.dumps(lf.to_dict(), sort_keys=True)))
    saved = predict_runs(loaded, recs)
    for target in lf.fits:
        got = {e["run_id"]: e["predicted"] for e in saved if e["family"] == target}
        want = {}
        for i, rid in enumerate(obs.run_ids):  # in memory, run by run where the law predicts that run
            one = obs.subset(np.array([i]))
            if len(lf.law.data_for(one, target).loss):
                want[rid] = float(lf.predict(one, target)[0])
        assert got.keys() == want.keys() and len(got) > 0, target
        assert np.allclose([got[r] for r in want], list(want.values()), rtol=1e-12), target
    if spec.startswith("atlas"):
        # The repetition term binds: 't' repeats its 2e7 unique tokens up to 9 epochs in these runs.
        assert max(r["ratios"]["t"] * r["D"] / r["family_tokens"]["t"] for r in recs) > 4
        assert loaded.unique_tokens == {"t": 2e7, "u": 5e8, "v": 5e8}
        q = query_record(3e7, 3e8, {"t": 0.6, "u": 0.3, "v": 0.1}, loaded)
        saved = predict_runs(loaded, [q])[0]["predicted"]
        mem = float(lf.predict(Observations.from_records([{**q, "family_loss": {"t": 1.0}}]), "t")[0])
        assert saved == pytest.approx(mem, rel=1e-12)
        no_rep = float(lf.predict(Observations.from_records([{**q, "family_tokens": {}, "family_loss": {"t": 1.0}}]), "t")[0])
        assert abs(no_rep / saved - 1) > 0.01  # without the stored tokens the prediction would differ


def test_a_fit_json_whose_law_does_not_match_its_parameters_is_a_named_error():
    recs = __import__("test_fitting").planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 1e9), per=2)[0]
    doc = json.loads(json.dumps(fit("joint_family", Observations.from_records(recs)).to_dict()))
    doc["law"] = "family_power"
    with pytest.raises(ConfigError, match="do not belong to law 'family_power'.*refit"):
        LawFit.from_dict(doc)


def test_a_saved_chinchilla_total_fit_predicts_a_mixture_and_a_p_gamma_law_refuses_a_zero_share_by_name():
    recs = __import__("test_fitting").planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 3e8, 1e9), per=2)[0]
    obs = Observations.from_records(recs)
    total = LawFit.from_dict(json.loads(json.dumps(fit("chinchilla:total", obs).to_dict())))
    (e,) = predict_runs(total, [query_record(5e6, 5e8, {"f0": 0.5, "f1": 0.5}, total)])
    assert e["family"] == "total" and np.isfinite(e["predicted"])
    joint = LawFit.from_dict(json.loads(json.dumps(fit("joint_family", obs, bootstrap=5).to_dict())))
    with pytest.raises(ConfigError, match="share of 0"):
        predict_runs(joint, [query_record(5e6, 5e8, {"f0": 1.0, "f1": 0.0}, joint)])


def test_old_fit_json_without_mixture_or_tokens_still_loads_and_predicts():
    recs = cross_records(ye_loss, per=3)
    obs = Observations.from_records(recs)
    lf = fit("loglinear", obs)
    doc = json.loads(json.dumps(lf.to_dict()))
    doc.pop("mixture"), doc.pop("unique_tokens")
    old = LawFit.from_dict(doc)
    assert old.mixture == FAMS
    got = [e["predicted"] for e in predict_runs(old, recs[:5]) if e["family"] == "f1"]
    assert got == pytest.approx(list(lf.predict(obs.subset(np.arange(5)), "f1")), rel=1e-12)


def test_observations_stream_from_an_iterator_and_zero_share_targets_keep_working():
    rng = np.random.default_rng(0)
    gen = ({"run_id": f"g{i}", "N": 1e6, "D": 1e8, "ratios": dict(zip(FAMS, map(float, p))), "family_loss": {"f0": 3.0}}
           for i, p in enumerate(shares(rng, 50)))
    obs = Observations.from_records(gen)
    assert len(obs) == 50 and obs.targets == ("f0",) and obs.families == FAMS
    assert (obs.P[:, 0] == 0).sum() > 0  # a family with share 0 in some runs stays a family (its own share is data)
