"""The NeMo 2 backend plugin: ``mlsl recipes build NAME`` (NeMo's ``llm.pretrain`` recipe) and the study's
``NeMoBackend``."""

from __future__ import annotations

import argparse

from nemo_mlsl.backends import BackendPlugin
from nemo_mlsl.cli.common import adaptive_arg
from nemo_mlsl.errors import ConfigError


def _study(gpus_per_run: int, nodes_per_run: int):
    from mlsl_nemo.study import NeMoBackend

    return NeMoBackend(gpus_per_run=gpus_per_run, nodes_per_run=nodes_per_run)


def _build(a: argparse.Namespace) -> int:
    """The rung's ``run.Partial(llm.pretrain)`` printed (``--dry-run``), or run by NeMo-Run's local executor."""
    from mlsl_nemo.recipe import pretrain_recipe
    from nemo_mlsl.recipes import load

    schedule = _schedule(a)
    build = lambda check: pretrain_recipe(a.name, a.data, a.ratios, within=a.within, num_nodes=a.nodes,  # noqa: E731
                                          num_gpus_per_node=a.gpus_per_node, dir=a.log_dir, overrides=a.overrides, store=a.store,
                                          check_epochs=check, schedule=schedule, adaptive=adaptive_arg(a))
    if a.dry_run:
        try:
            recipe = build(True)
        except ConfigError as err:  # show the configuration anyway; the run itself would refuse to start
            recipe = build(False)
            print(f"# warning: {err}")
        print(recipe)
        return 0
    import nemo_run as run

    executor = local_executor(run, load(a.name, a.overrides).parallel, a.nodes, a.gpus_per_node)  # before any data check
    run.run(build(True), executor=executor, name=a.name)
    return 0


def _schedule(a: argparse.Namespace) -> dict | None:
    """``--schedule FILE`` as the dict the recipe carries (NeMo-Run serialises it)."""
    if getattr(a, "schedule", None) is None:
        return None
    from mlsl_nemo.recipe import schedule_file

    return schedule_file(a.schedule, a.name, a.overrides, a.nodes, a.gpus_per_node)


def local_executor(run, parallel, nodes: int | None, gpus_per_node: int | None):
    """NeMo-Run's local executor (torchrun on this node) for the recipe's layout: one process per GPU. It starts no
    other node, so a run on several nodes (``--nodes`` or the recipe's ``num_nodes``) is refused, with where to run it."""
    nodes = nodes or parallel.num_nodes
    if nodes > 1:
        raise ConfigError(f"mlsl recipes build runs on this node only, and the run asks for {nodes} nodes (--nodes or the "
                          "recipe's parallel.num_nodes): run it with `mlsl study --executor slurm` (executor.nodes_per_run) "
                          "or NeMo-Run's SlurmExecutor (`nemo llm pretrain --factory mlsl_<rung>`), or pass --nodes 1")
    return run.LocalExecutor(ntasks_per_node=gpus_per_node or parallel.gpus_per_node, nodes=1, launcher="torchrun")


BACKEND = BackendPlugin(name="nemo", runs_label="NeMo runs", study=_study, build=_build, requires=("nemo.collections.llm",),
                        missing="needs NeMo 2 (nemo_toolkit 2.7.3 with nemo.collections.llm): pip install -e '.[nemo]' "
                                "(make setup does)", build_schedules=True, build_adaptive=True)
