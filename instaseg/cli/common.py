"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import difflib


def choice(valid: tuple[str, ...]):
    """argparse type accepting one of `valid`, suggesting the closest on a typo."""

    def parse(value: str) -> str:
        if value in valid:
            return value
        close = difflib.get_close_matches(value, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise argparse.ArgumentTypeError(f"'{value}' is not one of {', '.join(valid)}{hint}")

    return parse
