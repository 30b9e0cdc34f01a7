"""Runs every ``bash`` and ``python`` block of README.md and docs/*.md, in order, in a fresh directory, and
checks the output a doc shows (a ``text`` block right after a command block): the docs cannot drift.

Shown output is compared line by line: every shown line must appear in what the command printed, with the same
words, names, layout and numbers, digit for digit: what a command computes from seeded inputs (closed forms,
counts, fits of generated data, published tables) is the same on every machine. Only two things are not compared
digit for digit, and the docs say which: times (a number followed by s, ms, min, h: masked everywhere), and the
numbers of a block marked ``text machine-dependent`` (losses of trained models, which differ in their digits from
machine to machine), whose words and layout are still compared and which the doc introduces as machine-dependent."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(bash|python|text)( machine-dependent)?\n(.*?)```", re.S)
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
TIME = re.compile(NUMBER.pattern + r"(?=\s*(?:s|ms|min|h|seconds|minutes)\b)")
MACHINE_NOTE = "machine-dependent"  # a machine-dependent block's command block is introduced by a sentence saying so
# olmix's public DCLM swarm, which docs/howto.md imports as "$OLMIX_SWARM": next to the repository in shared/ (or
# where MLSL_OLMIX points); a block that names it is skipped on a machine without it
OLMIX_SWARM = Path(os.environ.get("MLSL_OLMIX", ROOT.parent / "shared" / "data" / "olmix" / "dclm_swarm"))


def blocks(doc: Path) -> list[tuple[str, str, str | None, bool]]:
    """(kind, body, shown output or None, whether the shown numbers are compared) for every runnable block."""
    text = doc.read_text()
    found = [(m.group(1), m.group(3), bool(m.group(2)), m.start()) for m in BLOCK.finditer(text)]
    out = []
    for i, (kind, body, _, at) in enumerate(found):
        if kind == "text":
            continue
        nxt = found[i + 1] if i + 1 < len(found) and found[i + 1][0] == "text" else None
        if nxt and nxt[2]:
            head = text[:at].rstrip("\n")
            before = head[head.rfind("\n\n") + 1:]  # the paragraph right before the command block
            assert MACHINE_NOTE in before, f"{doc.name}: the paragraph before `{body.strip().splitlines()[-1]}` must say its output is {MACHINE_NOTE}"
        out.append((kind, body, nxt[1] if nxt else None, not (nxt and nxt[2])))
    return out


def skeleton(line: str) -> str:
    """The line's words and layout: times masked as ``T``, other numbers as ``#``."""
    return re.sub(r"\s+", " ", NUMBER.sub("#", TIME.sub("T", line))).strip()


def numbers(line: str) -> list[str]:
    return NUMBER.findall(TIME.sub("T", line))


def matches(shown: str, got: str, exact: bool = True) -> bool:
    """Same words and layout; with ``exact``, the same numbers as printed (times aside)."""
    return skeleton(shown) == skeleton(got) and (not exact or numbers(shown) == numbers(got))


def assert_shown(doc: str, what: str, shown: str, printed: str, exact: bool = True) -> None:
    got = printed.splitlines()
    for line in filter(str.strip, shown.splitlines()):
        assert any(matches(line, g, exact) for g in got), f"{doc}: `{what}` no longer prints a line like\n  {line}\ngot:\n{printed[-3000:]}"


def test_shown_numbers_are_compared_digit_for_digit():
    shown = "  qaa   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s"
    assert matches(shown, "  qaa   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 98.1 s")  # a time
    for wrong in ("  qaa   +0.094   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s",  # a last digit off
                  "  qaa   +0.093   -0.004   24,237 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s",  # an integer off
                  "  qaa   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+12 tokens, took 12.5 s",  # an exponent off
                  "  qab   +0.093   -0.004   24,236 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s"):  # a name off
        assert not matches(shown, wrong), wrong
    # a machine-dependent block: its numbers vary, its words and layout do not
    assert matches(shown, "  qaa   +0.095   -0.001   24,239 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s", exact=False)
    assert not matches(shown, "  qab   +0.095   -0.001   24,239 tokens; x1.183 (r^0.243) 2.062e+11 tokens, took 12.5 s", exact=False)
    with pytest.raises(AssertionError, match="no longer prints a line like"):
        assert_shown("x.md", "cmd", "loss 3.000", "loss 3.001\n")


def test_a_machine_dependent_block_must_be_introduced_as_such(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("Trained:\n\n```bash\nmlsl train\n```\n\n```text machine-dependent\nloss 3.0\n```\n")
    with pytest.raises(AssertionError, match="must say its output is machine-dependent"):
        blocks(doc)
    doc.write_text("Trained (its numbers are machine-dependent):\n\n```bash\nmlsl train\n```\n\n```text machine-dependent\nloss 3.0\n```\n")
    assert blocks(doc) == [("bash", "mlsl train\n", "loss 3.0\n", False)]


# numpy's and matplotlib's warnings are fixed at their causes: none may reach the terminal of a documented command
NOISE = ("RuntimeWarning", "No artists with labels", "invalid value encountered", "divide by zero encountered")


def assert_quiet(doc: str, what: str, stderr: str) -> None:
    noise = [l for l in stderr.splitlines() if any(n in l for n in NOISE)]
    assert not noise, f"{doc}: `{what}` let a warning through:\n" + "\n".join(noise)


def test_a_documented_command_s_numpy_warning_fails_the_docs():
    with pytest.raises(AssertionError, match="let a warning through"):
        assert_quiet("x.md", "cmd", "x.py:3: RuntimeWarning: invalid value encountered in subtract\n")
    assert_quiet("x.md", "cmd", "mlsl fit: warning: something the user must know\n")


# docs/bridge.md runs in the Megatron-Bridge environment: tests/test_bridge.py checks it there
OTHER_ENVIRONMENT = {"bridge.md"}
DOCS = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if blocks(p) and p.name not in OTHER_ENVIRONMENT]


def test_the_how_to_is_among_the_checked_docs():
    assert ROOT / "docs" / "howto.md" in DOCS
    assert sum(1 for _, _, shown, exact in blocks(ROOT / "docs" / "howto.md") if shown and exact) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_commands_run(doc, tmp_path):
    run_doc(doc, tmp_path)


def run_doc(doc: Path, tmp_path: Path) -> None:
    """Every command block of ``doc`` in ``tmp_path`` (with ``studies/``), shown output compared."""
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg",
           "OLMIX_SWARM": str(OLMIX_SWARM)}
    for kind, body, shown, exact in blocks(doc):
        if "$OLMIX_SWARM" in body and not OLMIX_SWARM.is_dir():
            continue  # the third-party swarm is not on this machine
        printed = ""
        if kind == "bash":
            for line in filter(None, (l.strip() for l in body.splitlines())):
                proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
                assert proc.returncode == 0, f"{doc.name}: `{line}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
                assert_quiet(doc.name, line, proc.stderr)
                printed += proc.stdout
        else:
            proc = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{doc.name}: python block failed:\n{proc.stderr[-3000:]}"
            printed = proc.stdout
        if shown:
            assert_shown(doc.name, body.strip().splitlines()[-1], shown, printed, exact)
