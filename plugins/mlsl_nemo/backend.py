"""The NeMo 2 backend plugin: ``mlsl recipes build NAME`` (NeMo's ``llm.pretrain`` recipe) and the study's
``NeMoBackend``."""

from __future__ import annotations

import argparse

from nemo_mlsl.backends import BackendPlugin
from nemo_mlsl.errors import ConfigError


def _study(gpus_per_run: int, nodes_per_run: int):
    from mlsl_nemo.study import NeMoBackend

    return NeMoBackend(gpus_per_run=gpus_per_run, nodes_per_run=nodes_per_run)


def _build(a: argparse.Namespace) -> int:
    """The rung's ``run.Partial(llm.pretrain)`` printed (``--dry-run``), or run by NeMo-Run's local executor."""
    from mlsl_nemo.recipe import pretrain_recipe
    from nemo_mlsl.recipes import load

    build = lambda check: pretrain_recipe(a.name, a.data, a.ratios, within=a.within, num_nodes=a.nodes,  # noqa: E731
                                          num_gpus_per_node=a.gpus_per_node, dir=a.log_dir, overrides=a.overrides, store=a.store,
                                          check_epochs=check)
    if a.dry_run:
        try:
            recipe = build(True)
        except ConfigError as err:  # show the configuration anyway; the run itself would refuse to start
            recipe = build(False)
            print(f"# warning: {err}")
        print(recipe)
        return 0
    recipe = build(True)
    import nemo_run as run

    executor = run.LocalExecutor(ntasks_per_node=a.gpus_per_node or load(a.name).parallel.gpus_per_node, launcher="torchrun")
    run.run(recipe, executor=executor, name=a.name)
    return 0


BACKEND = BackendPlugin(name="nemo", runs_label="NeMo runs", study=_study, build=_build, requires=("nemo.collections.llm",),
                        missing="needs NeMo 2 (nemo_toolkit 2.7.3 with nemo.collections.llm): pip install -e '.[nemo]' "
                                "(make setup does)")
