"""Which targets the optimum serves, and how much each counts: ``--targets`` / ``objective.targets``.

A selection is a list of ``PATTERN`` or ``PATTERN=WEIGHT`` items (shell-style patterns over target names, e.g.
``arc_*``, ``*:rc::olmes``, ``swahili``). A pattern that matches several targets is a group: its weight is shared
equally among them, so a group counts as its members' mean (olmix averages the tasks of a family this way) however
many members it has. Targets that no pattern names get weight 0: the optimum ignores them (a family nobody
targets is still sampled, at its minimum ratio). A target is in one group only: two patterns that both match it are
an error naming both, since their sum would be a weight nobody wrote down.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from nemo_mlsl.errors import ConfigError


@dataclass(frozen=True)
class TargetGroup:
    """One item of a selection: its pattern, its weight, and the targets it matched."""

    pattern: str
    weight: float
    members: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "weight": self.weight, "members": list(self.members)}


def parse_selection(spec: str | Sequence[str] | Mapping[str, float], where: str = "--targets") -> list[tuple[str, float]]:
    """``"arc_*=2,hellaswag"``, ``["arc_*=2", "hellaswag"]`` or ``{"arc_*": 2, "hellaswag": 1}`` → [(pattern, weight)]."""
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
        items = []
        for part in parts:
            if not part:
                continue
            pattern, sep, weight = part.rpartition("=") if "=" in part else (part, "", "1")
            items.append((pattern.strip(), weight.strip()))
    out: list[tuple[str, float]] = []
    for pattern, weight in items:
        if not pattern:
            raise ConfigError(f"{where}: an item has no target name or pattern; write NAME, PATTERN or PATTERN=WEIGHT "
                              "(e.g. arc_*=2,hellaswag)")
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: the weight of {pattern!r} must be a number, got {weight!r}") from None
        if not (math.isfinite(w) and w >= 0):
            raise ConfigError(f"{where}: the weight of {pattern!r} must be a finite number >= 0, got {weight!r}")
        out.append((pattern, w))
    if not out:
        raise ConfigError(f"{where}: name at least one target (NAME, PATTERN or PATTERN=WEIGHT)")
    if not any(w > 0 for _, w in out):
        raise ConfigError(f"{where}: every weight is 0; give at least one target a positive weight")
    return out


def resolve_groups(spec: str | Sequence[str] | Mapping[str, float], targets: Sequence[str],
                   where: str = "--targets") -> list[TargetGroup]:
    """Each item of ``spec`` matched against the fit's ``targets`` (exact names first, then patterns)."""
    targets = list(targets)
    owner: dict[str, str] = {}
    groups = []
    for pattern, weight in parse_selection(spec, where):
        members = [pattern] if pattern in targets else [t for t in targets if fnmatch.fnmatchcase(t, pattern)]
        if not members:
            close = [t for t in targets if pattern.lower() in t.lower()][:5] or targets[:5]
            raise ConfigError(f"{where}: {pattern!r} matches no target of the fit; it has {len(targets)} targets, e.g. "
                              f"{close} (patterns use * and ?, e.g. 'arc_*')")
        for t in members:
            if t in owner:
                raise ConfigError(f"{where}: target {t!r} is matched by both {owner[t]!r} and {pattern!r}; make the "
                                  "patterns disjoint (a target belongs to one group)")
            owner[t] = pattern
        groups.append(TargetGroup(pattern, weight, tuple(members)))
    return groups


def target_weights(spec: str | Sequence[str] | Mapping[str, float], targets: Sequence[str],
                   where: str = "--targets") -> dict[str, float]:
    """Every target's weight: its group's weight over the group's size, 0 for targets no item names."""
    out = {t: 0.0 for t in targets}
    for g in resolve_groups(spec, targets, where):
        for t in g.members:
            out[t] = g.weight / len(g.members)
    return out
