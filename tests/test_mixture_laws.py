"""Cross-family mixture laws and zero shares: planted laws (a third of the runs with a family at share 0)
must give their parameters back; the separable laws say by name why they cannot take such runs."""

import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.fitting.lawfit import LawFit, fit
from nemo_mlsl.fitting.observations import FamilyData, Observations
from nemo_mlsl.registry import LAWS

FAMS = ("f0", "f1", "f2")
NS, DS = (1e6, 1e7, 1e8, 1e9), (1e8, 1e9, 1e10)
N0, D0 = np.exp(np.mean(np.log(NS))), np.exp(np.mean(np.log(DS)))  # the laws' reference sizes (geometric means)


def shares(rng, runs, F=3, zero_share=1 / 3):
    """Dirichlet shares; in ``zero_share`` of the runs one family (in turn) gets none."""
    P = rng.dirichlet(np.full(F, 1.5), size=runs)
    for r in range(int(round(zero_share * runs))):
        P[r, r % F] = 0.0
    return P / P.sum(axis=1, keepdims=True)


def records(loss, seed=0, Ns=NS, Ds=DS, per=12, noise=0.001):
    """Runs at every (N, D) with planted ``loss(N, D, P) -> [n, F]`` and log-normal noise."""
    rng = np.random.default_rng(seed)
    recs = []
    for N in Ns:
        for D in Ds:
            P = shares(rng, per)
            L = loss(np.full(per, N), np.full(per, D), P) * np.exp(rng.normal(0, noise, P.shape))
            for p, l in zip(P, L):
                recs.append({"run_id": f"r{len(recs)}", "N": N, "D": D, "ratios": dict(zip(FAMS, map(float, p))),
                             "family_loss": dict(zip(FAMS, map(float, l)))})
    return recs



YE = {"E": np.array([1.5, 1.8, 1.2]), "alpha": np.array([0.3, 0.35, 0.25]), "b": np.array([0.8, 1.0, 1.2]),
      "beta": np.array([0.3, 0.28, 0.33]), "t": np.array([[-2.0, -1.0, -1.2], [-1.1, -1.8, -1.3], [-1.0, -1.4, -2.2]])}


def ye_loss(N, D, P):
    S = (N[:, None] / N0) ** -YE["alpha"] + np.exp(YE["b"]) * (D[:, None] / D0) ** -YE["beta"]
    return YE["E"] + S * np.exp(P @ YE["t"].T)


SH = {"E": np.array([1.6, 1.9, 1.3]), "a": np.array([-1.0, -1.2, -0.9]), "alpha": np.array([0.3, 0.3, 0.35]),
      "b": np.array([-0.9, -1.1, -1.0]), "beta": np.array([0.3, 0.32, 0.3]),
      "c": np.array([[1.5, -1.0, -1.2], [-0.8, 1.2, -1.0], [-1.0, -0.9, 1.8]]),
      "gamma": np.array([[0.6, 0.9, 1.2], [1.0, 0.5, 0.8], [0.7, 1.1, 0.6]])}


def shukor_loss(joint):
    def loss(N, D, P):
        mix = np.stack([(np.exp(SH["c"][i]) * np.where(P > 0, P, 0) ** SH["gamma"][i] * (P > 0)).sum(axis=1) for i in range(3)], 1)
        base = SH["E"] + np.exp(SH["a"]) * (N[:, None] / N0) ** -SH["alpha"]
        if joint:
            return base + (D[:, None] / D0) ** -SH["beta"] / mix
        return base + np.exp(SH["b"]) * (D[:, None] / D0) ** -SH["beta"] + 1.0 / mix
    return loss


def close(got, want, rel=0.05):
    return abs(got - want) <= rel * abs(want)


def test_the_cross_family_laws_are_registered_through_entry_points():
    assert {"ye_mixing", "shukor_additive", "shukor_joint", "loglinear"} <= set(LAWS.names())
    for name in ("ye_mixing", "shukor_additive", "shukor_joint", "loglinear", "atlas", "transfer_family"):
        assert LAWS.get(name).zero_shares
    assert not LAWS.get("family_power").zero_shares and not LAWS.get("joint_family").zero_shares


def test_ye_mixing_law_recovers_planted_parameters_with_zero_shares():
    obs = Observations.from_records(records(ye_loss))
    assert (obs.P == 0).any(axis=1).mean() == pytest.approx(1 / 3, abs=0.02)
    lf = fit("ye_mixing", obs)
    for i, f in enumerate(FAMS):
        p = lf.fits[f].params
        for key in ("E", "alpha", "b", "beta"):
            assert close(p[key], YE[key][i]), (f, key, p[key], YE[key][i])
        for j, g in enumerate(FAMS):
            assert close(p[f"t[{g}]"], YE["t"][i, j]), (f, g, p[f"t[{g}]"], YE["t"][i, j])


@pytest.mark.parametrize("joint", [False, True])
def test_shukor_laws_recover_planted_parameters_with_zero_shares(joint):
    obs = Observations.from_records(records(shukor_loss(joint), seed=1))
    lf = fit("shukor_joint" if joint else "shukor_additive", obs)
    keys = ("E", "a", "alpha", "beta") + (() if joint else ("b",))
    for i, f in enumerate(FAMS):
        p = lf.fits[f].params
        for key in keys:
            assert close(p[key], SH[key][i]), (f, key, p[key], SH[key][i])
        for j, g in enumerate(FAMS):
            assert close(p[f"gamma[{g}]"], SH["gamma"][i, j]), (f, g, p[f"gamma[{g}]"], SH["gamma"][i, j])
            assert close(p[f"c[{g}]"], SH["c"][i, j]), (f, g, p[f"c[{g}]"], SH["c"][i, j])


def test_loglinear_recovers_planted_weights():
    W = np.array([[1.2, 0.3, 0.5], [0.2, 1.0, 0.6], [0.4, 0.1, 1.3]])
    loss = lambda N, D, P: np.exp(P @ W.T - 0.05 * np.log(N / N0)[:, None] - 0.03 * np.log(D / D0)[:, None] + 1.5)
    lf = fit("loglinear", Observations.from_records(records(loss, seed=2)))
    for i, f in enumerate(FAMS):
        p = lf.fits[f].params
        assert close(p["c_N"], -0.05) and close(p["c_D"], -0.03)
        for j, g in enumerate(FAMS):
            assert p[f"w[{g}]"] == pytest.approx(W[i, j] + 1.5, abs=0.02)


def atlas_records(seed=0, per=8):
    """Three families; the target 't' learns from its own tokens and 0.4 of 'u's; zero shares in a third of the runs."""
    rng = np.random.default_rng(seed)
    recs = []
    for N in (1e6, 1e7, 1e8):
        for D in (1e8, 1e9, 1e10):
            P = shares(rng, per)
            for p in P:
                deff = p[0] * D + 0.4 * p[1] * D + 0.05 * p[2] * D
                losses = {"t": (1.2 + 300 / N ** 0.3 + 900 / deff ** 0.3) * np.exp(rng.normal(0, 0.002)),
                          "u": (1.5 + 300 / N ** 0.3 + 900 / (p[1] * D + 0.2 * p[0] * D + 1e3) ** 0.3)}
                recs.append({"run_id": f"r{len(recs)}", "N": N, "D": D, "ratios": {"t": p[0], "u": p[1], "v": p[2]},
                             "family_loss": losses})
    return recs


TF = {"E": np.array([1.4, 1.7, 1.2]), "a": np.array([-0.8, -1.0, -0.6]), "alpha": np.array([0.3, 0.35, 0.28]),
      "b": np.array([-0.5, -0.7, -0.9]), "beta": np.array([0.3, 0.32, 0.27]), "gamma": np.array([0.15, 0.25, 0.2]),
      "tau": np.array([[1.0, 0.6, 0.0], [0.4, 1.0, 0.1], [0.05, 0.3, 1.0]])}  # tau[i, j]: what a share of j is worth to i


def transfer_loss(N, D, P):
    C = TF["E"] + np.exp(TF["a"]) * (N[:, None] / N0) ** -TF["alpha"] + np.exp(TF["b"]) * (D[:, None] / D0) ** -TF["beta"]
    return C * (P @ TF["tau"].T) ** -TF["gamma"]


def test_transfer_family_law_recovers_planted_parameters_with_zero_shares():
    """He et al.'s joint law with an effective share p_i + Σ τ_ij p_j: finite at p_i = 0, every τ_ij and γ_i given
    back (a τ of 0 and one of 0.05 told apart), the optimum the one a grid over the simplex finds."""
    from nemo_mlsl.fitting.optimize import law_losses, optimal_general

    obs = Observations.from_records(records(transfer_loss, seed=3))
    lf = fit("transfer_family", obs)
    for i, f in enumerate(FAMS):
        p = lf.fits[f].params
        for key in ("E", "alpha", "beta", "gamma"):
            assert close(p[key], TF[key][i]), (f, key, p[key], TF[key][i])
        for key in ("a", "b"):
            assert p[key] == pytest.approx(TF[key][i], abs=0.02), (f, key)
        for j, g in enumerate(FAMS):
            if g != f:
                assert p[f"tau[{g}]"] == pytest.approx(TF["tau"][i, j], abs=0.01), (f, g, p[f"tau[{g}]"])
    doc = lf.to_dict()
    opt = optimal_general(doc, N=1e8, D=1e9, objective="raw", min_ratio=0.01)
    grid = [np.array([a, b, 1 - a - b]) for a in np.arange(0.01, 0.99, 0.01) for b in np.arange(0.01, 0.99, 0.01) if 1 - a - b >= 0.01 - 1e-9]
    total = lambda P: sum(law_losses(doc, dict(zip(FAMS, P)), 1e8, 1e9).values())
    best = min(grid, key=total)
    got = np.array([opt["ratios"][f] for f in FAMS])
    assert got == pytest.approx(best, abs=0.011) and total(got) <= total(best) + 1e-9


def test_transfer_family_law_takes_only_training_families():
    recs = records(transfer_loss, per=4)
    for r in recs:
        r["family_loss"]["task"] = 2.0 + r["ratios"]["f0"]  # evaluated on a task no run trains on
    with pytest.raises(FitError, match=r"'transfer_family'.*'task' is no training family.*'loglinear'"):
        fit("transfer_family", Observations.from_records(recs))


def test_atlas_takes_a_target_with_no_share_of_its_own():
    recs = atlas_records()
    obs = Observations.from_records(recs)
    assert (obs.P[:, 0] == 0).sum() >= 5
    lf = fit("atlas:2", obs, targets=["t"])
    params = lf.fits["t"].params
    assert params["tau[u]"] == pytest.approx(0.4, abs=0.05) and params["tau[u]"] > params["tau[v]"]
    zero = obs.subset(np.flatnonzero(obs.P[:, 0] == 0))
    pred = lf.predict(zero, "t")
    assert np.all(np.isfinite(pred)) and pred == pytest.approx(zero.L[:, 0], rel=0.01)


def test_atlas_report_on_several_families(tmp_path):
    from nemo_mlsl.fitting.report import fit_and_report

    rep = fit_and_report(atlas_records(), tmp_path, law="atlas:1", bootstrap=3, figures=("loss_vs_ratio", "predicted_vs_observed"))
    md = (tmp_path / "report.md").read_text()
    # The two targets have different transfer families: both columns appear, '–' where a family has no such parameter.
    assert "tau[u]" in md and "tau[t]" in md and "| – |" in md
    assert set(rep.doc["families"]) == {"t", "u"}
    assert (tmp_path / "loss_vs_ratio.png").stat().st_size > 0


def test_family_power_on_many_settings():
    """One L* per (N, D) setting: 40 settings used to ask numpy for a 41-dimensional start grid."""
    rng = np.random.default_rng(0)
    recs = []
    for s in range(40):
        N, D = 1e6 * (1 + s), 1e8 * (1 + s % 7)
        for _ in range(3):
            p = rng.uniform(0.1, 0.9)
            ls = 2.0 + 1e3 / N ** 0.5 + 0.1 * s
            recs.append({"run_id": f"r{len(recs)}", "N": N, "D": D, "ratios": {"a": p, "b": 1 - p},
                         "family_loss": {"a": ls * p ** -0.2, "b": ls * (1 - p) ** -0.1}})
    lf = fit("family_power", Observations.from_records(recs))
    assert lf.fits["a"].params["gamma"] == pytest.approx(0.2, abs=1e-3)
    assert lf.fits["b"].params["gamma"] == pytest.approx(0.1, abs=1e-3)


def test_rounded_shares_are_renormalized_and_far_off_ones_refused():
    recs = records(ye_loss)[:12]
    rounded = [dict(r, ratios={f: round(v, 3) for f, v in r["ratios"].items()}) for r in recs]
    obs = Observations.from_records(rounded)
    assert obs.P.sum(axis=1) == pytest.approx(np.ones(12), abs=1e-12)
    off = [r["run_id"] for r in rounded if abs(sum(r["ratios"].values()) - 1) > 1e-9]
    assert off and obs.warnings and f"{len(off)} run(s)" in obs.warnings[0] and off[0] in obs.warnings[0]
    bad = [dict(recs[0], ratios={"f0": 0.5, "f1": 0.3, "f2": 0.1})]
    with pytest.raises(ConfigError, match=r"run 'r0': ratios sum to 0.9, not 1 \(more than 1% off"):
        Observations.from_records(bad)
    from nemo_mlsl.results import validate_record

    validate_record(rounded[0])  # within 1%: accepted by the store
    with pytest.raises(ConfigError, match="ratios sum to 0.9"):
        validate_record(bad[0])


def test_losses_for_a_subset_of_families_and_shares_of_families_never_evaluated():
    recs = records(ye_loss, per=6)
    for i, r in enumerate(recs):  # 'f2' is trained on but never evaluated; 'f1' evaluated in half the runs
        r["family_loss"] = {f: v for f, v in r["family_loss"].items() if f == "f0" or (f == "f1" and i % 2 == 0)}
    obs = Observations.from_records(recs)
    assert obs.families == FAMS and obs.evaluated == ("f0", "f1")
    lf = fit("ye_mixing", obs)
    assert set(lf.fits) == {"f0", "f1"} and lf.fits["f1"].n_runs == len(recs) // 2
    assert "t[f2]" in lf.fits["f0"].params  # its share is a feature of the others' losses
    assert lf.metrics["in_sample"]["families"]["f1"]["n"] == len(recs) // 2


def test_report_plots_and_optimum_with_zero_shares(tmp_path):
    """fit_and_report on a cross-family law with zero shares: the figures (symlog axis), the table, an optimum."""
    from conftest import assert_figure
    from nemo_mlsl.fitting.report import fit_and_report
    from nemo_mlsl.fitting.independence import controlled_test, residual_correlations, seed_noise

    recs = records(ye_loss, per=6)
    rep = fit_and_report(recs, tmp_path, law="ye_mixing", bootstrap=3, N=1e8, D=1e9)
    assert_figure(tmp_path / "loss_vs_ratio.png", (12.6, 3.4), min_colors=3)
    opt = rep.doc["optimal"]
    assert sum(opt["ratios"].values()) == pytest.approx(1.0) and opt["solver"] == "slsqp"
    md = (tmp_path / "report.md").read_text()
    assert "t[f2]" in md and "Optimal sampling ratios" in md
    obs = rep.lawfit.obs
    assert all(t["fixed_ratio"] > 0 for t in controlled_test(obs, 0.01))
    resid = {f: np.where(np.arange(len(obs)) % 2 == 0, 0.01 * obs.P[:, 1], np.nan) for f in FAMS}
    assert residual_correlations(obs, resid) and seed_noise(obs)["sigma"] is None


def test_cross_family_fits_and_optima_are_deterministic():
    from nemo_mlsl.fitting.optimize import optimal_from_fit

    obs = Observations.from_records(records(ye_loss, per=4))
    a, b = fit("shukor_joint", obs, bootstrap=3, seed=5), fit("shukor_joint", obs, bootstrap=3, seed=5)
    assert a.to_dict() == b.to_dict()
    assert optimal_from_fit(a.to_dict(), N=1e8, D=1e9) == optimal_from_fit(b.to_dict(), N=1e8, D=1e9)
    back = LawFit.from_dict(a.to_dict())  # the stored layout (share columns, N0, D0) predicts as the fit in memory
    assert back.predict(obs, "f1") == pytest.approx(a.predict(obs, "f1"), rel=1e-12)


def test_cli_fit_atlas_on_several_families_and_zero_shares(tmp_path):
    from conftest import run_cli
    from nemo_mlsl.results import ResultsStore

    ResultsStore(tmp_path / "runs.jsonl").extend(atlas_records())
    out = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--law", "atlas:1", "--out", tmp_path / "atlas", "--bootstrap", "2")
    assert "fitted atlas:1" in out.stdout and "tau[u]" in (tmp_path / "atlas" / "report.md").read_text()
    bad = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--law", "joint_family", "--out", tmp_path / "jf", check=False)
    assert bad.returncode == 2 and "mlsl fit: error: law 'joint_family' cannot fit family" in bad.stderr
    assert "--drop-zero-shares" in bad.stderr
    ok = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--law", "joint_family", "--out", tmp_path / "jf", "--bootstrap", "0",
                 "--drop-zero-shares")
    assert "were left out" in ok.stdout


@pytest.mark.parametrize("spec", ["atlas:1", "atlas:2", "ye_mixing", "shukor_additive", "shukor_joint", "loglinear", "transfer_family"])
def test_analytic_jacobians_match_central_differences(spec):
    """In the parameters and in the shares (the optimizer's gradient), on runs with zero shares and repetition."""
    from nemo_mlsl.fitting.lawfit import make_law
    from nemo_mlsl.laws.base import Law

    recs = atlas_records()
    for r in recs:
        r["family_tokens"] = {"t": 3e8, "u": 5e9, "v": 1e9}  # some runs repeat their data: the saturation is in play
    obs = Observations.from_records(recs)
    data = FamilyData.of(obs, "t")
    law = make_law(spec).bound_to(data)
    params = law.params(data)
    rng = np.random.default_rng(0)
    lo, hi = np.array([p.lower for p in params]), np.array([p.upper for p in params])
    theta = np.clip(law.start_grid(data)[0] + rng.uniform(-0.05, 0.05, len(params)), lo, hi)
    if spec.startswith("atlas"):
        theta[5:] = [0.2] + [0.3] * (len(params) - 6)
    J, Jn = law.jacobian(theta, data), Law.jacobian(law, theta, data)
    assert J == pytest.approx(Jn, rel=1e-4, abs=1e-6 * np.abs(Jn).max())
    inner = data.take((data.P > 1e-3).all(axis=1))  # away from p = 0, where a one-sided share has no difference
    G, Gn = law.share_jacobian(theta, inner), Law.share_jacobian(law, theta, inner)
    if spec == "atlas:2":
        # Every family is the target or a transfer family: the others' share 1 - p_t - Σ_K p_j is 0 up to rounding,
        # at the kink of its clip, where central differences take half a slope. The optimizer moves on the simplex
        # (Σ p = 1): there the derivatives agree (the half slope adds the same to every column).
        G, Gn = G - G.mean(axis=1, keepdims=True), Gn - Gn.mean(axis=1, keepdims=True)
    assert G == pytest.approx(Gn, rel=1e-4, abs=1e-6 * np.abs(Gn).max())


@pytest.mark.parametrize("spec", ["ye_mixing", "shukor_additive", "shukor_joint", "loglinear", "transfer_family"])
def test_mixture_laws_fit_runs_of_one_model_size_and_token_count(spec):
    """Runs that vary only the mixture (as RegMix's swarm: one N, one D): the law drops its N and D terms, its
    Jacobian still matches central differences, and it fits and predicts every run (CI once found transfer_family's
    Jacobian one column short here)."""
    from nemo_mlsl.fitting.lawfit import make_law
    from nemo_mlsl.laws.base import Law

    obs = Observations.from_records(records(transfer_loss, seed=5, Ns=NS[:1], Ds=DS[:1], per=30))
    data = FamilyData.of(obs, "f1")
    law = make_law(spec).bound_to(data)
    params = law.params(data)
    theta = np.clip(law.start_grid(data)[0] + np.random.default_rng(0).uniform(-0.05, 0.05, len(params)),
                    [p.lower for p in params], [p.upper for p in params])
    J, Jn = law.jacobian(theta, data), Law.jacobian(law, theta, data)
    assert J.shape == (len(data.loss), len(params))
    assert J == pytest.approx(Jn, rel=1e-4, abs=1e-6 * np.abs(Jn).max())
    lf = fit(spec, obs)
    pred = np.exp(lf.fits["f1"].log_predict(data))
    assert pred.shape == data.loss.shape and np.all(np.isfinite(pred))
    constant = np.mean(np.abs(data.loss / np.exp(np.log(data.loss).mean()) - 1))  # ~9%: what the mixture moves
    assert np.mean(np.abs(pred / data.loss - 1)) < constant / 4, spec
