"""Built-in mixtures, registered through the same entry points a third party would use."""

from __future__ import annotations

from pathlib import Path

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures.core import MixtureContext
from nemo_mlsl.userfiles import read_json


def _positive(ctx: MixtureContext) -> dict[str, int]:
    return {name: n for name, n in ctx.tokens.items() if n > 0}


def _number(arg: str | None, name: str, default: float | None = None) -> float:
    if arg is None:
        if default is None:
            raise ConfigError(f"mixture {name!r} needs an argument, e.g. '{name}:3'")
        return default
    try:
        value = float(arg)
    except ValueError:
        raise ConfigError(f"mixture {name!r}: argument {arg!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"mixture {name!r}: argument must be > 0, got {value}")
    return value


def explicit(ctx: MixtureContext, arg: str | None = None) -> dict[str, float]:
    """The ratios given by the user (``ctx.explicit``), unchanged."""
    if not ctx.explicit:
        raise ConfigError("mixture 'explicit' needs ratios (--ratios fam=p,...)")
    return dict(ctx.explicit)


def natural(ctx: MixtureContext, arg: str | None = None) -> dict[str, float]:
    """Proportional to available tokens."""
    tokens = _positive(ctx)
    total = sum(tokens.values())
    return {name: n / total for name, n in tokens.items()}


def uniform(ctx: MixtureContext, arg: str | None = None) -> dict[str, float]:
    """Equal share for every item that has data."""
    tokens = _positive(ctx)
    return {name: 1.0 / len(tokens) for name in tokens}


def temperature(ctx: MixtureContext, arg: str | None = None) -> dict[str, float]:
    """``p ∝ n^(1/τ)``: τ = 1 is natural, τ → ∞ uniform (mT5's α = 0.3 is τ ≈ 3.33)."""
    tau = _number(arg, "temperature")
    tokens = _positive(ctx)
    scores = {name: n ** (1.0 / tau) for name, n in tokens.items()}
    total = sum(scores.values())
    return {name: s / total for name, s in scores.items()}


def unimax(ctx: MixtureContext, arg: str | None = None) -> dict[str, float]:
    """UniMax (Chung et al. 2023): uniform over the budget, each item capped at ``arg`` epochs (default 1).

    Items are visited from smallest to largest; each gets min(remaining budget / items left,
    epochs x its tokens). Needs the token budget (``ctx.budget``).
    """
    max_epochs = _number(arg, "unimax", 1.0)
    if not ctx.budget:
        raise ConfigError("mixture 'unimax' needs the token budget (samples x sequence length)")
    tokens = _positive(ctx)
    remaining = float(ctx.budget)
    alloc: dict[str, float] = {}
    ordered = sorted(tokens.items(), key=lambda kv: (kv[1], kv[0]))
    for i, (name, n) in enumerate(ordered):
        share = remaining / (len(ordered) - i)
        alloc[name] = min(share, max_epochs * n)
        remaining -= alloc[name]
    if remaining > 1e-9 * ctx.budget:
        raise ConfigError(
            f"unimax:{max_epochs:g} cannot spend the budget of {ctx.budget:.4g} tokens: all data at {max_epochs:g} epochs "
            f"is {ctx.budget - remaining:.4g} tokens. Raise the epoch cap or lower the budget"
        )
    return {name: a / ctx.budget for name, a in alloc.items()}


def from_fit(ctx: MixtureContext, arg: str | None = None) -> dict[str, float]:
    """Ratios from a JSON written by ``mlsl optimize --json`` (``{"ratios": {...}}``)."""
    if not arg:
        raise ConfigError("mixture 'from_fit' needs a path: from_fit:PATH/optimal.json")
    path = Path(arg)
    if not path.exists():
        raise ConfigError(f"mixture 'from_fit': {arg!r} does not exist; write it with `mlsl optimize --json`")
    doc = read_json(path, "mixture 'from_fit'", "write it with `mlsl optimize --json`")
    if not isinstance(doc, dict) or not isinstance(doc.get("ratios"), dict):
        raise ConfigError(f"{arg}: no 'ratios' key; expected the output of `mlsl optimize --json`")
    bad = {k: v for k, v in doc["ratios"].items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if bad:
        raise ConfigError(f"{arg}: ratios {bad} are not numbers; expected the output of `mlsl optimize --json`")
    return {str(k): float(v) for k, v in doc["ratios"].items()}
