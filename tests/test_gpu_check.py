"""The GPU check (gpu/check.py) must not waste a lent GPU's minutes on a mistake: its --dry mode builds every
recipe and NeMo trainer of every phase on the CPU, and writes the report the GPU run writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_nemo

ROOT = Path(__file__).resolve().parents[1]
require_nemo()
pytestmark = pytest.mark.slow


def test_every_phase_builds_dry(tmp_path):
    env = {**os.environ, "MLSL_GPU_WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out")}
    proc = subprocess.run([sys.executable, str(ROOT / "gpu" / "check.py"), "--dry"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    assert report["dry"] is True
    assert {k: v["ok"] for k, v in report["phases"].items()} == dict.fromkeys(
        ["corpus", "plugins", "validation_cost", "throughput", "schedule", "study"], True)
    assert report["phases"]["schedule"]["result"] == {"built": True, "intervals": 3}
    assert report["phases"]["study"]["result"]["phase1"] == 17 and report["phases"]["throughput"]["result"]["rung"] == "he2024_1b2"


def test_the_carried_wheel_list_is_current(tmp_path):
    """gpu/wheels.txt is what gpu/wheel_list.py derives from this environment (rerun it after changing dependencies);
    the fresh list goes to a temporary file, the tracked one is only read."""
    before = (ROOT / "gpu" / "wheels.txt").read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "gpu" / "wheel_list.py"), "--out", str(tmp_path / "wheels.txt")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (ROOT / "gpu" / "wheels.txt").read_text() == before  # untouched
    after = (tmp_path / "wheels.txt").read_text()
    assert after == before
    assert "megatron-core==0.15.3" in before and "nemo-toolkit==2.7.3" in before and "transformers==4.57.6" in before
