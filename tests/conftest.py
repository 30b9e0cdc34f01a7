"""Shared fixtures: a small synthetic corpus and a real multilingual one, prepared once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """3 families x 2 languages of synthetic text, prepared with a 256-piece vocabulary."""
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(families=3, languages_per_family=2, docs=240, seed=3), root / "raw")
    prepare(PrepareConfig(inputs=[str(root / "raw")], out=str(root / "data"), families_yaml=str(root / "raw" / "families.yaml"),
                          vocab_size=256, workers=1, progress=False))
    return root / "data"


@pytest.fixture(scope="session")
def lopsided_data(tmp_path_factory) -> Path:
    """3 families x 1 language where 'amber' has a fifth of the documents: its data runs out first."""
    root = tmp_path_factory.mktemp("lopsided")
    generate(SynthConfig(families=3, languages_per_family=1, docs=200, seed=5), root / "raw")
    short = root / "raw" / "qaa.jsonl"
    short.write_text("".join(short.read_text().splitlines(True)[:40]))
    prepare(PrepareConfig(inputs=[str(root / "raw")], out=str(root / "data"), families_yaml=str(root / "raw" / "families.yaml"),
                          vocab_size=256, val_docs=2, workers=1, progress=False))
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
