"""The family blend as NeMo's ``PreTrainingDataModule`` (which owns the ``MegatronDataSampler`` contract).

Flattened per-language weights go in as ``paths={"train": [w, prefix, ...], "validation": [1, prefix, ...]}``;
the validation prefixes are every language in ``Manifest.languages`` order with equal weights, so a
sample's ``dataset_id`` indexes that list. The tokenizer is the prepared data's SentencePiece model
(a local file: nothing is downloaded).
"""

from __future__ import annotations

from typing import Any, Mapping

from nemo_mlsl.data.blend import DEFAULT_MAX_EPOCHS, BlendConfig, FamilyBlend
from nemo_mlsl.data.manifest import Manifest


def blend_paths(data_dir: str, ratios: Mapping[str, float], within: str = "natural", normalize: bool = False, *,
                train_samples: int | None = None, seq_length: int = 128, max_epochs: float = DEFAULT_MAX_EPOCHS) -> dict[str, Any]:
    """``paths`` for ``PreTrainingDataModule`` plus the lookup tables the family callback needs; with ``train_samples``
    the epoch caps of every family and language are checked here, before any job is submitted."""
    m = Manifest.load(data_dir)
    blend = FamilyBlend(m, BlendConfig(dict(ratios), within, seq_length=seq_length, max_epochs=max_epochs, normalize=normalize))
    if train_samples:
        blend.check_epochs(train_samples)
    train: list[Any] = []
    for _, prefix, weight in blend.train_parts:
        train += [weight, prefix]
    val: list[Any] = []
    for lang in blend.validation_languages:
        val += [1.0, m.prefix(lang, "validation")]
    return {
        "paths": {"train": train, "validation": val, "test": val},
        "validation_languages": blend.validation_languages,
        "family_of": {l: m.family_of(l) for l in m.languages},
        "bytes_per_token": m.bytes_per_token("validation"),
        "tokenizer_model": str(m.tokenizer_path),
        "tokenizer_kind": m.tokenizer_kind,
        "family_ratios": blend.family_ratios,
        "vocab_size": m.vocab_size,
        "train_languages": blend.train_languages,
        "train_tokens": m.tokens("train"),
        "family_tokens": m.family_tokens("train"),
        "cache_dir": str(m.root / ".cache"),  # megatron's sample indices: in the data directory, never beside a user's prefixes
    }
