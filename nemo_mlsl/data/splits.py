"""Which documents of a language are validation and test: deterministic by seed and document index, so every
worker can tell a document's split without seeing the others."""

from __future__ import annotations

import hashlib

import numpy as np

from nemo_mlsl.errors import DataError

SPLIT_CODE = {"train": 0, "validation": 1, "test": 2}


def language_seed(seed: int, code: str) -> list[int]:
    """A per-language random seed (the code's hash mixed with the preparation seed)."""
    return [seed, int(hashlib.md5(code.encode()).hexdigest()[:8], 16)]


def split_indices(n: int, code: str, seed: int, val_docs: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic validation and test document indices of a language with ``n`` documents (``val_docs`` each)."""
    k = val_docs if val_docs is not None else max(1, min(200, n // 20))
    if n < 2 * k + 1:
        raise DataError(
            f"language {code!r} has {n} documents, too few for {k} validation + {k} test + 1 training document; "
            f"add text or lower --val-docs"
        )
    pick = np.random.default_rng(language_seed(seed, code)).choice(n, size=2 * k, replace=False)
    return np.sort(pick[:k]), np.sort(pick[k:])


def split_codes(start: int, count: int, val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The ``SPLIT_CODE`` of documents ``start .. start + count - 1``."""
    idx = np.arange(start, start + count)
    codes = np.zeros(count, dtype=np.int8)
    codes[np.isin(idx, val)] = SPLIT_CODE["validation"]
    codes[np.isin(idx, test)] = SPLIT_CODE["test"]
    return codes
