"""What a line, a record and a document are in raw ``.jsonl``/``.txt`` input: one definition, used both by the
chunk planner (on bytes) and by the readers (on text), so both always see the same documents.

* A line ends at ``\\n`` only (a ``\\r`` before it is dropped): U+2028, U+2029, U+0085, ``\\v``, ``\\f`` and a lone
  ``\\r`` are characters inside a line, as in JSON strings written with ``ensure_ascii=False``.
* A line is blank when it holds only whitespace in Python's sense (``str.isspace``: also U+3000, U+00A0, U+2028 …).
* ``.jsonl``: every non-blank line is one record (one document).
* ``.txt``: a document is a run of non-blank lines, joined with ``\\n``; blank lines separate documents.
"""

from __future__ import annotations

from typing import Iterable, Iterator

# ASCII bytes that str.isspace counts as whitespace (bytes.strip removes only the first six)
_ASCII_SPACE = frozenset(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")


def split_lines(data: str) -> list[str]:
    """The ``\\n``-terminated lines of ``data``, terminators kept (the last line may have none)."""
    parts = data.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def is_blank(line: str) -> bool:
    """A line of only whitespace (a record is skipped, a document ends)."""
    return not line.strip()


def is_blank_bytes(line: bytes) -> bool:
    """``is_blank`` of a UTF-8 encoded line, decoding only when its first visible byte is not plain ASCII."""
    s = line.strip()
    if not s:
        return True
    if s[0] < 0x80 and s[0] not in _ASCII_SPACE:
        return False
    first = s[:4].decode("utf-8", "ignore")[:1]
    if first and not first.isspace():
        return False
    return is_blank(line.decode("utf-8", "replace"))


def line_text(line: str) -> str:
    """A line without its terminator (``\\n`` or ``\\r\\n``)."""
    line = line[:-1] if line.endswith("\n") else line
    return line[:-1] if line.endswith("\r") else line


def jsonl_records(lines: Iterable[str]) -> Iterator[str]:
    """The records of JSON-lines input: its non-blank lines, as they are."""
    return (line for line in lines if not is_blank(line))


def text_documents(lines: Iterable[str]) -> Iterator[str]:
    """The documents of plain-text input: runs of non-blank lines, joined with ``\\n``."""
    block: list[str] = []
    for line in lines:
        if not is_blank(line):
            block.append(line_text(line))
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def documents_of(lines: Iterable[str], kind: str) -> Iterator[str]:
    """Records (``jsonl``) or documents (``txt``) of a stream of lines."""
    return jsonl_records(lines) if kind == "jsonl" else text_documents(lines)


def starts_document(blank: bool, previous_blank: bool, kind: str) -> bool:
    """Whether a line (given its and the previous line's blankness) is the first line of a new document."""
    return not blank and (kind == "jsonl" or previous_blank)
