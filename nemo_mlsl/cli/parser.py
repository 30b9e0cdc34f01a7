"""The argument parser's side of "bad input is one line": usage errors print ``mlsl <command>: error: ...`` and
exit 2 like every other refused input, and numbers that only the command line knows are checked as they are read."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors (a missing option, ``--samples abc``, an unknown choice) as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, by name."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1 (nodes, GPUs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_number(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (a number of languages, a model size)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def refuse_unused(a: argparse.Namespace, parser: argparse.ArgumentParser, used: set[str], what: str) -> None:
    """Refuse options given with a value other than their default that ``what`` (e.g. ``recipes show``) does not
    read: a silently ignored ``--data`` hides a mistake."""
    from nemo_mlsl.errors import ConfigError

    for action in parser._actions:
        if not action.option_strings or action.dest in used or action.dest in ("help", "verbose"):
            continue
        if getattr(a, action.dest, action.default) != action.default:
            raise ConfigError(f"{action.option_strings[-1]} is not an option of `mlsl {what}`; it takes "
                              + ", ".join(sorted(f"--{u.replace('_', '-')}" for u in used)))


def non_negative_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 0 (bootstrap replicates: 0 means none)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
