"""STUDY.yaml → ``StudyConfig`` (OmegaConf for the ``quick`` overlay, then typed dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import check_spec
from nemo_mlsl.typed_config import coerce, typed
from nemo_mlsl.userfiles import read_yaml


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
    """The phase-1 design. ``mixtures``: scrambled-Sobol points per (rung, D), each family >= ``floor``.
    ``zeros``: K more mixtures per (rung, D) that each leave one family out entirely (share 0; the families are left
    out in turn, the others share the rest as a Sobol point >= ``floor``). Zero shares are data only for laws that
    take them (``Law.zero_shares``: the cross-family laws and ATLAS): a config that names a p^-γ law (joint_family)
    with ``zeros`` > 0 is refused at load; with ``law: auto`` the p^-γ laws are skipped by the selection (they
    cannot be scored on those runs), so a cross-family law is chosen. 0 (the default): no zero shares."""

    mixtures: int = 5
    floor: float = 0.05
    zeros: int = 0
    independence: IndependenceDesign = field(default_factory=IndependenceDesign)
    repeats: RepeatDesign = field(default_factory=RepeatDesign)


@dataclass(frozen=True)
class ObjectiveConfig:
    """What the optimum minimises: Σ w_f L_f / Z_f (``normalized``) or Σ w_f L_f (``raw``). ``weights`` by family
    name (1 each by default), or ``targets``: {NAME or PATTERN: weight}, a pattern's weight shared by the families it
    matches and the families no item names weighing 0 (``nemo_mlsl.fitting.target_weights``); one of the two."""

    type: str = "normalized"
    weights: dict[str, float] = field(default_factory=dict)
    min_ratio: float = 0.02
    targets: dict[str, float] | None = None




@dataclass(frozen=True)
class AdaptiveConfig:
    """An adaptive arm of the confirmation (``adaptive:`` in a study config): at the largest rung, with the same paired
    seeds as the optimum and the baselines, one run that starts on the mixture ``start`` and lets ``policy`` (the
    ``nemo_mlsl.policies`` registry) decide its ratios every ``interval`` steps from its own validation history,
    every family keeping ``min_share``; ``smoothing`` is the previous ratios' weight in each decision and
    ``max_change`` the most one decision moves the ratios (total variation; 1, the default: no limit). The report
    compares it with every static mixture trained there (the optimum, the baselines) by the same paired test."""

    policy: str = "ado"
    start: str = "natural"
    interval: int = 20
    min_share: float = 0.02
    smoothing: float = 0.5
    max_change: float = 1.0

    @property
    def name(self) -> str:
        """The arm's mixture name in the plan, the records and the report."""
        return f"adaptive:{self.policy}"

    def settings(self) -> dict[str, Any]:
        limit = {} if self.max_change == 1.0 else {"max_change": self.max_change}  # (plans without a limit as before)
        return {"policy": self.policy, "interval": self.interval, "min_share": self.min_share, "smoothing": self.smoothing,
                **limit}

    def validate(self, confirm_steps: int) -> None:
        from nemo_mlsl.registry import POLICIES

        if self.policy not in POLICIES.names():
            raise ConfigError(f"adaptive.policy must be one of {', '.join(POLICIES.names())} (the 'nemo_mlsl.policies' "
                              f"entry points), got {self.policy!r}")
        check_spec(self.start, "adaptive.start")
        if self.interval < 1 or self.interval >= confirm_steps:
            raise ConfigError(f"adaptive.interval must be >= 1 and below the confirmation run's {confirm_steps} steps (one "
                              f"decision per boundary), got {self.interval}")
        if not 0 <= self.min_share < 1 or not 0 <= self.smoothing <= 1:
            raise ConfigError(f"adaptive.min_share must be in [0, 1) and adaptive.smoothing in [0, 1]; got {self.min_share}, "
                              f"{self.smoothing}")
        if not 0 < self.max_change <= 1:
            raise ConfigError(f"adaptive.max_change must be in (0, 1] (a total variation; 1: no limit), got {self.max_change}")


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
        from nemo_mlsl.registry import LAUNCHERS

        if self.type not in LAUNCHERS.names():
            raise ConfigError(f"executor.type must be one of {', '.join(LAUNCHERS.names())} (the 'nemo_mlsl.launchers' "
                              f"entry points), got {self.type!r}")
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
    adaptive: AdaptiveConfig | None = None  # an adaptive arm in the confirmation (None: static mixtures only)

    def validate(self) -> None:
        """Everything the run would refuse, refused now (so ``--dry-run`` refuses it too): corpus, ladder, token
        counts, design, baselines, objective, law, bootstrap, within-family sampling, seed and executor."""
        self.corpus.validate()
        self._validate_ladder()
        if any(t < 1 for t in self.tokens) or self.confirm_tokens < 1:
            raise ConfigError(f"tokens and confirm_tokens are token budgets and must be >= 1; got tokens {self.tokens}, "
                              f"confirm_tokens {self.confirm_tokens}")
        if len(set(self.tokens)) < 2:
            raise ConfigError(f"tokens: the joint law needs at least 2 distinct token budgets (distinct D), got {self.tokens}")
        self._validate_design()
        for i, spec in enumerate(self.baselines):
            check_spec(spec, f"baselines[{i}]")
        check_spec(self.within, "within")
        if self.objective.type not in ("normalized", "raw"):
            raise ConfigError(f"objective.type must be normalized or raw, got {self.objective.type!r}")
        if not 0 <= self.objective.min_ratio < 1:
            raise ConfigError(f"objective.min_ratio must be in [0, 1), got {self.objective.min_ratio}")
        bad = {f: w for f, w in self.objective.weights.items() if not w >= 0}
        if bad:
            raise ConfigError(f"objective.weights must be >= 0, got {bad}")
        if self.objective.targets is not None:
            from nemo_mlsl.fitting.target_weights import parse_selection

            if self.objective.weights:
                raise ConfigError("objective: give either weights (per family) or targets (names or patterns with "
                                  "weights), not both")
            parse_selection(self.objective.targets, "objective.targets")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap is a number of replicates and must be >= 0, got {self.bootstrap}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        self._validate_law()
        self.executor.validate()
        self.validate_power()
        if self.adaptive is not None:
            from nemo_mlsl.recipes import load

            self.adaptive.validate(load(self.confirm_rung).train.steps_for(self.confirm_tokens))

    def validate_power(self) -> None:
        if self.confirm_seeds is not None and self.confirm_seeds < 1:
            raise ConfigError(f"confirm_seeds must be >= 1 (paired seeds per confirmed mixture), got {self.confirm_seeds}")
        if self.confirm_budget is not None and not self.confirm_budget > 0:
            raise ConfigError(f"confirm_budget must be > 0 training FLOPs (or null: confirm_seeds decides), got {self.confirm_budget}")
        if self.seed_noise is not None and not 0 < self.seed_noise < 1:
            raise ConfigError(f"seed_noise must be in (0, 1): the std of log loss between seeds, e.g. 0.015; got {self.seed_noise}")
        if self.expected_gain is not None and not 0 < self.expected_gain < 1:
            raise ConfigError(f"expected_gain must be in (0, 1): a relative gain, e.g. 0.02 for 2%; got {self.expected_gain}")

    def _validate_ladder(self) -> None:
        from nemo_mlsl.recipes import load

        if len(set(self.fit_rungs)) < 2:
            raise ConfigError(f"ladder.fit: the joint law needs at least 2 distinct rungs (distinct N) to fit on, got {self.fit_rungs}")
        if self.confirm_rung in self.fit_rungs:
            raise ConfigError(f"ladder.confirm {self.confirm_rung!r} is also a fit rung; confirm on a larger rung")
        for i, rung in enumerate([*self.fit_rungs, self.confirm_rung]):
            try:
                load(rung)
            except ConfigError as err:
                where = f"ladder.fit[{i}]" if i < len(self.fit_rungs) else "ladder.confirm"
                raise ConfigError(f"{where}: {err}") from None

    def _validate_design(self) -> None:
        d, ind, rep = self.design, self.design.independence, self.design.repeats
        if d.mixtures < 2:
            raise ConfigError(f"design.mixtures must be >= 2 (distinct ratios per setting), got {d.mixtures}")
        if not 0 <= d.floor < 1:
            raise ConfigError(f"design.floor must be in [0, 1), got {d.floor}")
        if d.zeros < 0:
            raise ConfigError(f"design.zeros must be >= 0 (leave-one-family-out mixtures per setting), got {d.zeros}")
        if not 0 < ind.ratio < 1:
            raise ConfigError(f"design.independence.ratio must be in (0, 1), got {ind.ratio}")
        if not 0 <= ind.floor < 1:
            raise ConfigError(f"design.independence.floor must be in [0, 1), got {ind.floor}")
        if ind.mixtures < 1:
            raise ConfigError(f"design.independence.mixtures must be >= 1, got {ind.mixtures}")
        if rep.seeds < 0 or rep.points < 0:
            raise ConfigError(f"design.repeats.seeds and .points must be >= 0, got {rep.seeds} and {rep.points}")
        if rep.points > ind.mixtures:
            raise ConfigError(f"design.repeats.points ({rep.points}) must be <= design.independence.mixtures ({ind.mixtures}): "
                              "the repeated points are independence points")

    def design_counts(self) -> dict[str, int]:
        """What phase 1 gives the fit of each family: runs and distinct values of N, D and p."""
        d = self.design
        runs = len(self.fit_rungs) * len(self.tokens) * (d.mixtures + d.zeros) + d.independence.mixtures
        return {"runs": runs + d.repeats.points * d.repeats.seeds, "N": len(set(self.fit_rungs)), "D": len(set(self.tokens)),
                "p": d.mixtures + d.zeros, "mixtures": d.mixtures + d.zeros}

    def _validate_law(self) -> None:
        from nemo_mlsl.fitting.lawfit import make_law
        from nemo_mlsl.fitting.optimize import study_law_problem
        from nemo_mlsl.laws.base import zero_share_laws

        if self.law == "auto":
            return  # selected by cross-validation among the laws a study can take, once phase 1 has run (nemo_mlsl.fitting.selection)
        try:
            law = make_law(self.law)
        except ConfigError as err:
            raise ConfigError(f"law: {err}") from None
        problem = study_law_problem(self.law)
        if problem:
            raise ConfigError(f"law {self.law!r} cannot run a study: {problem}")
        if self.design.zeros and not law.zero_shares:
            from nemo_mlsl.fitting.optimize import study_laws

            takes = [n for n in study_laws() if n in zero_share_laws()]
            raise ConfigError(f"law {self.law!r} cannot take the design.zeros runs: its p^-gamma is infinite at a share of 0; "
                              f"use a law that takes zero shares ({', '.join(takes)}) or law: auto, or set design.zeros: 0")
        have = self.design_counts()
        for key, need in law.requirements().items():
            if have.get(key, 0) < need:
                raise ConfigError(f"law {self.law!r} needs at least {need} {'runs' if key == 'runs' else 'distinct values of ' + key} "
                                  f"per family; this design gives {have[key]} (more ladder.fit rungs, tokens or design.mixtures)")


def _merge_quick(conf: Any) -> Any:
    quick = conf.pop("quick", None)
    return OmegaConf.merge(conf, quick) if quick is not None else conf


def with_executor(cfg: StudyConfig, **changes: Any) -> StudyConfig:
    """The config with executor fields overridden (``--executor``, ``--max-parallel``), validated again."""
    out = replace(cfg, executor=replace(cfg.executor, **{k: v for k, v in changes.items() if v is not None}))
    out.executor.validate()
    return out


SHAPE = "the shape of studies/default.yaml"
TOP_LEVEL = ("name", "corpus", "ladder", "tokens", "confirm_tokens", "design", "baselines", "objective", "law", "bootstrap",
             "within", "seed", "executor", "confirm_seeds", "confirm_budget", "seed_noise", "expected_gain", "adaptive", "quick")


def _value(d: Mapping[str, Any], key: str, hint: Any, default: Any, where: str) -> Any:
    """``d[key]`` (or ``default``) as ``hint``, a named error otherwise."""
    return coerce(d.get(key, default), hint, f"{where}: {key}")


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


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {value!r}; see {SHAPE}")
    return dict(value)


def load_study(path: str | Path, quick: bool = False) -> StudyConfig:
    """Read and validate a whole study config: every field typed and checked before anything runs."""
    path = Path(path)
    raw = read_yaml(path, "study config", SHAPE)
    try:
        conf = OmegaConf.create(raw)
        if quick:
            conf = _merge_quick(conf)
        elif "quick" in conf:
            conf.pop("quick")
        d: Mapping[str, Any] = OmegaConf.to_container(conf, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {str(err).splitlines()[0]}; see {SHAPE}") from None
    where = str(path)
    unknown = sorted(set(d) - set(TOP_LEVEL) - {f.name for f in fields(StudyConfig)})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(TOP_LEVEL)}")
    for key in ("ladder", "tokens", "confirm_tokens"):
        if key not in d:
            raise ConfigError(f"{where}: {key} is missing; see {SHAPE}")
    ladder = _mapping(d["ladder"], f"{where}: ladder")
    if "fit" not in ladder or "confirm" not in ladder:
        raise ConfigError(f"{where}: ladder needs fit: [RUNG, RUNG, ...] and confirm: RUNG")
    design = _mapping(d.get("design"), f"{where}: design")
    unknown = sorted(set(design) - {"mixtures", "floor", "zeros", "independence", "repeats"})
    if unknown:
        raise ConfigError(f"{where}: design: unknown field(s) {unknown}; valid: floor, independence, mixtures, repeats, zeros")
    cfg = StudyConfig(
        name=_value(d, "name", str, path.stem, where),
        corpus=typed(CorpusConfig, _mapping(d.get("corpus"), f"{where}: corpus"), f"{where}: corpus"),
        fit_rungs=coerce(ladder["fit"], list[str], f"{where}: ladder.fit"),
        confirm_rung=coerce(ladder["confirm"], str, f"{where}: ladder.confirm"),
        tokens=coerce(d["tokens"], list[int], f"{where}: tokens"),
        confirm_tokens=_value(d, "confirm_tokens", int, None, where),
        design=DesignConfig(
            mixtures=_value(design, "mixtures", int, 5, f"{where}: design"),
            floor=_value(design, "floor", float, 0.05, f"{where}: design"),
            zeros=_value(design, "zeros", int, 0, f"{where}: design"),
            independence=typed(IndependenceDesign, _mapping(design.get("independence"), f"{where}: design.independence"),
                               f"{where}: design.independence"),
            repeats=typed(RepeatDesign, _mapping(design.get("repeats"), f"{where}: design.repeats"), f"{where}: design.repeats"),
        ),
        baselines=coerce(d.get("baselines", ["uniform"]), list[str], f"{where}: baselines"),
        objective=typed(ObjectiveConfig, _mapping(d.get("objective"), f"{where}: objective"), f"{where}: objective"),
        law=_value(d, "law", str, "joint_family", where), bootstrap=_value(d, "bootstrap", int, 100, where),
        within=_value(d, "within", str, "natural", where), seed=_value(d, "seed", int, 0, where), source=str(path),
        executor=typed(ExecutorConfig, _mapping(d.get("executor"), f"{where}: executor"), f"{where}: executor"),
        confirm_seeds=_int_field(d, "confirm_seeds"), confirm_budget=_optional_float(d, "confirm_budget"),
        seed_noise=_optional_float(d, "seed_noise"), expected_gain=_optional_float(d, "expected_gain"),
        adaptive=None if d.get("adaptive") is None else typed(AdaptiveConfig, _mapping(d["adaptive"], f"{where}: adaptive"),
                                                              f"{where}: adaptive"),
    )
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg
