"""Fitting a law to run records: Huber loss on log residuals, multi-start L-BFGS-B, bootstrap, hold-outs.

The whole start grid is scored in one vectorized ``log_predict`` call; L-BFGS-B (with the law's
Jacobian) refines the best few starts. Bootstrap replicates resample runs and warm-start from the
full-data optimum. Everything is seeded: the same records give the same fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.laws.base import Law, not_a_family_message
from nemo_mlsl.fitting.observations import FamilyData, Observations
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
        """log L for the runs in ``data`` (any runs: the layout is the fitted one)."""
        return self.law.log_predict(self.theta if theta is None else theta, data)

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


def _objective(law: Law, data: FamilyData, delta: float):
    y = np.log(data.loss)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        r = y - law.log_predict(theta, data)
        jac = law.jacobian(theta, data)
        # Elementwise product and sum, not a BLAS matrix product (see ``fit`` on BLAS threads and reproducibility).
        return float(huber(r, delta).sum()), -(huber_grad(r, delta)[:, None] * jac).sum(axis=0)

    return fun


def fit_target(law: Law, data: FamilyData, *, delta: float = HUBER_DELTA, top_k: int = 4,
               start: np.ndarray | None = None, check: bool = True) -> TargetFit:
    """Fit one target. Without ``start``: score the full grid, refine the ``top_k`` best starts.
    An unbound law is bound to ``data``'s layout first; a bound one keeps its layout (bootstrap replicates)."""
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
    fun = _objective(law, data, delta)
    best: tuple[float, np.ndarray] | None = None
    for x0 in starts:
        with np.errstate(all="ignore"):
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10})
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
        delta: float = HUBER_DELTA, drop_zero_shares: bool = False) -> LawFit:
    """Fit ``spec`` to every target; ``bootstrap`` > 0 adds replicates (runs resampled with replacement).

    BLAS runs single-threaded meanwhile: L-BFGS-B's small matrix products split over threads sum in an
    order that changes from call to call, and the optimizer amplifies those last-bit differences
    (measured: replicate parameters differing at 1e-9 between two identical fits in one process).

    ``drop_zero_shares``: for a law that cannot represent a family with no share of its own (He et al.'s
    p^-γ), fit each family on the runs that train on it, and say how many were left out."""
    check_non_negative(bootstrap, "bootstrap (--bootstrap)", "a number of replicates; 0: none")
    check_non_negative(seed, "seed (--seed)")
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(spec, obs, bootstrap=bootstrap, seed=seed, targets=targets, delta=delta, drop_zero_shares=drop_zero_shares)


def target_data(law: Law, obs: Observations, target: str, drop_zero_shares: bool = False) -> FamilyData:
    """The runs ``law`` fits ``target`` on; without the zero-share ones if asked and the law cannot take them."""
    data = law.data_for(obs, target)
    if drop_zero_shares and not law.zero_shares:
        data = data.take(data.p > 0)
    return data


def _fit(spec: str, obs: Observations, *, bootstrap: int, seed: int, targets: Sequence[str] | None, delta: float,
         drop_zero_shares: bool = False) -> LawFit:
    law = make_law(spec)
    fits: dict[str, TargetFit] = {}
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    boot_idx = [rng.integers(0, len(obs), size=len(obs)) for _ in range(bootstrap)]
    todo = list(targets or law.targets(obs))
    if law.own_share:
        strangers = [t for t in todo if t not in obs.families and t != "total"]
        if strangers:
            raise FitError(not_a_family_message(law.name, strangers))
    for target in todo:
        data = target_data(law, obs, target, drop_zero_shares)
        dropped = len(law.data_for(obs, target).loss) - len(data.loss)
        if dropped:
            notes.append(f"{dropped} run(s) with a share of 0 for {target!r} were left out of its fit "
                         f"(law {law.name!r} cannot represent a family it was not trained on)")
        tf = fit_target(law, data, delta=delta)
        if bootstrap:
            # Rows stay aligned with the shared resamples (NaN where a replicate cannot be fitted), so
            # quantities that combine families (optimal ratios) can be computed replicate by replicate.
            tf.boot = np.full((bootstrap, len(tf.theta)), np.nan)
            for b, idx in enumerate(boot_idx):
                try:
                    sub = target_data(law, obs.subset(np.sort(idx)), target, drop_zero_shares)
                    if tf.law.unidentifiable(sub):
                        continue  # the resample lost variation this law needs (its own requirements decide which)
                    tf.boot[b] = fit_target(tf.law, sub, delta=delta, start=tf.theta, check=False).theta
                except FitError:
                    continue  # the row stays NaN: intervals use the replicates that could be fitted
        fits[target] = tf
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
                     drop_zero_shares: bool = False) -> LawFit:
    """Fit on the training part of the split; report in-sample and out-of-sample metrics."""
    train, test = holdout_split(obs, kind, seed)
    lf = fit(spec, obs.subset(train), bootstrap=bootstrap, seed=seed, drop_zero_shares=drop_zero_shares)
    lf.metrics["holdout"] = {"kind": kind, "train_runs": len(train), "test_runs": len(test),
                             **evaluate(lf, obs.subset(test), drop_zero_shares)}
    return lf
