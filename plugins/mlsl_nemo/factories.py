"""NeMo-Run CLI factories, one per rung: ``nemo llm pretrain --factory "mlsl_<rung>(data=DIR, ratios='a=0.5,b=0.5')"``.

Registered through the ``nemo_run.cli`` entry point (``nemo`` imports it), so nothing needs importing
by hand after ``pip install``. Data and ratios default to ``$MLSL_DATA`` and ``$MLSL_RATIOS``; ``schedule=FILE`` (a
mixture schedule, as ``mlsl recipes build --schedule``) replaces the ratios.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from nemo_mlsl.recipes import available

PREFIX = "mlsl_"


def _make(rung: str) -> Callable:
    def factory(
        dir: Optional[str] = None,
        name: str = "default",
        num_nodes: Optional[int] = None,
        num_gpus_per_node: Optional[int] = None,
        data: Optional[str] = None,
        ratios: Optional[str] = None,
        within: str = "natural",
        store: Optional[str] = None,
        schedule: Optional[str] = None,
    ):
        from mlsl_nemo.recipe import pretrain_recipe, schedule_file

        sched = schedule_file(schedule, rung, (), num_nodes, num_gpus_per_node) if schedule else None
        ratios = ratios or (os.environ.get("MLSL_RATIOS") if sched is None else None)
        return pretrain_recipe(rung, data or os.environ.get("MLSL_DATA"), ratios, within=within,
                               num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node, dir=dir,
                               name=None if name == "default" else name, store=store, schedule=sched)

    factory.__name__ = factory.__qualname__ = f"{PREFIX}{rung}"
    factory.__doc__ = f"nemo-mlsl recipe {rung!r} on the family blend of a prepared data directory."
    return factory


def register() -> list[str]:
    import nemo_run as run
    from nemo.collections import llm

    names = []
    for rung in available():
        fn = _make(rung)
        run.cli.factory(target=llm.pretrain, name=fn.__name__)(fn)
        names.append(fn.__name__)
    return names


try:  # imported by nemo_run's CLI through the entry point; a plain import elsewhere must not need NeMo
    REGISTERED = register()
except ImportError:
    REGISTERED = []
