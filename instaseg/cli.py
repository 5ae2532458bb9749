"""The `instaseg` command line. The only module that reads sys.argv or config files."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instaseg", description="Pure-PyTorch instance segmentation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(commands)
    _add_eval_command(commands)
    return parser


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    """`instaseg data {convert,stats,show,split,synth}`."""
    # filled in by the data work


def _add_eval_command(commands: argparse._SubParsersAction) -> None:
    """`instaseg eval`."""
    # filled in by the evaluation work


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
