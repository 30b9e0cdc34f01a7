"""The faster fitter gives the fits it gave before: every law's evaluator equals its ``log_predict`` and ``jacobian``
bit for bit, any number of worker processes gives the same fit and selection bit for bit as one process and as the
reference path (the fitter before the speed-ups), and long fits report progress (a line per fold and law off a
terminal). The RegMix selection table against the one the fitter wrote before the speed-ups is in
tests/test_selection_regmix.py."""

import io
import sys

import numpy as np
import pytest

from conftest import run_cli
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.fitting import progress as progress_mod
from nemo_mlsl.fitting.lawfit import _objective, contiguous, fit, make_law
from nemo_mlsl.fitting.observations import FamilyData, Observations
from nemo_mlsl.fitting.parallel import check_jobs
from nemo_mlsl.fitting.progress import FitProgress
from nemo_mlsl.fitting.selection import select_law, selection_markdown
from nemo_mlsl.laws.base import Law
from nemo_mlsl.results import ResultsStore
from test_fitting import planted
from test_mixture_laws import atlas_records, records, ye_loss


def separable_obs() -> Observations:
    return Observations.from_records(planted(families=3, Ns=(1e6, 1e7), Ds=(1e8, 1e9), per=4)[0])


def repeating_obs() -> Observations:
    recs = atlas_records()
    for r in recs:
        r["family_tokens"] = {"t": 3e8, "u": 5e9, "v": 1e9}  # some runs repeat their data: the saturation is in play
    return Observations.from_records(recs)


CASES = [("atlas", "atlas", "t"), ("atlas:1", "atlas_repeat", "t"), ("atlas:2", "atlas_repeat", "u"),
         ("chinchilla:total", "separable", "total"), ("family_power", "separable", "f0"), ("joint_family", "separable", "f1"),
         ("loglinear", "cross", "f0"), ("shukor_additive", "cross", "f1"), ("shukor_joint", "cross", "f2"),
         ("ye_mixing", "cross", "f0"), ("transfer_family", "cross", "f1")]


def case_data(kind: str) -> Observations:
    if kind == "atlas":
        return Observations.from_records(atlas_records())
    if kind == "atlas_repeat":
        return repeating_obs()
    if kind == "separable":
        return separable_obs()
    return Observations.from_records(records(ye_loss, per=5))  # zero shares in a third of the runs


@pytest.mark.parametrize("spec,kind,target", CASES)
def test_every_laws_evaluator_equals_log_predict_and_jacobian_bit_for_bit(spec, kind, target):
    """The fit's iterates depend on every bit of the objective (a non-converging law's result moves by 1e-3 when one
    input moves by an ulp), so the shared work may change nothing: not a value, not the Jacobian's memory layout."""
    obs = case_data(kind)
    law = make_law(spec)
    data = contiguous(law.data_for(obs, target))
    law = law.bound_to(data)
    params = law.params(data)
    lo, hi = np.array([p.lower for p in params]), np.array([p.upper for p in params])
    evaluate = law.evaluator(data)
    new, ref = _objective(law, data, 1e-3), _objective(law, data, 1e-3, reference=True)
    rng = np.random.default_rng(0)
    for theta in [np.clip(law.start_grid(data)[0], lo, hi)] + [lo + (hi - lo) * rng.uniform(0.1, 0.9, len(lo)) for _ in range(4)]:
        with np.errstate(all="ignore"):
            lp, jac = evaluate(theta)
            lp0, jac0 = law.log_predict(theta, data), law.jacobian(theta, data)
            (f, g), (f0, g0) = new(theta), ref(theta)
        assert lp.tobytes() == lp0.tobytes() and lp.shape == lp0.shape
        assert jac.tobytes() == jac0.tobytes() and jac.shape == jac0.shape and jac.strides == jac0.strides
        assert f == f0 and g.tobytes() == g0.tobytes()


@pytest.mark.parametrize("spec,kind,target", [("family_power", "separable", "f0"), ("chinchilla:total", "separable", "total"),
                                              ("atlas:1", "atlas_repeat", "t")])
def test_share_jacobians_that_were_finite_differences_are_analytic_and_agree(spec, kind, target):
    obs = case_data(kind)
    law = make_law(spec)
    data = law.data_for(obs, target)
    law = law.bound_to(data)
    inner = data.take((data.P > 1e-3).all(axis=1))
    params = law.params(inner)
    theta = np.array([p.lower + 0.4 * (p.upper - p.lower) for p in params])
    G, Gn = law.share_jacobian(theta, inner), Law.share_jacobian(law, theta, inner)
    assert type(law).share_jacobian is not Law.share_jacobian
    assert G == pytest.approx(Gn, rel=1e-4, abs=1e-6 * max(1.0, np.abs(Gn).max()))


def fit_arrays(lf) -> list[bytes]:
    return [a.tobytes() for f in lf.fits.values() for a in (f.theta, np.float64(f.objective), f.boot)]


@pytest.mark.parametrize("spec", ["ye_mixing", "family_power", "shukor_additive"])
def test_two_jobs_and_the_reference_path_give_the_one_process_fit_bit_for_bit(spec):
    """shukor_additive stops at the iteration cap, where any difference in the last bit would show at 1e-3."""
    obs = Observations.from_records(records(ye_loss, per=3)) if spec != "family_power" else separable_obs()
    one = fit(spec, obs, bootstrap=5, seed=3, jobs=1)
    two = fit(spec, obs, bootstrap=5, seed=3, jobs=2)
    ref = fit(spec, obs, bootstrap=5, seed=3, reference=True)
    assert fit_arrays(one) == fit_arrays(two) == fit_arrays(ref)
    assert one.fits[next(iter(one.fits))].replicates_fitted == 5


def table(sel) -> dict:
    doc = sel.to_dict()
    for law in doc["laws"]:
        law.pop("fit_s")
    return doc


def test_two_jobs_give_the_one_process_selection_bit_for_bit_and_the_same_failures():
    obs = separable_obs()  # family_power cannot predict the largest N or D: a failed split travels back from a worker
    laws = ["family_power", "joint_family", "ye_mixing", "chinchilla"]
    one = select_law(obs, laws, folds=3, jobs=1)
    two = select_law(obs, laws, folds=3, jobs=2)
    assert table(one) == table(two)
    by = {s.spec: s for s in two.scores}
    assert by["chinchilla"].skipped and by["family_power"].splits["largest-N"]["stage"] == "predict"
    assert by["joint_family"].n_params == 18 and by["joint_family"].fit_s > 0


def test_off_a_terminal_progress_is_a_line_per_fold_and_per_law_and_the_table_says_fit_s_is_the_total(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    lines: list[str] = []
    obs = separable_obs()
    sel = select_law(obs, ["joint_family", "loglinear", "chinchilla"], folds=3, progress=FitProgress(log=lines.append))
    folds = [l for l in lines if " fold " in l or " fit: " in l]
    assert len(folds) == 2 * (3 + 2)  # two laws x (3 mixture folds + largest-N + largest-D)
    assert any(l.startswith("joint_family mixtures fold 2/3: ") for l in lines)
    assert any(l.startswith("  loglinear: mean held-out MAPE") for l in lines)
    assert any(l.startswith("  chinchilla: skipped") for l in lines)
    assert "\r" not in err.getvalue()
    md = "\n".join(selection_markdown(sel.to_dict()))
    assert "`fit s`: the seconds the law took on every split, all its folds' fits and predictions together" in md


def test_on_a_terminal_progress_is_a_bar_and_not_lines(monkeypatch):
    monkeypatch.setattr(progress_mod, "interactive", lambda stream=None: True)
    lines: list[str] = []
    bar = FitProgress(log=lines.append)
    bar.start(3, "law selection")
    assert bar.bar is not None
    bar.step("joint_family mixtures fold 1/3: 0.1 s")
    assert lines == [] and bar.bar.n == 1
    bar.close()


def test_jobs_must_be_a_whole_number_of_processes(tmp_path):
    assert check_jobs(None) >= 1 and check_jobs(2) == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="jobs"):
            check_jobs(bad)
    ResultsStore(tmp_path / "runs.jsonl").extend(planted(families=2, Ns=(1e6, 1e7), Ds=(1e8, 1e9), per=3)[0])
    bad = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--out", tmp_path / "f", "--jobs", "0", check=False)
    assert bad.returncode == 2 and "mlsl fit: error: jobs (--jobs) 0" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_fit_auto_with_two_jobs_reports_folds_on_stderr_when_piped(tmp_path):
    ResultsStore(tmp_path / "runs.jsonl").extend(planted(families=2, Ns=(1e6, 1e7), Ds=(1e8, 1e9), per=3)[0])
    out = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--out", tmp_path / "f", "--law", "auto", "--jobs", "2",
                  "--bootstrap", "4")
    assert "chose " in out.stdout
    assert "joint_family mixtures fold 1/" in out.stderr and "joint_family: mean held-out MAPE" in out.stderr
    assert "4 bootstrap replicates" in out.stderr and "\r" not in out.stderr
    quiet = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--out", tmp_path / "q", "--law", "joint_family",
                    "--bootstrap", "2", "--no-progress")
    assert quiet.stderr.strip() == ""


@pytest.mark.slow
def test_bootstrap_coverage_of_planted_gammas_is_unchanged_by_two_jobs():
    """20 seeded studies drawn from a planted joint family law (2 families, 36 runs, 1% noise), 40 replicates each:
    with two workers every interval is the reference path's to the last bit, so the coverage of the planted γ by the
    95% intervals is the same count (measured: 37 of 40 intervals)."""
    covered = {"reference": 0, "two jobs": 0}
    for seed in range(20):
        recs, truth, fams = planted(seed=seed, families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 1e9), per=6)
        obs = Observations.from_records(recs)
        ref = fit("joint_family", obs, bootstrap=40, seed=seed, reference=True)
        two = fit("joint_family", obs, bootstrap=40, seed=seed, jobs=2)
        assert fit_arrays(ref) == fit_arrays(two)
        for i, f in enumerate(fams):
            for name, lf in (("reference", ref), ("two jobs", two)):
                lo, hi = lf.fits[f].ci()["gamma"]
                covered[name] += lo <= truth["gamma"][i] <= hi
    assert covered["reference"] == covered["two jobs"] >= 30, covered


def test_the_lbfgsb_driver_runs_minimize_bit_for_bit_to_convergence_and_to_the_cap():
    from nemo_mlsl.fitting import lbfgsb as driver

    assert driver.uses_driver()  # SciPy as pinned in constraints.txt: the check against minimize passes
    for spec, maxiter in (("joint_family", 500), ("shukor_additive", 60)):
        obs = Observations.from_records(records(ye_loss, per=3)) if spec != "joint_family" else separable_obs()
        law = make_law(spec)
        data = contiguous(law.data_for(obs, law.targets(obs)[0]))
        law = law.bound_to(data)
        params = law.params(data)
        bounds = [(p.lower, p.upper) for p in params]
        x0 = np.clip(law.start_grid(data)[0], [b[0] for b in bounds], [b[1] for b in bounds])
        fun = _objective(law, data, 1e-3)
        with np.errstate(all="ignore"):
            a = driver.lbfgsb(fun, x0, bounds, maxiter=maxiter, ftol=1e-15, gtol=1e-10)
            b = driver.lbfgsb(fun, x0, bounds, maxiter=maxiter, ftol=1e-15, gtol=1e-10, reference=True)
        assert (a.x.tobytes(), a.fun, a.nit, a.nfev, a.converged) == (b.x.tobytes(), b.fun, b.nit, b.nfev, b.converged)
        assert a.converged == (spec == "joint_family")


CAPPED = ("shukor_additive", "shukor_joint")  # their full fits on these runs stop at L-BFGS-B's iteration cap


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["family_power", "joint_family", "chinchilla:total", "atlas", "ye_mixing", "shukor_additive",
                                  "shukor_joint", "loglinear"])
def test_full_fit_objective_on_1000_runs_equals_the_fitter_before_the_speed_up(spec):
    """benchmarks/fit.py's 1,000 planted runs x 5 targets; the objectives the fitter reached at commit a9edef9 are in
    tests/fixtures/fit_objectives.json (how they were made: tests/fixtures/make_fit_objectives.py; two runs identical).
    Within 1e-6 relative per target (measured: equal to the last bit), with two jobs. The laws that converge agree on
    any CPU; those that stop at the 500-iteration cap (``CAPPED``) are chaotic there (an ulp moves the objective by
    ~1e-4) and are held to the fixture of this CPU kind (one per kind, each recording its numpy CPU features and, since
    the third, its OpenBLAS kernels: tests/fixtures/machine.py chooses)."""
    import json
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from fit import grid_records

    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    from machine import fixture_for, this_machine

    written = [json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "fixtures").glob("fit_objectives*.json"))]
    here = this_machine()
    mine = fixture_for(written)
    if mine is None and spec in CAPPED:
        # (machines with the same numpy features were seen to differ in OpenBLAS's kernel, and the capped objectives
        # with them by 9e-4: a fixture holds only where both match)
        pytest.skip(f"{spec} stops at the iteration cap, where its objective holds only bit for bit on the CPU and BLAS "
                    f"kernels its fixture was written on ({[{k: d.get(k) for k in here} for d in written]}); this one "
                    f"has {here}: write a fixture for it with tests/fixtures/make_fit_objectives.py")
    before = (mine or written[0])["laws"][spec]["objectives"]
    lf = fit(spec, Observations.from_records(grid_records()), jobs=2)
    assert {t: f.objective for t, f in lf.fits.items()} == pytest.approx(before, rel=1e-6)
