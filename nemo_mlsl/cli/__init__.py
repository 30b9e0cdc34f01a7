"""``mlsl``: the command line. Thin: parse, call the core (or a backend plugin), print.

One module per command group; each adds its subcommands in ``register`` and binds them to their function.
Every ``MLSLError`` and every usage error becomes one line, ``mlsl <command>: error: ...``, and exit code 2; an
``MLSLWarning`` one line ``mlsl <command>: warning: ...``. Ctrl-C and SIGTERM end a command with one line and exit
codes 130 and 143 (``nemo_mlsl.interrupts``); a closed pipe (``mlsl blend ... | head``) ends it quietly, as Unix tools.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Sequence

from nemo_mlsl.cli import atlas, data, fit, imports, laws, recipes, study, train
from nemo_mlsl.cli.parser import Parser, subcommands
from nemo_mlsl.errors import MLSLError, MLSLWarning

GROUPS = (data, train, fit, laws, imports, study, recipes, atlas)
RESUMABLE = {"study", "train"}  # what an interrupted run of them says: --resume continues


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mlsl", description="Multilingual scaling-law studies (family law, ATLAS).")
    p.add_argument("--verbose", action="store_true", help="show every third-party warning and log line (hidden: the known "
                                                          "harmless ones, see nemo_mlsl/quiet.py)")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, so the line names the command
        subcommands(parser)[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from nemo_mlsl.interrupts import interrupts
    from nemo_mlsl.quiet import keep_out_unused_imports, silence_known_noise

    if not args.verbose:
        silence_known_noise()
    keep_out_unused_imports()
    name = f"mlsl {args.command}"
    with warnings.catch_warnings(), interrupts() as received:
        _warnings_as_lines(name)
        try:
            code = args.func(args)
        except MLSLError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            code = 2
        except BrokenPipeError:
            return _closed_pipe()
        except BaseException as err:  # noqa: BLE001 - only an interrupt is handled here; anything else is raised again
            if received.signum is None and not isinstance(err, KeyboardInterrupt):
                raise
            for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C while this is said: still one line
                signal.signal(s, signal.SIG_IGN)
            print(f"{name}: {received.word}" + ("; --resume continues" if args.command in RESUMABLE else ""), file=sys.stderr)
            code = received.exit_code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_pipe()
    return code


def _warnings_as_lines(name: str) -> None:
    """Our own warnings (``MLSLWarning``) as one line each, ``mlsl <command>: warning: ...``; any other as Python shows it."""
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, MLSLWarning):
            print(f"{name}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def _closed_pipe() -> int:
    """The reader of our output went away (``| head``): stop quietly, as Unix tools do (128 + SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere, not to a traceback at exit
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE
