"""Per-language sums → per-language and per-family loss, perplexity and bits per byte.

Both the Lightning and the NeMo validation paths accumulate ``sums[language] = (loss_sum, tokens)``
in nats; this module turns them into the numbers every scaling law here is fitted to.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

LN2 = math.log(2.0)


def family_metrics(
    sums: np.ndarray,
    languages: Sequence[str],
    family_of: Mapping[str, str],
    bytes_per_token: Mapping[str, float],
) -> dict[str, dict[str, dict[str, float]]]:
    """``sums`` is ``[n_languages, 2]`` (loss sum in nats, token count), rows in ``languages`` order.

    Family loss is token-weighted over its languages; bits per byte divide total bits by the
    bytes those tokens stand for (tokens x the language's bytes per validation token).
    """
    sums = np.asarray(sums, dtype=np.float64)
    out: dict[str, dict[str, dict[str, float]]] = {"languages": {}, "families": {}}
    fam_acc: dict[str, list[float]] = {}
    for i, lang in enumerate(languages):
        loss_sum, tokens = float(sums[i, 0]), float(sums[i, 1])
        if tokens <= 0:
            continue
        n_bytes = tokens * bytes_per_token[lang]
        out["languages"][lang] = _summary(loss_sum, tokens, n_bytes)
        acc = fam_acc.setdefault(family_of[lang], [0.0, 0.0, 0.0])
        acc[0] += loss_sum
        acc[1] += tokens
        acc[2] += n_bytes
    for fam, (loss_sum, tokens, n_bytes) in sorted(fam_acc.items()):
        out["families"][fam] = _summary(loss_sum, tokens, n_bytes)
    return out


def _summary(loss_sum: float, tokens: float, n_bytes: float) -> dict[str, float]:
    loss = loss_sum / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bpb": loss_sum / LN2 / n_bytes, "tokens": tokens}


def mixture_summary(
    tokens: Sequence[float],
    languages: Sequence[str],
    family_of: Mapping[str, str],
    train_tokens: Mapping[str, int],
) -> dict[str, float]:
    """Realized shares from tokens drawn per language (``languages`` order): ``mixture/<family>/{ratio,tokens,epochs}``
    and ``mixture_language/<code>/ratio``, the TensorBoard names of every backend."""
    total = float(sum(tokens)) or 1.0
    per_language: dict[str, float] = {}
    for lang, n in zip(languages, tokens):  # a language with several training prefixes appears more than once
        per_language[lang] = per_language.get(lang, 0.0) + float(n)
    fams: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    for lang, n in per_language.items():
        f = fams.setdefault(family_of[lang], [0.0, 0.0])
        f[0] += n
        f[1] += train_tokens[lang]
        out[f"mixture_language/{lang}/ratio"] = n / total
    for fam, (n, avail) in sorted(fams.items()):
        out[f"mixture/{fam}/ratio"] = n / total
        out[f"mixture/{fam}/tokens"] = n
        out[f"mixture/{fam}/epochs"] = n / max(1.0, avail)
    return out
