"""One definition of lines and documents (nemo_mlsl.data.lines), shared by the chunk planner (bytes) and the
readers (text): they must agree on every input, Unicode line and paragraph separators included."""

import gzip
import json
import random
import sys

import pytest

from nemo_mlsl.data.documents import chunk_plan, raw_items, read_range
from nemo_mlsl.data.lines import is_blank, is_blank_bytes, split_lines, text_documents
from nemo_mlsl.errors import DataError


def _code_points():
    """Every BMP code point but the surrogates, and a spread of the astral planes."""
    return [chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000] + [chr(c) for c in range(0x10000, sys.maxunicode, 0x301)]


def test_blankness_of_bytes_is_blankness_of_the_decoded_line():
    for ch in _code_points():
        for line in (ch + "\n", " " + ch + "\r\n", "\u3000" + ch, ch + "x\n", ch * 2):
            assert is_blank_bytes(line.encode("utf-8")) == is_blank(line), repr(line)
    assert is_blank("\u3000\n") and is_blank("\u2028\u2029\u0085\u00a0\t\r\n") and not is_blank("\u3000x\n")


def test_lines_end_at_newline_only():
    data = "a\u2028b\u2029c\u0085d\x0be\x0cf\rg\r\nh\n\ni"
    assert split_lines(data) == ["a\u2028b\u2029c\u0085d\x0be\x0cf\rg\r\n", "h\n", "\n", "i"]
    assert "".join(split_lines(data)) == data and split_lines("x\n") == ["x\n"] and split_lines("") == []


def test_text_documents_are_runs_of_non_blank_lines():
    lines = split_lines("\u3000\n\u3000one\u2028still one\r\n  two lines\n\u3000\u3000\nthree\n \u0085 \nfour")
    assert list(text_documents(lines)) == ["\u3000one\u2028still one\n  two lines", "three", "four"]


def _random_file(rng: random.Random, kind: str) -> str:
    pieces = ["\n", "\u3000\n", " \t\u3000\n", "\u2028\n", "\u0085\n", "\r\n", "\u00a0\n", "\x1c\n"]
    body = []
    for i in range(rng.randint(0, 40)):
        text = rng.choice(["wort", "\u3000字", "a\u2028b", "c\u2029d", "e\u0085f", "g\rh", "Ω"]) + str(i)
        body.append(json.dumps({"text": text}, ensure_ascii=False) + "\n" if kind == "jsonl" else text + "\n")
        body += rng.choices(pieces, k=rng.randint(0, 2))
    return "".join(body)


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_planner_and_readers_agree_on_every_chunk(tmp_path, kind):
    """The planned count of each chunk is what the worker reads from its byte range, and the documents are those
    the central reader (used for gzip input and the tokenizer sample) gives, in the same order."""
    rng = random.Random(5)
    for trial in range(60):
        path = tmp_path / f"x{trial}.{kind}"
        path.write_bytes(_random_file(rng, kind).encode("utf-8"))
        central = [d for chunk in raw_items(path) for d in chunk]
        for size in (1, 2, 3, 256):
            planned = []
            for offset, length, n in chunk_plan(path, chunk_docs=size):
                docs = read_range(path, offset, length)
                assert len(docs) == n and 0 < n <= size
                planned += docs
            assert planned == central, (trial, size)
        gz = tmp_path / f"x{trial}.{kind}.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        assert [d for chunk in raw_items(gz) for d in chunk] == central


def test_text_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "de.txt"
    path.write_bytes("gut\n\nschön".encode("latin-1"))
    ((offset, length, _),) = chunk_plan(path)
    with pytest.raises(DataError, match=r"de.txt: not UTF-8 text at byte 8 .*; convert the file to UTF-8"):
        read_range(path, offset, length)
    with pytest.raises(DataError, match=r"de.txt: not UTF-8 text .*; convert the file to UTF-8"):
        list(raw_items(path))
