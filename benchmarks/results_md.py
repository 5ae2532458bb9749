"""benchmarks/RESULTS.md, one "## title" section per benchmark: read one, or replace it and
leave the other sections as they are."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _pattern(title: str) -> re.Pattern:
    """A section: its title line up to the next "## " line or the end of the file."""
    return re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)


def read_section(title: str, path: Path = RESULTS) -> str | None:
    """The text of section `title` ("## ..."), or None when the file or section is absent."""
    if not path.exists():
        return None
    found = _pattern(title).search(path.read_text())
    return found.group(0) if found else None


def write_section(title: str, text: str, path: Path = RESULTS) -> None:
    """Replace section `title` with `text` (which starts with that title), or append it."""
    content = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = _pattern(title)
    if pattern.search(content):
        content = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", content)
    else:
        content = content.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(content.rstrip("\n") + "\n")
