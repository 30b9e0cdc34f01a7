"""Ratio validation, mixture resolution and flattening family ratios to per-language weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.registry import MIXTURES

RATIO_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MixtureContext:
    """What a mixture may look at: available tokens per item and, optionally, the token budget."""

    tokens: Mapping[str, int]
    budget: float | None = None
    explicit: Mapping[str, float] = field(default_factory=dict)


def parse_ratios(text: str) -> dict[str, float]:
    """Parse ``fam=p,fam=p`` (the CLI form) into a dict, with errors that name the bad item."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"--ratios item {item!r} must look like family=ratio (e.g. germanic=0.4)")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--ratios item {item!r}: {value!r} is not a number") from None
    if not out:
        raise ConfigError("--ratios is empty; give family=ratio pairs, e.g. germanic=0.5,slavic=0.5")
    return out


def validate_ratios(
    ratios: Mapping[str, float],
    available: Mapping[str, int],
    *,
    normalize: bool = False,
    what: str = "family",
) -> dict[str, float]:
    """Check ratios against the available items; returns a complete dict (missing items get 0)."""
    unknown = sorted(set(ratios) - set(available))
    if unknown:
        raise ConfigError(
            f"unknown {what} {', '.join(map(repr, unknown))} in ratios; the data has: {', '.join(sorted(available))}"
        )
    for name, value in ratios.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"ratio of {what} {name!r} is {value}; ratios must be finite and >= 0")
    total = sum(ratios.values())
    if total <= 0:
        raise ConfigError("ratios sum to 0; give at least one positive ratio")
    if abs(total - 1.0) > RATIO_TOLERANCE:
        if not normalize:
            raise ConfigError(
                f"ratios sum to {total:.8g}, not 1 (tolerance {RATIO_TOLERANCE:g}); fix them or pass --normalize to rescale"
            )
    out = {name: float(ratios.get(name, 0.0)) / total for name in sorted(available)}
    empty = [name for name, p in out.items() if p > 0 and available[name] <= 0]
    if empty:
        raise ConfigError(f"{what} {', '.join(map(repr, empty))} has ratio > 0 but no training tokens in the data")
    return out


def check_spec(spec: str, where: str) -> None:
    """A mixture spec (``name`` or ``name:arg``) that resolves: the name is registered and takes the argument. Tried
    on two stand-in items (the corpus is not known yet), so what depends on the real data is checked at run time."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where} must be a mixture spec such as 'uniform' or 'temperature:3', got {spec!r}")
    name, _, arg = spec.partition(":")
    try:
        MIXTURES.get(name.strip())(MixtureContext({"x": 10**9, "y": 3 * 10**9}, budget=10**6), arg.strip() or None)
    except ConfigError as err:
        raise ConfigError(f"{where} {spec!r}: {err}") from None


def compute_mixture(spec: str, ctx: MixtureContext) -> dict[str, float]:
    """Resolve a mixture spec (``name`` or ``name:arg``) through the registry."""
    name, _, arg = spec.partition(":")
    fn = MIXTURES.get(name.strip())
    ratios = fn(ctx, arg.strip() or None)
    return validate_ratios(ratios, ctx.tokens, normalize=True)


def check_epochs(
    ratios: Mapping[str, float],
    tokens: Mapping[str, int],
    budget: float,
    max_epochs: float,
    *,
    what: str = "family",
    hint: str = "",
) -> dict[str, float]:
    """Epochs each item would need for ``budget`` tokens; error past ``max_epochs``."""
    epochs: dict[str, float] = {}
    for name, p in ratios.items():
        need = p * budget
        epochs[name] = need / tokens[name] if tokens.get(name, 0) > 0 else (0.0 if need == 0 else math.inf)
        if epochs[name] > max_epochs:
            raise ConfigError(
                f"{what} {name!r} would repeat its data {epochs[name]:.2f} times: {what} ratio {p:.4g} x {budget:.4g} tokens "
                f"= {need:.4g} tokens drawn from {tokens.get(name, 0)} available, above the cap of {max_epochs:g} epochs. "
                f"Lower its ratio, the token budget, or raise max_epochs{hint}"
            )
    return epochs


def language_weights(
    family_ratios: Mapping[str, float],
    family_languages: Mapping[str, Mapping[str, int]],
    within: str = "natural",
) -> dict[str, float]:
    """Per-language weights = family ratio x within-family share (within-family spec from the registry)."""
    weights: dict[str, float] = {}
    for family, p in family_ratios.items():
        langs = family_languages.get(family)
        if not langs:
            if p > 0:
                raise ConfigError(f"family {family!r} has ratio {p} but no languages in the data")
            continue
        inner = compute_mixture(within, MixtureContext(tokens=langs))
        for lang, q in inner.items():
            weights[lang] = p * q
    return weights


def data_caps(
    family_languages: Mapping[str, Mapping[str, int]],
    budget: float,
    max_epochs: float,
    within: str = "natural",
) -> dict[str, float]:
    """The largest ratio each family can take without any of its languages repeating more than
    ``max_epochs`` times in ``budget`` tokens: min over its languages l of max_epochs · tokens_l / (q_l · budget),
    q_l being l's share within the family (``within``). Equals max_epochs · tokens_family / budget for ``natural``."""
    if budget <= 0 or max_epochs <= 0:
        raise ConfigError(f"data caps need a positive token budget and max_epochs; got D={budget}, max_epochs={max_epochs}")
    caps: dict[str, float] = {}
    for family, langs in family_languages.items():
        if not langs or sum(langs.values()) <= 0:
            caps[family] = 0.0
            continue
        inner = compute_mixture(within, MixtureContext(tokens=langs))
        caps[family] = min(max_epochs * langs[l] / (q * budget) for l, q in inner.items() if q > 0)
    return caps
