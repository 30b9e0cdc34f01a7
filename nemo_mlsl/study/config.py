"""STUDY.yaml → ``StudyConfig`` (OmegaConf for the ``quick`` overlay, then typed dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.recipes import typed


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


EXECUTORS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where a study's runs execute. ``inline``: one after the other in the study's process; ``local`` and
    ``slurm``: jobs of NeMo-Run's executors, at most ``max_parallel`` in flight."""

    type: str = "inline"
    max_parallel: int = 1
    gpus_per_run: int = 1  # NeMo backend: GPUs (processes) per run; the CPU backend uses one process
    nodes_per_run: int = 1
    account: str | None = None  # Slurm
    partition: str | None = None
    time: str = "04:00:00"
    container_image: str | None = None
    container_mounts: list[str] = field(default_factory=list)
    cpus_per_task: int | None = None
    mem: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.type not in EXECUTORS:
            raise ConfigError(f"executor.type must be one of {', '.join(EXECUTORS)}, got {self.type!r}")
        if self.max_parallel < 1:
            raise ConfigError(f"executor.max_parallel (--max-parallel) must be >= 1, got {self.max_parallel}")
        if self.gpus_per_run < 1 or self.nodes_per_run < 1:
            raise ConfigError("executor.gpus_per_run and executor.nodes_per_run must be >= 1")
        if self.type == "inline" and self.max_parallel > 1:
            raise ConfigError("executor.max_parallel > 1 needs a NeMo-Run executor: --executor local or slurm")


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
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    # Power of the confirmation (nemo_mlsl/study/power.py): paired seeds per confirmed mixture, or as many as a
    # FLOPs budget for the confirmation runs allows; the seed noise if known in advance; the gain hoped for.
    confirm_seeds: int | None = None  # None: 1, or as many as confirm_budget allows
    confirm_budget: float | None = None
    seed_noise: float | None = None
    expected_gain: float | None = None

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
        self.executor.validate()
        self.validate_power()

    def validate_power(self) -> None:
        if self.confirm_seeds is not None and self.confirm_seeds < 1:
            raise ConfigError(f"confirm_seeds must be >= 1 (paired seeds per confirmed mixture), got {self.confirm_seeds}")
        if self.confirm_budget is not None and not self.confirm_budget > 0:
            raise ConfigError(f"confirm_budget must be > 0 training FLOPs (or null: confirm_seeds decides), got {self.confirm_budget}")
        if self.seed_noise is not None and not 0 < self.seed_noise < 1:
            raise ConfigError(f"seed_noise must be in (0, 1): the std of log loss between seeds, e.g. 0.015; got {self.seed_noise}")
        if self.expected_gain is not None and not 0 < self.expected_gain < 1:
            raise ConfigError(f"expected_gain must be in (0, 1): a relative gain, e.g. 0.02 for 2%; got {self.expected_gain}")


def _optional_float(d: Mapping[str, Any], key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number or null, got {value!r}") from None


def _int_field(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return value


def _merge_quick(conf: Any) -> Any:
    quick = conf.pop("quick", None)
    return OmegaConf.merge(conf, quick) if quick is not None else conf


def with_executor(cfg: StudyConfig, **changes: Any) -> StudyConfig:
    """The config with executor fields overridden (``--executor``, ``--max-parallel``), validated again."""
    out = replace(cfg, executor=replace(cfg.executor, **{k: v for k, v in changes.items() if v is not None}))
    out.executor.validate()
    return out


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
            executor=typed(ExecutorConfig, d.get("executor"), f"{path}: executor"),
            confirm_seeds=_int_field(d, "confirm_seeds"), confirm_budget=_optional_float(d, "confirm_budget"),
            seed_noise=_optional_float(d, "seed_noise"), expected_gain=_optional_float(d, "expected_gain"),
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{path}: malformed study config ({err}); see studies/default.yaml for the shape") from None
    cfg.validate()
    return cfg
