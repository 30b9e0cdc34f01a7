"""Entry-point registries: built-in laws, mixtures and launchers are registered exactly like third-party ones
(backends: ``nemo_mlsl.backends``; mixture schedule policies: ``nemo_mlsl.policies``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from nemo_mlsl.errors import ConfigError


@dataclass
class Registry:
    """Objects published under one entry-point group, loaded lazily by name."""

    group: str
    _extra: dict[str, Any] = field(default_factory=dict)

    def _entry_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self._extra))

    def get(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        eps = self._entry_points()
        if name not in eps:
            kind = self.group.split('.')[-1]
            kind = kind[:-3] + "y" if kind.endswith("ies") else kind[:-1]  # policies -> policy, laws -> law
            raise ConfigError(
                f"unknown {kind} {name!r}; available: {', '.join(self.names())}. "
                f"Third-party packages add one through the {self.group!r} entry-point group."
            )
        return eps[name].load()

    def register(self, name: str, obj: Any) -> None:
        """Register in-process (tests, notebooks); packages should use entry points."""
        self._extra[name] = obj


LAWS = Registry("nemo_mlsl.laws")
MIXTURES = Registry("nemo_mlsl.mixtures")
# Where a study's runs execute: a factory (ExecutorConfig, jobs directory, title) -> Launcher (nemo_mlsl.study.backend).
LAUNCHERS = Registry("nemo_mlsl.launchers")
# The next interval's ratios of a mixture schedule, from the run's validation history (nemo_mlsl.policies).
POLICIES = Registry("nemo_mlsl.policies")
