"""The CI switches that turn a skipped test into a failure when its stack is missing (here: MLSL_REQUIRE_NEMO)."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _collect_without_nemo(tmp_path, require: bool) -> subprocess.CompletedProcess:
    """Collect tests/test_nemo_study.py in a Python where ``import nemo`` fails (a package of that name shadows it)."""
    (tmp_path / "nemo").mkdir(exist_ok=True)
    (tmp_path / "nemo" / "__init__.py").write_text("raise ImportError('NeMo hidden by this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLSL_REQUIRE_NEMO", None)
    if require:
        env["MLSL_REQUIRE_NEMO"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "-rs",
                           str(HERE / "test_nemo_study.py")], cwd=HERE.parent, env=env, capture_output=True, text=True)


def test_nemo_tests_skip_without_nemo_and_fail_under_mlsl_require_nemo(tmp_path):
    skipped = _collect_without_nemo(tmp_path, require=False)
    assert skipped.returncode == 5 and "NeMo hidden by this test" in skipped.stdout, skipped.stdout[-2000:]  # 5: no tests
    required = _collect_without_nemo(tmp_path, require=True)
    assert required.returncode not in (0, 5), required.stdout[-2000:]
    assert "MLSL_REQUIRE_NEMO is set but NeMo does not import" in required.stdout, required.stdout[-2000:]
