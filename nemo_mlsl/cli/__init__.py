"""``mlsl``: the command line. Thin: parse, call the core (or a backend plugin), print.

One module per command group; each adds its subcommands in ``register`` and binds them to their function.
Every ``MLSLError`` and every usage error becomes one line, ``mlsl <command>: error: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from nemo_mlsl.cli import atlas, data, fit, imports, laws, recipes, study, train
from nemo_mlsl.cli.parser import Parser, subcommands
from nemo_mlsl.errors import MLSLError

GROUPS = (data, train, fit, laws, imports, study, recipes, atlas)


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
    if not args.verbose:
        from nemo_mlsl.quiet import silence_known_noise

        silence_known_noise()
    try:
        return args.func(args)
    except MLSLError as err:
        print(f"mlsl {args.command}: error: {err}", file=sys.stderr)
        return 2
