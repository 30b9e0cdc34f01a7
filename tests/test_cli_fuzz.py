"""Every subcommand against generated bad input: missing, empty, corrupt and wrongly typed files; zero, negative and
non-numeric numbers; unknown names; missing required options. Each must exit 2 with one line
`mlsl <command>: error: ...` on stderr and no traceback.

The commands and their options are read from the parser itself, so a new command or option is fuzzed without
touching this file: each option gets the bad values of its kind (number, choice, path, name), applied to a valid
invocation of its command (BASE) where there is one, so that the bad value is what the command meets. Cases run
in process (``nemo_mlsl.cli.main``); a few run as real subprocesses (the console script's exit status and stderr).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nemo_mlsl.cli import build_parser, main
from nemo_mlsl.cli.parser import subcommands

ROOT = Path(__file__).resolve().parents[1]
FAMS = "amber=0.4,cobalt=0.3,jade=0.3"
# Numbers for which 0 is a meaningful value (a seed, "no bootstrap", no cross-family transfer in the corpus).
ZERO_OK = {"seed", "bootstrap", "transfer", "richness_spread", "size_spread"}
# Numbers that may be negative too (a log2 ratio whose sign says which end is larger).
SIGNED = {"richness_spread", "size_spread"}
# Options whose string value names something new (an output, an id), so any name is valid.
FREE = {"out", "plot", "run_id", "tb_root", "report_dir", "log_dir", "store", "tag", "text_field", "eod_token", "overrides", "name"}
# Options that name where a command writes: a path under a regular file cannot be written, and must be refused by name.
OUTPUTS = {"out", "plot", "tb_root", "report_dir", "log_dir", "store"}


def options(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synth_data):
    """Valid inputs for every command, and the broken files derived from them."""
    from test_fitting import planted

    root = tmp_path_factory.mktemp("fuzz")
    recs, _, names = planted(families=3)
    rename = dict(zip(names, ["amber", "cobalt", "jade"]))
    store = root / "results.jsonl"
    store.write_text("".join(json.dumps({**r, "ratios": {rename[k]: v for k, v in r["ratios"].items()},
                                         "family_loss": {rename[k]: v for k, v in r["family_loss"].items()}}) + "\n"
                             for r in recs))
    assert main(["fit", "--runs", str(store), "--out", str(root / "fit"), "--bootstrap", "2"]) == 0
    study = yaml.safe_load((ROOT / "studies" / "default.yaml").read_text())
    study["corpus"] = {"prepared": str(synth_data)}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    (root / "runs" / "pretrain").mkdir(parents=True)
    (root / "runs" / "finetune").mkdir(parents=True)
    for name, (a, b) in (("pretrain", (1.6, 4.0)), ("finetune", (2.0, 0.6))):
        (root / "runs" / name / "metrics.jsonl").write_text("".join(
            json.dumps({"tokens": t, "family_loss": {"amber": a + b * (t / 1e5) ** -0.3}, "language_loss": {"qaa": a + b * (t / 1e5) ** -0.3}})
            + "\n" for t in (1e5, 3e5, 1e6, 3e6, 1e7)))
    raw = synth_data.parent / "raw"
    (root / "shares.csv").write_text("index,amber,cobalt\nx1,0.5,0.5\nx2,0.2,0.8\n")
    (root / "losses.csv").write_text("index,amber,cobalt\nx1,3.1,3.2\nx2,3.3,3.0\n")
    (root / "transfer").mkdir()
    assert main(["transfer", "design", "--languages", "qaa,qab", "--out", str(root / "transfer")]) == 0
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty").write_text("")
    (bad / "corrupt").write_bytes(b"\x00\xff{[: not, valid\n\x89PNG")
    (bad / "list").write_text("[1, 2]\n")
    (bad / "dir").mkdir()
    for kind in ("empty", "corrupt", "list"):  # a data directory whose manifest is broken
        (bad / f"data_{kind}").mkdir()
        (bad / f"data_{kind}" / "manifest.json").write_bytes((bad / kind).read_bytes())
    return {"root": root, "data": synth_data, "raw": raw, "store": store, "fit": root / "fit" / "fit.json",
            "study": root / "study.yaml", "runs": root / "runs", "transfer": root / "transfer", "bad": bad}


def base(command: str, i: dict, out: Path) -> list[str] | None:
    """A valid, cheap invocation of ``command`` (None: none known; the command is fuzzed from its parser alone)."""
    return {
        "synth": ["--out", out, "--families", "2", "--docs", "20"],
        "prepare": ["--input", i["raw"], "--families", i["raw"] / "families.yaml", "--out", out, "--vocab-size", "300",
                    "--workers", "1", "--no-progress"],
        "blend": ["--data", i["data"], "--samples", "8", "--seq-length", "16"],
        "train": ["--recipe", "cpu_15k", "--data", i["data"], "--ratios", FAMS, "--out", out, "--max-steps", "1", "--law", "none",
                  "--no-progress"],
        "fit": ["--runs", i["store"], "--out", out, "--bootstrap", "2"],
        "report": ["--runs", i["store"], "--out", out, "--bootstrap", "2"],
        "optimize": ["--fit", i["fit"], "--N", "1e6", "--D", "1e8"],
        "recipes": ["show", "cpu_15k"],
        "transfer": ["score", "--runs", i["transfer"]],
        "plan-languages": ["--from", "2", "--to", "4"],
        "crossover": ["--runs", i["runs"], "--N", "1e6"],
        "study": ["--config", i["study"], "--out", out, "--dry-run", "--no-progress"],
    }.get(command)


def output_bases(command: str, i: dict, out: Path) -> list[list]:
    """Valid invocations that write through their output options: the command's BASE, or, for commands whose writing
    actions it does not reach, those actions."""
    return {
        "import-runs": [["csv", "--shares", i["root"] / "shares.csv", "--losses", i["root"] / "losses.csv", "--N", "1e6",
                         "--D", "1e8", "--out", out / "runs.jsonl"]],
        "compare": [["--runs", i["store"], "--laws", "family_power", "--folds", "2", "--out", out]],
        "transfer": [["design", "--languages", "qaa,qab", "--out", out], ["show", "--published", "--out", out]],
        "recipes": [["build", "cpu_15k", "--data", i["data"], "--ratios", FAMS, "--dry-run"]],
    }.get(command) or [base(command, i, out) or []]


def _flag(action: argparse.Action) -> str | None:
    return next((s for s in action.option_strings if s.startswith("--")), None)


def _set(args: list, flag: str, value) -> list:
    """``args`` with ``flag``'s value replaced (or the flag appended)."""
    if flag in args:
        k = args.index(flag)
        return [*args[:k + 1], value, *args[k + 2:]]
    return [*args, flag, value]


def _drop(args: list, flag: str) -> list:
    k = args.index(flag)
    return [*args[:k], *args[k + 2:]]


def bad_values(action: argparse.Action, current, i: dict) -> list[tuple[str, object]]:
    """(label, value) pairs an option must refuse."""
    bad = i["bad"]
    if action.choices is not None:
        return [("unknown choice", "nosuch")]
    if action.type in (int, float):
        out = [("non-numeric", "abc")] + ([] if action.dest in SIGNED else [("negative", "-1")])
        if action.type is float:
            out.append(("nan", "nan"))
        if action.dest not in ZERO_OK:
            out.append(("zero", "0"))
        return out
    if action.dest in FREE or action.nargs == 0:
        return []
    if current is not None and Path(current).exists():  # a path the command reads
        if Path(current).is_dir():
            out = [("missing dir", bad / "nosuch"), ("file for a dir", bad / "empty")]
            if (Path(current) / "manifest.json").exists():
                out += [(f"{k} manifest", bad / f"data_{k}") for k in ("empty", "corrupt", "list")]
            return out
        return [("missing file", bad / "nosuch.txt"), ("empty file", bad / "empty"), ("corrupt file", bad / "corrupt"),
                ("wrongly typed file", bad / "list"), ("dir for a file", bad / "dir")]
    return [("unknown name", "nosuch"), ("garbage", "=,=:")]


def cases(i: dict, tmp: Path) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for command, sub in subcommands(build_parser()).items():
        args = base(command, i, tmp / command / "out") or []
        for action in options(sub):
            flag = _flag(action)
            if flag is None:  # a positional: an unknown choice in its place
                if action.choices and args and args[0] in action.choices:
                    out.append((f"{command} {action.dest}: unknown choice", [command, "nosuch", *args[1:]]))
                continue
            if action.nargs == 0:  # a switch: nothing to get wrong
                continue
            current = args[args.index(flag) + 1] if flag in args else None
            if action.required and flag in args:
                out.append((f"{command} {flag}: missing", [command, *_drop(args, flag)]))
            for label, value in bad_values(action, current, i):
                out.append((f"{command} {flag}: {label}", [command, *_set(args, flag, value)]))
            if action.dest in OUTPUTS:
                for writing in output_bases(command, i, tmp / command / "out"):
                    where = f" ({writing[0]})" if command in ("transfer", "recipes") else ""
                    out.append((f"{command} {flag}: output under a file{where}",
                                [command, *_set(writing, flag, i["bad"] / "empty" / "sub" / "x.out")]))
        out.append((f"{command}: unknown option", [command, *args, "--nosuch"]))
    return out


def command_of(name: str) -> str:
    return name.split()[0].rstrip(":")


def run(argv: list, capsys) -> tuple[int | str | None, str]:
    """Exit status and stderr of ``mlsl ARGV`` in this process; an exception that escapes ``main`` is what the
    console script would print as a traceback."""
    import traceback

    try:
        rc = main([str(a) for a in argv])
        tb = ""
    except SystemExit as exit_:
        rc, tb = exit_.code, ""
    except Exception:  # noqa: BLE001 - the case's failure, reported with the others
        rc, tb = "exception", traceback.format_exc()
    return rc, capsys.readouterr().err + tb


def assert_named_error(name: str, argv: list, rc, err: str) -> None:
    command = command_of(name)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, f"{name}: a traceback\n{err[-3000:]}"
    assert rc == 2, f"{name}: exit {rc}, want 2 ({' '.join(map(str, argv))})\n{err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith(f"mlsl {command}: error: "), f"{name}: stderr is not one error line\n{err[-2000:]}"


def test_the_fuzz_reaches_every_command(inputs, tmp_path):
    commands = set(subcommands(build_parser()))
    all_cases = cases(inputs, tmp_path)
    assert {command_of(n) for n, _ in all_cases} == commands
    assert len(all_cases) >= 200, len(all_cases)


def test_every_command_that_writes_is_fuzzed_with_an_output_under_a_file(inputs, tmp_path):
    writers = {c for c, sub in subcommands(build_parser()).items() if any(a.dest in OUTPUTS for a in options(sub))}
    covered = {command_of(n) for n, _ in cases(inputs, tmp_path) if "output under a file" in n}
    assert covered == writers and {"fit", "import-runs", "plan-languages", "train", "study", "transfer"} <= writers


def test_an_output_under_a_regular_file_is_refused_by_name(inputs, tmp_path, capsys, monkeypatch):
    """`mlsl fit --out FILE/fit` ended in NotADirectoryError, `import-runs --out FILE/runs.jsonl` in FileExistsError;
    `train --report-dir FILE/x` trained and exited 0 (the refit after the run never fails it)."""
    monkeypatch.chdir(tmp_path)
    failures = []
    chosen = [(n, a) for n, a in cases(inputs, tmp_path) if "output under a file" in n]
    for name, argv in chosen:
        rc, err = run(argv, capsys)
        try:
            assert_named_error(name, argv, rc, err)
            assert "is a file, not a directory" in err, f"{name}: {err.strip()}"
        except AssertionError as e:
            failures.append(str(e).splitlines()[0] + " | " + (err.strip().splitlines() or [""])[-1][:300])
    assert len(chosen) >= 15 and not failures, f"{len(failures)} of {len(chosen)}:\n" + "\n".join(failures)


@pytest.mark.slow  # ~250 commands in process: about a minute on 2 cores, most of it the first imports of torch and megatron
def test_every_command_refuses_bad_input_by_name(inputs, tmp_path, capsys, monkeypatch, record_property):
    import time

    monkeypatch.chdir(tmp_path)  # whatever a case writes by a relative name lands here, never in the checkout

    failures, took = [], []
    all_cases = cases(inputs, tmp_path)
    for name, argv in all_cases:
        start = time.perf_counter()
        rc, err = run(argv, capsys)
        took.append((time.perf_counter() - start, name))
        try:
            assert_named_error(name, argv, rc, err)
        except AssertionError as e:
            failures.append(str(e).splitlines()[0] + " | " + (err.strip().splitlines() or [""])[-1][:300])
    with capsys.disabled():
        print(f"\n{len(all_cases)} cases; slowest: " + ", ".join(f"{n} {t:.1f}s" for t, n in sorted(took)[-5:]))
    record_property("figure: bad-input cases, failures", f"{len(all_cases)}, {len(failures)}")
    assert not failures, f"{len(failures)} of {len(all_cases)} cases:\n" + "\n".join(failures)


@pytest.mark.parametrize("argv,command", [
    (["train", "--recipe", "cpu_15k"], "train"),                       # argparse: required options missing
    (["blend", "--data", "nowhere", "--samples", "x"], "blend"),       # argparse: not a number
    (["optimize", "--fit", "nowhere.json"], "optimize"),               # ours: a missing file
    (["nosuch"], None),                                                # argparse: no such command
])
def test_the_console_script_prints_one_error_line(argv, command):
    proc = subprocess.run([sys.executable, "-m", "nemo_mlsl.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlsl {command}: error: " if command else "mlsl: error: "), proc.stderr
