"""Runs every ``bash`` and ``python`` block of docs/*.md, in order, in a fresh directory: the docs cannot drift."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)
pytestmark = pytest.mark.slow


def blocks(doc: Path):
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(doc.read_text())]


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_doc_commands_run(doc, tmp_path):
    found = blocks(doc)
    if not found:
        return
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    for kind, body in found:
        if kind == "bash":
            for line in filter(None, (l.strip() for l in body.splitlines())):
                proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
                assert proc.returncode == 0, f"{doc.name}: `{line}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        else:
            proc = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{doc.name}: python block failed:\n{proc.stderr[-3000:]}"
