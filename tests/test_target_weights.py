"""The objective over targets: ``--targets`` / ``objective.targets`` select and weigh the targets the optimum serves
(names or patterns; a pattern's weight shared by its members), whether or not a target is a training family."""

import json

import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.fitting.lawfit import fit
from nemo_mlsl.fitting.observations import FamilyData, Observations
from nemo_mlsl.fitting.optimize import optimal_from_fit
from nemo_mlsl.fitting.target_weights import resolve_groups, target_weights

FAMS = ("f0", "f1", "f2")
# Two downstream tasks no run trains on, each Ye et al.'s mixing law at one scale (L = E + exp(Σ_j t_j p_j)), pulling
# the mixture different ways, so their weighted optimum is a compromise that moves with the weights.
TASKS = {"task:a": (1.1, np.array([-0.4, -1.6, -0.9])), "task:b": (0.9, np.array([-1.5, -0.2, -0.8]))}


def records(runs=80, seed=0, noise=0.001):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(3, 1.2), size=runs)
    out = []
    for i, p in enumerate(P):
        loss = {t: float((E + np.exp(p @ tv)) * np.exp(rng.normal(0, noise))) for t, (E, tv) in TASKS.items()}
        out.append({"run_id": f"r{i}", "N": 1e7, "D": 1e9, "ratios": dict(zip(FAMS, map(float, p))), "family_loss": loss})
    return out


@pytest.fixture(scope="module")
def task_fit():
    lf = fit("ye_mixing", Observations.from_records(records()), bootstrap=10, seed=0)
    return lf, json.loads(json.dumps(lf.to_dict()))


def grid_best(lf, weights):
    """The best point of a 1% grid over the simplex for Σ_t w_t L_t (raw), from the fitted laws."""
    grid = np.array([(a, b, 1 - a - b) for a in np.arange(0, 1.001, 0.01) for b in np.arange(0, 1.001 - a, 0.01)])
    n = len(grid)
    total = np.zeros(n)
    for t, w in weights.items():
        tf = lf.fits[t]
        total += w * np.exp(tf.law.log_predict(tf.theta, FamilyData.at(t, FAMS, np.full(n, 1e7), np.full(n, 1e9), grid)))
    return grid[np.argmin(total)], total.min()


def test_a_pattern_is_a_group_whose_weight_its_members_share_and_unnamed_targets_weigh_nothing():
    names = ["arc_easy:rc", "arc_challenge:rc", "hellaswag:rc", "mmlu_bio:mc", "mmlu_law:mc", "piqa:rc"]
    w = target_weights("arc_*=2,mmlu_*,piqa:rc=0.5", names)
    assert w == {"arc_easy:rc": 1.0, "arc_challenge:rc": 1.0, "hellaswag:rc": 0.0, "mmlu_bio:mc": 0.5,
                 "mmlu_law:mc": 0.5, "piqa:rc": 0.5}
    assert target_weights({"*:rc": 1}, names) == target_weights(["*:rc=1"], names)
    groups = resolve_groups("arc_*=2", names)
    assert groups[0].members == ("arc_easy:rc", "arc_challenge:rc") and groups[0].weight == 2.0


@pytest.mark.parametrize("spec, words", [
    ("arc_*,arc_easy:rc", ["'arc_easy:rc'", "both", "'arc_*'"]),           # one target in two groups
    ("swahili", ["'swahili' matches no target", "e.g."]),                  # names the fit's targets
    ("arc_*=two", ["weight of 'arc_*'", "'two'"]),
    ("arc_*=-1", ["weight of 'arc_*'", ">= 0"]),
    ("arc_*=0", ["every weight is 0"]),
    ("=2", ["no target name"]),
    ("", ["at least one target"]),
])
def test_a_selection_that_cannot_be_honoured_is_a_named_error(spec, words):
    with pytest.raises(ConfigError) as err:
        target_weights(spec, ["arc_easy:rc", "arc_challenge:rc", "hellaswag:rc"])
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("spec, weights", [
    ("task:*", {"task:a": 0.5, "task:b": 0.5}),       # the group's mean
    ("task:a=3,task:b", {"task:a": 3.0, "task:b": 1.0}),
    ("task:b", {"task:b": 1.0}),                       # one task alone; the other weighs 0
])
def test_the_optimum_over_tasks_that_are_no_family_matches_a_grid_search_of_the_weighted_objective(task_fit, spec, weights):
    lf, doc = task_fit
    opt = optimal_from_fit(doc, N=1e7, D=1e9, objective="raw", targets=spec)
    assert opt["weights"] == {t: weights.get(t, 0.0) for t in TASKS}
    best, best_value = grid_best(lf, weights)
    p = np.array([opt["ratios"][f] for f in FAMS])
    assert np.abs(p - best).max() <= 0.011  # the grid's resolution
    at_p = sum(w * float(np.exp(lf.fits[t].law.log_predict(lf.fits[t].theta, FamilyData.at(t, FAMS, [1e7], [1e9], p[None])))[0])
               for t, w in weights.items())
    assert at_p <= best_value + 1e-9
    assert "ci" in opt and opt["targets"][0]["pattern"] == spec.split(",")[0].split("=")[0]


def test_the_weights_move_the_optimum_toward_the_heavier_task(task_fit):
    _, doc = task_fit
    a = optimal_from_fit(doc, N=1e7, D=1e9, objective="raw", targets="task:a=9,task:b")["ratios"]
    b = optimal_from_fit(doc, N=1e7, D=1e9, objective="raw", targets="task:a,task:b=9")["ratios"]
    assert a["f1"] > b["f1"] and b["f0"] > a["f0"]  # task:a gains most from f1, task:b from f0 (the planted t's)


def test_targets_and_weights_together_are_refused(task_fit):
    with pytest.raises(ConfigError, match="either --targets"):
        optimal_from_fit(task_fit[1], N=1e7, D=1e9, targets="task:a", weights={"task:b": 2.0})


def separable_records(seed=0):
    """He et al.'s law planted on three families, two scales, Dirichlet mixtures."""
    rng = np.random.default_rng(seed)
    gam = {"f0": 0.15, "f1": 0.3, "f2": 0.2}
    out = []
    for i in range(48):
        N, D = (1e6, 1e8) if i % 2 else (4e6, 4e8)
        p = rng.dirichlet(np.full(3, 2.0))
        loss = {f: float((1.5 + 300 / N ** 0.35 + 900 / D ** 0.3) * p[j] ** -gam[f] * np.exp(rng.normal(0, 0.002)))
                for j, f in enumerate(FAMS)}
        out.append({"run_id": f"s{i}", "N": N, "D": D, "ratios": dict(zip(FAMS, map(float, p))), "family_loss": loss})
    return out


def test_a_separable_law_gives_families_no_target_names_only_their_minimum_ratio():
    doc = json.loads(json.dumps(fit("joint_family", Observations.from_records(separable_records()), bootstrap=0).to_dict()))
    opt = optimal_from_fit(doc, N=1e7, D=1e9, targets="f1", min_ratio=0.05)
    assert opt["ratios"]["f0"] == pytest.approx(0.05) and opt["ratios"]["f2"] == pytest.approx(0.05)
    assert opt["ratios"]["f1"] == pytest.approx(0.9)  # closed form: what the others' minima leave
    # two families of equal weight: the KKT optimum with those weights, the third at its minimum
    both = optimal_from_fit(doc, N=1e7, D=1e9, targets="f0,f1", min_ratio=0.05)
    named = optimal_from_fit(doc, N=1e7, D=1e9, weights={"f0": 1.0, "f1": 1.0, "f2": 0.0}, min_ratio=0.05)
    assert both["ratios"] == pytest.approx(named["ratios"], abs=1e-12) and both["ratios"]["f2"] == pytest.approx(0.05)


def test_mlsl_optimize_takes_targets_and_the_report_totals_are_the_weighted_objective(tmp_path, task_fit, capsys):
    from nemo_mlsl.cli import main
    from nemo_mlsl.fitting.report import fit_and_report

    _, doc = task_fit
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(doc))
    assert main(["optimize", "--fit", str(path), "--N", "1e7", "--D", "1e9", "--objective", "raw", "--targets", "task:*"]) == 0
    out = capsys.readouterr().out
    assert "target task:*: weight 1 shared by 2 targets" in out and "f0" in out
    assert main(["optimize", "--fit", str(path), "--N", "1e7", "--D", "1e9", "--targets", "nope*"]) == 2
    assert "'nope*' matches no target" in capsys.readouterr().err
    rep = fit_and_report(records(), tmp_path / "rep", law="ye_mixing", bootstrap=0, objective="raw", targets="task:b")
    comp = rep.optimal["comparison"]
    assert comp["optimal"]["total"] == pytest.approx(comp["optimal"]["predicted_loss"]["task:b"])
    assert comp["optimal"]["total"] <= min(c["total"] for c in comp.values()) + 1e-12
    assert "`task:b` weight 1 over 1 target" in (tmp_path / "rep" / "report.md").read_text()


def test_a_study_config_takes_objective_targets_and_refuses_them_with_weights(tmp_path):
    import yaml

    from nemo_mlsl.study.config import load_study

    base = yaml.safe_load(open("studies/default.yaml"))
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({**base, "objective": {"type": "normalized", "targets": {"amber": 2, "r*": 1}}}))
    assert load_study(ok).objective.targets == {"amber": 2.0, "r*": 1.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**base, "objective": {"targets": {"amber": 1}, "weights": {"amber": 2}}}))
    with pytest.raises(ConfigError, match="either weights"):
        load_study(bad)
    neg = tmp_path / "neg.yaml"
    neg.write_text(yaml.safe_dump({**base, "objective": {"targets": {"amber": -1}}}))
    with pytest.raises(ConfigError, match="objective.targets: the weight of 'amber'"):
        load_study(neg)
