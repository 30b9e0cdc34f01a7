"""The command line of law selection, predictions and imports: `mlsl fit --law auto`, `compare`, `predict`, `import-runs`."""

import json

import pytest

from nemo_mlsl.cli import main
from nemo_mlsl.results import ResultsStore
from test_fitting import planted


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    recs, _, _ = planted(families=2, Ns=(1e6, 3e6, 1e7), Ds=(1e8, 3e8, 1e9), per=2, noise=0.003)
    path = tmp_path_factory.mktemp("runs") / "runs.jsonl"
    ResultsStore(path).extend(recs)
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow  # every registered law cross-validated (ATLAS and Shukor et al.'s laws take seconds per fit)
def test_fit_auto_then_predict_json(store, tmp_path, capsys):
    code, out, _ = run(capsys, "fit", "--runs", store, "--law", "auto", "--out", tmp_path / "fit", "--bootstrap", "5")
    assert code == 0 and "law selection:" in out and "chose " in out
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert doc["law"] == doc["selection"]["chosen"] and "## Law selection" in (tmp_path / "fit" / "report.md").read_text()
    code, out, _ = run(capsys, "predict", "--fit", tmp_path / "fit" / "fit.json", "--runs", store, "--json")
    obj = json.loads(out)  # exactly one JSON object
    assert code == 0 and set(obj) == {"predictions", "metrics"}
    assert set(obj["metrics"]["overall"]) == {"r2", "rmse_log", "mape", "n"} and obj["metrics"]["overall"]["n"] == 36
    assert set(obj["metrics"]["families"]) == {"f0", "f1"} and obj["metrics"]["overall"]["mape"] < 2
    code, out, _ = run(capsys, "predict", "--fit", tmp_path / "fit" / "fit.json", "--N", "5e6", "--D", "5e8",
                       "--ratios", "f0=0.3,f1=0.7", "--json")
    obj = json.loads(out)
    assert set(obj) == {"predictions"} and [p["family"] for p in obj["predictions"]] == ["f0", "f1"]
    # a percentile interval of 5 replicates need not contain the point fit (the chosen law may differ by machine):
    # it is a real interval, and the prediction lies within one width of it
    assert all(p["lo"] < p["hi"] and abs(p["predicted"] - (p["lo"] + p["hi"]) / 2) <= 1.5 * (p["hi"] - p["lo"])
               for p in obj["predictions"])


def test_predict_and_compare_name_their_bad_input(store, tmp_path, capsys):
    code, _, err = run(capsys, "predict", "--fit", tmp_path / "missing.json", "--N", "1", "--D", "1", "--ratios", "f0=1")
    assert code == 2 and err.startswith("mlsl predict: error: --fit") and "does not exist" in err
    code, _, err = run(capsys, "compare", "--runs", store, "--laws", "joint_family,no_such_law", "--out", tmp_path / "c")
    assert code == 2 and "unknown law 'no_such_law'" in err


def test_compare_command(store, tmp_path, capsys):
    code, out, _ = run(capsys, "compare", "--runs", store, "--laws", "joint_family,shifted_power", "--out", tmp_path / "cmp",
                       "--folds", "3")
    assert code == 0 and "chosen: joint_family" in out
    assert {p.name for p in (tmp_path / "cmp").iterdir()} >= {"report.md", "compare.json", "heldout_mape.png"}


def test_import_runs_csv_and_its_named_errors(tmp_path, capsys):
    (tmp_path / "s.csv").write_text("index,share_a,share_b,N\n0,0.5,0.5,1e6\n1,0.998,0.0,1e6\n")
    (tmp_path / "l.csv").write_text("index,loss_a,loss_b\n0,3.0,3.1\n1,2.9,3.4\n")
    args = ["import-runs", "csv", "--shares", tmp_path / "s.csv", "--losses", tmp_path / "l.csv", "--share-pattern",
            r"share_(?P<family>\w)", "--loss-pattern", r"loss_(?P<family>\w)", "--N-column", "N", "--D", "1e9",
            "--out", tmp_path / "runs.jsonl"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "imported 2 of 2 runs" in out and "renormalized" in out
    recs = ResultsStore(tmp_path / "runs.jsonl").read()
    assert recs[1]["ratios"] == {"a": 1.0, "b": 0.0} and recs[1]["D"] == 1e9
    code, out, _ = run(capsys, *args)
    assert code == 0 and "imported 0 of 2 runs (2 already there)" in out
    code, _, err = run(capsys, *[a if a != r"loss_(?P<family>\w)" else r"val_(?P<family>\w)" for a in args])
    assert code == 2 and err.startswith("mlsl import-runs: error:") and "column 'loss_a' does not match --loss-pattern" in err
    code, _, err = run(capsys, "import-runs", "olmix", "--swarm", tmp_path, "--out", tmp_path / "o.jsonl")
    assert code == 2 and "needs --swarm DIR" in err


def test_import_runs_tensorboard_one_run_from_the_command_line(tmp_path, capsys):
    from test_importers import megatron_log

    run_dir = megatron_log(tmp_path, "mix_a", {50: {"en": 4.1, "de": 4.4}, 100: {"en": 3.6, "de": 3.8}})
    code, out, _ = run(capsys, "import-runs", "tensorboard", run_dir, "--ratios", "en=0.7,de=0.3", "--N", "1e8", "--D", "2e9",
                       "--out", tmp_path / "runs.jsonl")
    assert code == 0 and "imported 1 of 1 runs" in out
    rec = ResultsStore(tmp_path / "runs.jsonl").read()[0]
    assert rec["run_id"] == "mix_a" and rec["family_loss"] == pytest.approx({"en": 3.6, "de": 3.8}) and rec["N"] == 1e8
    code, _, err = run(capsys, "import-runs", "tensorboard", run_dir, run_dir, "--ratios", "en=1", "--N", "1", "--D", "1",
                       "--out", tmp_path / "x.jsonl")
    assert code == 2 and "--runs-table CSV" in err
