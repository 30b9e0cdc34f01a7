"""What the command line does around its work: output paths it cannot write, a reader that closes the pipe, the
permissions of what a run writes, its progress bar, and the warnings a documented command lets through."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

CLI = [sys.executable, "-m", "nemo_mlsl.cli"]
ROOT = Path(__file__).resolve().parents[1]


def test_an_unwritable_plot_path_is_named_in_plain_words(tmp_path):
    (tmp_path / "FILE").write_text("x")
    proc = run_cli("plan-languages", "--from", "8", "--to", "16", "--plot", tmp_path / "FILE" / "x.png", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"mlsl plan-languages: error: --plot '{tmp_path / 'FILE' / 'x.png'}': '{tmp_path / 'FILE'}' "
                                   "is a file, not a directory, so nothing can be written under it; choose another --plot")


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(synth_data):
    """`mlsl blend ... | head -5`: the reader goes away; the command stops without a traceback, as Unix tools do."""
    proc = subprocess.Popen([*CLI, "blend", "--data", str(synth_data), "--samples", "64", "--seq-length", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command prints its first line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and err == "", err  # 128 + SIGPIPE, and nothing on stderr
    piped = subprocess.run(f"{' '.join(CLI)} blend --data {synth_data} --samples 64 --seq-length 16 | head -2", shell=True,
                           capture_output=True, text=True, timeout=300)
    assert piped.stdout.splitlines()[0] == "64 samples x 16 tokens" and len(piped.stdout.splitlines()) == 2
    assert piped.stderr == "", piped.stderr


def test_the_cli_keeps_wandb_out_of_the_process(synth_data):
    """megatron-core imports wandb if it can, and wandb replaces sys.stdout's write at import: every line the CLI printed
    went through it (and a closed pipe ended in a traceback from inside it). The CLI never uses wandb."""
    code = ("import sys\nfrom nemo_mlsl.cli import main\n"
            f"main(['blend', '--data', {str(synth_data)!r}, '--samples', '8', '--seq-length', '16'])\n"
            "print('wandb:', sys.modules.get('wandb', 'absent'), type(sys.stdout.write).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "wandb: None builtin_function_or_method"
    assert subprocess.run(  # its importer falls back as if wandb were not installed
        [sys.executable, "-c", "import sys; sys.modules['wandb'] = None; import megatron.core.timers as t; "
         "assert t.wandb is None"], capture_output=True, timeout=300).returncode == 0


def test_atomic_writes_honour_the_umask(tmp_path):
    """mkstemp makes 0600 files and mkdtemp 0700 directories; renamed into place they kept that mode."""
    code = ("import os, sys\nos.umask(0o002)\nfrom nemo_mlsl.outputs import write_json_atomic\n"
            "from nemo_mlsl.data.manifest import staged_directory\nfrom pathlib import Path\n"
            "write_json_atomic(Path(sys.argv[1]) / 'a.json', {'x': 1})\n"
            "with staged_directory(Path(sys.argv[1]) / 'data') as stage:\n    (stage / 'f').write_text('x')\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o775
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


@pytest.mark.slow  # a 5-step training run in a subprocess
def test_a_run_writes_everything_with_the_umask_and_its_bar_counts_its_steps(tmp_path, synth_data):
    """result.json and checkpoints were 0600 while metrics.jsonl was 0644; `--max-steps 20` counted to 20/21 (megatron's
    blend holds a few samples more than asked for, and the loader had a batch more than the run trains)."""
    out = tmp_path / "run"
    proc = subprocess.run(f"umask 027 && exec {' '.join(CLI)} train --recipe cpu_15k --data {synth_data} "
                          f"--ratios amber=0.4,cobalt=0.3,jade=0.3 --out {out} --max-steps 5 --law none",
                          shell=True, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"result.json", "last.ckpt", "metrics.jsonl"} <= {p.name for p in files}
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o640"}, modes
    assert {oct(stat.S_IMODE(d.stat().st_mode)) for d in [out, *(p for p in out.rglob("*") if p.is_dir())]} == {"0o750"}
    bar = proc.stdout.replace("\r", "\n")  # (Lightning draws on stdout)
    counts = {line.split("|")[2].split()[0] for line in bar.splitlines() if line.startswith("Epoch 0:") and line.count("|") >= 2}
    assert counts and all(c.endswith("/5") for c in counts), (counts, bar[-3000:])
    assert "5/5" in counts


NOISE = ("RuntimeWarning", "No artists with labels", "invalid value encountered", "divide by zero encountered")


def test_documented_commands_let_no_numpy_or_matplotlib_warning_through(tmp_path, synth_data):
    """Two how-to commands (docs/howto.md, which tests/test_docs.py runs and checks the same way): a study on the planted
    backend wrote its realized-ratio figure with a legend of nothing (its records carry no realized ratios: "No artists
    with labels"); a third-party mixture law's optimum differenced the loss outside the simplex and across an infinite
    loss at a zero share (numpy's "invalid value")."""
    cfg = yaml.safe_load((ROOT / "studies" / "default.yaml").read_text())
    cfg["corpus"] = {"prepared": str(synth_data)}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    study = run_cli("study", "--config", tmp_path / "study.yaml", "--out", tmp_path / "planted", "--backend", "planted",
                    "--quick", "--no-progress")
    recs = [{"run_id": f"r{i}", "N": 1e6, "D": 1e8, "ratios": dict(zip("abc", p)),
             "family_loss": {f: 2.0 + 0.5 * x ** -0.3 for f, x in zip("abc", p)}}
            for i, p in enumerate([(0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6), (0.4, 0.4, 0.2)])]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    fit = run_cli("fit", "--runs", tmp_path / "runs.jsonl", "--law", "shifted_power", "--out", tmp_path / "fit", "--bootstrap", "0")
    for proc in (study, fit):
        assert not [l for l in proc.stderr.splitlines() if any(n in l for n in NOISE)], proc.stderr[-3000:]


def test_a_law_s_share_gradient_stays_inside_the_simplex_and_off_infinities():
    """At a vertex (what the optimizer's normalizer evaluates) a p^-γ law is infinite in every other family's loss:
    its gradient there is undefined (nan), computed without stepping below a share of 0 or differencing infinities."""
    import warnings

    import numpy as np

    from mlsl_thirdparty import ShiftedPowerLaw
    from nemo_mlsl.fitting.observations import FamilyData

    law, theta = ShiftedPowerLaw(), np.array([1.0, 0.5, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at_vertex = law.share_jacobian(theta, FamilyData.at("b", ["a", "b", "c"], [1e6], [1e8], np.array([[1.0, 0.0, 0.0]])))
        inside = law.share_jacobian(theta, FamilyData.at("b", ["a", "b", "c"], [1e6], [1e8], np.array([[0.5, 0.3, 0.2]])))
        edge = law.share_jacobian(theta, FamilyData.at("a", ["a", "b", "c"], [1e6], [1e8], np.array([[1.0, 0.0, 0.0]])))
    assert np.isnan(at_vertex).all()
    exact = -0.5 * 0.3 * 0.3 ** -1.3 / (1.0 + 0.5 * 0.3 ** -0.3)  # d log(c + A p^-γ) / dp
    assert inside[0, 1] == pytest.approx(exact, rel=1e-6) and inside[0, 0] == inside[0, 2] == 0.0
    assert edge[0, 1] == edge[0, 2] == 0.0 and np.isfinite(edge[0, 0])  # a zero share of another family: a forward step


def test_a_legend_of_nothing_is_not_drawn():
    import warnings

    import matplotlib.pyplot as plt

    from nemo_mlsl.fitting.plots import legend

    fig, axes = plt.subplots(1, 2)
    axes[1].plot([0, 1], [0, 1], label="b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        legend(axes[0])
        legend(axes)
    assert axes[0].get_legend() is None and axes[1].get_legend() is not None
    plt.close(fig)
