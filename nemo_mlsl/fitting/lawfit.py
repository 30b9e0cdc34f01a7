"""Fitting a law to run records: Huber loss on log residuals, multi-start L-BFGS-B, bootstrap, hold-outs.

The whole start grid is scored in one vectorized ``log_predict`` call; L-BFGS-B (with the law's
Jacobian, through the law's ``evaluator``) refines the best few starts. Bootstrap replicates resample runs and
warm-start from the full-data optimum. Targets and replicates can be spread over worker processes (``jobs``).
Everything is seeded and fitted on contiguous copies with BLAS single-threaded: the same records give the same
fit bit for bit, for any number of jobs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.laws.base import Law, not_a_family_message
from nemo_mlsl.fitting.lbfgsb import lbfgsb
from nemo_mlsl.fitting.observations import FamilyData, Observations
from nemo_mlsl.fitting.parallel import Failed, check_jobs, raise_failed, run_tasks
from nemo_mlsl.fitting.progress import FitProgress
from nemo_mlsl.registry import LAWS
from nemo_mlsl.typed_config import check_non_negative

HUBER_DELTA = 1e-3
HOLDOUTS = ("largest-N", "largest-D", "mixtures")


def make_law(spec: str) -> Law:
    """``name`` or ``name:arg`` → a law instance from the ``nemo_mlsl.laws`` registry."""
    name, _, arg = spec.partition(":")
    cls = LAWS.get(name.strip())
    return cls(arg.strip() or None)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    return np.clip(r, -delta, delta)


@dataclass
class TargetFit:
    """One family's (or target's) fitted parameters, with the law bound to the layout fixed at fit time."""

    target: str
    law: Law
    names: list[str]
    theta: np.ndarray
    objective: float
    n_runs: int
    boot: np.ndarray | None = None

    @property
    def params(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.theta)}

    @property
    def layout(self) -> dict[str, Any]:
        return dict(self.law.fixed or {})

    @property
    def replicates_fitted(self) -> int:
        return 0 if self.boot is None else int((~np.isnan(self.boot).any(axis=1)).sum())

    def log_predict(self, data: FamilyData, theta: np.ndarray | None = None) -> np.ndarray:
        """log L for the runs in ``data`` (any runs: the layout is the fitted one), computed on contiguous copies of
        its arrays (as the fit: see ``contiguous``)."""
        return self.law.log_predict(self.theta if theta is None else theta, contiguous(data))

    def ci(self, level: float = 0.95) -> dict[str, list[float]]:
        if self.boot is None or len(self.boot) == 0:
            return {}
        lo, hi = 50 * (1 - level), 50 * (1 + level)
        ok = ~np.isnan(self.boot).any(axis=1)
        if not ok.any():
            return {}
        return {n: [float(np.percentile(self.boot[ok, i], lo)), float(np.percentile(self.boot[ok, i], hi))]
                for i, n in enumerate(self.names)}

    def to_dict(self) -> dict[str, Any]:
        # Replicates are keyed by parameter name: fit.json is written with sorted keys, which reorders
        # ``params``, so nothing may pair values with names by position.
        reps = [] if self.boot is None else [None if np.isnan(r).any() else dict(zip(self.names, map(float, r))) for r in self.boot]
        return {"params": self.params, "names": list(self.names), "layout": self.layout, "ci": self.ci(),
                "n_runs": self.n_runs, "objective": self.objective, "replicates_fitted": self.replicates_fitted,
                "replicates": reps}

    @classmethod
    def from_dict(cls, law: Law, target: str, entry: Mapping[str, Any]) -> "TargetFit":
        names = list(entry.get("names") or [])
        if not names or any(isinstance(r, list) for r in entry.get("replicates") or []):
            raise ConfigError(f"fit.json entry {target!r} was written by an older nemo-mlsl (no parameter names); refit with `mlsl fit`")
        theta = np.array([float(entry["params"][n]) for n in names])
        reps = entry.get("replicates") or []
        boot = np.array([[np.nan] * len(names) if r is None else [float(r[n]) for n in names] for r in reps]) if reps else None
        return cls(target, law.bind(entry.get("layout") or {}), names, theta, float(entry.get("objective", np.nan)),
                   int(entry.get("n_runs", 0)), boot)


def _objective(law: Law, data: FamilyData, delta: float, reference: bool = False):
    """The Huber objective and its gradient; ``reference``: through ``log_predict`` and ``jacobian`` as before the
    laws had evaluators (the same values bit for bit, computed with none of the work shared)."""
    y = np.log(data.loss)
    evaluate = law.evaluator(data) if not reference else lambda theta: (law.log_predict(theta, data), law.jacobian(theta, data))

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        lp, jac = evaluate(theta)
        r = y - lp
        # Elementwise product and sum, not a BLAS matrix product (see ``fit`` on BLAS threads and reproducibility).
        return float(huber(r, delta).sum()), -(huber_grad(r, delta)[:, None] * jac).sum(axis=0)

    return fun


def contiguous(data: FamilyData) -> FamilyData:
    """The same runs with each array a contiguous copy of its own. A family's losses and shares are often columns of
    the run table (strided views); fits on such views were measured to differ in their last bits from one run of the
    same fit to the next (with the optimizer amplifying that, up to 3e-4 in a held-out MAPE), fits on copies never."""
    return dataclasses.replace(data, **{k: np.array(v, order="C") for k, v in vars(data).items()
                                        if isinstance(v, np.ndarray)})


#: L-BFGS-B's stopping rule, for the fit to all the runs, a fold's fit and each bootstrap replicate: run until the
#: objective stops moving in its last digits. The parameters, objective, held-out table and intervals depend on it.
#: A looser rule for replicates, which start at the full fit's optimum, stops them nearer that start: measured on
#: 1,000 runs, ftol 1e-10 shrank shukor_additive's replicate spread to 0.65-0.96 of this rule's for no time saved,
#: so replicates keep it (and 500 iterations already stop that law's replicates short: 2,000 widen it up to 1.7x).
FIT_OPTIONS = {"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10}


def fit_target(law: Law, data: FamilyData, *, delta: float = HUBER_DELTA, top_k: int = 4,
               start: np.ndarray | None = None, check: bool = True, options: Mapping[str, float] | None = None,
               reference: bool = False) -> TargetFit:
    """Fit one target. Without ``start``: score the full grid, refine the ``top_k`` best starts.
    An unbound law is bound to ``data``'s layout first; a bound one keeps its layout (bootstrap replicates).
    ``options``: L-BFGS-B's (default ``FIT_OPTIONS``); ``reference``: the objective evaluated as before the laws had
    evaluators and L-BFGS-B run through ``scipy.optimize.minimize`` (the same result, more slowly: the benchmarks'
    baseline)."""
    data = contiguous(data)
    law = law.bound_to(data) if law.fixed is None else law
    if check:
        law.check(data)
    params = law.params(data)
    bounds = [(p.lower, p.upper) for p in params]
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    if start is None:
        grid = np.clip(law.start_grid(data), lo, hi)
        with np.errstate(all="ignore"):
            scores = huber(np.log(data.loss) - law.log_predict(grid, data), delta).sum(axis=-1)
        scores = np.where(np.isfinite(scores), scores, np.inf)
        starts = grid[np.argsort(scores, kind="stable")[:top_k]]
    else:
        starts = np.clip(np.atleast_2d(start), lo, hi)
    fun = _objective(law, data, delta, reference)
    options = dict(FIT_OPTIONS if options is None else options)
    best: tuple[float, np.ndarray] | None = None
    for x0 in starts:
        with np.errstate(all="ignore"):
            res = lbfgsb(fun, x0, bounds, maxiter=int(options["maxiter"]), ftol=float(options["ftol"]),
                         gtol=float(options["gtol"]), reference=reference)
        if np.isfinite(res.fun) and (best is None or res.fun < best[0]):
            best = (float(res.fun), res.x)
    if best is None:
        raise FitError(f"law {law.name!r}: no start converged for {data.family!r}")
    return TargetFit(data.family, law, [p.name for p in params], best[1], best[0], len(data.loss))


MIN_REPLICATE_SHARE = 0.9  # below this share of fitted bootstrap replicates, the fit carries a warning


@dataclass
class LawFit:
    """A law fitted to every target of a set of runs, with bootstrap replicates.

    ``obs`` is None for a fit loaded from ``fit.json``: it still predicts, from the stored layout."""

    law: Law
    spec: str
    obs: Observations | None
    fits: dict[str, TargetFit]
    bootstrap: int = 0
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: The families the mixture is over (the runs' share columns) and the unique tokens of those whose runs recorded
    #: them (``family_tokens``: the repetition term of ATLAS): with the parameters, all a saved fit needs to predict.
    mixture: tuple[str, ...] = ()
    unique_tokens: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.obs is not None and not self.mixture:
            self.mixture = tuple(self.obs.families)
            self.unique_tokens = {f: float(u) for f, u in zip(self.obs.families, self.obs.U) if math.isfinite(u)}

    def U(self, families: Sequence[str]) -> np.ndarray:
        """Unique tokens of ``families`` as the fit knows them (inf: unknown, no repetition)."""
        return np.array([self.unique_tokens.get(f, np.inf) for f in families])

    def predict(self, obs: Observations, target: str) -> np.ndarray:
        data = self.law.data_for(obs, target)
        return np.exp(self.fits[target].log_predict(data))

    @property
    def warnings(self) -> list[str]:
        out = list(self.obs.warnings) if self.obs is not None else []
        out += self.notes
        for t, f in self.fits.items():
            if self.bootstrap and f.replicates_fitted < MIN_REPLICATE_SHARE * self.bootstrap:
                out.append(f"only {f.replicates_fitted} of {self.bootstrap} bootstrap replicates could be fitted for {t!r} "
                           f"(the others lost the variation the law needs, e.g. a whole (N, D) setting or every distinct "
                           f"ratio): its intervals rest on fewer resamples than asked for; add runs")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.spec, "formula": self.law.formula, "bootstrap": self.bootstrap, "seed": self.seed,
            "n_runs": len(self.obs) if self.obs is not None else max((f.n_runs for f in self.fits.values()), default=0),
            "families": {t: f.to_dict() for t, f in self.fits.items()},
            "mixture": list(self.mixture), "unique_tokens": dict(sorted(self.unique_tokens.items())),
            "metrics": self.metrics, "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "LawFit":
        """A fit read back from ``fit.json`` (predicts with the stored layout; no runs attached). A document whose
        parameters do not belong to its law (hand-edited, or another law's) is a named error, not a traceback later."""
        try:
            law = make_law(str(doc["law"]))
            fits = {t: TargetFit.from_dict(law, t, e) for t, e in doc["families"].items()}
            tokens = {str(f): float(u) for f, u in (doc.get("unique_tokens") or {}).items()}
            out = cls(law, str(doc["law"]), None, fits, int(doc.get("bootstrap", 0)), int(doc.get("seed", 0)),
                      dict(doc.get("metrics") or {}), mixture=tuple(doc.get("mixture") or legacy_mixture(doc)),
                      unique_tokens=tokens)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"fit.json is not a fit written by `mlsl fit` ({type(err).__name__}: {err}); refit") from None
        out.check_parameters()
        return out

    def check_parameters(self) -> None:
        """Each target's parameters are the ones its law (bound to the stored layout) has, and it predicts a finite
        loss at the uniform mixture of the fit's families (at the fitted sizes where the law knows only those)."""
        fams = list(self.mixture)
        for t, tf in self.fits.items():
            try:
                probe = _probe(tf, t, fams, self.U(fams))
                names = [p.name for p in tf.law.params(probe)]
                if names != list(tf.names):
                    raise ValueError(f"the law has parameters {names[:6]}{' ...' if len(names) > 6 else ''}, the file "
                                     f"{list(tf.names)[:6]}{' ...' if len(tf.names) > 6 else ''}")
                with np.errstate(all="ignore"):
                    tf.log_predict(probe)
            except (KeyError, IndexError, TypeError, ValueError, FitError) as err:
                detail = f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, FitError)) else str(err)
                raise ConfigError(f"fit.json: the parameters of {t!r} do not belong to law {self.spec!r} ({detail}); the "
                                  "file was edited or mixes two fits: refit with `mlsl fit`") from None


def _probe(tf: TargetFit, target: str, families: Sequence[str], U: np.ndarray) -> FamilyData:
    """One point to check a loaded target's parameters on: the uniform mixture, at a fitted (N, D) where the layout
    names settings, else at N = 1e8, D = 1e10."""
    settings = (tf.law.fixed or {}).get("settings")
    N, D = (float(settings[0][0]), float(settings[0][1])) if settings else (1e8, 1e10)
    P = np.full((1, len(families)), 1.0 / max(1, len(families)))
    return FamilyData.at(target, families, [N], [D], P, U)


def legacy_mixture(doc: Mapping[str, Any]) -> list[str]:
    """The mixture's families of a fit.json written before they were stored: the fitted targets and every share a
    fit used as a feature (then every target was a family, or a family with share 0)."""
    fams = set(doc["families"])
    for entry in doc["families"].values():
        layout = entry.get("layout") or {}
        fams |= set(layout.get("families") or []) | set(layout.get("transfer") or [])
    return sorted(fams)


def load_fit_doc(path: str | Path) -> dict[str, Any]:
    """Read ``fit.json`` with errors that name the file and the fix (missing, not JSON, not a fit)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--fit {str(path)!r} does not exist; write it with `mlsl fit --runs STORE --out DIR`")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--fit {str(path)!r} is not valid JSON ({err}); rewrite it with `mlsl fit`") from None
    if not isinstance(doc, dict) or "law" not in doc or not isinstance(doc.get("families"), dict):
        raise ConfigError(f"--fit {str(path)!r} is not a fit.json (it needs 'law' and 'families'); write it with `mlsl fit`")
    for fam, entry in doc["families"].items():
        params = entry.get("params") if isinstance(entry, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"--fit {str(path)!r}: family {fam!r} has no 'params' mapping; rewrite it with `mlsl fit`")
        bad = {k: v for k, v in params.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)}
        if bad:
            raise ConfigError(f"--fit {str(path)!r}: family {fam!r} has parameters that are not finite numbers {bad}; "
                              "rewrite it with `mlsl fit`")
    return doc


def fit(spec: str, obs: Observations, *, bootstrap: int = 0, seed: int = 0, targets: Sequence[str] | None = None,
        delta: float = HUBER_DELTA, drop_zero_shares: bool = False, jobs: int | None = 1, reference: bool = False,
        progress: FitProgress | None = None) -> LawFit:
    """Fit ``spec`` to every target; ``bootstrap`` > 0 adds replicates (runs resampled with replacement).

    BLAS runs single-threaded meanwhile: L-BFGS-B's small matrix products split over threads sum in an
    order that changes from call to call, and the optimizer amplifies those last-bit differences
    (measured: replicate parameters differing at 1e-9 between two identical fits in one process).

    ``drop_zero_shares``: for a law that cannot represent a family with no share of its own (He et al.'s
    p^-γ), fit each family on the runs that train on it, and say how many were left out.

    ``jobs``: worker processes for the targets' fits and the replicates (1: in this process); the result is the
    same bit for bit for any number. ``reference``: the fitter as it was before the speed-ups (every objective
    through ``log_predict`` and ``jacobian``, in this process): the benchmarks' baseline, with the same result. ``progress``: a line (or a bar's step) per fitted target and per target's replicates."""
    check_non_negative(bootstrap, "bootstrap (--bootstrap)", "a number of replicates; 0: none")
    check_non_negative(seed, "seed (--seed)")
    jobs = 1 if reference else check_jobs(jobs, "jobs (--jobs)")
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(spec, obs, bootstrap=bootstrap, seed=seed, targets=targets, delta=delta, drop_zero_shares=drop_zero_shares,
                    jobs=jobs, reference=reference, progress=progress or FitProgress(show=False))


def target_data(law: Law, obs: Observations, target: str, drop_zero_shares: bool = False) -> FamilyData:
    """The runs ``law`` fits ``target`` on; without the zero-share ones if asked and the law cannot take them."""
    data = law.data_for(obs, target)
    if drop_zero_shares and not law.zero_shares:
        data = data.take(data.p > 0)
    return data


@dataclass(frozen=True)
class _TargetTask:
    """One target's fit to all the runs (a worker's task)."""

    law: Law
    obs: Observations
    target: str
    delta: float
    drop_zero_shares: bool
    reference: bool


def _fit_full(task: _TargetTask) -> tuple[TargetFit, float]:
    t0 = time.perf_counter()
    data = target_data(task.law, task.obs, task.target, task.drop_zero_shares)
    return fit_target(task.law, data, delta=task.delta, reference=task.reference), time.perf_counter() - t0


@dataclass(frozen=True)
class _ReplicateTask:
    """Some bootstrap replicates of one target, each warm-started from the full fit (a worker's task)."""

    law: Law       # unbound: selects the target's runs, as for the full fit
    fitted: Law    # bound to the full fit's layout
    start: np.ndarray
    obs: Observations
    target: str
    resamples: tuple[np.ndarray, ...]
    delta: float
    drop_zero_shares: bool
    reference: bool


def _fit_replicates(task: _ReplicateTask) -> np.ndarray:
    """One row per resample: the replicate's parameters, or NaN where it cannot be fitted."""
    out = np.full((len(task.resamples), len(task.start)), np.nan)
    for b, idx in enumerate(task.resamples):
        try:
            sub = target_data(task.law, task.obs.subset(np.sort(idx)), task.target, task.drop_zero_shares)
            if task.fitted.unidentifiable(sub):
                continue  # the resample lost variation this law needs (its own requirements decide which)
            out[b] = fit_target(task.fitted, sub, delta=task.delta, start=task.start, check=False,
                                reference=task.reference).theta
        except FitError:
            continue  # the row stays NaN: intervals use the replicates that could be fitted
    return out


def replicate_chunks(bootstrap: int, targets: int, jobs: int) -> list[range]:
    """Replicate indices split into chunks: one chunk per target in this process, else about 4 tasks per worker
    over all targets (small enough to keep both cores busy to the end, large enough to pay for the transfer)."""
    if jobs <= 1 or bootstrap == 0:
        return [range(bootstrap)]
    per_target = max(1, math.ceil(4 * jobs / targets))
    size = max(1, math.ceil(bootstrap / per_target))
    return [range(i, min(i + size, bootstrap)) for i in range(0, bootstrap, size)]


def _fit(spec: str, obs: Observations, *, bootstrap: int, seed: int, targets: Sequence[str] | None, delta: float,
         drop_zero_shares: bool, jobs: int, reference: bool, progress: FitProgress) -> LawFit:
    law = make_law(spec)
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    boot_idx = [rng.integers(0, len(obs), size=len(obs)) for _ in range(bootstrap)]
    targets = list(targets or law.targets(obs))
    if law.own_share:
        strangers = [t for t in targets if t not in obs.families and t != "total"]
        if strangers:
            raise FitError(not_a_family_message(law.name, strangers))
    for target in targets:
        data = target_data(law, obs, target, drop_zero_shares)
        dropped = len(law.data_for(obs, target).loss) - len(data.loss)
        if dropped:
            notes.append(f"{dropped} run(s) with a share of 0 for {target!r} were left out of its fit "
                         f"(law {law.name!r} cannot represent a family it was not trained on)")
    progress.start(len(targets) * (1 + bootstrap), f"fit {spec}")
    full = run_tasks(_fit_full, [_TargetTask(law, obs, t, delta, drop_zero_shares, reference) for t in targets], jobs,
                     lambda i, r: progress.step(None if isinstance(r, Failed) else f"{spec} {targets[i]}: fitted in {r[1]:.1f} s"))
    fits: dict[str, TargetFit] = {t: raise_failed(r)[0] for t, r in zip(targets, full)}  # the first target's error first
    if bootstrap:
        chunks = replicate_chunks(bootstrap, len(targets), jobs)
        tasks = [(t, chunk) for t in targets for chunk in chunks]
        left = {t: bootstrap for t in targets}
        t0 = time.perf_counter()

        def done(i: int, rows: Any) -> None:
            t, chunk = tasks[i]
            left[t] -= len(chunk)
            progress.step(f"{spec} {t}: {bootstrap} bootstrap replicates fitted ({time.perf_counter() - t0:.1f} s after the full fits)"
                          if not left[t] else None, n=len(chunk))

        rows = run_tasks(_fit_replicates, [
            _ReplicateTask(law, fits[t].law, fits[t].theta, obs, t, tuple(boot_idx[b] for b in chunk), delta, drop_zero_shares,
                           reference) for t, chunk in tasks], jobs, done)
        # Rows stay aligned with the shared resamples (NaN where a replicate cannot be fitted), so
        # quantities that combine families (optimal ratios) can be computed replicate by replicate.
        for t in targets:
            fits[t].boot = np.concatenate([raise_failed(r) for (tt, _), r in zip(tasks, rows) if tt == t])
    progress.close()
    out = LawFit(law, spec, obs, fits, bootstrap, seed, notes=notes)
    out.metrics = {"in_sample": evaluate(out, obs, drop_zero_shares)}
    return out


def regression_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """R² on loss, RMSE of log loss and MAPE (%)."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    ss_res = float(np.sum((observed - predicted) ** 2))
    ss_tot = float(np.sum((observed - observed.mean()) ** 2))
    return {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "rmse_log": float(np.sqrt(np.mean((np.log(observed) - np.log(predicted)) ** 2))),
        "mape": float(100 * np.mean(np.abs(predicted - observed) / observed)),
        "n": int(len(observed)),
    }


def evaluate(lf: LawFit, obs: Observations, drop_zero_shares: bool = False) -> dict[str, Any]:
    per: dict[str, Any] = {}
    all_o, all_p = [], []
    for target in lf.fits:
        try:
            data = target_data(lf.law, obs, target, drop_zero_shares)
        except FitError:
            continue  # no run here has a loss on this target (a hold-out of other families' runs)
        if not len(data.loss):
            continue
        pred = np.exp(lf.fits[target].log_predict(data))
        per[target] = regression_metrics(data.loss, pred)
        all_o.append(data.loss)
        all_p.append(pred)
    if not all_o:
        raise FitError("none of the runs to evaluate has a loss on a fitted family")
    return {"families": per, "overall": regression_metrics(np.concatenate(all_o), np.concatenate(all_p))}


def holdout_split(obs: Observations, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/test run indices: the largest N, the largest D, or ~25% of the distinct mixtures."""
    if kind == "largest-N":
        test = obs.N == obs.N.max()
    elif kind == "largest-D":
        test = obs.D == obs.D.max()
    elif kind == "mixtures":
        keys = [tuple(np.round(row, 6)) for row in obs.P]
        uniq = sorted(set(keys))
        if len(uniq) < 4:
            raise FitError(f"holdout 'mixtures' needs at least 4 distinct mixtures; the runs have {len(uniq)}")
        perm = np.random.default_rng(seed).permutation(len(uniq))
        held = {uniq[i] for i in perm[: max(1, len(uniq) // 4)]}
        test = np.array([k in held for k in keys])
    else:
        raise ConfigError(f"unknown holdout {kind!r}; choose one of {', '.join(HOLDOUTS)}")
    if test.all() or not test.any():
        raise FitError(f"holdout {kind!r} leaves no training or no test runs: the runs need at least two values to split on")
    return np.flatnonzero(~test), np.flatnonzero(test)


def fit_with_holdout(spec: str, obs: Observations, kind: str, *, bootstrap: int = 0, seed: int = 0,
                     drop_zero_shares: bool = False, jobs: int | None = 1, progress: FitProgress | None = None) -> LawFit:
    """Fit on the training part of the split; report in-sample and out-of-sample metrics."""
    train, test = holdout_split(obs, kind, seed)
    lf = fit(spec, obs.subset(train), bootstrap=bootstrap, seed=seed, drop_zero_shares=drop_zero_shares, jobs=jobs,
             progress=progress)
    lf.metrics["holdout"] = {"kind": kind, "train_runs": len(train), "test_runs": len(test),
                             **evaluate(lf, obs.subset(test), drop_zero_shares)}
    return lf
