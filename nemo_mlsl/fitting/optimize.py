"""Optimal family sampling ratios: minimise Σ_i w_i · L_i(N, D, p) / Z_i over the simplex.

Separable laws (He et al.'s, below) have the KKT closed form; any other mixture-aware law (cross-family
terms, ATLAS) goes to ``optimal_general``: SLSQP over the simplex with bounds and data caps, from
deterministic starts, with the law's analytic share gradients (the two agree on separable laws: tested).

With L_i = c_i(N, D) · p_i^(-γ_i) each term is convex in p_i (γ_i > 0), so the KKT conditions
give the optimum: p_i(λ) = clip((w_i c̃_i γ_i / λ)^(1/(1+γ_i)), lo_i, hi_i), with c̃_i = c_i (raw) or
1 (normalized, Z_i = c_i: the family's loss at p_i = 1), and λ found by a 1-D root find so that
Σ p_i = 1. Upper bounds include data caps: p_i · w_il · D ≤ max_epochs · tokens_l for every language l
of the family (w_il its share within the family), see ``mixtures.data_caps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import brentq, minimize

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.typed_config import check_positive


@dataclass(frozen=True)
class RatioProblem:
    """min Σ w_i c_i p_i^(-γ_i)  s.t.  Σ p_i = 1, lower ≤ p ≤ upper.

    ``names`` label the families in errors; ``caps`` are the data caps (max_epochs · tokens_i / D)
    already folded into ``upper``, kept so that errors and reports can say a cap is what binds."""

    coef: np.ndarray
    gamma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    names: tuple[str, ...] = ()
    caps: tuple[float, ...] = ()

    def objective(self, p: np.ndarray) -> float:
        return float(np.sum(self.coef * np.asarray(p, float) ** (-self.gamma)))

    def label(self, i: int) -> str:
        return self.names[i] if self.names else f"#{i}"

    def validate(self) -> None:
        bad = np.flatnonzero((self.lower < 0) | (self.upper > 1) | (self.lower > self.upper))
        if len(bad):
            parts = []
            for i in bad:
                why = ""
                if self.caps and self.caps[i] < self.lower[i]:
                    why = f" (its data cap max_epochs·tokens/D = {self.caps[i]:.4g} is below its minimum ratio)"
                parts.append(f"{self.label(i)}: min {self.lower[i]:.4g}, max {self.upper[i]:.4g}{why}")
            raise ConfigError(f"ratio bounds are inconsistent ({'; '.join(parts)}): need 0 <= min <= max <= 1; lower the "
                              "minimum ratio" + (", raise max_epochs or lower D" if self.caps else ""))
        if self.lower.sum() > 1 + BOUND_TOLERANCE:
            raise ConfigError(f"minimum ratios sum to {self.lower.sum():.4g} > 1 ("
                              + ", ".join(f"{self.label(i)} {v:.4g}" for i, v in enumerate(self.lower) if v > 0) + "); lower them")
        if self.upper.sum() < 1 - BOUND_TOLERANCE:
            capped = [i for i in range(len(self.upper)) if self.caps and self.caps[i] <= self.upper[i] + 1e-15 and self.caps[i] < 1]
            detail = ", ".join(f"{self.label(i)} <= {self.upper[i]:.4g}" for i in range(len(self.upper)))
            if capped:
                raise ConfigError(
                    f"upper bounds sum to {self.upper.sum():.4g} < 1 ({detail}); the data caps p·D <= max_epochs·tokens of "
                    f"{', '.join(self.label(i) for i in capped)} bind: there is not enough data for this token budget; "
                    "raise max_epochs, lower D, or add data"
                )
            raise ConfigError(f"maximum ratios sum to {self.upper.sum():.4g} < 1 ({detail}); raise them")
        if np.any(~(self.coef >= 0)) or not np.any(self.coef > 0):
            raise ConfigError("loss coefficients must be >= 0 and at least one positive (a family of weight 0 takes its "
                              "minimum ratio): " + ", ".join(f"{self.label(i)} {c:.4g}" for i, c in enumerate(self.coef)))

    def binding_caps(self, p: np.ndarray, tol: float = 1e-9) -> list[str]:
        """Families whose data cap is the bound their optimal ratio sits on."""
        if not self.caps:
            return []
        return [self.label(i) for i in range(len(p)) if self.caps[i] < 1 and self.caps[i] <= self.upper[i] + 1e-15
                and p[i] >= self.caps[i] - tol]


BOUND_TOLERANCE = 1e-9  # bounds that sum to 1 within this are the (only) feasible point


def solve_kkt(prob: RatioProblem, tol: float = 1e-14) -> np.ndarray:
    """Exact optimum via the multiplier λ (monotone 1-D root find in log λ)."""
    prob.validate()
    g = prob.gamma
    active = (g > 0) & (prob.coef > 0)  # a family of weight 0 serves no target: it keeps its minimum
    lo, hi = prob.lower, prob.upper
    if lo.sum() >= 1 - BOUND_TOLERANCE:
        return lo / lo.sum()  # the minimum ratios use up the simplex: the only feasible point
    if hi.sum() <= 1 + BOUND_TOLERANCE:
        return hi / hi.sum()  # likewise for the maxima (e.g. data caps that just suffice)

    def p_of(log_lam: float) -> np.ndarray:
        p = lo.copy()  # γ_i <= 0 or weight 0: more data does not help, so the family takes its minimum
        with np.errstate(over="ignore"):
            free = np.exp((np.log(prob.coef[active] * g[active]) - log_lam) / (1.0 + g[active]))
        p[active] = np.clip(free, lo[active], hi[active])
        return p

    if not active.any():
        p = lo.copy()
        p += (1 - p.sum()) * (hi - lo) / max(1e-300, (hi - lo).sum())
        return p
    f = lambda x: p_of(x).sum() - 1.0
    a, b = -50.0, 50.0
    while f(a) < 0 and a > -1e4:
        a *= 2
    while f(b) > 0 and b < 1e4:
        b *= 2
    if f(a) < 0:
        # Even unbounded multipliers cannot reach 1: inactive families fill the gap up to their caps.
        p = p_of(a)
        slack = hi - p
        p += (1 - p.sum()) * slack / slack.sum()
        return p
    if f(b) > 0:
        return p_of(b) / p_of(b).sum()  # the minima alone almost fill the simplex
    x = brentq(f, a, b, xtol=tol, rtol=4 * np.finfo(float).eps, maxiter=500)
    p = p_of(x)
    return p / p.sum()


def solve_general(prob: RatioProblem, x0: np.ndarray | None = None) -> np.ndarray:
    """Reference solution with a general constrained solver (SLSQP); used to check ``solve_kkt``."""
    n = len(prob.coef)
    x0 = np.clip(np.full(n, 1.0 / n) if x0 is None else x0, np.maximum(prob.lower, 1e-9), prob.upper)
    res = minimize(
        prob.objective, x0, method="SLSQP", bounds=list(zip(np.maximum(prob.lower, 1e-12), prob.upper)),
        jac=lambda p: -prob.coef * prob.gamma * p ** (-prob.gamma - 1),
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    return res.x


def bounds_for(
    families: Sequence[str],
    *,
    min_ratio: Mapping[str, float] | float = 0.0,
    max_ratio: Mapping[str, float] | float = 1.0,
    caps: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-family lower/upper bounds; ``caps`` (data caps, see ``mixtures.data_caps``) tighten the upper ones."""
    def per(value, default, what):
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(families))
            if unknown:
                raise ConfigError(f"unknown family {unknown} in {what}; families: {list(families)}")
            return np.array([float(value.get(f, default)) for f in families])
        return np.full(len(families), float(value))

    lower, upper = per(min_ratio, 0.0, "the minimum ratios"), per(max_ratio, 1.0, "the maximum ratios")
    if caps is not None:
        upper = np.minimum(upper, per(caps, np.inf, "the data caps"))
    return lower, upper


SEPARABLE_LAWS = ("joint_family", "family_power")


def _coefficients(law: str, entry: Mapping, N: float | None, D: float | None) -> tuple[float, float]:
    """(c_i(N, D), γ_i) of one family from its fit.json entry."""
    params = entry["params"]
    gamma = float(params["gamma"])
    if law == "joint_family":
        if N is None or D is None:
            raise ConfigError("the joint_family law needs --N and --D to evaluate c_i(N, D) = E + A/N^α + B/D^β")
        c = params["E"] + np.exp(params["a"] - params["alpha"] * np.log(N)) + np.exp(params["b"] - params["beta"] * np.log(D))
        return float(c), gamma
    from nemo_mlsl.laws.family_power import match_setting, setting_name

    fitted = [(float(n), float(d)) for n, d in (entry.get("layout") or {}).get("settings", [])]
    if not fitted:
        raise ConfigError("this family_power fit has no stored settings (written by an older nemo-mlsl); refit with `mlsl fit`")
    if N is None and D is None:
        n, d = fitted[-1]  # the largest setting
    else:
        i = match_setting(fitted, N if N is not None else np.nan, D if D is not None else np.nan)
        if i is None:
            known = ", ".join(f"N={a:.6g} D={b:.6g}" for a, b in fitted)
            raise ConfigError(f"the family_power law knows L* only at the (N, D) settings it was fitted on ({known}); "
                              f"N={N}, D={D} is not one of them: pass one as --N/--D, or fit joint_family to extrapolate")
        n, d = fitted[i]
    return float(np.exp(params[setting_name(n, d)])), gamma


def settings_of(fit_doc: Mapping) -> list[tuple[float, float]]:
    """The (N, D) settings a family_power fit knows (empty for other laws)."""
    entry = next(iter(fit_doc["families"].values()))
    return [(float(n), float(d)) for n, d in (entry.get("layout") or {}).get("settings", [])]


def optimal_from_fit(
    fit_doc: Mapping,
    *,
    N: float | None = None,
    D: float | None = None,
    objective: str = "normalized",
    weights: Mapping[str, float] | None = None,
    min_ratio: Mapping[str, float] | float = 0.0,
    max_ratio: Mapping[str, float] | float = 1.0,
    caps: Mapping[str, float] | None = None,
    targets: str | Sequence[str] | Mapping[str, float] | None = None,
) -> dict:
    """Optimal ratios (and bootstrap intervals) from a ``fit.json`` document; ``caps`` are per-family data caps
    (``mixtures.data_caps``): the result lists them and the ones the optimum sits on. ``targets`` selects and weighs
    the targets the optimum serves (``fitting.target_weights``: names or patterns, a pattern's weight shared by its
    members); the others get weight 0. It replaces ``weights`` (per-target weights by name): give one of the two."""
    check_positive(N, "N (--N)", "the model's non-embedding parameters, e.g. 1e8")
    check_positive(D, "D (--D)", "the run's training tokens, e.g. 2e10")
    groups = None
    if targets is not None:
        from nemo_mlsl.fitting.target_weights import resolve_groups, target_weights

        if weights:
            raise ConfigError("give either --targets (names or patterns with weights) or --weights (per-target weights), "
                              "not both: --targets NAME=WEIGHT covers --weights")
        names = sorted(fit_doc["families"])
        groups = [g.to_dict() for g in resolve_groups(targets, names)]
        weights = target_weights(targets, names)
    law = str(fit_doc["law"]).split(":")[0]
    if law not in SEPARABLE_LAWS:
        out = optimal_general(fit_doc, N=N, D=D, objective=objective, weights=weights, min_ratio=min_ratio,
                              max_ratio=max_ratio, caps=caps)
        return {**out, "targets": groups} if groups is not None else out
    if objective not in ("normalized", "raw"):
        raise ConfigError(f"--objective must be 'normalized' or 'raw', got {objective!r}")
    fams = sorted(fit_doc["families"])
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(fams))
    if unknown:
        raise ConfigError(f"unknown family {unknown} in --weights; the fit has {fams}")
    if caps is not None:
        missing = sorted(set(fams) - set(caps))
        if missing:
            raise ConfigError(f"the data has no tokens for the fitted families {missing}: prepare data with every family")
        caps = {f: float(caps[f]) for f in fams}
    w = np.array([float(weights.get(f, 1.0)) for f in fams])
    lower, upper = bounds_for(fams, min_ratio=min_ratio, max_ratio=max_ratio, caps=caps)
    from nemo_mlsl.registry import LAWS

    if not LAWS.get(law).zero_shares:  # p^-γ has no value at p = 0: never offer a share of 0 (as optimal_general)
        lower = np.maximum(lower, ZERO_FLOOR)
    cap_tuple = tuple(caps[f] for f in fams) if caps else ()

    def problem(entries: list[Mapping]) -> RatioProblem:
        c, g = np.array([_coefficients(law, e, N, D) for e in entries]).T
        coef = w * (c if objective == "raw" else 1.0)
        return RatioProblem(coef, g, lower, upper, tuple(fams), cap_tuple)

    prob = problem([fit_doc["families"][f] for f in fams])
    point = solve_kkt(prob)
    out = {"ratios": {f: float(p) for f, p in zip(fams, point)}, "objective": objective, "law": fit_doc["law"],
           "N": N, "D": D, "weights": {f: float(x) for f, x in zip(fams, w)}}
    if caps:
        out["caps"] = caps
        out["binding_caps"] = prob.binding_caps(point)
    reps = [fit_doc["families"][f].get("replicates") or [] for f in fams]
    if all(reps) and len({len(r) for r in reps}) == 1:
        samples = []
        for b in range(len(reps[0])):
            rows = [reps[i][b] for i in range(len(fams))]
            if any(r is None for r in rows):
                continue
            if any(not isinstance(r, Mapping) for r in rows):
                raise ConfigError("fit.json stores replicates without parameter names (an older nemo-mlsl); refit with `mlsl fit`")
            entries = [{**fit_doc["families"][f], "params": r} for f, r in zip(fams, rows)]
            try:
                samples.append(solve_kkt(problem(entries)))
            except ConfigError:
                continue
        if samples:
            s = np.array(samples)
            out["ci"] = {f: [float(np.percentile(s[:, i], 2.5)), float(np.percentile(s[:, i], 97.5))] for i, f in enumerate(fams)}
            out["replicates"] = len(samples)
    if groups is not None:
        out["targets"] = groups
    return out


def predicted_losses(fit_doc: Mapping, ratios: Mapping[str, float], N: float | None = None, D: float | None = None) -> dict[str, float]:
    """L_i(N, D, p) for every fitted family (the closed form for a separable law, the fitted law otherwise)."""
    law = str(fit_doc["law"]).split(":")[0]
    if law not in SEPARABLE_LAWS:
        return law_losses(fit_doc, ratios, N, D)
    out = {}
    for fam, entry in fit_doc["families"].items():
        c, g = _coefficients(law, entry, N, D)
        out[fam] = c * float(ratios[fam]) ** (-g)
    return out


def unit_losses(fit_doc: Mapping, N: float | None = None, D: float | None = None) -> dict[str, float]:
    """c_i(N, D): each family's predicted loss at p_i = 1 (the normalizer Z_i)."""
    law = str(fit_doc["law"]).split(":")[0]
    if law not in SEPARABLE_LAWS:
        from nemo_mlsl.fitting.lawfit import LawFit

        if N is None or D is None:
            raise ConfigError(f"the losses of law {law!r} are at a model size and token budget: give N and D")
        targets = sorted(fit_doc["families"])
        obj = MixtureObjective(LawFit.from_dict(fit_doc), mixture_families(fit_doc), targets, np.ones(len(targets)),
                               float(N), float(D))
        return dict(zip(targets, map(float, unit_normalizer(obj))))
    return {fam: _coefficients(law, e, N, D)[0] for fam, e in fit_doc["families"].items()}


def study_law_problem(law: str) -> str | None:
    """Why a study cannot take ``law``'s optimum at its confirmation rung and budget (a larger N and a D it was
    not fitted at), or None. A study needs a law that is mixture-aware (an optimum over the simplex exists) and
    whose form has N and D terms (``Law.extrapolates_nd``: it predicts the larger confirmation model at its token
    budget). Separable laws take the KKT closed form, the others ``optimal_general``."""
    from nemo_mlsl.registry import LAWS

    name = law.split(":")[0].strip()
    cls = LAWS.get(name)
    why = None
    if not getattr(cls, "mixture_aware", True):
        why = f"{name!r} does not depend on the mixture (it has no optimal mixture)"
    elif not getattr(cls, "extrapolates_nd", False):
        why = (f"{name!r} has no N and D terms (it knows the loss only at the (N, D) settings it was fitted on), and the "
               "study predicts the larger confirmation rung at its token budget")
    if why is None:
        return None
    return f"{why}; a study takes a mixture-aware law with N and D terms: {', '.join(study_laws())} (or auto)"


def study_laws() -> list[str]:
    """The registered laws a study can take (``study_law_problem`` is None): ``law: auto`` chooses among them."""
    from nemo_mlsl.registry import LAWS

    out = []
    for name in LAWS.names():
        try:
            cls = LAWS.get(name)
        except Exception:  # a broken third-party entry point must not hide the others
            continue
        if getattr(cls, "mixture_aware", True) and getattr(cls, "extrapolates_nd", False):
            out.append(name)
    return out


# ---------------------------------------------------------------------------------------------------------
# Any law: a constrained optimizer over the simplex (laws with cross-family terms, ATLAS).

GENERAL_STARTS = 6  # deterministic starts: the uniform mixture, one leaning to each family (up to 4), a seeded point
ZERO_FLOOR = 1e-6   # the least share a law that cannot represent p = 0 is offered


def mixture_families(doc: Mapping) -> list[str]:
    """The families a fit's mixture is over (stored with the fit; inferred for older fit.json files)."""
    from nemo_mlsl.fitting.lawfit import legacy_mixture

    return sorted(doc.get("mixture") or legacy_mixture(doc))


def project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The point of {lo <= p <= hi, Σ p = 1} nearest to ``x`` (a shift λ with p = clip(x - λ, lo, hi))."""
    f = lambda lam: np.clip(x - lam, lo, hi).sum() - 1.0
    a, b = float(np.min(x - hi)) - 1.0, float(np.max(x - lo)) + 1.0
    return np.clip(x - brentq(f, a, b, xtol=1e-15), lo, hi)


@dataclass
class MixtureObjective:
    """Σ_t w_t L_t(N, D, p) / Z_t over the targets of a fitted law, with its gradient in p (every family's share)."""

    lawfit: Any
    families: list[str]
    targets: list[str]
    weights: np.ndarray
    N: float
    D: float
    normalizer: np.ndarray | None = None

    def losses(self, p: np.ndarray, thetas: Mapping[str, np.ndarray] | None = None, rows: Sequence[int] | None = None,
               gradient: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each target's loss at ``p`` and d L_t / d p, ``[T]`` and ``[T, F]`` (only the targets ``rows``, and no
        gradient unless asked: the others stay 0)."""
        from nemo_mlsl.fitting.observations import FamilyData

        P = np.asarray(p, dtype=float)[None, :]
        L, G = np.zeros(len(self.targets)), np.zeros((len(self.targets), len(self.families)))
        for i in range(len(self.targets)) if rows is None else rows:
            t = self.targets[i]
            tf = self.lawfit.fits[t]
            theta = tf.theta if thetas is None else thetas[t]
            data = FamilyData.at(t, self.families, [self.N], [self.D], P, self.lawfit.U(self.families))
            L[i] = float(np.exp(tf.law.log_predict(theta, data))[0])
            if gradient:
                G[i] = L[i] * tf.law.share_jacobian(theta, data)[0]
        return L, G

    def __call__(self, p: np.ndarray, thetas: Mapping[str, np.ndarray] | None = None) -> tuple[float, np.ndarray]:
        L, G = self.losses(p, thetas)
        w = self.weights / (self.normalizer if self.normalizer is not None else 1.0)
        return float(w @ L), w @ G


def reference_mixture(target: str, families: Sequence[str]) -> np.ndarray:
    """Where a target's normalizer Z_t is taken: trained on itself alone (p_t = 1) for a training family, as for the
    separable laws; the uniform mixture for a target that is no family (a task, a held-out set)."""
    if target in families:
        e = np.zeros(len(families))
        e[list(families).index(target)] = 1.0
        return e
    return np.full(len(families), 1.0 / len(families))


def unit_normalizer(obj: MixtureObjective, thetas: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Z_t: each target's predicted loss at its reference mixture (``reference_mixture``; one evaluation per mixture)."""
    out = np.zeros(len(obj.targets))
    by_mixture: dict[tuple[float, ...], list[int]] = {}
    for i, t in enumerate(obj.targets):
        by_mixture.setdefault(tuple(reference_mixture(t, obj.families)), []).append(i)
    for mix, rows in by_mixture.items():
        out[rows] = obj.losses(np.array(mix), thetas, rows=rows, gradient=False)[0][rows]
    return out


def solve_simplex(fun, lo: np.ndarray, hi: np.ndarray, starts: Sequence[np.ndarray]) -> np.ndarray:
    """min fun(p) over {lo <= p <= hi, Σ p = 1} by SLSQP from each start (projected onto the set); the best wins."""
    best: tuple[float, np.ndarray] | None = None
    cons = [{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}]
    for x0 in starts:
        x0 = project(np.asarray(x0, dtype=float), lo, hi)
        with np.errstate(all="ignore"):
            res = minimize(fun, x0, jac=True, method="SLSQP", bounds=list(zip(lo, hi)), constraints=cons,
                           options={"ftol": 1e-14, "maxiter": 500})
        p = project(np.clip(res.x, lo, hi), lo, hi) if np.all(np.isfinite(res.x)) else x0
        val = fun(p)[0]
        if np.isfinite(val) and (best is None or val < best[0] - 1e-15):
            best = (val, p)
    if best is None:
        raise ConfigError("the law's predicted loss is not finite anywhere the optimizer looked; check the fit")
    return best[1]


def general_starts(lo: np.ndarray, hi: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Deterministic starts: the uniform mixture, mixtures leaning to each of the first families, seeded Dirichlet points."""
    F = len(lo)
    out = [np.full(F, 1.0 / F)]
    for j in range(min(F, GENERAL_STARTS - 2)):
        e = np.full(F, 0.3 / F)
        e[j] += 0.7
        out.append(e)
    rng = np.random.default_rng(seed)
    out += list(rng.dirichlet(np.ones(F), size=max(1, GENERAL_STARTS - len(out))))
    return out


def optimal_general(
    fit_doc: Mapping,
    *,
    N: float | None = None,
    D: float | None = None,
    objective: str = "normalized",
    weights: Mapping[str, float] | None = None,
    min_ratio: Mapping[str, float] | float = 0.0,
    max_ratio: Mapping[str, float] | float = 1.0,
    caps: Mapping[str, float] | None = None,
) -> dict:
    """Optimal mixture for any mixture-aware law (cross-family terms allowed): SLSQP over the simplex from
    deterministic starts with the law's analytic share gradients; bootstrap intervals re-solve per replicate.
    A family may get 0 where the law can represent it and the bounds allow it."""
    from nemo_mlsl.fitting.lawfit import LawFit

    lf = LawFit.from_dict(fit_doc)
    if not lf.law.mixture_aware:
        raise ConfigError(f"law {lf.law.name!r} does not depend on the mixture: it has no optimal mixture; fit a mixture law")
    if N is None or D is None:
        raise ConfigError(f"the optimum of law {lf.law.name!r} is at a model size and token budget: give --N and --D")
    if objective not in ("normalized", "raw"):
        raise ConfigError(f"--objective must be 'normalized' or 'raw', got {objective!r}")
    fams = mixture_families(fit_doc)
    targets = sorted(fit_doc["families"])
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(targets))
    if unknown:
        raise ConfigError(f"unknown family {unknown} in --weights; the fit has {targets}")
    if caps is not None:
        missing = sorted(set(fams) - set(caps))
        if missing:
            raise ConfigError(f"the data has no tokens for the mixture's families {missing}: prepare data with every family")
        caps = {f: float(caps[f]) for f in fams}
    lower, upper = bounds_for(fams, min_ratio=min_ratio, max_ratio=max_ratio, caps=caps)
    if not lf.law.zero_shares:
        lower = np.maximum(lower, ZERO_FLOOR)
    prob = RatioProblem(np.ones(len(fams)), np.zeros(len(fams)), lower, upper, tuple(fams), tuple(caps[f] for f in fams) if caps else ())
    prob.validate()
    bad = {t: x for t, x in weights.items() if not (np.isfinite(float(x)) and float(x) >= 0)}
    if bad:
        raise ConfigError(f"target weights must be finite and >= 0, got {bad}")
    every = {t: float(weights.get(t, 1.0)) for t in targets}
    targets = [t for t in targets if every[t] > 0]  # a target of weight 0 costs nothing to leave out
    if not targets:
        raise ConfigError("every target has weight 0; give at least one target a positive weight")
    w = np.array([float(weights.get(t, 1.0)) for t in targets])
    obj = MixtureObjective(lf, fams, targets, w, float(N), float(D))
    if objective == "normalized":
        obj.normalizer = unit_normalizer(obj)
    point = solve_simplex(obj, lower, upper, general_starts(lower, upper))
    out = {"ratios": {f: float(p) for f, p in zip(fams, point)}, "objective": objective, "law": fit_doc["law"],
           "N": N, "D": D, "weights": every, "solver": "slsqp"}
    if caps:
        out["caps"] = caps
        out["binding_caps"] = prob.binding_caps(point)
    boots = {t: lf.fits[t].boot for t in targets}
    if all(b is not None and len(b) for b in boots.values()) and len({len(b) for b in boots.values()}) == 1:
        samples = []
        for r in range(len(next(iter(boots.values())))):
            rows = {t: boots[t][r] for t in targets}
            if any(np.isnan(v).any() for v in rows.values()):
                continue
            o = MixtureObjective(lf, fams, targets, w, float(N), float(D))
            if objective == "normalized":
                o.normalizer = unit_normalizer(o, rows)
            fun = lambda p, o=o, rows=rows: o(p, rows)
            samples.append(solve_simplex(fun, lower, upper, [point, np.full(len(fams), 1.0 / len(fams))]))
        if samples:
            s = np.array(samples)
            out["ci"] = {f: [float(np.percentile(s[:, i], 2.5)), float(np.percentile(s[:, i], 97.5))] for i, f in enumerate(fams)}
            out["replicates"] = len(samples)
    return out


def law_losses(fit_doc: Mapping, ratios: Mapping[str, float], N: float | None, D: float | None) -> dict[str, float]:
    """Every target's predicted loss at one mixture, for any law (through the fitted law itself)."""
    from nemo_mlsl.fitting.lawfit import LawFit

    lf = LawFit.from_dict(fit_doc)
    fams = mixture_families(fit_doc)
    unknown = sorted(set(ratios) - set(fams))
    if unknown and any(float(ratios[f]) > 0 for f in unknown):
        raise ConfigError(f"the mixture has families {unknown} that the fit never saw; it knows {fams}")
    if N is None or D is None:
        raise ConfigError(f"predicting with law {lf.law.name!r} needs N and D")
    targets = sorted(fit_doc["families"])
    obj = MixtureObjective(lf, fams, targets, np.ones(len(targets)), float(N), float(D))
    L, _ = obj.losses(np.array([float(ratios.get(f, 0.0)) for f in fams]))
    return dict(zip(targets, map(float, L)))
