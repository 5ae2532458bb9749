"""YOLO segmentation labels (Ultralytics layout).

Layout: an images folder and a parallel labels folder; `labels/<rel>.txt` belongs to
`images/<rel>.<ext>`. Each label line is one object, `class x1 y1 x2 y2 ...`, a polygon whose
vertices are normalised to [0, 1] by the image width (x) and height (y), in the continuous
pixel frame (x * W is a pixel-edge coordinate). Image sizes come from the file headers, after
EXIF orientation.

Classes: `names` is a list (class id = position) or a dict {class id: name}; ids may have gaps
(COCO128 uses COCO category ids 1..90). Labels are contiguous in sorted id order and
`dataset.category_ids[label]` is the YOLO class id.

An image without a label file is a negative (YOLO's convention) unless missing_labels="skip",
which leaves it out as unlabelled; an Ultralytics yaml may say the same with
`skip_if_label_file_missing: true`. An empty label file is always a negative.

Validation (see `instaseg.data.formats` for the shared policy): DataError naming the label file
and line for a class id not in names, a coordinate that is not a number, an odd coordinate
count, fewer than 3 points, or coordinates far outside [0, 1] (beyond -0.5 or 1.5: pixel
coordinates, most likely). Coordinates up to 0.01 outside [0, 1] are clipped silently (rounding
in exporters); further out they are clipped with a DataWarning. A polygon with no pixels is
dropped with a DataWarning; a label file without an image is reported and ignored; an
unreadable image is an error, or skipped with a warning under skip_bad.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.formats._common import (
    Issues,
    check_keys,
    check_names,
    class_table,
    contiguous_labels,
    image_size_or_skip,
    list_images,
    load_yaml,
    require_folder,
    segmentation_area,
)

MISSING_LABELS = ("negative", "skip")
# keys of an Ultralytics data yaml that we read; `download` and `roboflow` are accepted and
# ignored (nothing is ever downloaded)
ULTRALYTICS_KEYS = (
    "path",
    "train",
    "val",
    "test",
    "names",
    "nc",
    "format",
    "download",
    "roboflow",
    "skip_if_label_file_missing",
)
_SILENT_CLIP = 0.01
_MAX_OUTSIDE = 0.5


def read_yolo(
    source: str | Path,
    split: str | None = "train",
    *,
    names: list[str] | dict[int, str] | None = None,
    skip_bad: bool = False,
    missing_labels: str | None = None,
) -> InstanceDataset:
    """Read one split of a YOLO-seg dataset.

    source: an Ultralytics data yaml (`path`, `train`/`val`/`test` image folders relative to
        `path`, which is relative to the yaml; `names`), or a folder holding `images/<split>`
        and `labels/<split>` (or `images/` and `labels/` when split is None; `names` required).
    missing_labels: "negative" or "skip" for images without a label file; default: the yaml's
        `skip_if_label_file_missing`, else "negative".
    """
    source = Path(source)
    if source.suffix.lower() in (".yaml", ".yml"):
        return _read_from_yaml(source, split, names, skip_bad, missing_labels)
    if not source.is_dir():
        raise DataError(source, "not found: pass an Ultralytics data yaml or a dataset folder")
    if names is None:
        raise DataError(
            source, "a YOLO folder does not name its classes: pass names (list or dict)"
        )
    sub = Path(split) if split is not None else Path()
    return read_yolo_folders(
        source / "images" / sub,
        source / "labels" / sub,
        names,
        skip_bad=skip_bad,
        missing_labels=missing_labels or "negative",
    )


def _read_from_yaml(
    path: Path, split: str | None, names, skip_bad: bool, missing_labels: str | None
) -> InstanceDataset:
    config = load_yaml(path)
    if not isinstance(config, dict):
        raise DataError(path, f"must be a mapping of keys, got {type(config).__name__}")
    check_keys(path, config, ULTRALYTICS_KEYS, "an Ultralytics data yaml")
    if isinstance(config.get(split), list):
        raise DataError(path, f"{split}: a list of image folders is not supported; give one")
    if split not in config or not isinstance(config[split], str):
        splits = [k for k in ("train", "val", "test") if k in config]
        raise DataError(
            path, f"no image folder for split {split!r} (a string); the yaml has {splits}"
        )
    if "names" not in config:
        raise DataError(path, "missing 'names' (the class names, a list or a dict id: name)")
    table = class_table(config["names"], path)
    if "nc" in config and config["nc"] != len(table):
        raise DataError(path, f"nc is {config['nc']} but names has {len(table)} classes")
    check_names(
        list(names.values()) if isinstance(names, dict) else names, list(table.values()), path
    )
    if missing_labels is None:
        missing_labels = "skip" if config.get("skip_if_label_file_missing") else "negative"
    images = _images_folder(path, str(config.get("path", ".")), config[split])
    return read_yolo_folders(
        images,
        labels_folder_for(images, path),
        table,
        skip_bad=skip_bad,
        missing_labels=missing_labels,
        source=path,
    )


def _images_folder(yaml_path: Path, root: str, images: str) -> Path:
    """The split's image folder, relative to `path` (itself relative to the yaml). Roboflow
    exports write `../train/images` meaning `train/images` beside the yaml; that is accepted
    when the literal path does not exist, as Ultralytics does."""
    base = yaml_path.parent / root
    folder = base / images
    if not folder.exists() and images.startswith("../") and (base / images[3:]).exists():
        return base / images[3:]
    return folder


def labels_folder_for(images: Path, source: str | Path) -> Path:
    """Ultralytics' rule: the last `images` component of the image folder becomes `labels`."""
    parts = list(images.parts)
    if "images" not in parts:
        raise DataError(
            source, f"cannot derive the labels folder of {images}: it has no 'images' component"
        )
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts)


def read_yolo_folders(
    images: str | Path,
    labels: str | Path,
    names: list[str] | dict[int, str],
    *,
    skip_bad: bool = False,
    missing_labels: str = "negative",
    source: str | Path | None = None,
) -> InstanceDataset:
    """Read images under `images` with their YOLO-seg label files under `labels`.
    `source` (default: the labels folder) names the dataset in messages."""
    if missing_labels not in MISSING_LABELS:
        raise ValueError(f"missing_labels must be one of {MISSING_LABELS}, got {missing_labels!r}")
    source = Path(source) if source is not None else Path(labels)
    table = class_table(names, source)
    image_dir = require_folder(Path(images), "images", source)
    label_dir = require_folder(Path(labels), "labels", source)
    labels_of = contiguous_labels(table)
    issues = Issues(source)
    records, image_paths = [], list_images(image_dir)
    for image_path in image_paths:
        rel = image_path.relative_to(image_dir)
        label_path = label_dir / rel.with_suffix(".txt")
        has_labels = label_path.is_file()
        if not has_labels and missing_labels == "skip":
            continue
        size = image_size_or_skip(image_path, skip_bad, issues)
        if size is None:
            continue
        record = ImageRecord(
            file_name=rel.as_posix(), height=size[0], width=size[1], id=len(records) + 1
        )
        if has_labels:
            record.annotations = _parse_label_file(label_path, size, labels_of, issues)
        records.append(record)
    _report_orphans(label_dir, image_dir, image_paths, issues)
    issues.warn()
    category_ids = sorted(table)
    return InstanceDataset(
        records,
        [table[i] for i in category_ids],
        image_dir,
        category_ids=category_ids,
        skip_bad=skip_bad,
        source=source,
    )


def _report_orphans(
    label_dir: Path, image_dir: Path, image_paths: list[Path], issues: Issues
) -> None:
    """Record label files whose image does not exist (a typo or a deleted image)."""
    stems = {p.relative_to(image_dir).with_suffix("").as_posix() for p in image_paths}
    for label_path in sorted(label_dir.rglob("*.txt")):
        rel = label_path.relative_to(label_dir).with_suffix("").as_posix()
        if rel not in stems and not label_path.name.startswith("."):
            issues.add("label file without an image, ignored", str(label_path))


def _parse_label_file(
    path: Path, image_size: tuple[int, int], labels_of: dict[int, int], issues: Issues
) -> list[Annotation]:
    """Annotations (polygons in absolute pixels) of one label file; empty ones dropped."""
    height, width = image_size
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read label file ({e})") from None
    annotations = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = f"line {line_number}"
        class_id, points = _parse_line(line, path, item, labels_of)
        points = _clip_points(points, path, item, issues)
        polygon = [(points * np.array([width, height])).ravel().tolist()]
        if segmentation_area(polygon, height, width) == 0:
            issues.add("zero-area polygon dropped (it covers no pixel centre)", f"{path}, {item}")
            continue
        annotations.append(
            Annotation(label=labels_of[class_id], segmentation=polygon, id=line_number)
        )
    return annotations


def _parse_line(
    line: str, path: Path, item: str, labels_of: dict[int, int]
) -> tuple[int, np.ndarray]:
    """(class id, normalised points [N, 2] as (x, y)) of one label line, validated."""
    tokens = line.split()
    try:
        class_value = float(tokens[0])
    except ValueError:
        raise DataError(path, f"class id {tokens[0]!r} is not a number", item=item) from None
    if not class_value.is_integer():
        raise DataError(path, f"class id {tokens[0]!r} is not an integer", item=item)
    class_id = int(class_value)
    if class_id not in labels_of:
        known = sorted(labels_of)
        raise DataError(path, f"class id {class_id} is not in names (ids {known})", item=item)
    return class_id, _parse_points(tokens[1:], path, item)


def _parse_points(tokens: list[str], path: Path, item: str) -> np.ndarray:
    """Normalised polygon vertices [N, 2] (x, y) from `x1 y1 x2 y2 ...` tokens."""
    coordinates = []
    for position, token in enumerate(tokens, start=1):
        try:
            value = float(token)
        except ValueError:
            message = f"coordinate {position} ({token!r}) is not a number"
            raise DataError(path, message, item=item) from None
        if not math.isfinite(value):
            raise DataError(path, f"coordinate {position} ({token!r}) is not finite", item=item)
        coordinates.append(value)
    count = len(coordinates)
    if count % 2:
        raise DataError(path, f"odd number of coordinates ({count}); expected x y pairs", item=item)
    if count < 6:
        box = " (this looks like a detection box 'class cx cy w h', not a polygon)"
        hint = box if count == 4 else ""
        message = f"polygon has {count // 2} points; at least 3 are needed{hint}"
        raise DataError(path, message, item=item)
    return np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)


def _clip_points(points: np.ndarray, path: Path, item: str, issues: Issues) -> np.ndarray:
    """Clip normalised points to [0, 1]; warn beyond the silent tolerance, refuse far beyond."""
    low, high = float(points.min()), float(points.max())
    if low < -_MAX_OUTSIDE or high > 1 + _MAX_OUTSIDE:
        raise DataError(
            path,
            f"coordinates must be normalised to [0, 1], found {low:g}..{high:g} "
            "(pixel coordinates?)",
            item=item,
        )
    if low < -_SILENT_CLIP or high > 1 + _SILENT_CLIP:
        issues.add(
            "coordinates outside [0, 1] clipped to the image", f"{path}, {item}: {low:g}..{high:g}"
        )
    return np.clip(points, 0.0, 1.0)
