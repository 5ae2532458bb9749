"""Helpers the format readers share: strict JSON/YAML loading, segmentation checks, warning
aggregation, class tables and image discovery.

Every error is a DataError whose message starts with the file (and the image, annotation or
line where there is one); repairs are reported by `Issues` as one DataWarning per kind of
repair and file, with the first few culprits named, so a large dataset does not flood the log.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pycocotools.mask as coco_mask
import yaml

from instaseg.data.errors import DataError, DataWarning, where
from instaseg.data.image_io import IMAGE_SUFFIXES, read_image_size
from instaseg.ops.masks import polygon_parts, validate_rle

_EXAMPLES_SHOWN = 5
_MAX_LINK_FILE_BYTES = 4096


class Issues:
    """Repairs found while reading one file, reported once per kind with example culprits."""

    def __init__(self, source: str | Path):
        self.source = str(source)
        self._cases: dict[str, list[str]] = {}

    def add(self, kind: str, case: str) -> None:
        """Record one `case` (e.g. "image id 3, annotation id 7") of a repair `kind`."""
        self._cases.setdefault(kind, []).append(case)

    def warn(self, stacklevel: int = 3) -> None:
        """Emit one DataWarning per kind, naming the file and the first few cases."""
        for kind, cases in self._cases.items():
            shown = "; ".join(cases[:_EXAMPLES_SHOWN])
            more = (
                f"; and {len(cases) - _EXAMPLES_SHOWN} more" if len(cases) > _EXAMPLES_SHOWN else ""
            )
            message = f"{where(self.source)}: {kind} ({len(cases)}x): {shown}{more}"
            warnings.warn(message, DataWarning, stacklevel=stacklevel)
        self._cases.clear()


def load_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None


def load_yaml(path: Path) -> Any:
    """Parse a YAML file (safe loader); a syntax error names the file, line and column."""
    text = _read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DataError(path, f"invalid YAML{position}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise DataError(path, f"invalid YAML: {e}") from None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"is not UTF-8 text ({e.reason} at byte {e.start})") from None


def is_int(value: Any) -> bool:
    """True for a JSON/YAML integer (bool excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite int or float (bool excluded)."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def segmentation_area(segmentation: Any, height: int, width: int) -> int:
    """Validate a COCO segmentation for an image of (height, width); return its pixel count.

    Polygons are absolute pixel coordinates (parts unioned); RLE may be compressed (str counts)
    or uncompressed (list counts). Raises ValueError describing the defect.
    """
    if isinstance(segmentation, dict):
        try:
            validate_rle(segmentation, height, width)
        except TypeError as e:
            raise ValueError(f"malformed RLE ({e})") from None
        counts = segmentation["counts"]
        runs = counts if isinstance(counts, list) else rle_string_runs(counts)
        if sum(runs) != height * width:
            raise ValueError(
                f"RLE counts cover {sum(runs)} pixels, expected H*W = {height * width}"
            )
        return int(sum(runs[1::2]))
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(polygon_parts(segmentation), height, width))
        return int(coco_mask.area(rle))
    kind = type(segmentation).__name__
    raise ValueError(f"must be a list of polygons or an RLE dict, got {kind}")


def rle_string_runs(counts: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths (zeros first), validating it.

    Each count is stored in 5-bit groups offset by 48 ('0'), bit 0x20 meaning "more groups
    follow" and bit 0x10 of the last group the sign; from the third count on, the value is a
    difference to the count two places back.
    """
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("compressed RLE counts contain non-ASCII characters") from None
    runs: list[int] = []
    value, shift = 0, 0
    for byte in counts:
        group = byte - 48
        if not 0 <= group < 64:
            raise ValueError(f"compressed RLE counts contain an invalid character {chr(byte)!r}")
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(
                f"compressed RLE counts decode to a negative run at position {len(runs)}"
            )
        runs.append(value)
        value, shift = 0, 0
    if shift:
        raise ValueError("compressed RLE counts end in the middle of a number")
    return runs


def check_keys(source: str | Path, keys: Iterable[Any], allowed: Sequence[str], where: str) -> None:
    """DataError for the first key not in `allowed`, suggesting the closest valid one."""
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(
                source, f"unknown key {key!r} in {where}{hint} (valid: {', '.join(allowed)})"
            )


def class_table(names: list[str] | dict[int, str], source: str | Path) -> dict[int, str]:
    """{class id: name} from a names list (ids 0..K-1) or dict (ids as given, gaps allowed)."""
    if isinstance(names, dict):
        table = {}
        for key, name in names.items():
            class_id = (
                int(key) if isinstance(key, str) and key.strip().lstrip("-").isdigit() else key
            )
            if not is_int(class_id):
                raise DataError(source, f"names: class id {key!r} is not an integer")
            table[class_id] = name
    elif isinstance(names, (list, tuple)):
        table = dict(enumerate(names))
    else:
        raise DataError(
            source, f"names must be a list or a dict of id: name, got {type(names).__name__}"
        )
    if not table:
        raise DataError(source, "names is empty; at least one class is needed")
    for class_id, name in table.items():
        if not isinstance(name, str) or not name:
            raise DataError(source, f"names: class {class_id} has no name (got {name!r})")
    duplicates = sorted({n for n in table.values() if list(table.values()).count(n) > 1})
    if duplicates:
        raise DataError(source, f"names: duplicate class names {duplicates}")
    return table


def contiguous_labels(category_ids: Iterable[int]) -> dict[int, int]:
    """{source category id: 0-based contiguous label}, labels assigned in sorted id order."""
    return {category_id: label for label, category_id in enumerate(sorted(category_ids))}


def check_names(given: list[str] | None, found: list[str], source: str | Path) -> None:
    """When the caller passed names for a format that stores its own, they must agree."""
    if given is not None and list(given) != list(found):
        raise DataError(
            source, f"names {list(given)} do not match the class names in the file {found}"
        )


def resolve_dir(path: Path) -> Path:
    """`path` with git 'symlink files' followed: where a checkout cannot make symlinks, git
    writes a small text file holding the link target instead; a component that is such a file
    pointing at a folder is replaced by that folder."""
    path = Path(path)
    if path.is_dir():
        return path
    resolved = Path(path.anchor)
    for part in path.parts[1:] if path.anchor else path.parts:
        candidate = resolved / part
        if candidate.is_file():
            candidate = _text_link_target(candidate) or candidate
        resolved = candidate
    return resolved


def _text_link_target(path: Path) -> Path | None:
    if path.stat().st_size > _MAX_LINK_FILE_BYTES:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (UnicodeDecodeError, OSError):
        return None
    if not text or "\n" in text or "\0" in text:
        return None
    target = path.parent / text
    return target if target.is_dir() else None


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, hidden files skipped), sorted by relative path."""
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def image_size_or_skip(path: Path, skip_bad: bool, issues: Issues) -> tuple[int, int] | None:
    """(height, width) of an image from its header; None (recorded in `issues`) when it is
    missing or unreadable and skip_bad is set, DataError otherwise."""
    try:
        return read_image_size(path)
    except DataError as error:
        if not skip_bad:
            raise
        issues.add("unreadable image skipped", str(error))
        return None


def require_folder(path: Path, what: str, source: str | Path | None = None) -> Path:
    """`path` (git symlink files followed) when it is a folder; DataError naming it otherwise."""
    folder = resolve_dir(path)
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "not found"
        raise DataError(source or path, f"{what} folder {path} {state}")
    return folder
