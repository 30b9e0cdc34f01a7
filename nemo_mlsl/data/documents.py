"""Documents of a raw input file, in chunks: read centrally (gzip, parquet) or planned as byte ranges that the
encoding workers read themselves. A document's index is its position in the file's stream of documents; what a
line and a document are is defined once, in ``lines``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator

from nemo_mlsl.data.inputs import kind_of, open_text, splittable
from nemo_mlsl.data.lines import documents_of, is_blank_bytes, split_lines, starts_document
from nemo_mlsl.errors import DataError

CHUNK_DOCS = 256


def _parquet_batches(path: Path, text_field: str, batch: int = CHUNK_DOCS) -> Iterator[list]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    if text_field not in f.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(f.schema_arrow.names)}); choose one with --text-field")
    for b in f.iter_batches(batch_size=batch, columns=[text_field]):
        yield b.column(0).to_pylist()


def _chunks(docs: Iterator, size: int = CHUNK_DOCS) -> Iterator[list]:
    while chunk := list(itertools.islice(docs, size)):
        yield chunk


def _not_utf8(path: Path, err: UnicodeDecodeError, at: int | None = None) -> DataError:
    where = f" at byte {at + err.start}" if at is not None else ""
    return DataError(f"{path}: not UTF-8 text{where} ({err.reason}); convert the file to UTF-8")


def raw_items(path: Path, text_field: str = "text") -> Iterator[list]:
    """The file's documents in chunks, as cheaply as possible: raw JSON lines (parsed by the encoding workers),
    text documents, or parquet column values. A document's index is its position in this stream."""
    kind = kind_of(path)
    if kind == "parquet":
        yield from _parquet_batches(path, text_field)
        return
    with open_text(path) as fh:
        try:
            yield from _chunks(documents_of(fh, kind))
        except UnicodeDecodeError as err:
            raise _not_utf8(path, err) from None


def parse_items(items: list, kind: str, text_field: str, where: tuple[Path, int]) -> list[str]:
    """Texts of a chunk (JSON lines parsed here); '' for a document without text."""
    if kind != "jsonl":
        return [t if isinstance(t, str) else "" for t in items]
    out = []
    for i, line in enumerate(items):
        try:
            text = json.loads(line)[text_field]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{where[0]}: document {where[1] + i + 1}: expected a JSON object with a {text_field!r} field"
                            + (" (choose the field with --text-field)" if text_field == "text" else "")) from None
        out.append(text if isinstance(text, str) else "")
    return out


def read_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """Non-empty documents of one file."""
    kind = kind_of(path)
    start = 0
    for chunk in raw_items(path, text_field):
        for text in parse_items(chunk, kind, text_field, (path, start)):
            if text.strip():
                yield text
        start += len(chunk)


def chunk_plan(path: Path, chunk_docs: int = CHUNK_DOCS) -> list[tuple[int, int, int]]:
    """(byte offset, byte length, documents) of consecutive chunks of a plain ``.jsonl``/``.txt`` file, from one
    binary scan: the encoding workers then read their own chunks (only gzip and parquet are read centrally).
    Documents are told apart as ``read_range`` tells them (``lines``), so each chunk holds exactly its count."""
    plan: list[tuple[int, int, int]] = []
    kind = kind_of(path)
    start = pos = n = 0
    previous_blank = True
    with open(path, "rb") as fh:
        for line in fh:  # binary lines end at b"\n" only, like ``split_lines``
            blank = is_blank_bytes(line)
            if starts_document(blank, previous_blank, kind):
                if n == chunk_docs:
                    plan.append((start, pos - start, n))
                    start, n = pos, 0
                n += 1
            previous_blank = blank
            pos += len(line)
    if n:
        plan.append((start, pos - start, n))
    return plan


def count_documents(path: Path, text_field: str = "text") -> int:
    """How many documents (indices) the file has, empty ones included."""
    if kind_of(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if splittable(path):
        return sum(n for _, _, n in chunk_plan(path))
    return sum(len(c) for c in raw_items(path, text_field))


def read_range(path: Path, offset: int, length: int) -> list[str]:
    """The documents of one planned chunk (raw JSON lines, or text documents)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(length)
    try:
        data = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err, offset) from None
    return list(documents_of(split_lines(data), kind_of(path)))
