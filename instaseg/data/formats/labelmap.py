"""Instance label maps: one single-channel image per picture, 0 = background, k = instance k.

Layout (folders relative to `root`, or absolute):

    images/<rel>/<stem>.<ext>                 the pictures (any suffix in IMAGE_SUFFIXES)
    labels/<rel>/<stem><label_suffix>.png     8- or 16-bit label maps (.png, .tif, .tiff)
    classes/<rel>/<stem><label_suffix>.png    optional class maps, same layout

Each distinct non-zero value of a label map is one instance (its pixels need not be
connected). Without class maps the dataset is class-agnostic: one class, `names[0]` (default
"object"), category id 1. With a `classes` folder (the inst_map / type_map pairs of HoVer-Net
style datasets), class map value c >= 1 is class `names[c - 1]` (category id c) and each
instance takes the majority class under its pixels; `names` is then required.

Validation (see `instaseg.data.formats` for the shared policy): DataError for a label map with
no image of the same stem (or several), a label or class map whose size differs from its image,
a multi-channel or float label map, a class value beyond names, or an instance lying entirely
on class 0. DataWarning for an instance whose pixels disagree on their class (majority kept)
and for images without a label map, which are left out: an unlabelled image is not an empty one
(an all-zero label map says "no objects"). Unreadable images follow skip_bad.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
from PIL import Image, UnidentifiedImageError

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.formats._common import Issues, image_size_or_skip, list_images, require_folder

LABEL_SUFFIXES = (".png", ".tif", ".tiff")
_INTEGER_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I")


def read_labelmap(
    root: str | Path,
    *,
    images: str | Path = "images",
    labels: str | Path = "labels",
    classes: str | Path | None = None,
    names: list[str] | None = None,
    label_suffix: str = "",
    skip_bad: bool = False,
) -> InstanceDataset:
    """Read label maps under `root/labels` paired by relative stem with images under
    `root/images` (`<stem><label_suffix>` names a label file, e.g. label_suffix="_masks")."""
    root = Path(root)
    image_dir = require_folder(root / images, "images", root)
    label_dir = require_folder(root / labels, "labels", root)
    class_dir = require_folder(root / classes, "classes", root) if classes is not None else None
    class_names = _class_names(names, class_dir, root)
    issues = Issues(label_dir)
    image_of = _images_by_stem(image_dir)
    records, labelled = [], set()
    for label_path in _label_files(label_dir):
        image_path = _pair(label_path, label_dir, label_suffix, image_of)
        if image_path in labelled:
            raise DataError(label_path, f"a second label map for {image_path.name}")
        labelled.add(image_path)
        size = image_size_or_skip(image_path, skip_bad, issues)
        if size is None:
            continue
        class_path = _class_map_path(label_path, label_dir, class_dir) if class_dir else None
        record = ImageRecord(
            file_name=image_path.relative_to(image_dir).as_posix(),
            height=size[0],
            width=size[1],
            id=len(records) + 1,
        )
        record.annotations = _annotations(label_path, class_path, size, len(class_names), issues)
        records.append(record)
    for path in sorted(set(image_of.values()) - labelled):
        issues.add("image without a label map left out (unlabelled)", str(path))
    issues.warn()
    category_ids = list(range(1, len(class_names) + 1))
    return InstanceDataset(
        records,
        class_names,
        image_dir,
        category_ids=category_ids,
        skip_bad=skip_bad,
        source=label_dir,
    )


def _class_names(names: list[str] | None, class_dir: Path | None, root: Path) -> list[str]:
    if class_dir is None:
        if names is not None and len(names) != 1:
            raise DataError(
                root, f"label maps without class maps have one class, got names {names}"
            )
        return list(names) if names is not None else ["object"]
    if not names:
        raise DataError(root, "class maps hold numbers 1..K: pass names to name them")
    return list(names)


def _images_by_stem(image_dir: Path) -> dict[str, Path]:
    """{relative path without suffix: image}; two images sharing a stem are ambiguous."""
    found: dict[str, Path] = {}
    for path in list_images(image_dir):
        key = path.relative_to(image_dir).with_suffix("").as_posix()
        if key in found:
            raise DataError(
                image_dir, f"two images share the stem {key!r}: {found[key].name}, {path.name}"
            )
        found[key] = path
    return found


def _label_files(label_dir: Path) -> list[Path]:
    files = [p for p in label_dir.rglob("*") if p.suffix.lower() in LABEL_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(label_dir).as_posix())


def _pair(label_path: Path, label_dir: Path, label_suffix: str, image_of: dict[str, Path]) -> Path:
    key = label_path.relative_to(label_dir).with_suffix("").as_posix()
    if label_suffix:
        if not key.endswith(label_suffix):
            raise DataError(
                label_path, f"label file name does not end in label_suffix {label_suffix!r}"
            )
        key = key[: -len(label_suffix)]
    if key not in image_of:
        raise DataError(label_path, f"no image named {key}.<ext> in the images folder")
    return image_of[key]


def _class_map_path(label_path: Path, label_dir: Path, class_dir: Path) -> Path:
    stem = label_path.relative_to(label_dir).with_suffix("")
    candidates = [class_dir / stem.with_suffix(s) for s in LABEL_SUFFIXES]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise DataError(label_path, f"no class map {stem.as_posix()}.png in {class_dir}")
    return found[0]


def read_label_map(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """Integer label map [H, W] (int64) of a single-channel 8-, 16- or 32-bit image,
    checked against the image's (height, width)."""
    try:
        with Image.open(path) as image:
            if image.mode not in _INTEGER_MODES:
                raise DataError(
                    path, f"must be a single-channel 8- or 16-bit image, got mode {image.mode}"
                )
            values = np.asarray(image).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"cannot decode ({type(e).__name__}: {e})") from None
    if values.shape != tuple(image_size):
        raise DataError(
            path,
            f"is {values.shape[0]}x{values.shape[1]} (HxW) but its image is "
            f"{image_size[0]}x{image_size[1]}",
        )
    if values.min(initial=0) < 0:
        raise DataError(path, "has negative values; labels must be 0 (background) or positive")
    return values


def _annotations(
    label_path: Path,
    class_path: Path | None,
    size: tuple[int, int],
    num_classes: int,
    issues: Issues,
) -> list[Annotation]:
    """One RLE annotation per instance value, in increasing value order (id = the value)."""
    label_map = read_label_map(label_path, size)
    rles = label_map_to_rles(label_map)
    labels = dict.fromkeys(rles, 0)
    if class_path is not None:
        labels = _instance_classes(
            label_map, read_label_map(class_path, size), class_path, num_classes, issues
        )
    return [
        Annotation(label=labels[value], segmentation=rle, id=value) for value, rle in rles.items()
    ]


def _instance_classes(
    label_map: np.ndarray, class_map: np.ndarray, class_path: Path, num_classes: int, issues: Issues
) -> dict[int, int]:
    """{instance value: 0-based label} by majority of the non-zero class values under it."""
    inside = label_map != 0
    pairs, counts = np.unique(
        np.stack([label_map[inside], class_map[inside]]), axis=1, return_counts=True
    )
    if pairs.size and pairs[1].max() > num_classes:
        raise DataError(
            class_path, f"class value {pairs[1].max()} is beyond names ({num_classes} classes)"
        )
    labels = {}
    for value in np.unique(pairs[0]).tolist():
        of_value = (pairs[0] == value) & (pairs[1] != 0)
        if not of_value.any():
            raise DataError(class_path, f"instance {value} lies entirely on class 0 (no class)")
        if of_value.sum() > 1:
            issues.add(
                "instance pixels disagree on their class, majority kept",
                f"{class_path}, instance {value}",
            )
        best = np.flatnonzero(of_value)[np.argmax(counts[of_value])]
        labels[value] = int(pairs[1][best]) - 1
    return labels


def label_map_to_rles(label_map: np.ndarray) -> dict[int, dict]:
    """{instance value: compressed RLE (str counts)} of every non-zero value of an integer label
    map [H, W], from one column-major pass over the pixels (no per-instance mask)."""
    height, width = (int(v) for v in label_map.shape)
    flat = np.asarray(label_map).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.size]])
    values = flat[starts]
    keep = values != 0
    order = np.argsort(values[keep], kind="stable")  # group runs by value, keeping pixel order
    starts, ends, values = starts[keep][order], ends[keep][order], values[keep][order]
    groups = np.flatnonzero(np.diff(values)) + 1
    rles = {}
    for group_starts, group_ends in zip(
        np.split(starts, groups), np.split(ends, groups), strict=True
    ):
        if group_starts.size == 0:
            continue
        bounds = np.concatenate(
            [[0], np.stack([group_starts, group_ends], axis=1).ravel(), [flat.size]]
        )
        counts = np.diff(bounds).tolist()
        if counts[-1] == 0:
            counts.pop()  # COCO leaves out trailing zeros when the last pixel is foreground
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        rles[int(flat[group_starts[0]])] = {
            "size": [height, width],
            "counts": rle["counts"].decode("ascii"),
        }
    return rles
