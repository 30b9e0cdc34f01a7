"""Streaming writer of one language split's Megatron indexed dataset (``.bin`` appended chunk by chunk,
``.idx`` written at the end), counting the UTF-8 bytes of the text it holds for bits per byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nemo_mlsl.data.indexed import write_index


class BinWriter:
    """Appends packed documents to ``prefix.bin``; ``close`` writes megatron-core's ``.idx`` for them."""

    def __init__(self, prefix: Path, dtype: type):
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self.prefix, self.dtype = prefix, dtype
        self.fh = open(str(prefix) + ".bin", "wb")
        self.lengths: list[np.ndarray] = []
        self.bytes = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray, n_bytes: int) -> None:
        self.fh.write(flat.tobytes())
        self.lengths.append(lengths)
        self.bytes += n_bytes

    def close(self) -> dict[str, int]:
        self.fh.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int32)
        write_index(str(self.prefix) + ".idx", self.dtype, lengths)
        return {"documents": int(len(lengths)), "tokens": int(lengths.sum()), "bytes": int(self.bytes)}
