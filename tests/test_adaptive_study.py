"""A study's adaptive arm (issue #26): planned on the confirmation's paired seeds, trained by the CPU backend through
``mlsl train --adaptive``, refused by backends that cannot, and compared in the report with every static mixture by
the confirmation's paired test (checked against a direct computation from the records)."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import assert_figure, read_json
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.results import ResultsStore
from nemo_mlsl.study.backend import RunSpec, train_arguments
from nemo_mlsl.study.config import load_study
from nemo_mlsl.study.plan import phase2, phase2_size, reconcile_arm
from nemo_mlsl.study.runner import Study

ROOT = Path(__file__).resolve().parents[1]
ADAPTIVE = ROOT / "studies" / "adaptive.yaml"
NPARAMS = {"cpu_15k": 13_000, "cpu_60k": 60_000, "cpu_250k": 262_000}
MIX = {"optimal": {"a": 0.5, "b": 0.5}, "uniform": {"a": 0.5, "b": 0.5}, "natural": {"a": 0.8, "b": 0.2}}


def test_the_adaptive_arm_is_planned_on_the_confirmation_s_paired_seeds():
    cfg = load_study(ADAPTIVE)
    runs = phase2(cfg, MIX, NPARAMS, seeds=3, adaptive_start=MIX["natural"])
    arm = [r for r in runs if r.mixture == "adaptive:ado"]
    static = [r for r in runs if r.purpose == "confirm" and r.mixture == "optimal"]
    assert [r.seed for r in arm] == [r.seed for r in static] == [0, 1, 2]
    assert all(r.purpose == "confirm" and r.rung == cfg.confirm_rung and r.ratios == MIX["natural"] for r in arm)
    assert all(r.adaptive == {"policy": "ado", "interval": 20, "min_share": 0.02, "smoothing": 0.5} for r in arm)
    assert not any(r.adaptive for r in runs if r.mixture != "adaptive:ado")
    assert not any(r.purpose == "naive" and r.mixture == "adaptive:ado" for r in runs)  # no law predicts it
    assert len(runs) == phase2_size(dataclasses.replace(cfg, baselines=["uniform", "natural"], confirm_seeds=3)) == 15
    assert len({r.run_id for r in runs}) == len(runs)
    # the command line a NeMo-Run job runs carries the policy
    spec = RunSpec(run=arm[1], data="d", out="o", store="s", tb_root="t", report_dir="r")
    args = train_arguments(spec)
    at = args.index("--adaptive")
    assert args[at:at + 8] == ["--adaptive", "ado", "--interval", "20", "--min-share", "0.02", "--smoothing", "0.5"]
    assert "--max-change" not in args  # no step limit: the plan and its command line as before the option existed


def test_the_law_policy_with_a_step_limit_is_planned_and_carried_to_the_command_line(tmp_path):
    doc = yaml.safe_load(ADAPTIVE.read_text())
    doc["adaptive"].update(policy="law", max_change=0.1, smoothing=0.0)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_study(path)
    arm = [r for r in phase2(cfg, MIX, NPARAMS, seeds=3, adaptive_start=MIX["natural"]) if r.mixture == "adaptive:law"]
    assert len(arm) == 3 and all(r.adaptive["max_change"] == 0.1 and r.adaptive["policy"] == "law" for r in arm)
    args = train_arguments(RunSpec(run=arm[0], data="d", out="o", store="s", tb_root="t", report_dir="r"))
    at = args.index("--adaptive")
    assert args[at:at + 10] == ["--adaptive", "law", "--interval", "20", "--min-share", "0.02", "--smoothing", "0.0",
                                "--max-change", "0.1"]
    from mlsl_lightning.study_backend import adaptive_request

    assert adaptive_request(arm[0].adaptive)["max_change"] == 0.1  # the in-process CPU backend's request too


def test_a_resumed_study_re_plans_its_adaptive_arm_when_the_config_changes_it():
    cfg = load_study(ADAPTIVE)
    planned = phase2(cfg, MIX, NPARAMS, seeds=3, adaptive_start=MIX["natural"])
    same, note = reconcile_arm(cfg, planned, NPARAMS, lambda: pytest.fail("no arm to plan"))
    assert same == planned and note is None
    law = dataclasses.replace(cfg, adaptive=dataclasses.replace(cfg.adaptive, policy="law", max_change=0.2))
    runs, note = reconcile_arm(law, planned, NPARAMS, lambda: MIX["natural"])
    assert [r for r in runs if not r.adaptive] == [r for r in planned if not r.adaptive]  # the static runs (and records) kept
    arm = [r for r in runs if r.adaptive]
    assert [r.seed for r in arm] == [0, 1, 2] and {r.mixture for r in arm} == {"adaptive:law"}
    assert all(r.adaptive["max_change"] == 0.2 and r.ratios == MIX["natural"] for r in arm)
    assert not {r.run_id for r in arm} & {r.run_id for r in planned}  # new runs, not the old arm's records
    assert "adaptive:law" in note and "replaces the planned adaptive:ado" in note
    static, note = reconcile_arm(dataclasses.replace(cfg, adaptive=None), planned, NPARAMS, lambda: pytest.fail("none"))
    assert static == [r for r in planned if not r.adaptive] and "is not trained" in note
    with pytest.raises(ConfigError, match=r"adaptive: the arm adaptive:ado was planned with .* use a new --out"):
        reconcile_arm(dataclasses.replace(cfg, adaptive=dataclasses.replace(cfg.adaptive, smoothing=0.1)), planned, NPARAMS,
                      lambda: MIX["natural"])
    added, note = reconcile_arm(cfg, static, NPARAMS, lambda: MIX["natural"])
    assert sorted(r.run_id for r in added) == sorted(r.run_id for r in planned) and "is added" in note


@pytest.mark.parametrize("key, value, message", [
    ("policy", "nope", "adaptive.policy must be one of"),
    ("interval", 500, "below the confirmation run's 196 steps"),
    ("start", "unimax:x", "adaptive.start"),
    ("smoothing", 2, "adaptive.smoothing"),
    ("max_change", 0, "adaptive.max_change must be in"),
])
def test_a_bad_adaptive_arm_is_refused_at_load(tmp_path, key, value, message):
    doc = yaml.safe_load(ADAPTIVE.read_text())
    doc["adaptive"][key] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_study(path)


def test_a_backend_that_cannot_adapt_is_refused_before_anything_runs(tmp_path):
    class Static:  # a third-party backend whose runs take no policy
        name = "mine"

    study = Study(load_study(ADAPTIVE), tmp_path / "s", Static(), progress=False)
    with pytest.raises(ConfigError, match=r"the mine backend does not train adaptive mixtures \(the cpu, nemo and bridge "
                                          r"backends do\)"):
        study.run(dry_run=True)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_quick_adaptive_study_compares_the_arm_with_every_static_mixture(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "nemo_mlsl.cli", "study", "--config", str(ADAPTIVE), "--out", str(out),
                           "--quick", "--no-progress"], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = read_json(out / "summary.json")
    records = ResultsStore(out / "results.jsonl").read(dedupe=True)
    arm = [r for r in records if r.get("mixture") == "adaptive:ado"]
    assert len(arm) == 1 and arm[0]["adaptive"]["policy"] == "ado" and arm[0]["purpose"] == "confirm"
    intervals = arm[0]["schedule"]["intervals"]
    assert intervals[0]["ratios"] == pytest.approx(s["comparison"]["adaptive:ado"]["ratios"], abs=1) and len(intervals) >= 4
    assert [iv["start_step"] for iv in intervals[1:]] == [iv["until_step"] for iv in intervals[:-1]]
    assert all(iv["reason"] == "ado" for iv in intervals[1:])
    # the optimum's verdicts are over the static baselines alone; the arm is compared with every static mixture
    assert set(s["gains"]) == {"uniform"}
    a = s["adaptive"]["adaptive:ado"]
    assert set(a["gains"]) == {"optimal", "uniform"}
    fit_doc = read_json(out / "fit" / "fit.json")
    from nemo_mlsl.fitting.optimize import unit_losses
    from nemo_mlsl.study import power

    z = unit_losses(fit_doc, float(fit_doc["optimal"]["N"]), float(fit_doc["optimal"]["D"]))
    total = lambda r: power.total(r["family_loss"], z, "normalized", fit_doc["optimal"].get("weights"))  # noqa: E731
    by = {r["mixture"]: r for r in records if r.get("purpose") == "confirm"}
    for other, g in a["gains"].items():
        assert g["difference"] == pytest.approx(total(by[other]) - total(arm[0]), rel=1e-9, abs=1e-12)
        assert g["verdict"] in ("within noise", f"adaptive:ado better, beyond noise", f"{other} better, beyond noise", "unknown (no seed repeats)")
    history = a["history"]["0"]
    assert [h["step"] for h in history] == sorted(h["step"] for h in history) and len(history) >= len(intervals)
    assert 0 < a["compute"]["fraction_of_study"] < 1 and a["compute"]["wall_ratio"] > 0
    assert_figure(out / "adaptive_ado.png", (6.4, 6.2))
    report = (out / "report.md").read_text()
    assert "## Adaptive mixture `adaptive:ado`" in report and "adaptive_ado.png" in report
    assert "adaptive:ado vs uniform" in proc.stdout and "of the study's training FLOPs" in proc.stdout
