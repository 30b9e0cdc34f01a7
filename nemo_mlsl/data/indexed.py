"""Megatron's indexed dataset format (``PREFIX.bin`` tokens + ``PREFIX.idx`` index), read and written without
importing megatron-core (and torch): ``prepare`` stays light, and indexes over a subset of another dataset's
documents can point into its ``.bin`` without copying or rewriting it.

``.idx`` layout (little endian): the magic ``MMIDIDX\\0\\0``, version 1 (u64), the token dtype code (u8),
the number of sequences S (u64) and of document boundaries D (u64), then S int32 sequence lengths, S int64
byte offsets into the ``.bin``, and D int64 sequence indices where documents end (starting with 0).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nemo_mlsl.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def token_dtype(vocab_size: int) -> type:
    """The smallest token type megatron uses for a vocabulary (uint16 below 65,500 ids)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def write_index(idx_path: str | Path, dtype: type, lengths: np.ndarray, pointers: np.ndarray | None = None,
                doc_index: np.ndarray | None = None) -> None:
    """Write an ``.idx``; ``pointers`` default to a contiguous ``.bin``, ``doc_index`` to one sequence per document."""
    lengths = np.asarray(lengths, dtype=np.int32)
    if pointers is None:
        pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * np.dtype(dtype).itemsize
    if doc_index is None:
        doc_index = np.arange(len(lengths) + 1, dtype=np.int64)
    with open(idx_path, "wb") as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<Q", 1))
        fh.write(struct.pack("<B", CODES[np.dtype(dtype)]))
        fh.write(struct.pack("<Q", len(lengths)))
        fh.write(struct.pack("<Q", len(doc_index)))
        fh.write(lengths.tobytes())
        fh.write(np.asarray(pointers, dtype=np.int64).tobytes())
        fh.write(np.asarray(doc_index, dtype=np.int64).tobytes())


@dataclass
class IndexedData:
    """A memory-mapped indexed dataset: documents as token arrays."""

    prefix: str
    dtype: type
    lengths: np.ndarray
    pointers: np.ndarray
    doc_index: np.ndarray

    @classmethod
    def open(cls, prefix: str | Path, what: str = "") -> "IndexedData":
        prefix = str(prefix)
        where = f" ({what})" if what else ""
        for ext in (".idx", ".bin"):
            if not Path(prefix + ext).is_file():
                raise DataError(f"{prefix}{ext} does not exist{where}: give the prefix of a Megatron indexed dataset "
                                "(PREFIX.bin and PREFIX.idx, as preprocess_data writes them)")
        raw = np.memmap(prefix + ".idx", dtype=np.uint8, mode="r")
        if bytes(raw[:9]) != MAGIC:
            raise DataError(f"{prefix}.idx is not a Megatron index (bad magic){where}")
        code = int(raw[17])
        if code not in DTYPES:
            raise DataError(f"{prefix}.idx has an unknown token dtype code {code}{where}")
        seqs, docs = struct.unpack("<QQ", bytes(raw[18:34]))
        off = 34
        lengths = np.frombuffer(raw, dtype=np.int32, count=seqs, offset=off)
        pointers = np.frombuffer(raw, dtype=np.int64, count=seqs, offset=off + 4 * seqs)
        doc_index = np.frombuffer(raw, dtype=np.int64, count=docs, offset=off + 12 * seqs)
        return cls(prefix, DTYPES[code], lengths, pointers, doc_index)

    @property
    def documents(self) -> int:
        return max(0, len(self.doc_index) - 1)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    def document(self, i: int) -> np.ndarray:
        """All tokens of document ``i`` (its sequences, in order)."""
        data = np.memmap(self.prefix + ".bin", dtype=self.dtype, mode="r")
        s0, s1 = int(self.doc_index[i]), int(self.doc_index[i + 1])
        size = np.dtype(self.dtype).itemsize
        return np.concatenate([np.asarray(data[p // size: p // size + n]) for p, n in zip(self.pointers[s0:s1], self.lengths[s0:s1])]) \
            if s1 > s0 else np.zeros(0, dtype=self.dtype)

    def write_subset(self, dest: str | Path, docs: Sequence[int]) -> int:
        """An index over the given documents (in that order) at ``dest.idx``, its ``.bin`` a link to this one's:
        nothing is copied or rewritten. Returns the tokens it holds."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        seqs = [np.arange(self.doc_index[d], self.doc_index[d + 1]) for d in docs]
        counts = np.array([len(s) for s in seqs], dtype=np.int64)
        sel = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
        write_index(str(dest) + ".idx", self.dtype, self.lengths[sel], self.pointers[sel],
                    np.concatenate([[0], np.cumsum(counts)]))
        link = Path(str(dest) + ".bin")
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.abspath(self.prefix + ".bin"), link)
        return int(self.lengths[sel].sum(dtype=np.int64))
