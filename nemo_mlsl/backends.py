"""Training backends as the CLI and the study see them, found through the ``nemo_mlsl.backends`` registry.

A backend plugin (``BackendPlugin``) names what it can do: train the study's planned runs (``study``, required),
train one run from ``mlsl train --backend NAME`` and build a ladder rung from ``mlsl recipes build --backend NAME``
(optional). The built-ins (CPU Lightning, NeMo 2, Megatron-Bridge) are registered exactly like a third-party one;
a plugin module imports its framework only when one of these is called.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.registry import Registry

BACKENDS = Registry("nemo_mlsl.backends")


@dataclass(frozen=True)
class BackendPlugin:
    """One training stack. ``study(gpus_per_run, nodes_per_run)`` gives the study's ``Backend``."""

    name: str
    runs_label: str  # what its runs are called in messages ("NeMo runs")
    study: Callable[[int, int], Any]
    train: Callable[[argparse.Namespace], dict | None] | None = None  # mlsl train --backend NAME
    build: Callable[[argparse.Namespace], int] | None = None  # mlsl recipes build NAME --backend NAME
    requires: tuple[str, ...] = ()  # importable modules it needs
    missing: str = ""  # what to tell a user whose environment lacks them
    schedules: bool = False  # its train takes mlsl train --schedule (a mixture that changes during the run)
    adaptive: bool = False  # its train takes mlsl train --adaptive POLICY (a schedule decided during the run)
    build_schedules: bool = False  # its build takes mlsl recipes build --schedule (a fixed schedule)
    build_adaptive: bool = False  # its build takes mlsl recipes build --adaptive POLICY --interval STEPS

    def check_available(self) -> None:
        """A named error where this backend's framework is not installed here."""
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                raise ConfigError(f"--backend {self.name} " + (self.missing or f"needs {module!r}, which is not installed here"))

    def supports(self, what: str) -> None:
        """A named error if this backend cannot do ``what`` ('train' or 'build')."""
        if getattr(self, what) is None:
            able = [n for n in BACKENDS.names() if getattr(backend(n, check=False), what) is not None]
            command = {"train": "mlsl train", "build": "mlsl recipes build"}[what]
            raise ConfigError(f"{command} has no --backend {self.name}; backends that can: {', '.join(able)}")


def backend(name: str, check: bool = True) -> BackendPlugin:
    """The registered backend ``name`` (a named error for unknown names and, with ``check``, missing frameworks)."""
    plugin = BACKENDS.get(name)
    if not isinstance(plugin, BackendPlugin):
        raise ConfigError(f"the {BACKENDS.group!r} entry point {name!r} is a {type(plugin).__name__}, not a BackendPlugin")
    if check:
        plugin.check_available()
    return plugin
