"""Predictions from a saved fit: loss per run and family with bootstrap intervals, and the hold-out metrics of
``mlsl fit`` where the runs carry observed losses.

A run to predict needs N, D and its shares; its losses are optional (a run that lists a loss for a family is
scored on it). The intervals are percentiles of the predictions of the fit's stored bootstrap replicates.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.fitting.lawfit import LawFit, regression_metrics
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.shares import normalize_shares
from nemo_mlsl.laws.base import zero_share_message

PLACEHOLDER_LOSS = 1.0  # stands in for a loss the run does not report: predictions never read it


def query_record(N: float, D: float, ratios: Mapping[str, float], lf: LawFit) -> dict[str, Any]:
    """One run to predict from ``--N --D --ratios``: the fit's mixture families, missing ones at share 0, and the unique
    tokens the fitted runs recorded (so a law with a repetition term predicts as it was fitted)."""
    fit_families = list(lf.mixture)
    unknown = sorted(set(ratios) - set(fit_families))
    if unknown:
        raise ConfigError(f"--ratios names {unknown}, which the fit's mixture does not have; its families are {fit_families}")
    if not (N > 0 and D > 0):
        raise ConfigError(f"--N and --D must be positive, got N={N}, D={D}")
    shares, _ = normalize_shares({f: float(ratios.get(f, 0.0)) for f in fit_families}, "--ratios")
    return {"run_id": "query", "N": float(N), "D": float(D), "ratios": shares, "family_loss": {},
            "family_tokens": dict(lf.unique_tokens)}


def _observations(records: Sequence[Mapping[str, Any]], lf: LawFit) -> Observations:
    """The runs to predict: every family they or the fit's mixture name (missing ones at share 0), a placeholder loss
    for every fitted target (predictions do not read losses), and the fit's unique tokens where a run records none."""
    mixture = set(lf.mixture)
    placeholders = {t: PLACEHOLDER_LOSS for t in (*lf.fits, *mixture)}  # families too: chinchilla:total sums over them
    filled = [{**r, "ratios": {**{f: 0.0 for f in mixture}, **r["ratios"]}, "family_loss": placeholders} for r in records]
    obs = Observations.from_records(filled)
    known = lf.U(obs.families)
    return replace(obs, U=np.where(np.isfinite(obs.U), obs.U, known))


def _refuse_zero_shares(lf: LawFit, target: str, data, records: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> None:
    """A law that cannot represent p = 0 asked to predict a run without a share of the target: its named error."""
    if data.has_own_share and not lf.law.zero_shares and np.any(data.p <= 0):
        runs = [records[i]["run_id"] for i, p in zip(idx, data.p) if p <= 0]
        raise ConfigError(zero_share_message(lf.law.name, target, len(runs), len(data.p))
                          + f" (runs to predict: {', '.join(map(str, runs[:5]))})")


def _interval(tf, law, data, level: float) -> tuple[np.ndarray, np.ndarray] | None:
    if tf.boot is None:
        return None
    ok = tf.boot[~np.isnan(tf.boot).any(axis=1)]
    if len(ok) < 2:
        return None
    with np.errstate(all="ignore"):
        reps = np.exp(np.atleast_2d(law.log_predict(ok, data)))
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return np.nanpercentile(reps, lo, axis=0), np.nanpercentile(reps, hi, axis=0)


def predict_runs(lf: LawFit, records: Sequence[Mapping[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """One entry per (run, fitted target) the law predicts: predicted loss, its interval, the observed loss if any."""
    if not records:
        raise ConfigError("no runs to predict")
    obs = _observations(records, lf)
    out = []
    for target, tf in lf.fits.items():
        law = tf.law
        rows = _aligned(law, obs, target)
        for idx, data in rows:
            _refuse_zero_shares(lf, target, data, records, idx)
            with np.errstate(all="ignore"):
                pred = np.exp(law.log_predict(tf.theta, data))
            band = _interval(tf, law, data, level)
            for k, i in enumerate(idx):
                rec = records[i]
                entry: dict[str, Any] = {"run_id": rec["run_id"], "family": target, "N": float(rec["N"]), "D": float(rec["D"]),
                                         "predicted": float(pred[k]),
                                         "lo": None if band is None else float(band[0][k]),
                                         "hi": None if band is None else float(band[1][k])}
                seen = _observed(rec, target)
                if seen is not None:
                    entry["observed"] = seen
                out.append(entry)
    return out


def _aligned(law, obs: Observations, target: str) -> list[tuple[list[int], Any]]:
    """(run indices, data) pairs: all runs at once where the law keeps every run, else run by run."""
    data = law.data_for(obs, target)
    if len(data.loss) == len(obs):
        return [(list(range(len(obs))), data)]
    rows = []
    for i in range(len(obs)):
        one = law.data_for(obs.subset(np.array([i])), target)
        if len(one.loss):
            rows.append(([i], one))
    return rows


def _observed(rec: Mapping[str, Any], target: str) -> float | None:
    losses = rec.get("family_loss") or {}
    if target in losses:
        return float(losses[target])
    if target == "total" and losses and all(f in losses for f in rec["ratios"] if rec["ratios"][f] > 0):
        return float(sum(rec["ratios"][f] * losses[f] for f in losses if f in rec["ratios"]))
    return None


def _clean(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}


def prediction_metrics(preds: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """R², RMSE of log loss, MAPE (%) and n per family and overall, over predictions with an observed loss."""
    scored = [p for p in preds if "observed" in p]
    if not scored:
        return None
    fams: dict[str, list[Mapping[str, Any]]] = {}
    for p in scored:
        fams.setdefault(p["family"], []).append(p)
    per = {f: _clean(regression_metrics(np.array([p["observed"] for p in ps]), np.array([p["predicted"] for p in ps])))
           for f, ps in fams.items()}
    overall = _clean(regression_metrics(np.array([p["observed"] for p in scored]), np.array([p["predicted"] for p in scored])))
    return {"families": per, "overall": overall}
