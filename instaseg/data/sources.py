"""Image sources for prediction: a file, a folder, a glob pattern, or a list of those."""

from __future__ import annotations

import glob
from pathlib import Path

from instaseg.data.errors import DataError
from instaseg.data.image_io import IMAGE_SUFFIXES


def list_images(source: str | Path | list[str | Path]) -> list[Path]:
    """Image paths a `--source` names, in a stable order and without duplicates.

    A folder gives its images (by suffix, not recursive, sorted by name); a pattern with
    `*`, `?` or `[` is expanded (recursive with `**`); a file is taken as it is, whatever its
    suffix, so that reading it reports a real decoding error. Nothing found is an error.
    """
    sources = source if isinstance(source, list) else [source]
    found: list[Path] = []
    for item in sources:
        found.extend(_expand(str(item)))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(", ".join(map(str, sources)), "no images found")
    return unique


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if any(c in source for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(source, recursive=True))
        return [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if path.is_dir():
        return sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
    if path.is_file():
        return [path]
    raise DataError(path, "not found (expected an image, a folder of images or a glob pattern)")
