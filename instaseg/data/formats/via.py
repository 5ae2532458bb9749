"""VGG Image Annotator (VIA) 1.x and 2.x region json.

Accepted files: a VIA 1.x export (`{key: entry}`), a VIA 2.x export (same, `regions` a list) or
a VIA 2.x project (`_via_img_metadata` holds the entries). Each entry has `filename`, `size`
(bytes, part of the key only: a re-saved JPG need not match it, so it is not checked) and
`regions`, a dict (1.x) or list (2.x) of `{shape_attributes, region_attributes}`.

Shapes (VIA coordinates are image pixels in the continuous frame: pixel (i, j) covers
[j, j+1) x [i, i+1)):
- polygon: `all_points_x`, `all_points_y`;
- rect: `x`, `y`, `width`, `height`;
- circle: `cx`, `cy`, `r`; ellipse: `cx`, `cy`, `rx`, `ry`, optional `theta` (radians) —
  both become polygons with enough vertices to stay within 0.1 px of the curve.
Points and polylines enclose nothing and are errors, as are unknown shape names.

Classes: with `class_attribute`, each region's class is `region_attributes[class_attribute]`
(a string, or a VIA 2 checkbox dict with exactly one true entry); `names` then fixes the label
order (else the sorted values found). Without it, one class, `names[0]` (default "object").

Validation (see `instaseg.data.formats`): DataError naming the json, the filename and region
index for a missing filename, duplicate filenames, an unknown shape, mismatched
all_points_x/all_points_y lengths, non-numeric coordinates or a missing class; a region with no
pixels is dropped with a DataWarning; images without regions are negatives; image sizes come
from the image files (missing or corrupt: error, or skipped with a warning under skip_bad).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.formats._common import (
    Issues,
    image_size_or_skip,
    is_number,
    load_json,
    segmentation_area,
)

SHAPES = ("polygon", "rect", "circle", "ellipse")
_CURVE_TOLERANCE = 0.1  # max distance in pixels between a circle/ellipse and its polygon


def read_via(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    names: list[str] | None = None,
    class_attribute: str | None = None,
    skip_bad: bool = False,
) -> InstanceDataset:
    """Read a VIA 1.x/2.x json; filenames are relative to `image_root` (default: its folder)."""
    json_path = Path(json_path)
    image_root = Path(image_root) if image_root is not None else json_path.parent
    entries = _entries(load_json(json_path), json_path)
    issues = Issues(json_path)
    parsed = []  # (record, [(region index, class value, shape_attributes)])
    seen: set[str] = set()
    for key, entry in entries.items():
        filename = _filename(entry, key, json_path)
        if filename in seen:
            raise DataError(
                json_path, f"filename {filename!r} appears in two entries", item=f"entry {key!r}"
            )
        seen.add(filename)
        regions = _regions(entry, filename, json_path, class_attribute)
        size = image_size_or_skip(image_root / filename, skip_bad, issues)
        if size is not None:
            record = ImageRecord(
                file_name=filename, height=size[0], width=size[1], id=len(parsed) + 1
            )
            parsed.append((record, regions))
    class_names = _class_names(names, class_attribute, parsed, json_path)
    records = [
        _attach(record, regions, class_names, json_path, issues) for record, regions in parsed
    ]
    issues.warn()
    return InstanceDataset(
        records,
        class_names,
        image_root,
        category_ids=list(range(1, len(class_names) + 1)),
        skip_bad=skip_bad,
        source=json_path,
    )


def _entries(data: Any, source: Path) -> dict[str, Any]:
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    elif isinstance(data, dict) and all(k in data for k in ("project", "file", "metadata")):
        raise DataError(
            source, "VIA 3 projects are not supported; export the annotations as VIA 2 json"
        )
    if not isinstance(data, dict):
        raise DataError(
            source, f"top level must be an object of image entries, got {type(data).__name__}"
        )
    if all(k in data for k in ("images", "annotations")):
        raise DataError(source, "this is a COCO json, not VIA: use format 'coco'")
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError(
                source,
                f"entry must be an object, got {type(entry).__name__}",
                item=f"entry {key!r}",
            )
    return data


def _filename(entry: dict, key: str, source: Path) -> str:
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename:
        raise DataError(source, f"missing 'filename' (got {filename!r})", item=f"entry {key!r}")
    return filename


def _regions(entry: dict, filename: str, source: Path, class_attribute: str | None) -> list[tuple]:
    """[(region index, class value or None, shape_attributes)] of one entry, checked."""
    regions = entry.get("regions", [])
    if isinstance(regions, dict):  # VIA 1.x: {"0": region, "1": region, ...}
        regions = list(regions.values())
    if not isinstance(regions, list):
        raise DataError(
            source,
            f"'regions' must be a list or an object, got {type(regions).__name__}",
            item=filename,
        )
    checked = []
    for index, region in enumerate(regions):
        item = f"{filename}, region {index}"
        if not isinstance(region, dict) or not isinstance(region.get("shape_attributes"), dict):
            raise DataError(source, "region has no 'shape_attributes' object", item=item)
        value = _class_value(region.get("region_attributes", {}), class_attribute, source, item)
        checked.append((index, value, region["shape_attributes"]))
    return checked


def _class_value(
    attributes: Any, class_attribute: str | None, source: Path, item: str
) -> str | None:
    if class_attribute is None:
        return None
    value = attributes.get(class_attribute) if isinstance(attributes, dict) else None
    if isinstance(value, dict):  # VIA 2 checkbox: {"option": true, ...}
        chosen = [k for k, v in value.items() if v]
        value = chosen[0] if len(chosen) == 1 else None
    if not isinstance(value, str) or not value:
        raise DataError(
            source,
            f"region_attributes[{class_attribute!r}] must name one class, got {value!r}",
            item=item,
        )
    return value


def _class_names(
    names: list[str] | None, class_attribute: str | None, parsed: list, source: Path
) -> list[str]:
    if class_attribute is None:
        if names is not None and len(names) != 1:
            raise DataError(
                source, f"without class_attribute there is one class, got names {names}"
            )
        return list(names) if names is not None else ["object"]
    found = sorted({value for _, regions in parsed for _, value, _ in regions})
    if names is None:
        if not found:
            raise DataError(source, f"no region has attribute {class_attribute!r}; pass names")
        return found
    unknown = [value for value in found if value not in names]
    if unknown:
        raise DataError(source, f"region classes {unknown} are not in names {list(names)}")
    return list(names)


def _attach(
    record: ImageRecord, regions: list[tuple], class_names: list[str], source: Path, issues: Issues
):
    for index, value, shape in regions:
        item = f"{record.file_name}, region {index}"
        polygon = [region_polygon(shape, source, item)]
        try:
            area = segmentation_area(polygon, record.height, record.width)
        except ValueError as e:
            raise DataError(source, f"shape_attributes: {e}", item=item) from None
        if area == 0:
            issues.add("zero-area region dropped (it covers no pixel centre)", item)
            continue
        label = class_names.index(value) if value is not None else 0
        record.annotations.append(Annotation(label=label, segmentation=polygon, id=index))
    return record


def region_polygon(shape: dict, source: Path, item: str) -> list[float]:
    """Flat [x0, y0, x1, y1, ...] polygon in image pixels of one VIA shape_attributes dict."""
    name = shape.get("name")
    if name == "polygon":
        xs, ys = (
            _numbers(shape, "all_points_x", source, item),
            _numbers(shape, "all_points_y", source, item),
        )
        if len(xs) != len(ys):
            raise DataError(
                source,
                f"all_points_x has {len(xs)} values but all_points_y has {len(ys)}",
                item=item,
            )
        return [float(v) for xy in zip(xs, ys, strict=True) for v in xy]
    if name == "rect":
        x, y, w, h = (_number(shape, key, source, item) for key in ("x", "y", "width", "height"))
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if name == "circle":
        cx, cy, r = (_number(shape, key, source, item) for key in ("cx", "cy", "r"))
        return ellipse_polygon(cx, cy, r, r, 0.0)
    if name == "ellipse":
        cx, cy, rx, ry = (_number(shape, key, source, item) for key in ("cx", "cy", "rx", "ry"))
        theta = _number(shape, "theta", source, item) if "theta" in shape else 0.0
        return ellipse_polygon(cx, cy, rx, ry, theta)
    hint = " (it encloses no area)" if name in ("point", "polyline") else ""
    raise DataError(
        source, f"unsupported shape {name!r}{hint}; supported: {list(SHAPES)}", item=item
    )


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, theta: float) -> list[float]:
    """Flat polygon of an ellipse centred at (cx, cy) with radii (rx, ry) rotated by theta
    (radians, x toward y); vertices are spaced so the chords stay within 0.1 px of the curve."""
    radius = max(abs(rx), abs(ry), _CURVE_TOLERANCE)
    step = 2 * math.acos(max(1 - _CURVE_TOLERANCE / radius, -1.0))
    count = min(max(8, math.ceil(2 * math.pi / step)), 4096)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    polygon = []
    for k in range(count):
        angle = 2 * math.pi * k / count
        x, y = rx * math.cos(angle), ry * math.sin(angle)
        polygon += [cx + x * cos_t - y * sin_t, cy + x * sin_t + y * cos_t]
    return polygon


def _number(shape: dict, key: str, source: Path, item: str) -> float:
    value = shape.get(key)
    if not is_number(value):
        raise DataError(
            source, f"shape_attributes[{key!r}] must be a number, got {value!r}", item=item
        )
    return float(value)


def _numbers(shape: dict, key: str, source: Path, item: str) -> list[float]:
    values = shape.get(key)
    if not isinstance(values, list) or not all(is_number(v) for v in values):
        raise DataError(source, f"shape_attributes[{key!r}] must be a list of numbers", item=item)
    return values
