"""The encoding pass of ``mlsl prepare``: chunks of documents (with each document's split) go to worker
processes, which parse, tokenize and pack them; results come back in order, a bounded number in flight."""

from __future__ import annotations

import itertools
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from nemo_mlsl.data.documents import parse_items, raw_items, read_range
from nemo_mlsl.data.inputs import kind_of
from nemo_mlsl.data.splits import SPLIT_CODE, split_codes
from nemo_mlsl.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer

_TOK: Tokenizer | None = None


def init_worker(kind: str, path: str) -> None:
    """Load the tokenizer once per worker process (or once in this process without workers)."""
    global _TOK
    _TOK = SentencePieceTokenizer(path) if kind == "sentencepiece" else load_tokenizer(path)


def encode_chunk(job: tuple) -> tuple:
    """Parse, encode and pack one chunk: per split (flat ids with EOD after each document, lengths, bytes)."""
    lang, kind, items, codes, text_field, where, dtype = job
    if isinstance(items, tuple):  # (offset, length): the worker reads its own chunk
        items = read_range(where[0], *items)
    texts = parse_items(items, kind, text_field, where)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    ids = _TOK.encode_documents([texts[i] for i in keep]) if keep else []
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    kept_codes = codes[keep] if keep else np.zeros(0, dtype=np.int8)
    n_bytes = np.fromiter((len(texts[i].encode("utf-8")) + 1 for i in keep), dtype=np.int64, count=len(keep))  # +1: EOD
    token_codes = np.repeat(kept_codes, lengths)
    out = {}
    for split, code in SPLIT_CODE.items():
        docs = kept_codes == code
        if docs.any():
            out[split] = (flat if docs.all() else flat[token_codes == code], lengths[docs], int(n_bytes[docs].sum()))
    return lang, out, len(items)


def encoding_jobs(files: dict[str, list[Path]], plans: dict[Path, list], splits: dict, text_field: str,
                  dtype: type) -> Iterator[tuple]:
    """One job per chunk, in document order: planned byte ranges for plain files, read items otherwise."""
    for code in sorted(files):
        val, test = splits[code]
        start = 0
        for path in files[code]:
            kind = kind_of(path)
            if path in plans:
                chunks: Iterable = (((offset, length), n) for offset, length, n in plans[path])
            else:
                chunks = ((items, len(items)) for items in raw_items(path, text_field))
            for items, n in chunks:
                yield (code, kind, items, split_codes(start, n, val, test), text_field, (path, start), dtype)
                start += n


def bounded_imap(pool, fn: Callable, jobs: Iterable, inflight: int) -> Iterator:
    """``pool.imap`` in order, but with at most ``inflight`` jobs submitted ahead (``imap`` reads its whole input)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(fn, (job,)) if pool else _Done(fn(job)))
        if len(pending) >= inflight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class _Done:
    """An already computed result with ``AsyncResult``'s ``get`` (the in-process path)."""

    def __init__(self, value: Any):
        self.value = value

    def get(self) -> Any:
        return self.value
