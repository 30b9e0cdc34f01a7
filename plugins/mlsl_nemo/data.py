"""The family blend as NeMo's ``PreTrainingDataModule`` (which owns the ``MegatronDataSampler`` contract).

Flattened per-language weights go in as ``paths={"train": [w, prefix, ...], "validation": [1, prefix, ...]}``;
the validation prefixes are every language in ``Manifest.languages`` order with equal weights, so a
sample's ``dataset_id`` indexes that list. The tokenizer is the prepared data's SentencePiece model
(a local file: nothing is downloaded).
"""

from __future__ import annotations

from nemo_mlsl.data.blend import blend_paths

__all__ = ["blend_paths"]
