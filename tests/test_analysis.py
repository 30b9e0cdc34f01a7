"""fit_and_report (the path behind mlsl fit/report, the fitting callback and the study) and its CLI."""

import json

import pytest

from conftest import assert_figure, run_cli
from nemo_mlsl.fitting.report import fit_and_report
from nemo_mlsl.results import ResultsStore
from test_fitting import planted


def test_report_files_and_determinism(tmp_path):
    recs, truth, fams = planted(families=3)
    for name in ("a", "b"):
        fit_and_report(recs, tmp_path / name, bootstrap=10, holdout="largest-D", tokens={f: 1e9 for f in fams})
    for name in ("fit.json", "report.md"):
        A, B = (tmp_path / "a" / name).read_text().splitlines(), (tmp_path / "b" / name).read_text().splitlines()
        import difflib
        assert A == B, "\n".join(list(difflib.unified_diff(A, B, lineterm=""))[:30])
    for png, size in (("loss_vs_ratio.png", (12.6, 3.4)), ("predicted_vs_observed.png", (4.6, 4.4)), ("loss_vs_N.png", (12.6, 3.4)),
                      ("optimal_ratios.png", (5.9, 3.8))):
        assert_figure(tmp_path / "a" / png, size, min_colors=3)
    doc = json.loads((tmp_path / "a" / "fit.json").read_text())
    assert doc["law"] == "joint_family" and set(doc["families"]) == set(fams)
    assert set(doc["families"]["f0"]["ci"]) == {"E", "a", "alpha", "b", "beta", "gamma"}
    assert doc["metrics"]["holdout"]["kind"] == "largest-D"
    comp = doc["optimal"]["comparison"]
    assert comp["optimal"]["total"] <= min(c["total"] for c in comp.values()) + 1e-12
    md = (tmp_path / "a" / "report.md").read_text()
    assert "Optimal sampling ratios" in md and "uniform" in md and "![loss_vs_ratio.png]" in md


def test_cli_fit_optimize_and_errors(tmp_path):
    recs, truth, fams = planted(families=3)
    store = ResultsStore(tmp_path / "study" / "results.jsonl")
    store.extend(recs)
    out = run_cli("fit", "--runs", tmp_path / "study", "--law", "joint_family", "--out", tmp_path / "fit", "--bootstrap", "10",
                  "--holdout", "largest-N")
    assert "gamma" in out.stdout and "held-out (largest-N)" in out.stdout
    opt = json.loads(run_cli("optimize", "--fit", tmp_path / "fit" / "fit.json", "--N", "3e7", "--D", "1e9", "--json").stdout)
    assert sum(opt["ratios"].values()) == pytest.approx(1.0) and set(opt["ratios"]) == set(fams)
    raw = json.loads(run_cli("optimize", "--fit", tmp_path / "fit" / "fit.json", "--N", "3e7", "--D", "1e9", "--objective", "raw",
                             "--weights", "f0=2", "--min-ratio", "0.2", "--json").stdout)
    assert min(raw["ratios"].values()) >= 0.2 - 1e-12
    bad = run_cli("optimize", "--fit", tmp_path / "fit" / "fit.json", "--weights", "f9=1", "--N", "1e6", "--D", "1e8", check=False)
    assert bad.returncode == 2 and "unknown family ['f9']" in bad.stderr
    few = ResultsStore(tmp_path / "few.jsonl")
    few.extend(recs[:3])
    bad = run_cli("fit", "--runs", tmp_path / "few.jsonl", "--out", tmp_path / "f2", check=False)
    assert bad.returncode == 2 and "needs at least 8 runs" in bad.stderr
