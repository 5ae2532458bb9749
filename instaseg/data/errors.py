"""Errors and warnings for user data. Every message names the file and the id or field."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data: a file, an annotation, a config.

    The message always starts with the file (and the image or annotation id where there is
    one), so the user can go straight to the culprit.
    """

    def __init__(self, source: str, message: str, *, item: str | None = None):
        self.source = str(source)
        self.item = item
        where = f"{self.source}" + (f", {item}" if item else "")
        super().__init__(f"{where}: {message}")


class DataWarning(UserWarning):
    """Something in the user's data was repaired or skipped (clipped box, zero-area instance)."""


def where(source: str, item: str | None = None) -> str:
    """The prefix DataError uses, for messages of warnings."""
    return f"{source}" + (f", {item}" if item else "")
