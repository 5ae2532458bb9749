"""COCO instance-segmentation json: reader and writer.

Reading keeps each segmentation in its source form (polygons in absolute pixels, or RLE,
compressed or uncompressed) and `iscrowd`. Category ids may have gaps; they map to contiguous
0-based labels in sorted id order, and `dataset.category_ids[label]` maps back.

Validation policy (shared by every reader, see `instaseg.data.formats`):
- DataError, whatever skip_bad says, for anything that makes the file ambiguous: syntax errors
  (file, line, column), missing top-level keys, wrong types, duplicate image / annotation /
  category ids or file names, unknown image_id or category_id, a polygon with < 3 points or an
  odd number of coordinates, an RLE whose size is not its image's, a malformed bbox.
- DataWarning and a repair for what has one obvious fix: a bbox more than a pixel outside its
  image is clipped (boxes are recomputed from masks anyway, so the json bbox is only checked);
  an instance whose mask has no pixels is dropped.
- Images without annotations are kept as negatives. Image files are not opened here: a missing
  or corrupt one is reported when it is loaded (skipped with a warning under skip_bad).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pycocotools.mask as coco_mask

import instaseg
from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.formats._common import (
    Issues,
    check_names,
    contiguous_labels,
    is_int,
    is_number,
    load_json,
    segmentation_area,
)
from instaseg.ops.masks import polygon_parts, to_compressed_rle, validate_rle

_TOP_LEVEL_KEYS = ("images", "annotations", "categories")
_BBOX_TOLERANCE = 1.0  # pixels a json bbox may overhang its image before we say so


def read_coco(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    names: list[str] | None = None,
    skip_bad: bool = False,
) -> InstanceDataset:
    """Read a COCO instances json. Image file_names are relative to `image_root` (default: the
    json's folder). `names`, when given, must equal the json's category names in id order."""
    json_path = Path(json_path)
    data = load_json(json_path)
    _check_top_level(data, json_path)
    categories = _parse_categories(data["categories"], json_path)
    records = _parse_images(data["images"], json_path)
    issues = Issues(json_path)
    _attach_annotations(
        data["annotations"], records, contiguous_labels(categories), json_path, issues
    )
    issues.warn()
    category_ids = sorted(categories)
    class_names = [categories[i] for i in category_ids]
    check_names(names, class_names, json_path)
    return InstanceDataset(
        list(records.values()),
        class_names,
        Path(image_root) if image_root is not None else json_path.parent,
        category_ids=category_ids,
        skip_bad=skip_bad,
        source=json_path,
    )


def _check_top_level(data: Any, source: Path) -> None:
    if not isinstance(data, dict):
        raise DataError(source, f"top level must be a JSON object, got {type(data).__name__}")
    missing = [key for key in _TOP_LEVEL_KEYS if key not in data]
    if missing:
        hint = ""
        if any(isinstance(v, dict) and "regions" in v for v in data.values()):
            hint = "; this looks like a VGG Image Annotator file: use format 'via'"
        raise DataError(source, f"missing top-level key(s) {missing}{hint}")
    for key in _TOP_LEVEL_KEYS:
        if not isinstance(data[key], list):
            raise DataError(source, f"'{key}' must be a list, got {type(data[key]).__name__}")


def _entries(items: list, kind: str, source: Path) -> Iterator[tuple[int, dict]]:
    """Yield (position, entry) checking each entry is an object."""
    for index, entry in enumerate(items):
        if not isinstance(entry, dict):
            raise DataError(
                source, f"{kind}[{index}] must be an object, got {type(entry).__name__}"
            )
        yield index, entry


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_positive_int(value: Any) -> bool:
    return is_int(value) and value > 0


def _require(
    entry: dict, key: str, check: Callable[[Any], bool], expected: str, source: Path, item: str
) -> Any:
    """entry[key] after `check`; DataError naming the field when it is missing or wrong."""
    if key not in entry:
        raise DataError(source, f"missing field '{key}'", item=item)
    value = entry[key]
    if not check(value):
        raise DataError(source, f"field '{key}' must be {expected}, got {value!r}", item=item)
    return value


def _parse_categories(categories: list, source: Path) -> dict[int, str]:
    """{category id: name}; duplicate ids or names are errors."""
    table: dict[int, str] = {}
    for index, entry in _entries(categories, "categories", source):
        item = f"categories[{index}]"
        category_id = _require(entry, "id", is_int, "an integer", source, item)
        name = _require(entry, "name", _is_text, "a non-empty string", source, item)
        if category_id in table:
            raise DataError(source, f"duplicate category id {category_id}", item=item)
        if name in table.values():
            raise DataError(
                source, f"duplicate category name {name!r}", item=f"category id {category_id}"
            )
        table[category_id] = name
    return table


def _parse_images(images: list, source: Path) -> dict[int, ImageRecord]:
    """{image id: ImageRecord} in file order; duplicate ids or file names are errors."""
    records: dict[int, ImageRecord] = {}
    seen_files: dict[str, int] = {}
    for index, entry in _entries(images, "images", source):
        image_id = _require(entry, "id", is_int, "an integer", source, f"images[{index}]")
        item = f"image id {image_id}"
        if image_id in records:
            raise DataError(source, "duplicate image id", item=item)
        file_name = _require(entry, "file_name", _is_text, "a non-empty string", source, item)
        height = _require(entry, "height", _is_positive_int, "a positive integer", source, item)
        width = _require(entry, "width", _is_positive_int, "a positive integer", source, item)
        if file_name in seen_files:
            raise DataError(
                source,
                f"duplicate file_name {file_name!r} (also image id {seen_files[file_name]})",
                item=item,
            )
        seen_files[file_name] = image_id
        records[image_id] = ImageRecord(
            file_name=file_name, height=height, width=width, id=image_id
        )
    return records


def _attach_annotations(
    annotations: list,
    records: dict[int, ImageRecord],
    labels: dict[int, int],
    source: Path,
    issues: Issues,
) -> None:
    """Validate each annotation and append it to its image's record (zero-area ones dropped)."""
    seen_ids: set[int] = set()
    for index, entry in _entries(annotations, "annotations", source):
        annotation_id = _require(entry, "id", is_int, "an integer", source, f"annotations[{index}]")
        item = f"annotation id {annotation_id}"
        if annotation_id in seen_ids:
            raise DataError(source, "duplicate annotation id", item=item)
        seen_ids.add(annotation_id)
        image_id = _require(entry, "image_id", is_int, "an integer", source, item)
        if image_id not in records:
            raise DataError(source, f"image_id {image_id} is not in 'images'", item=item)
        category_id = _require(entry, "category_id", is_int, "an integer", source, item)
        if category_id not in labels:
            known = sorted(labels)
            raise DataError(
                source, f"category_id {category_id} is not in 'categories' {known}", item=item
            )
        record = records[image_id]
        item = f"image id {image_id}, annotation id {annotation_id}"
        annotation = _parse_annotation(entry, record, labels[category_id], source, item, issues)
        if annotation is not None:
            record.annotations.append(annotation)


def _parse_annotation(
    entry: dict, record: ImageRecord, label: int, source: Path, item: str, issues: Issues
) -> Annotation | None:
    """One checked Annotation, or None when its mask is empty (recorded in `issues`)."""
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, float):
        raise DataError(source, f"field 'iscrowd' must be 0 or 1, got {iscrowd!r}", item=item)
    if "segmentation" not in entry:
        raise DataError(
            source, "missing field 'segmentation' (instaseg needs masks, not only boxes)", item=item
        )
    segmentation = entry["segmentation"]
    try:
        area = segmentation_area(segmentation, record.height, record.width)
    except ValueError as e:
        raise DataError(source, f"field 'segmentation': {e}", item=item) from None
    if "bbox" in entry:
        _check_bbox(entry["bbox"], record, source, item, issues)
    if area == 0:
        issues.add("zero-area instance dropped (its mask has no pixels)", item)
        return None
    return Annotation(label=label, segmentation=segmentation, iscrowd=bool(iscrowd), id=entry["id"])


def _check_bbox(bbox: Any, record: ImageRecord, source: Path, item: str, issues: Issues) -> None:
    """A json bbox must be [x, y, w, h] with w, h >= 0; one outside the image is only reported,
    since boxes are recomputed from the masks (which the image frame clips)."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise DataError(
            source, f"field 'bbox' must be [x, y, width, height] numbers, got {bbox!r}", item=item
        )
    x, y, w, h = bbox
    if w < 0 or h < 0:
        raise DataError(source, f"field 'bbox' has a negative width or height: {bbox}", item=item)
    tol = _BBOX_TOLERANCE
    if x < -tol or y < -tol or x + w > record.width + tol or y + h > record.height + tol:
        issues.add(
            "bbox outside its image, clipped to the image (boxes are recomputed from masks)",
            f"{item}: bbox {bbox} in a {record.width}x{record.height} (WxH) image",
        )


def dataset_to_coco(dataset: InstanceDataset, *, file_name_prefix: str | None = None) -> dict:
    """COCO instances dict of `dataset`: images (id, file_name, height, width), annotations
    (id, image_id, category_id, segmentation, area = mask pixel count, bbox = mask bounds as
    xywh pixels, iscrowd) and categories (id, name) with the dataset's original category ids.

    Polygons stay polygons; RLE is written compressed with str counts. Record and annotation
    ids are kept when they are unique integers, else renumbered from 1. `file_name_prefix` is
    joined in front of every file_name (e.g. the image folder relative to the json).
    """
    image_ids = _unique_ids([r.id for r in dataset.records])
    annotation_ids = iter(_unique_ids([a.id for r in dataset.records for a in r.annotations]))
    images, annotations = [], []
    for record, image_id in zip(dataset.records, image_ids, strict=True):
        file_name = (
            record.file_name
            if file_name_prefix is None
            else f"{file_name_prefix.rstrip('/')}/{record.file_name}"
        )
        images.append(
            {"id": image_id, "file_name": file_name, "height": record.height, "width": record.width}
        )
        for annotation in record.annotations:
            item = f"image id {image_id}, annotation id {annotation.id}"
            entry = _annotation_entry(annotation, record, dataset, item)
            annotations.append({"id": next(annotation_ids), "image_id": image_id, **entry})
    categories = [
        {"id": int(cid), "name": name}
        for cid, name in zip(dataset.category_ids, dataset.class_names, strict=True)
    ]
    info = {"description": f"written by instaseg {instaseg.__version__}", "source": dataset.source}
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _unique_ids(ids: list[int | None]) -> list[int]:
    """The given ids when they are unique integers, else 1..N."""
    if all(is_int(i) for i in ids) and len(set(ids)) == len(ids):
        return [int(i) for i in ids]
    return list(range(1, len(ids) + 1))


def _annotation_entry(
    annotation: Annotation, record: ImageRecord, dataset: InstanceDataset, item: str
) -> dict:
    """category_id, segmentation, area, bbox and iscrowd of one annotation."""
    h, w = record.height, record.width
    segmentation = annotation.segmentation
    try:
        if isinstance(segmentation, dict):
            validate_rle(segmentation, h, w)
            rle = to_compressed_rle(segmentation)
            segmentation = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        else:
            parts = polygon_parts(segmentation)
            segmentation = [part.tolist() for part in parts]
            rle = coco_mask.merge(coco_mask.frPyObjects(parts, h, w))
    except ValueError as e:
        raise DataError(dataset.source, f"segmentation: {e}", item=item) from None
    if not 0 <= annotation.label < dataset.num_classes:
        raise DataError(
            dataset.source,
            f"label {annotation.label} is not in 0..{dataset.num_classes - 1}",
            item=item,
        )
    return {
        "category_id": int(dataset.category_ids[annotation.label]),
        "segmentation": segmentation,
        "area": int(coco_mask.area(rle)),
        "bbox": [float(v) for v in coco_mask.toBbox(rle)],
        "iscrowd": int(annotation.iscrowd),
    }


def write_coco(
    dataset: InstanceDataset,
    out_path: str | Path,
    *,
    file_name_prefix: str | None = None,
    overwrite: bool = False,
    indent: int | None = None,
) -> dict:
    """Write `dataset` as a COCO instances json (see dataset_to_coco) and return the dict.

    An existing `out_path` is kept unless overwrite=True; the file is written to a temporary
    name first and renamed, so an interrupted write never leaves a truncated json.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} already exists; pass overwrite=True to replace it")
    coco = dataset_to_coco(dataset, file_name_prefix=file_name_prefix)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(coco, f, indent=indent)
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return coco
