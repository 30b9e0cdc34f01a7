"""Law selection: every applicable law cross-validated on held-out mixtures and on extrapolation in N and D.

Splits: ``mixtures`` (K seeded folds over the distinct mixtures: the replicate seeds of a mixture, and the
same mixture at other N and D, are always held out together), ``largest-N`` and ``largest-D`` (train below the largest value, test at it; only
where the runs have more than one value). A law that cannot take the runs (zero shares under p^-γ, too few
distinct values, a target other than the families' losses) is skipped with its reason.

Criterion, in order: (1) the fewest splits whose held-out runs the law, once fitted, cannot predict (one L*
per fitted (N, D) setting cannot predict a new N); a split whose training runs cannot identify the law (two
values of D leave one to extrapolate from) is not counted against it; (2) the lowest mean held-out MAPE over
the splits every law still in the running could be scored on (each split's MAPE pooled over its folds,
families and runs; over each law's own splits if they share none); (3) the fewest parameters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError, MLSLError
from nemo_mlsl.fitting.lawfit import LawFit, fit, make_law, regression_metrics
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.laws.base import not_a_family_message
from nemo_mlsl.fitting.parallel import Failed, check_jobs, raise_failed, run_tasks
from nemo_mlsl.fitting.progress import FitProgress
from nemo_mlsl.registry import LAWS

DEFAULT_FOLDS = 5
AUTO = "auto"  # the law name that asks for selection (`mlsl fit --law auto`, a study's `law: auto`)


def mixture_groups(obs: Observations) -> np.ndarray:
    """A group id per run: runs with the same mixture (shares rounded to 1e-6) share one."""
    keys = [tuple(np.round(row, 6)) for row in obs.P]
    index = {k: i for i, k in enumerate(sorted(set(keys)))}
    return np.array([index[k] for k in keys], dtype=int)


def mixture_folds(obs: Observations, k: int = DEFAULT_FOLDS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, test) index pairs over whole mixtures, seeded; K is capped at the number of mixtures."""
    groups = mixture_groups(obs)
    n = int(groups.max()) + 1 if len(groups) else 0
    if n < 2:
        raise FitError(f"held-out mixtures need at least 2 distinct mixtures; the runs have {n}")
    k = max(2, min(int(k), n))
    fold_of = np.empty(n, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    run_fold = fold_of[groups]
    return [(np.flatnonzero(run_fold != f), np.flatnonzero(run_fold == f)) for f in range(k)]


def splits_for(obs: Observations, k: int = DEFAULT_FOLDS, seed: int = 0) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Every split the runs allow: mixture folds, and extrapolation to the largest N and D where they vary."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    if len(np.unique(mixture_groups(obs))) >= 2:
        out["mixtures"] = mixture_folds(obs, k, seed)
    for name, values in (("largest-N", obs.N), ("largest-D", obs.D)):
        if len(np.unique(values)) > 1:
            test = values == values.max()
            out[name] = [(np.flatnonzero(~test), np.flatnonzero(test))]
    if not out:
        raise FitError("the runs allow no held-out split: they need at least 2 distinct mixtures, N or D")
    return out


def why_not(spec: str, obs: Observations) -> str | None:
    """Why law ``spec`` cannot take these runs (compared on every evaluated target's loss), or None."""
    try:
        law = make_law(spec)
        targets = law.targets(obs)
        if sorted(targets) != sorted(obs.targets):
            return f"it fits {targets}, not each evaluated target's loss"
        strangers = [t for t in targets if t not in obs.families]
        if law.own_share and strangers:
            return not_a_family_message(law.name, strangers)
        for t in targets:
            data = law.data_for(obs, t)
            have = int(np.isfinite(obs.L[:, obs.target_index(t)]).sum())
            if len(data.loss) < have:
                return f"it fits only {len(data.loss)} of the {have} runs with a loss for {t!r}"
            law.bound_to(data).check(data)
    except MLSLError as err:
        return str(err)
    return None


@dataclass
class LawScore:
    """One law's cross-validation: per split the pooled held-out metrics, or why it could not be scored."""

    spec: str
    skipped: str | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    fit_s: float = float("nan")
    n_params: int = 0

    @property
    def scored(self) -> dict[str, dict[str, Any]]:
        return {s: m for s, m in self.splits.items() if "error" not in m}

    @property
    def mean_mape(self) -> float:
        return self.mape_over(self.scored)

    def mape_over(self, splits) -> float:
        vals = [self.splits[s]["mape"] for s in splits if s in self.scored]
        return float(np.mean(vals)) if vals else float("inf")

    @property
    def unpredicted(self) -> int:
        """Splits fitted but not predicted (not those whose training runs cannot identify the law)."""
        return sum(1 for m in self.splits.values() if m.get("stage") == "predict")

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.spec, "skipped": self.skipped, "splits": self.splits,
                "mean_heldout_mape": None if math.isinf(self.mean_mape) else self.mean_mape,
                "fit_s": None if math.isnan(self.fit_s) else self.fit_s, "n_params": self.n_params}


CRITERION = ("fewest splits fitted but not predicted, then lowest mean held-out MAPE (%) over the splits every "
             "remaining law was scored on (each pooled over folds, families and runs), then fewest parameters")


def choose(scores: Sequence[LawScore]) -> tuple[str, list[str]]:
    """The chosen law and the splits its MAPE was compared on (see the module docstring)."""
    ranked = [s for s in scores if not s.skipped and s.scored]
    least = min(s.unpredicted for s in ranked)
    ranked = [s for s in ranked if s.unpredicted == least]
    common = [x for x in ranked[0].scored if all(x in s.scored for s in ranked)]
    best = min(ranked, key=lambda s: (s.mape_over(common or list(s.scored)), s.n_params))
    return best.spec, common


@dataclass
class Selection:
    scores: list[LawScore]
    chosen: str
    split_names: list[str]
    compared_on: list[str]
    folds: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "criterion": CRITERION, "splits": self.split_names, "compared_on": self.compared_on,
                "folds": self.folds, "seed": self.seed, "laws": [s.to_dict() for s in self.scores]}


@dataclass(frozen=True)
class FoldTask:
    """One law fitted on one fold's training runs and scored on its test runs (a worker's task)."""

    spec: str
    obs: Observations
    train: np.ndarray
    test: np.ndarray
    seed: int
    reference: bool = False


@dataclass
class FoldResult:
    """What a fold gives its split: (observed, predicted) per target, the law's parameter count and the seconds it
    took (fit and prediction); or the stage ("fit", "predict") at which it failed, and why."""

    predicted: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    n_params: int = 0
    seconds: float = 0.0
    stage: str | None = None
    error: str = ""


def score_fold(task: FoldTask) -> FoldResult:
    t0 = time.perf_counter()
    try:
        lf = fit(task.spec, task.obs.subset(task.train), seed=task.seed, reference=task.reference)
    except MLSLError as err:
        return FoldResult(seconds=time.perf_counter() - t0, stage="fit", error=str(err))
    n_params = sum(len(f.names) for f in lf.fits.values())
    try:
        predicted = heldout_predictions(lf, task.obs.subset(task.test))
    except MLSLError as err:
        return FoldResult(n_params=n_params, seconds=time.perf_counter() - t0, stage="predict", error=str(err))
    return FoldResult(predicted, n_params, time.perf_counter() - t0)


def split_metrics(folds: Sequence[FoldResult]) -> dict[str, Any]:
    """Metrics pooled over a split's folds (overall and per family); the first failed fold, in fold order, fails the
    split with its stage and message."""
    for f in folds:
        if f.stage:
            raise SplitError(f.error, f.stage)
    obs_all: dict[str, list[np.ndarray]] = {}
    pred_all: dict[str, list[np.ndarray]] = {}
    for f in folds:
        for target, (o, p) in f.predicted.items():
            obs_all.setdefault(target, []).append(o)
            pred_all.setdefault(target, []).append(p)
    per = {t: regression_metrics(np.concatenate(obs_all[t]), np.concatenate(pred_all[t])) for t in obs_all}
    overall = regression_metrics(np.concatenate([np.concatenate(v) for v in obs_all.values()]),
                                 np.concatenate([np.concatenate(v) for v in pred_all.values()]))
    return {**overall, "families": per}


class SplitError(FitError):
    """A split a law could not be scored on; ``stage`` is "fit" (its training runs) or "predict" (its test runs)."""

    def __init__(self, message: str, stage: str):
        super().__init__(message)
        self.stage = stage


def heldout_predictions(lf: LawFit, test: Observations) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(observed, predicted) losses of every target on ``test``, runs with an observed loss only."""
    out = {}
    for target, tf in lf.fits.items():
        if target in test.targets and not np.isfinite(test.L[:, test.target_index(target)]).any():
            continue  # no held-out run was evaluated on this target
        data = lf.law.data_for(test, target)
        with np.errstate(all="ignore"):
            pred = np.exp(tf.log_predict(data))
        keep = np.isfinite(data.loss)
        if not np.all(np.isfinite(pred[keep])):
            raise FitError(f"law {lf.spec!r} predicts a non-finite loss for {target!r} on held-out runs")
        out[target] = (data.loss[keep], pred[keep])
    return out


def default_laws() -> list[str]:
    """Every registered law, with its default argument."""
    return LAWS.names()


def select_law(obs: Observations, laws: Sequence[str] | None = None, *, folds: int = DEFAULT_FOLDS, seed: int = 0,
               log: Any = None, jobs: int | None = 1, progress: FitProgress | None = None, reference: bool = False) -> Selection:
    """Cross-validate ``laws`` (default: every registered law) and choose one (see the module docstring).

    Every (law, split, fold) fit is one task: ``jobs`` worker processes share them (1: this process), with the same
    table bit for bit for any number. ``progress``: a line (or a bar's step) per fold and a line per law; ``log``:
    a line per law only. ``reference``: the fitter as before the speed-ups (see ``lawfit.fit``)."""
    specs = list(dict.fromkeys(laws or default_laws()))
    if folds < 2:
        raise ConfigError(f"--folds {folds}: cross-validation needs at least 2 folds")
    jobs = 1 if reference else check_jobs(jobs, "jobs (--jobs)")
    for spec in specs:
        make_law(spec)  # an unknown name is a user error, not a skipped law
    splits = splits_for(obs, folds, seed)
    progress = progress or FitProgress(show=False)
    scores = [LawScore(spec, skipped=why_not(spec, obs)) for spec in specs]
    tasks = [(score.spec, name, f) for score in scores if not score.skipped for name, pairs in splits.items()
             for f in range(len(pairs))]
    left = {score.spec: sum(1 for t in tasks if t[0] == score.spec) for score in scores}
    results: dict[tuple[str, str, int], FoldResult] = {}

    def report(score: LawScore) -> None:
        line = f"  {score.spec}: " + (f"skipped ({score.skipped})" if score.skipped else
                                      f"mean held-out MAPE {score.mean_mape:.3f}% ({score.fit_s:.1f} s)")
        progress.note(line)
        if log:
            log(line)

    def done(i: int, res: FoldResult) -> None:
        spec, name, f = tasks[i]
        results[tasks[i]] = res
        what = f"fold {f + 1}/{len(splits[name])}" if len(splits[name]) > 1 else "fit"
        left[spec] -= 1
        if isinstance(res, Failed):  # a bug in the law: raised once every task is back (see below)
            progress.step(f"{spec} {name} {what}: failed ({res.kind})")
            return
        progress.step(f"{spec} {name} {what}: " + (f"{res.seconds:.1f} s" if not res.stage else f"not {'fitted' if res.stage == 'fit' else 'predicted'}"))
        if not left[spec] and not any(isinstance(results[t], Failed) for t in tasks if t[0] == spec):
            score = next(s for s in scores if s.spec == spec)
            _score(score, splits, results)
            report(score)

    for score in scores:
        if score.skipped:
            report(score)
    progress.start(len(tasks), "law selection")
    fold_tasks = [FoldTask(spec, obs, *splits[name][f], seed, reference) for spec, name, f in tasks]
    for r in run_tasks(score_fold, fold_tasks, jobs, done):
        raise_failed(r)  # a bug in a worker (the laws' own errors are FoldResults)
    progress.close()
    ranked = [s for s in scores if not s.skipped and s.scored]
    if not ranked:
        reasons = "; ".join(f"{s.spec}: {s.skipped or next(iter(s.splits.values()))['error']}" for s in scores)
        raise FitError(f"no law could be cross-validated on these runs ({reasons})")
    chosen, common = choose(ranked)
    return Selection(scores, chosen, list(splits), common, len(splits["mixtures"]) if "mixtures" in splits else 0, seed)


def _score(score: LawScore, splits: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
           results: Mapping[tuple[str, str, int], FoldResult]) -> None:
    """A law's splits from its folds' results; ``fit_s``: the seconds of all its fits and predictions together."""
    n_params = []
    for name, pairs in splits.items():
        folds = [results[(score.spec, name, f)] for f in range(len(pairs))]
        try:
            score.splits[name] = split_metrics(folds)
        except SplitError as err:
            score.splits[name] = {"error": str(err), "stage": err.stage}
        for f in folds:  # the fitted folds up to the split's first failure (as when its folds ran one by one)
            if f.stage == "fit":
                break
            n_params.append(f.n_params)
            if f.stage:
                break
    score.fit_s = float(sum(results[(score.spec, name, f)].seconds for name, pairs in splits.items() for f in range(len(pairs))))
    score.n_params = n_params[0] if n_params else 0


def _cell(m: Mapping[str, Any] | None) -> str:
    if m is None:
        return "–"
    if "error" in m:
        return "cannot predict" if m.get("stage") == "predict" else "not fitted"
    return f"{m['mape']:.3f} / {m['r2']:.3f}"


def selection_markdown(sel: Mapping[str, Any]) -> list[str]:
    """The selection table (from ``Selection.to_dict()``) as markdown lines."""
    splits = sel["splits"]
    head = " | ".join(f"{s} MAPE % / R²" for s in splits)
    lines = [f"## Law selection: `{sel['chosen']}` chosen", "",
             f"Held-out splits: {', '.join(splits)}" + (f" (mixtures: {sel['folds']} folds, seed {sel['seed']}, "
                                                      "replicate seeds of a mixture held out together)" if sel["folds"] else "")
             + f". Criterion: {sel['criterion']}" + (f" (here: {', '.join(sel['compared_on'])})" if sel.get("compared_on") else "")
             + ".", "",
             "`fit s`: the seconds the law took on every split, all its folds' fits and predictions together.", "",
             f"| law | {head} | mean MAPE % | fit s | params |", "|" + "---|" * (len(splits) + 4)]
    notes = []
    for s in sel["laws"]:
        if s["skipped"]:
            notes.append(f"- `{s['law']}` skipped: {s['skipped']}")
            continue
        cells = " | ".join(_cell(s["splits"].get(x)) for x in splits)
        mean = "–" if s["mean_heldout_mape"] is None else f"{s['mean_heldout_mape']:.3f}"
        fit_s = "–" if s["fit_s"] is None else f"{s['fit_s']:.2f}"
        mark = " **(chosen)**" if s["law"] == sel["chosen"] else ""
        lines.append(f"| `{s['law']}`{mark} | {cells} | {mean} | {fit_s} | {s['n_params']} |")
        notes += [f"- `{s['law']}` on {x}: {m['error']}" for x, m in s["splits"].items() if "error" in m]
    return lines + ([""] + notes if notes else []) + [""]
