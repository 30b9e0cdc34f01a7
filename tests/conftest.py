"""Shared fixtures: a small synthetic corpus and a real multilingual one, prepared once per session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_mlsl.data.prepare import PrepareConfig, prepare
from nemo_mlsl.data.synth import SynthConfig, generate

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``mlsl`` in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "nemo_mlsl.cli", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlsl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """3 families x 2 languages of synthetic text, prepared with a 256-piece vocabulary."""
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(families=3, languages_per_family=2, docs=240, seed=3), root / "raw")
    prepare(PrepareConfig(inputs=[str(root / "raw")], out=str(root / "data"), families_yaml=str(root / "raw" / "families.yaml"),
                          vocab_size=256, workers=1, progress=False))
    return root / "data"


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """Real text in Latin, Cyrillic and CJK scripts (8 languages, 6 families), prepared."""
    root = tmp_path_factory.mktemp("real")
    prepare(PrepareConfig(inputs=[str(FIXTURES / "realtext")], out=str(root / "data"), vocab_size=400, val_docs=1,
                          workers=2, progress=False))
    return root / "data"


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
