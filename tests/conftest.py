"""Shared fixtures: a small synthetic corpus and a real multilingual one, prepared once per test run.

Under pytest-xdist (``make test`` runs two workers) each worker trains with one thread, so two workers use
the two cores without oversubscribing them, and the prepared corpora are built once, by whichever worker
asks first, and shared (a file lock in the run's common temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # this worker's trainings, and the mlsl subprocesses it starts
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from nemo_mlsl.data.prepare import PrepareConfig, prepare
from nemo_mlsl.data.synth import SynthConfig, generate

FIXTURES = Path(__file__).parent / "fixtures"


def have_bridge() -> bool:
    """Whether Megatron-Bridge is installed here (its own environment: ``make setup-bridge``)."""
    import importlib.util

    try:
        return importlib.util.find_spec("megatron.bridge") is not None
    except ModuleNotFoundError:
        return False


def require_nemo() -> None:
    """Skip the calling test module where NeMo does not import; under ``MLSL_REQUIRE_NEMO`` (CI's stage 1) fail instead,
    so a broken NeMo install cannot pass as a green run of skipped tests."""
    try:
        import nemo.collections.llm  # noqa: F401
    except ImportError as err:
        why = f"NeMo does not import ({err}): it is installed by `make setup` (extra 'nemo')"
        if os.environ.get("MLSL_REQUIRE_NEMO"):
            pytest.fail(f"MLSL_REQUIRE_NEMO is set but {why}", pytrace=False)
        pytest.skip(why, allow_module_level=True)


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``mlsl`` in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "nemo_mlsl.cli", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlsl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def shared(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(root)`` once per test run, whichever xdist worker (or the single process) asks first; the others wait
    for it and reuse ``root``. A build that failed half-way is redone, never reused."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # common to every worker of this run
    root = base / f"shared-{name}"
    with FileLock(str(base / f"shared-{name}.lock")):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build(root)
            (root / ".built").touch()
    return root


def _synth(root: Path) -> None:
    generate(SynthConfig(families=3, languages_per_family=2, docs=240, seed=3), root / "raw")
    prepare(PrepareConfig(inputs=[str(root / "raw")], out=str(root / "data"), families_yaml=str(root / "raw" / "families.yaml"),
                          vocab_size=256, workers=1, progress=False))


def _lopsided(root: Path) -> None:
    generate(SynthConfig(families=3, languages_per_family=1, docs=200, seed=5), root / "raw")
    short = root / "raw" / "qaa.jsonl"
    short.write_text("".join(short.read_text().splitlines(True)[:40]))
    prepare(PrepareConfig(inputs=[str(root / "raw")], out=str(root / "data"), families_yaml=str(root / "raw" / "families.yaml"),
                          vocab_size=256, val_docs=2, workers=1, progress=False))


def _real(root: Path) -> None:
    prepare(PrepareConfig(inputs=[str(FIXTURES / "realtext")], out=str(root / "data"), vocab_size=400, val_docs=1,
                          workers=2, progress=False))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """3 families x 2 languages of synthetic text, prepared with a 256-piece vocabulary."""
    return shared(tmp_path_factory, "synth", _synth) / "data"


@pytest.fixture(scope="session")
def lopsided_data(tmp_path_factory) -> Path:
    """3 families x 1 language where 'amber' has a fifth of the documents: its data runs out first."""
    return shared(tmp_path_factory, "lopsided", _lopsided) / "data"


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """Real text in Latin, Cyrillic and CJK scripts (8 languages, 6 families), prepared."""
    return shared(tmp_path_factory, "real", _real) / "data"


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def assert_figure(path: Path, inches: tuple[float, float], min_colors: int = 3, dpi: int = 110) -> None:
    """A PNG written by ``plots.save``: the figure's size (so its panel layout), and drawn content in several
    colours (axes alone are black on white; every plotted series adds a colour)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(path)[..., :3]
    h, w = img.shape[:2]
    assert (w, h) == (round(inches[0] * dpi), round(inches[1] * dpi)), (path.name, (w, h))
    pixels = (img * 255).astype(int).reshape(-1, 3)
    ink = (pixels.min(axis=1) < 200).mean()
    colours = {tuple(p) for p in pixels[::7] if max(p) - min(p) > 60}  # saturated (non-grey) colours
    assert ink > 0.01, f"{path.name}: almost blank ({ink:.3%} drawn)"
    assert len(colours) >= min_colors, f"{path.name}: {len(colours)} colours drawn, want >= {min_colors}"


# Test files that take longest go first, so under xdist's per-file scheduling neither worker is left with a long
# file at the end while the other idles (measured with `pytest --durations`; order only, no test is skipped).
LONGEST_FIRST = ("test_slurm.py", "test_docs.py", "test_study.py", "test_nemo_study.py", "test_atlas_analyses.py",
                 "test_training.py", "test_gpu_check.py", "test_fitting.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_terminal_summary(terminalreporter) -> None:
    """Figures a test records with ``record_property("figure: NAME", value)`` (a margin in noise units, a case
    count), printed at the end of the run: xdist workers' output is not shown, their reports' properties are."""
    for rep in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for key, value in getattr(rep, "user_properties", []):
            if str(key).startswith("figure: "):
                terminalreporter.write_line(f"{rep.nodeid}: {key[len('figure: '):]} = {value}")
