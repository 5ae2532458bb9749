"""The `instaseg` command line: the only modules that read sys.argv or config files.

One module per command group: `data` (and `demo`), `evaluate`, `models` (train, val, predict,
models, convert), `bench`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from instaseg.cli.bench import add_bench_command
from instaseg.cli.data import add_data_commands, add_demo_command
from instaseg.cli.evaluate import add_eval_command
from instaseg.cli.models import add_model_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instaseg", description="Pure-PyTorch instance segmentation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(commands)
    add_model_commands(commands)
    add_eval_command(commands)
    add_bench_command(commands)
    add_demo_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.handler(args) or 0)
    except (ValueError, TypeError, OSError) as error:  # the user's input (DataError too)
        if args.verbose:
            raise
        print(f"instaseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
