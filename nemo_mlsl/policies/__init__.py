"""Mixture policies: the ratios of a schedule's next interval, decided from the run's own validation history
(``nemo_mlsl.policies`` registry; ``ado`` and ``law`` built in). A policy sees only the fixed validation set's per-family losses
(``ValidationPoint``), never training losses, and returns the next ratios with the evidence behind them, which the
schedule keeps as that interval's ``reason`` and ``evidence``.

A policy is a callable ``policy(ctx: PolicyContext) -> Decision``; publish one under the ``nemo_mlsl.policies``
entry-point group and ``mlsl train --adaptive NAME --interval STEPS`` (the CPU backend) runs it at every boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.registry import POLICIES


@dataclass(frozen=True)
class ValidationPoint:
    """One validation of the run: each family's tokens trained so far and its loss on the fixed validation set."""

    step: int
    family_tokens: Mapping[str, float]
    family_loss: Mapping[str, float]


@dataclass(frozen=True)
class PolicyContext:
    """What a policy decides from: the history so far, the ratios in force, and the limits every decision keeps."""

    history: Sequence[ValidationPoint]
    previous: Mapping[str, float]  # the ratios of the interval that just ended (every family)
    min_share: float = 0.02  # every family keeps at least this share
    max_share: Mapping[str, float] = field(default_factory=dict)  # per family (e.g. its data cap); absent: 1
    smoothing: float = 0.5  # weight of the previous ratios in the next ones
    max_change: float = 1.0  # the most a decision moves the ratios (total variation, 1/2 sum |next - previous|); 1: no limit
    remaining_tokens: float | None = None  # the run's tokens after this boundary (None: not known to the caller)


@dataclass(frozen=True)
class Decision:
    ratios: dict[str, float]
    evidence: dict[str, Any]


def project(raw: Mapping[str, float], lo: float, hi: Mapping[str, float] | None = None) -> dict[str, float]:
    """The ratios ``clip(c * raw_f, lo, hi_f)`` that sum to 1 (``c`` found by bisection): proportional to ``raw``
    where no bound binds, every share in ``[lo, hi_f]``."""
    names = sorted(raw)
    hi = {f: float((hi or {}).get(f, 1.0)) for f in names}
    if lo * len(names) > 1 + 1e-12 or sum(hi.values()) < 1 - 1e-12:
        raise ConfigError(f"no ratios fit the bounds: min share {lo:g} x {len(names)} families > 1, or the maximum shares "
                          f"sum to {sum(hi.values()):.4g} < 1; lower the minimum share or raise the caps")
    if any(lo > hi[f] + 1e-12 for f in names):
        raise ConfigError(f"a family's maximum share is below the minimum share {lo:g}: {hi}")
    w = {f: max(0.0, float(raw[f])) for f in names}
    top = max(w.values())
    w = {f: max(v, 1e-12 * top) if top > 0 else 1.0 for f, v in w.items()}  # a zero weight can still take up the slack

    def shares(c: float) -> dict[str, float]:
        return {f: min(hi[f], max(lo, c * w[f])) for f in names}

    a, b = 0.0, 1.0
    while sum(shares(b).values()) < 1:
        b *= 2
    for _ in range(200):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if sum(shares(mid).values()) < 1 else (a, mid)
    out = shares(b)
    total = sum(out.values())
    return {f: v / total for f, v in out.items()}


def limit_change(previous: Mapping[str, float], ratios: Mapping[str, float], ctx: PolicyContext) -> dict[str, float]:
    """``ratios`` moved back toward ``previous`` along the line between them until the total variation between the two
    is at most ``ctx.max_change``, then onto the bounds (a data cap binds even where it forces a larger move)."""
    tv = 0.5 * sum(abs(float(ratios[f]) - float(previous[f])) for f in ratios)
    if tv <= ctx.max_change:
        return dict(ratios)
    s = ctx.max_change / tv
    return project({f: float(previous[f]) + s * (float(ratios[f]) - float(previous[f])) for f in ratios}, ctx.min_share,
                   ctx.max_share)


def boundary_decision(fn: Callable[[PolicyContext], Decision], history: Sequence[ValidationPoint],
                      previous: Mapping[str, float], *, step: int, until: int, max_steps: int, tokens_per_step: int,
                      drawn: Mapping[str, float], train_tokens: Mapping[str, float], max_epochs: float, min_share: float,
                      smoothing: float, max_change: float) -> tuple[Decision, dict[str, float]]:
    """An adaptive run's decision at the boundary ``step`` for the interval ``[step, until)`` (every backend's): each
    family's largest share is what its data cap (``max_epochs`` x its training tokens, less the tokens ``drawn`` so far)
    leaves for the interval's tokens. Returns the policy's decision and those caps (the interval's evidence keeps them)."""
    need = (until - step) * tokens_per_step
    max_share = {f: min(1.0, max(0.0, max_epochs * train_tokens[f] - drawn[f]) / need) for f in drawn}
    remaining = (max_steps - step) * tokens_per_step
    decision = fn(PolicyContext(history, previous, min_share, max_share, smoothing, max_change, float(remaining)))
    return decision, max_share


def next_interval(fn: Callable[[PolicyContext], Decision], scheduled: Any, losses: Mapping[int, Mapping[str, float]], *,
                  step: int, interval: int, max_steps: int, min_share: float, smoothing: float,
                  max_change: float) -> tuple[dict[str, float], int, dict[str, Any]]:
    """An adaptive run's next interval at the boundary ``step`` (every backend's): the run's validation history
    (``losses``: step -> family -> loss, the steps up to ``step``, each with the tokens drawn by then) handed to
    ``boundary_decision`` on the built ``ScheduledBlend`` ``scheduled``. Returns the ratios, the interval's last step and
    its evidence (the policy's, with each family's cap ``max_share``), for the caller to extend the schedule with."""
    history = [ValidationPoint(s, scheduled.drawn_tokens(s), dict(loss)) for s, loss in sorted(losses.items()) if s <= step]
    until = min(step + interval, max_steps)
    decision, max_share = boundary_decision(
        fn, history, scheduled.interval_blends[-1].family_ratios, step=step, until=until, max_steps=max_steps,
        tokens_per_step=scheduled.global_batch_size * scheduled.config.seq_length, drawn=scheduled.drawn_tokens(step),
        train_tokens=scheduled.manifest.family_tokens("train"), max_epochs=scheduled.config.max_epochs,
        min_share=min_share, smoothing=smoothing, max_change=max_change)
    return decision.ratios, until, {**decision.evidence, "max_share": max_share}


ADAPTIVE_HISTORY_FILE = "adaptive_history.jsonl"  # an adaptive NeMo or Bridge run's validations, a JSON line each


def read_history(paths: Sequence[Any]) -> dict[int, dict[str, Any]]:
    """The rows (``{"step", "family_loss"}``) of history files read in order, the first of each step (a resumed run
    validates again where it restarts; the validation the run it continues made counts)."""
    import json
    from pathlib import Path

    first: dict[int, dict[str, Any]] = {}
    for path in map(Path, paths):
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip().startswith("{"):
                    row = json.loads(line)
                    first.setdefault(int(row.get("step", 0)), row)
    return first


def policy(name: str) -> Callable[[PolicyContext], Decision]:
    """The registered policy ``name`` (a named error for unknown names)."""
    fn = POLICIES.get(name)
    if not callable(fn):
        raise ConfigError(f"the {POLICIES.group!r} entry point {name!r} is a {type(fn).__name__}, not a policy")
    return fn


def check_context(ctx: PolicyContext) -> None:
    if not ctx.previous or not math.isclose(sum(ctx.previous.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"a policy needs the previous interval's ratios, summing to 1; got {dict(ctx.previous)}")
    if not 0 <= ctx.min_share < 1:
        raise ConfigError(f"min_share must be in [0, 1), got {ctx.min_share}")
    if not 0 <= ctx.smoothing <= 1:
        raise ConfigError(f"smoothing must be in [0, 1], got {ctx.smoothing}")
    if not 0 < ctx.max_change <= 1:
        raise ConfigError(f"max_change must be in (0, 1] (a total variation between two mixtures), got {ctx.max_change}")


ADAPTIVE_DEFAULTS = {"min_share": 0.02, "smoothing": 0.5, "max_change": 1.0}


def adaptive_settings(adaptive: Mapping[str, Any]) -> dict[str, Any]:
    """An adaptive run's settings (a recipe's ``adaptive`` mapping, every backend's) checked by name: a known ``policy``, ``interval`` steps >= 1, ``min_share`` in
    [0, 1), ``smoothing`` in [0, 1], ``max_change`` in (0, 1] (the CPU path's defaults where left out)."""
    if not isinstance(adaptive, Mapping):
        raise ConfigError(f"adaptive must be a mapping {{policy: NAME, interval: STEPS, ...}}, got {adaptive!r}")
    unknown = sorted(set(adaptive) - {"policy", "interval", *ADAPTIVE_DEFAULTS})
    if unknown:
        raise ConfigError(f"adaptive: unknown field(s) {unknown}; expected policy, interval, min_share, smoothing, max_change")
    out = {**ADAPTIVE_DEFAULTS, **{k: v for k, v in adaptive.items() if v is not None}}
    name = out.get("policy")
    if not isinstance(name, str) or not name:
        raise ConfigError("adaptive: give the policy by name (policy: NAME, e.g. ado)")
    policy(name)  # an unknown policy is refused before anything is built
    interval = out.get("interval")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ConfigError(f"adaptive: interval must be a whole number of steps >= 1 (one decision per boundary), got "
                          f"{interval!r}")
    for key in ADAPTIVE_DEFAULTS:
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)):
            raise ConfigError(f"adaptive: {key} must be a number, got {out[key]!r}")
        out[key] = float(out[key])
    if not 0 <= out["min_share"] < 1:
        raise ConfigError(f"adaptive: min_share must be in [0, 1), got {out['min_share']}")
    if not 0 <= out["smoothing"] <= 1:
        raise ConfigError(f"adaptive: smoothing must be in [0, 1], got {out['smoothing']}")
    if not 0 < out["max_change"] <= 1:
        raise ConfigError(f"adaptive: max_change must be in (0, 1] (the total variation one decision may move the ratios "
                          f"by; 1: no limit), got {out['max_change']}")
    return out
