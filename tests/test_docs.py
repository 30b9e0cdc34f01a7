"""Runs every ``bash`` and ``python`` block of README.md and docs/*.md, in order, in a fresh directory, and
checks the output a doc shows (a ``text`` block right after a command block): the docs cannot drift.

Shown output is compared line by line after replacing numbers by a placeholder: every shown line must
appear in what the command printed, with the same words, names and layout (numbers from training
differ from machine to machine in the last digits; the words and names may not)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(bash|python|text)\n(.*?)```", re.S)
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
pytestmark = pytest.mark.slow


def blocks(doc: Path) -> list[tuple[str, str, str | None]]:
    """(kind, body, shown output or None) for every runnable block."""
    found = [(m.group(1), m.group(2)) for m in BLOCK.finditer(doc.read_text())]
    out = []
    for i, (kind, body) in enumerate(found):
        if kind == "text":
            continue
        shown = found[i + 1][1] if i + 1 < len(found) and found[i + 1][0] == "text" else None
        out.append((kind, body, shown))
    return out


def skeleton(line: str) -> str:
    return re.sub(r"\s+", " ", NUMBER.sub("#", line)).strip()


def assert_shown(doc: str, what: str, shown: str, printed: str) -> None:
    got = {skeleton(l) for l in printed.splitlines()}
    for line in filter(str.strip, shown.splitlines()):
        assert skeleton(line) in got, f"{doc}: `{what}` no longer prints a line like\n  {line}\ngot:\n{printed[-3000:]}"


# docs/bridge.md runs in the Megatron-Bridge environment: tests/test_bridge.py checks it there
OTHER_ENVIRONMENT = {"bridge.md"}
DOCS = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if blocks(p) and p.name not in OTHER_ENVIRONMENT]


def test_the_how_to_is_among_the_checked_docs():
    assert ROOT / "docs" / "howto.md" in DOCS
    assert sum(1 for _, _, shown in blocks(ROOT / "docs" / "howto.md") if shown) >= 3


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_commands_run(doc, tmp_path):
    run_doc(doc, tmp_path)


def run_doc(doc: Path, tmp_path: Path) -> None:
    """Every command block of ``doc`` in ``tmp_path`` (with ``studies/``), shown output compared."""
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    for kind, body, shown in blocks(doc):
        printed = ""
        if kind == "bash":
            for line in filter(None, (l.strip() for l in body.splitlines())):
                proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
                assert proc.returncode == 0, f"{doc.name}: `{line}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
                printed += proc.stdout
        else:
            proc = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{doc.name}: python block failed:\n{proc.stderr[-3000:]}"
            printed = proc.stdout
        if shown:
            assert_shown(doc.name, body.strip().splitlines()[-1], shown, printed)
