"""A study or a run that a second process, Ctrl-C, SIGTERM or a kill could damage: real processes, real signals.

One process at a time in a study's (or a run's) directory, the second refused at once by name; a stale lock from a
dead process taken over with a warning; Ctrl-C and SIGTERM end `mlsl study` / `mlsl train` with one line and the
shell's codes (130, 143) instead of exit 1 and Lightning's line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nemo_mlsl.dirlock import LOCK_NAME, hold
from nemo_mlsl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "nemo_mlsl.cli"]


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}:\n{_output(proc)}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _output(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    return f"{out[-2000:]}\n{err[-3000:]}"


def _holding(directory: Path):
    lock = directory / LOCK_NAME
    return lambda: lock.exists() and lock.read_text().strip().startswith("{")


# -- the lock, in process ----------------------------------------------------------------------------------------

def test_a_lock_says_who_holds_it_is_re_entrant_and_removed_when_released(tmp_path):
    with hold(tmp_path / "study", command="mlsl study --out study") as d:
        doc = json.loads((d / LOCK_NAME).read_text())
        assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname() and doc["command"] == "mlsl study --out study"
        with hold(d / ".", "--runs"):  # the same directory again in this process: the study's inline runs
            pass
        assert (d / LOCK_NAME).exists()
    assert not (tmp_path / "study" / LOCK_NAME).exists()


def test_a_lock_left_on_another_host_is_refused_with_the_file_to_remove(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "node17", "command": "mlsl study --out x",
                                                  "since": "2026-01-01 10:00:00 UTC"}))
    with pytest.raises(ConfigError, match=r"--out .* is in use by pid 4242 on node17 \(`mlsl study --out x`, since "
                                          r"2026-01-01 10:00:00 UTC\) .*remove .*mlsl.lock"):
        with hold(tmp_path):
            pass


def test_a_lock_cannot_be_taken_under_a_file(tmp_path):
    (tmp_path / "FILE").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        with hold(tmp_path / "FILE" / "study"):
            pass


# -- two real processes -------------------------------------------------------------------------------------------

@pytest.fixture
def study_config(tmp_path, synth_data):
    cfg = yaml.safe_load((ROOT / "studies" / "default.yaml").read_text())
    cfg["corpus"] = {"prepared": str(synth_data)}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # two study processes, one of them training
def test_a_second_study_on_the_same_out_is_refused_naming_the_first_and_sigterm_ends_the_first(tmp_path, study_config):
    out = tmp_path / "study"
    first = subprocess.Popen([*CLI, "study", "--config", study_config, "--out", out, "--quick", "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(_holding(out), first, "the first study holds its directory")
        start = time.monotonic()
        second = subprocess.run([*CLI, "study", "--config", study_config, "--out", out, "--quick", "--resume"],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        line, = second.stderr.strip().splitlines()
        assert line.startswith(f"mlsl study: error: --out {out} is in use by pid {first.pid} on {socket.gethostname()} "
                               f"(`mlsl study --config {study_config} --out {out} --quick --no-progress`, since "), line
        assert line.endswith("); wait for it to end or stop it, or choose another --out")
        assert first.poll() is None, "the first study goes on"
        _wait_for(lambda: (out / "tb").exists(), first, "the first study trains")
        first.send_signal(signal.SIGTERM)
        rc = first.wait(timeout=300)
        err = first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    assert rc == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "mlsl study: terminated (SIGTERM); --resume continues" and "Traceback" not in err
    assert not (out / LOCK_NAME).exists()  # released on the way out
    print(f"\nsecond study refused {time.monotonic() - start:.1f} s after it started")


def _train(out: Path, data: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", "--recipe", "cpu_15k", "--data", data, "--ratios", "amber=0.4,cobalt=0.3,jade=0.3",
                             "--out", out, "--max-steps", "2000", "--law", "none", "--no-progress", *extra,
                             "train.val_every=2", "train.max_data_epochs=1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # a training process per signal
@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_ends_a_training_run_with_one_line_and_the_shell_code(tmp_path, synth_data, signum, code, word):
    out = tmp_path / "run"
    proc = _train(out, synth_data)
    try:
        _wait_for(lambda: (out / "checkpoints" / "last.ckpt").exists(), proc, "the run saved a checkpoint")
        proc.send_signal(signum)
        rc = proc.wait(timeout=300)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == code and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines() == [f"mlsl train: {word}; --resume continues"]
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "result.json").exists()
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow  # three training processes
def test_a_second_training_run_in_the_same_directory_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, synth_data):
    out = tmp_path / "run"
    first = _train(out, synth_data)
    try:
        _wait_for(_holding(out), first, "the run holds its directory")
        second = subprocess.run([*CLI, "train", "--recipe", "cpu_15k", "--data", synth_data, "--ratios", "amber=1",
                                 "--out", out, "--max-steps", "1", "--law", "none", "--resume"],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and second.stderr.strip().startswith(
            f"mlsl train: error: --out {out} is in use by pid {first.pid} on {socket.gethostname()} (`mlsl train "), second.stderr
        first.kill()  # SIGKILL: no word, no release; the kernel drops its flock, its lock file stays
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a fresh run in the dead one's directory
    third = subprocess.run([*CLI, "train", "--recipe", "cpu_15k", "--data", synth_data, "--ratios", "amber=1",
                            "--out", out, "--max-steps", "1", "--law", "none", "--no-progress"],
                           capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    warning = [l for l in third.stderr.splitlines() if "warning" in l]
    assert len(warning) == 1 and warning[0].startswith(
        f"mlsl train: warning: --out {out}: took over the lock {out / LOCK_NAME} left by pid {first.pid} on "
        f"{socket.gethostname()} (`mlsl train ") and warning[0].endswith("which ended without releasing it"), third.stderr
    assert not (out / LOCK_NAME).exists() and (out / "result.json").exists()
