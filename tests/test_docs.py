"""Runs every ``bash`` and ``python`` block of README.md and docs/*.md, in order, in a fresh directory, and
checks the output a doc shows (a ``text`` block right after a command block): the docs cannot drift.

Shown output is compared line by line: every shown line must appear in what the command printed, with the
same words, names and layout, and the same numbers: integers exactly, decimals within 5% or 5 units of their
last shown digit (numbers from training differ from machine to machine in the last digits). Only times
(a number followed by s, ms, min, h) are masked: they truly vary."""

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
TIME = re.compile(NUMBER.pattern + r"(?=\s*(?:s|ms|min|h|seconds|minutes)\b)")
REL_TOL, LAST_DIGITS = 0.05, 5
# olmix's public DCLM swarm, which docs/howto.md imports as "$OLMIX_SWARM": next to the repository in shared/ (or
# where MLSL_OLMIX points); a block that names it is skipped on a machine without it
OLMIX_SWARM = Path(os.environ.get("MLSL_OLMIX", ROOT.parent / "shared" / "data" / "olmix" / "dclm_swarm"))


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
    """The line's words and layout: times masked as ``T``, other numbers as ``#``."""
    return re.sub(r"\s+", " ", NUMBER.sub("#", TIME.sub("T", line))).strip()


def numbers(line: str) -> list[str]:
    return NUMBER.findall(TIME.sub("T", line))


def same_number(shown: str, got: str) -> bool:
    """Integers exactly; decimals within REL_TOL or LAST_DIGITS units of the shown number's last digit."""
    a, b = float(shown.replace(",", "")), float(got.replace(",", ""))
    mantissa, _, exp = shown.replace(",", "").lower().partition("e")
    if "." not in mantissa and not exp:
        return a == b
    unit = 10.0 ** (-len(mantissa.partition(".")[2]) + int(exp or 0))
    return abs(a - b) <= max(REL_TOL * abs(a), LAST_DIGITS * unit)


def matches(shown: str, got: str) -> bool:
    return skeleton(shown) == skeleton(got) and all(map(same_number, numbers(shown), numbers(got)))


def assert_shown(doc: str, what: str, shown: str, printed: str) -> None:
    got = printed.splitlines()
    for line in filter(str.strip, shown.splitlines()):
        assert any(matches(line, g) for g in got), f"{doc}: `{what}` no longer prints a line like\n  {line}\ngot:\n{printed[-3000:]}"


def test_shown_numbers_are_compared_not_masked():
    shown = "  qaa   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s"
    assert matches(shown, "  qaa   +0.095   -0.002   24,236 tokens; x1.185 (r^0.243) 2.070e+11 tokens, took 98.1 s")
    for wrong in ("  qaa   +0.193   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s",  # a decimal off
                  "  qaa   +0.093   -0.004   24,237 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s",  # an integer off
                  "  qaa   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+12 tokens, took 12.5 s",  # an exponent off
                  "  qab   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s"):  # a name off
        assert not matches(shown, wrong), wrong
    with pytest.raises(AssertionError, match="no longer prints a line like"):
        assert_shown("x.md", "cmd", "loss 3.000", "loss 3.500\n")


# docs/bridge.md runs in the Megatron-Bridge environment: tests/test_bridge.py checks it there
OTHER_ENVIRONMENT = {"bridge.md"}
DOCS = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if blocks(p) and p.name not in OTHER_ENVIRONMENT]


def test_the_how_to_is_among_the_checked_docs():
    assert ROOT / "docs" / "howto.md" in DOCS
    assert sum(1 for _, _, shown in blocks(ROOT / "docs" / "howto.md") if shown) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_commands_run(doc, tmp_path):
    run_doc(doc, tmp_path)


def run_doc(doc: Path, tmp_path: Path) -> None:
    """Every command block of ``doc`` in ``tmp_path`` (with ``studies/``), shown output compared."""
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg",
           "OLMIX_SWARM": str(OLMIX_SWARM)}
    for kind, body, shown in blocks(doc):
        if "$OLMIX_SWARM" in body and not OLMIX_SWARM.is_dir():
            continue  # the third-party swarm is not on this machine
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
