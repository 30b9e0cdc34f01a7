"""Backends are found through the ``nemo_mlsl.backends`` registry: the built-ins and a third-party one alike."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from nemo_mlsl.backends import BACKENDS, backend
from nemo_mlsl.errors import ConfigError


def test_builtin_and_thirdparty_backends_are_registered_alike():
    """tests/fixtures/thirdparty_plugin (installed by `make setup`) adds 'planted' through its entry point only."""
    assert {"cpu", "nemo", "bridge", "planted"} <= set(BACKENDS.names())
    cpu, planted = backend("cpu"), backend("planted")
    assert cpu.train is not None and planted.train is None and planted.build is None
    assert type(planted.study(0, 1)).__module__ == "mlsl_thirdparty.backend"


def test_a_whole_study_on_a_thirdparty_backend(tmp_path):
    """`mlsl study --backend planted`: the study orchestration drives a backend nemo_mlsl never names, to its report,
    and the fit recovers the gammas the backend planted."""
    from mlsl_thirdparty.backend import GAMMA

    out = tmp_path / "study"
    proc = run_cli("study", "--config", "studies/default.yaml", "--out", out, "--backend", "planted", "--quick", "--no-progress")
    assert "gain over uniform" in proc.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    plan = json.loads((out / "plan.json").read_text())
    assert sorted(r["run_id"] for r in records) == sorted(r["run_id"] for r in plan["runs"])
    assert {r["backend"] for r in records} == {"planted"}
    fit = json.loads((out / "fit" / "fit.json").read_text())
    for fam, g in GAMMA.items():
        assert fit["families"][fam]["params"]["gamma"] == pytest.approx(g, abs=0.01), fam
    assert (out / "report.md").exists()


def test_backend_without_a_capability_is_a_named_error(tmp_path):
    err = run_cli("train", "--backend", "planted", "--recipe", "cpu_15k", "--data", tmp_path, "--ratios", "a=1", "--out",
                  tmp_path / "r", check=False)
    assert err.returncode == 2 and "mlsl train: error: mlsl train has no --backend planted; backends that can:" in err.stderr
    assert "cpu" in err.stderr.splitlines()[-1] and "Traceback" not in err.stderr
    err = run_cli("recipes", "build", "cpu_15k", "--backend", "cpu", "--dry-run", check=False)
    assert err.returncode == 2 and "mlsl recipes build has no --backend cpu" in err.stderr


def test_an_entry_point_that_is_not_a_backend_is_refused():
    BACKENDS.register("not_a_backend", object())
    try:
        with pytest.raises(ConfigError, match="not_a_backend.*not a BackendPlugin"):
            backend("not_a_backend")
    finally:
        BACKENDS._extra.pop("not_a_backend")


def test_launchers_are_registered_and_the_core_reaches_plugins_only_through_registries():
    import ast
    from pathlib import Path

    from nemo_mlsl.registry import LAUNCHERS
    from nemo_mlsl.study.backend import InlineLauncher, launcher
    from nemo_mlsl.study.config import ExecutorConfig

    assert {"inline", "local", "slurm"} <= set(LAUNCHERS.names())
    assert isinstance(launcher(ExecutorConfig(type="inline"), Path("jobs"), "t"), InlineLauncher)
    core = Path(__file__).resolve().parents[1] / "nemo_mlsl"
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(core)}: {n}" for n in names if n.split(".")[0] in ("mlsl_lightning", "mlsl_nemo", "mlsl_bridge")]
    assert not offenders, offenders
