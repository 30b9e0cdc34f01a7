"""The study plan: every run with its purpose, rung, token budget, ratios and seed; kept in ``plan.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nemo_mlsl.data.manifest import write_json_atomic
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.study.config import StudyConfig
from nemo_mlsl.study.design import independence_design, leave_one_out, simplex_sobol


FIT_PURPOSES = ("design", "independence", "repeat")  # the runs the law is fitted on


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    purpose: str  # design | independence | repeat | confirm | naive
    rung: str
    tokens: int
    ratios: dict[str, float]
    seed: int
    N: int
    phase: int = 1
    mixture: str = ""
    adaptive: dict[str, Any] | None = None  # an adaptive arm's policy settings (ratios: its first interval's)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tok(t: int) -> str:
    return f"{t // 1000}k" if t % 1000 == 0 else str(t)


def phase1(cfg: StudyConfig, families: Sequence[str], n_params: Mapping[str, int]) -> list[PlannedRun]:
    """Design (with ``design.zeros`` leave-one-family-out mixtures), independence and repeat runs on the fit rungs,
    smallest model and budget first."""
    runs: list[PlannedRun] = []
    rungs = sorted(cfg.fit_rungs, key=lambda r: n_params[r])
    for rung in rungs:
        for tokens in sorted(cfg.tokens):
            for i, r in enumerate(simplex_sobol(cfg.design.mixtures, families, cfg.design.floor, cfg.seed)):
                runs.append(PlannedRun(f"design-{rung}-{_tok(tokens)}-m{i}", "design", rung, tokens, r, cfg.seed, n_params[rung]))
            if cfg.design.zeros:  # mixtures that leave one family out (design.zeros; only laws that take zero shares)
                for i, r in enumerate(leave_one_out(cfg.design.zeros, families, cfg.design.floor, cfg.seed)):
                    runs.append(PlannedRun(f"design-{rung}-{_tok(tokens)}-z{i}", "design", rung, tokens, r, cfg.seed, n_params[rung]))
    ind = cfg.design.independence
    fixed = ind.family or sorted(families)[0]
    # On the largest fit rung and budget: the smallest models, early in training, share capacity in ways
    # that make families interfere beyond what their data share explains (docs/science.md).
    small_rung, small_tokens = rungs[-1], max(cfg.tokens)
    points = independence_design(ind.mixtures, families, fixed, ind.ratio, ind.floor, cfg.seed)
    for i, r in enumerate(points):
        runs.append(PlannedRun(f"indep-{fixed}-{small_rung}-{_tok(small_tokens)}-m{i}", "independence", small_rung, small_tokens, r,
                               cfg.seed, n_params[small_rung]))
    for i, r in enumerate(points[: cfg.design.repeats.points]):
        for k in range(1, cfg.design.repeats.seeds + 1):
            runs.append(PlannedRun(f"indep-{fixed}-{small_rung}-{_tok(small_tokens)}-m{i}-seed{cfg.seed + k}", "repeat", small_rung,
                                   small_tokens, r, cfg.seed + k, n_params[small_rung]))
    order = {r: i for i, r in enumerate(rungs)}
    return sorted(runs, key=lambda p: (order[p.rung], p.tokens, p.purpose != "design", p.run_id))


def confirm_seeds(cfg: StudyConfig, n_params: Mapping[str, int], mixtures: int) -> int:
    """Paired seeds per confirmed mixture: ``confirm_seeds``, or as many as ``confirm_budget`` (training FLOPs,
    6·N·D per run) buys for ``mixtures`` mixtures at the largest rung; with both, the smaller."""
    seeds = cfg.confirm_seeds or (None if cfg.confirm_budget else 1)
    if cfg.confirm_budget:
        per_seed = 6.0 * n_params[cfg.confirm_rung] * cfg.confirm_tokens * mixtures
        afford = int(cfg.confirm_budget // per_seed)
        if afford < 1:
            raise ConfigError(f"confirm_budget {cfg.confirm_budget:.3g} FLOPs buys no seed: one seed of {mixtures} mixtures at "
                              f"{cfg.confirm_rung} and D={cfg.confirm_tokens:,} costs {per_seed:.3g}; raise it or drop it")
        seeds = min(afford, seeds) if seeds else afford
    return int(seeds)


def phase2(cfg: StudyConfig, mixtures: Mapping[str, Mapping[str, float]], n_params: Mapping[str, int],
           seeds: int | None = None, adaptive_start: Mapping[str, float] | None = None) -> list[PlannedRun]:
    """The largest rung at the optimal and baseline mixtures with ``seeds`` paired seeds (every mixture the same
    seeds, so seed effects cancel in the differences), and the next-smaller rung at the same mixtures, one seed
    (the naive predictor). With ``cfg.adaptive``: the adaptive arm at the largest rung on the same seeds, starting
    on ``adaptive_start`` (it has no naive run: no law predicts a run whose mixture is decided during it)."""
    naive_rung = max(cfg.fit_rungs, key=lambda r: n_params[r])
    arms = len(mixtures) + (cfg.adaptive is not None)
    seeds = confirm_seeds(cfg, n_params, arms) if seeds is None else seeds
    runs = []
    for rung, purpose, n_seeds in ((naive_rung, "naive", 1), (cfg.confirm_rung, "confirm", seeds)):
        for k in range(n_seeds):
            for name, r in mixtures.items():
                runs.append(_phase2_run(cfg, n_params, purpose, rung, k, name, r))
            if purpose == "confirm" and cfg.adaptive is not None:
                if adaptive_start is None:
                    raise ValueError("phase2: a study with an adaptive arm needs its start mixture")
                runs += adaptive_arm(cfg, n_params, [k], adaptive_start)
    return runs


def _phase2_run(cfg: StudyConfig, n_params: Mapping[str, int], purpose: str, rung: str, k: int, name: str,
                r: Mapping[str, float], adaptive: dict[str, Any] | None = None) -> PlannedRun:
    slug = name.replace(":", "").replace(".", "p")
    rid = f"{purpose}-{rung}-{_tok(cfg.confirm_tokens)}-{slug}" + (f"-seed{cfg.seed + k}" if k else "")
    return PlannedRun(rid, purpose, rung, cfg.confirm_tokens, dict(r), cfg.seed + k, n_params[rung], phase=2, mixture=name,
                      adaptive=adaptive)


def adaptive_arm(cfg: StudyConfig, n_params: Mapping[str, int], seeds: Sequence[int],
                 start: Mapping[str, float]) -> list[PlannedRun]:
    """The adaptive arm's runs at the largest rung, one per confirmation seed offset in ``seeds``, from ``start``."""
    assert cfg.adaptive is not None
    return [_phase2_run(cfg, n_params, "confirm", cfg.confirm_rung, k, cfg.adaptive.name, start, cfg.adaptive.settings())
            for k in seeds]


def reconcile_arm(cfg: StudyConfig, planned: Sequence[PlannedRun], n_params: Mapping[str, int],
                  start: Callable[[], Mapping[str, float]]) -> tuple[list[PlannedRun], str | None]:
    """A resumed study's planned phase 2 with the adaptive arm of the config as it is now: the static runs as planned
    (their records stay valid), the arm re-planned on the same paired seeds where the config's ``adaptive:`` changed
    (another policy: a new arm, whose runs have their own ids; the old arm's records stay in the store; the same
    policy with other settings is refused, its run ids being the old ones),
    added where the config gained one, and dropped where it lost it. ``start``: the arm's first mixture (only asked for
    when an arm is planned). Also a line saying what changed (None: nothing)."""
    static = [r for r in planned if not r.adaptive]
    arm = [r for r in planned if r.adaptive]
    if cfg.adaptive is None:
        return static, (f"the config has no adaptive arm: the planned {arm[0].mixture} is not trained" if arm else None)
    if arm and all(r.mixture == cfg.adaptive.name and r.adaptive == cfg.adaptive.settings() for r in arm):
        return list(planned), None
    if any(r.mixture == cfg.adaptive.name for r in arm):  # same policy, other settings: the run ids would collide
        raise ConfigError(f"adaptive: the arm {cfg.adaptive.name} was planned with {arm[0].adaptive}, the config now asks "
                          f"for {cfg.adaptive.settings()}; its runs (and records) keep their ids, so --resume cannot "
                          "train it again with other settings: use a new --out, or the old settings")
    seeds = sorted({r.seed - cfg.seed for r in static if r.purpose == "confirm" and r.rung == cfg.confirm_rung})
    new = adaptive_arm(cfg, n_params, seeds, start())
    what = f"replaces the planned {arm[0].mixture} ({arm[0].adaptive})" if arm else "is added to the planned phase 2"
    return static + new, (f"the adaptive arm {cfg.adaptive.name} ({cfg.adaptive.settings()}) {what}, on the paired seeds "
                          f"{[cfg.seed + k for k in seeds]}; records of other arms stay in the store")


def phase2_size(cfg: StudyConfig, n_params: Mapping[str, int] | None = None) -> int:
    """Runs phase 2 will have (optimum + baselines: one naive run each, and the paired confirmation seeds; an
    adaptive arm: its confirmation seeds), known before its mixtures are."""
    mixtures = 1 + len(cfg.baselines)
    arms = mixtures + (cfg.adaptive is not None)
    seeds = confirm_seeds(cfg, n_params, arms) if n_params else (cfg.confirm_seeds or 1)
    return mixtures + arms * seeds


def save(path: Path, cfg: StudyConfig, runs: Sequence[PlannedRun], extra: Mapping[str, Any] | None = None) -> None:
    write_json_atomic(path, {"study": cfg.name, "config": cfg.source, "runs": [r.to_dict() for r in runs], **(extra or {})})


def load_runs(path: Path) -> list[PlannedRun]:
    """The planned runs of a ``plan.json`` (a study's or a transfer design's), with named errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: the directory holds no planned runs (write it with `mlsl transfer design` "
                          "or `mlsl study`), or pass the directory that does")
    try:
        doc = json.loads(path.read_text())
        return [PlannedRun(**r) for r in doc["runs"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a plan written by nemo-mlsl ({type(err).__name__}: {err}); rewrite it") from None


def check_same(old: Sequence[PlannedRun], new: Sequence[PlannedRun]) -> None:
    if [r.to_dict() for r in old] != [r.to_dict() for r in new]:
        raise ConfigError("the study config changed since plan.json was written: --resume needs the same config; "
                          "use a new --out for a different study")
