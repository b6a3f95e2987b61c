"""``python -m training``: the command line of the training side.

Each sub-command lives in its own module under ``training.commands`` so adding one (train,
benchmark, export) does not touch the others.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from training.commands import benchmark, diagnose, export, features, prepare, train, truth

COMMANDS = {
    "prepare": prepare,
    "train": train,
    "benchmark": benchmark,
    "export": export,
    "features": features,
    "truth": truth,
    "diagnose": diagnose,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Prepare data, train and evaluate tag-profile models, export them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(
            f"error: only `train` runs under torchrun; run `python -m training {args.command}` "
            "as one process",
            file=sys.stderr,
        )
        return 2
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # bad input: say what and where (DataFormatError reads "file:line: message")
        print(f"error: {err}", file=sys.stderr)
        return 2
