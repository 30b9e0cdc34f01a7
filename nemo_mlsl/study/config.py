"""STUDY.yaml → ``StudyConfig`` (OmegaConf for the ``quick`` overlay, then typed dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from nemo_mlsl.errors import ConfigError


@dataclass(frozen=True)
class CorpusConfig:
    synth: dict[str, Any] | None = None
    text: list[str] | None = None
    prepared: str | None = None
    families: str | None = None
    vocab_size: int = 512

    def validate(self) -> None:
        given = [k for k in ("synth", "text", "prepared") if getattr(self, k)]
        if len(given) != 1:
            raise ConfigError(f"corpus: give exactly one of synth, text or prepared (got {given or 'none'})")


@dataclass(frozen=True)
class IndependenceDesign:
    family: str | None = None
    ratio: float = 0.3
    mixtures: int = 4
    floor: float = 0.15


@dataclass(frozen=True)
class RepeatDesign:
    seeds: int = 2
    points: int = 2


@dataclass(frozen=True)
class DesignConfig:
    mixtures: int = 5
    floor: float = 0.05
    independence: IndependenceDesign = field(default_factory=IndependenceDesign)
    repeats: RepeatDesign = field(default_factory=RepeatDesign)


@dataclass(frozen=True)
class ObjectiveConfig:
    type: str = "normalized"
    weights: dict[str, float] = field(default_factory=dict)
    min_ratio: float = 0.02


@dataclass(frozen=True)
class StudyConfig:
    name: str
    corpus: CorpusConfig
    fit_rungs: list[str]
    confirm_rung: str
    tokens: list[int]
    confirm_tokens: int
    design: DesignConfig
    baselines: list[str]
    objective: ObjectiveConfig
    law: str = "joint_family"
    bootstrap: int = 100
    within: str = "natural"
    seed: int = 0
    source: str = ""

    def validate(self) -> None:
        self.corpus.validate()
        if len(self.fit_rungs) < 2:
            raise ConfigError("ladder.fit: the joint law needs at least 2 rungs (distinct N) to fit on")
        if len(self.tokens) < 2:
            raise ConfigError("tokens: the joint law needs at least 2 token budgets (distinct D)")
        if self.design.mixtures < 2:
            raise ConfigError("design.mixtures must be >= 2 (distinct ratios per setting)")
        if not 0 <= self.design.floor < 1:
            raise ConfigError("design.floor must be in [0, 1)")
        if not 0 < self.design.independence.ratio < 1:
            raise ConfigError("design.independence.ratio must be in (0, 1)")
        if self.objective.type not in ("normalized", "raw"):
            raise ConfigError("objective.type must be normalized or raw")


def _merge_quick(conf: Any) -> Any:
    quick = conf.pop("quick", None)
    return OmegaConf.merge(conf, quick) if quick is not None else conf


def load_study(path: str | Path, quick: bool = False) -> StudyConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"study config {str(path)!r} does not exist")
    conf = OmegaConf.load(path)
    if quick:
        conf = _merge_quick(conf)
    elif "quick" in conf:
        conf.pop("quick")
    d: Mapping[str, Any] = OmegaConf.to_container(conf, resolve=True)
    try:
        design = dict(d.get("design") or {})
        cfg = StudyConfig(
            name=str(d.get("name", path.stem)),
            corpus=CorpusConfig(**(d.get("corpus") or {})),
            fit_rungs=list(d["ladder"]["fit"]),
            confirm_rung=str(d["ladder"]["confirm"]),
            tokens=[int(t) for t in d["tokens"]],
            confirm_tokens=int(d["confirm_tokens"]),
            design=DesignConfig(
                mixtures=int(design.get("mixtures", 5)), floor=float(design.get("floor", 0.05)),
                independence=IndependenceDesign(**(design.get("independence") or {})),
                repeats=RepeatDesign(**(design.get("repeats") or {})),
            ),
            baselines=list(d.get("baselines", ["uniform"])),
            objective=ObjectiveConfig(**(d.get("objective") or {})),
            law=str(d.get("law", "joint_family")), bootstrap=int(d.get("bootstrap", 100)),
            within=str(d.get("within", "natural")), seed=int(d.get("seed", 0)), source=str(path),
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{path}: malformed study config ({err}); see studies/default.yaml for the shape") from None
    cfg.validate()
    return cfg
