"""Law selection: grouped mixture folds, extrapolation splits, skipped laws named, the planted law's kind chosen."""

import numpy as np
import pytest

from nemo_mlsl.fitting.report import fit_and_report
from nemo_mlsl.fitting.compare import compare_laws
from nemo_mlsl.errors import FitError
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.registry import LAWS
from nemo_mlsl.fitting.selection import mixture_folds, select_law, splits_for
from test_fitting import planted
from test_mixture_laws import records as cross_records
from test_mixture_laws import ye_loss


def replicated(n_mix=6, seeds=3):
    rng = np.random.default_rng(0)
    recs = []
    for m in range(n_mix):
        p = rng.dirichlet([2, 2])
        for s in range(seeds):
            recs.append({"run_id": f"m{m}s{s}", "N": 1e6, "D": 1e8, "seed": s, "ratios": {"a": p[0], "b": p[1]},
                         "family_loss": {"a": 3 + rng.normal(0, 0.01), "b": 3.0}})
    return Observations.from_records(recs)


def test_mixture_folds_keep_replicate_seeds_together_and_cover_every_run_once():
    obs = replicated()
    folds = mixture_folds(obs, k=4, seed=1)
    assert len(folds) == 4
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(obs)))
    mixture = [rid.split("s")[0] for rid in obs.run_ids]
    for train, test in folds:
        held = {mixture[i] for i in test}
        assert held and not held & {mixture[i] for i in train}  # a mixture is never on both sides
    again = mixture_folds(obs, k=4, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))  # seeded


def test_extrapolation_splits_exist_only_where_the_runs_vary():
    obs = replicated()
    assert list(splits_for(obs)) == ["mixtures"]
    recs, _, _ = planted(families=2, Ns=(1e6, 1e7), Ds=(1e8,), per=3)
    splits = splits_for(Observations.from_records(recs))
    assert list(splits) == ["mixtures", "largest-N"]
    (train, test), = splits["largest-N"]
    assert set(Observations.from_records(recs).N[test]) == {1e7}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_planted_separable_law_the_selection_picks_a_separable_law_and_skips_what_cannot_fit(seed):
    # four values of N, so that the largest-N split trains on three: with two, E + A/N^α is not identifiable from
    # the training part and joint_family's extrapolation lost to ye_mixing's on one seed
    recs, _, _ = planted(seed=seed, families=2, Ns=(1e6, 2e6, 4e6, 1e7), Ds=(1e8, 1e9), per=3, noise=0.003)
    zero = dict(recs[0], run_id="zero", ratios={"f0": 0.0, "f1": 1.0})
    obs = Observations.from_records(recs)
    sel = select_law(obs, ["shifted_power", "family_power", "joint_family", "chinchilla", "ye_mixing", "loglinear"], folds=3)
    assert LAWS.get(sel.chosen).separable and sel.chosen == "joint_family"  # over the cross-family laws too
    by = {s.spec: s for s in sel.scores}
    assert by["chinchilla"].skipped and "ratio 1" in by["chinchilla"].skipped
    assert set(by["joint_family"].splits) == {"mixtures", "largest-N", "largest-D"}
    # one L* per fitted setting cannot predict a new N: that counts against family_power; two values of D leave
    # joint_family one to fit on in the largest-D split: not fitted there, which does not count against it
    assert by["family_power"].splits["largest-N"]["stage"] == "predict" and by["family_power"].unpredicted >= 1
    assert by["joint_family"].splits["largest-D"]["stage"] == "fit" and by["joint_family"].unpredicted == 0
    assert sel.compared_on == ["mixtures", "largest-N"]
    assert by["joint_family"].mean_mape < 1.0 < by["shifted_power"].mean_mape  # the planted law predicts held-out runs
    assert by["joint_family"].n_params == 12 and by["joint_family"].fit_s > 0
    with pytest.raises(FitError, match="no law could be cross-validated.*family_power: .*joint_family: ") as err:
        select_law(Observations.from_records(recs + [zero]), ["family_power", "joint_family"], folds=3)
    assert str(err.value).count("share of 0") >= 2  # p^-γ cannot take a zero share: each law says so by name


def test_fit_auto_writes_the_table_and_the_chosen_fit(tmp_path):
    recs, _, _ = planted(families=2, Ns=(1e6, 1e7), Ds=(1e8, 1e9), per=3, noise=0.003)
    rep = fit_and_report(recs, tmp_path, law="auto", bootstrap=0, candidates=["joint_family", "shifted_power"], figures=())
    assert rep.doc["law"] == rep.doc["selection"]["chosen"] == "joint_family"
    assert [s["law"] for s in rep.doc["selection"]["laws"]] == ["joint_family", "shifted_power"]
    text = (tmp_path / "report.md").read_text()
    assert "## Law selection: `joint_family` chosen" in text and "| `shifted_power` |" in text


def test_compare_writes_report_json_and_figure(tmp_path):
    recs, _, _ = planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 3e8, 1e9), per=2, noise=0.003)
    doc = compare_laws(recs, ["joint_family", "shifted_power", "chinchilla"], tmp_path, folds=3)
    assert {p.name for p in tmp_path.iterdir()} >= {"report.md", "compare.json", "heldout_mape.png"}
    assert doc["chosen"] == "joint_family" and "skipped: " in (tmp_path / "report.md").read_text()


def test_on_a_planted_cross_family_law_with_zero_shares_auto_picks_it_over_the_separable_laws(tmp_path):
    recs = cross_records(ye_loss, per=6, noise=0.003)  # a third of the runs give one family no share
    rep = fit_and_report(recs, tmp_path, law="auto", bootstrap=0, figures=(),
                         candidates=["joint_family", "family_power", "loglinear", "ye_mixing"])
    sel = rep.doc["selection"]
    assert sel["chosen"] == rep.doc["law"] == "ye_mixing" and sel["compared_on"] == ["mixtures", "largest-N", "largest-D"]
    by = {s["law"]: s for s in sel["laws"]}
    assert "share of 0" in by["joint_family"]["skipped"] and "share of 0" in by["family_power"]["skipped"]
    assert by["ye_mixing"]["mean_heldout_mape"] < 1.0 < by["loglinear"]["mean_heldout_mape"]


def test_a_study_config_takes_law_auto_and_refuses_an_unknown_law_before_any_run(tmp_path):
    from pathlib import Path

    from nemo_mlsl.errors import ConfigError
    from nemo_mlsl.study.config import load_study

    text = (Path(__file__).resolve().parents[1] / "studies" / "default.yaml").read_text()
    assert "law: joint_family" in text
    (tmp_path / "auto.yaml").write_text(text.replace("law: joint_family", "law: auto"))
    assert load_study(tmp_path / "auto.yaml").law == "auto"
    (tmp_path / "typo.yaml").write_text(text.replace("law: joint_family", "law: joint_famly"))
    with pytest.raises(ConfigError, match="unknown law 'joint_famly'"):
        load_study(tmp_path / "typo.yaml")


@pytest.mark.slow  # a whole (planted-backend) study; the selection cross-validates every registered law
def test_a_study_with_law_auto_fits_with_the_selected_law(tmp_path):
    import json
    from pathlib import Path

    from conftest import run_cli

    text = (Path(__file__).resolve().parents[1] / "studies" / "default.yaml").read_text()
    (tmp_path / "auto.yaml").write_text(text.replace("law: joint_family", "law: auto"))
    out = tmp_path / "study"
    proc = run_cli("study", "--config", tmp_path / "auto.yaml", "--out", out, "--backend", "planted", "--quick", "--no-progress")
    fit = json.loads((out / "fit" / "fit.json").read_text())
    sel = fit["selection"]
    assert fit["law"] == sel["chosen"] and f"law selection chose {sel['chosen']}" in proc.stdout
    assert LAWS.get(sel["chosen"]).separable  # the planted backend's law is He et al.'s: a separable law wins
    assert not (out / "fit_live").exists()  # with law: auto the runs are recorded without a per-run refit
    assert "## Law selection" in (out / "fit" / "report.md").read_text() and (out / "report.md").exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_bug_in_a_law_is_raised_as_itself_not_as_an_error_of_the_progress_line(monkeypatch, jobs):
    """A law's own errors (FitError) score its fold as not fitted; any other exception is a bug and the selection
    raises it (once found on RegMix's runs as an AttributeError of the progress line that hid a ValueError)."""
    from nemo_mlsl.laws.ye_mixing import YeMixingLaw

    def broken(self, *args, **kwargs):
        raise ValueError("planted bug")

    monkeypatch.setattr(YeMixingLaw, "log_predict", broken)
    monkeypatch.setattr(YeMixingLaw, "evaluator", broken)
    obs = Observations.from_records(cross_records(ye_loss, per=4))
    with pytest.raises((ValueError, RuntimeError), match="planted bug"):
        select_law(obs, ["loglinear", "ye_mixing"], folds=2, jobs=jobs)
