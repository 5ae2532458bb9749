"""Ground truth and predictions in, validated COCO dicts out.

Ground truth is a COCO json path or dict, or `list[Instances]` (one per image). Predictions are
a COCO results json path or list of dicts, or `list[Instances]` with scores. Everything becomes
plain COCO dicts built here (the caller's objects are never mutated, because the evaluator
writes into the annotation dicts it is given). Every problem raises `DataError` naming the
file and the entry, before any evaluation starts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import pycocotools.mask as coco_mask

from instaseg.data.errors import DataError
from instaseg.ops.masks import to_compressed_rle, validate_polygons, validate_rle
from instaseg.structures import Instances

MASK_IOU_TYPES = ("segm", "boundary")


@dataclass
class GroundTruth:
    """A validated COCO ground truth.

    dataset: COCO dict owned by this object ({"images", "annotations", "categories"} plus the
        LVIS image fields when present); annotation ids are renumbered 1..N.
    image_sizes: image id -> (height, width).
    category_ids: sorted category ids; `category_ids[label]` maps a 0-based label to its id.
    class_names: category id -> name.
    source: the file (or "ground truth") for error messages.
    """

    dataset: dict
    image_sizes: dict[int, tuple[int, int]]
    category_ids: list[int]
    class_names: dict[int, str]
    source: str


def load_ground_truth(
    gt: str | Path | dict | Sequence[Instances],
    *,
    image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    need_masks: bool = True,
) -> GroundTruth:
    """Read and validate ground truth. For `list[Instances]`, `image_ids[i]` names gt[i]
    (default 0..N-1), `category_ids[label]` and `class_names[label]` describe each label
    (defaults: the label itself, `num_classes` labels)."""
    if isinstance(gt, (str, Path)):
        return _validate_coco_gt(
            _read_json(gt, "ground truth"), source=str(gt), need_masks=need_masks
        )
    if isinstance(gt, dict):
        return _validate_coco_gt(gt, source="ground truth", need_masks=need_masks)
    if isinstance(gt, Sequence) and all(isinstance(item, Instances) for item in gt):
        dataset = _instances_to_coco_gt(
            list(gt), image_ids, category_ids, class_names, num_classes, need_masks
        )
        return _validate_coco_gt(dataset, source="ground truth", need_masks=need_masks)
    raise TypeError(
        f"gt must be a COCO json path, a COCO dict or a list of Instances, got {type(gt).__name__}"
    )


def load_predictions(
    predictions: str | Path | Sequence[dict] | Sequence[Instances],
    gt: GroundTruth,
    *,
    image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
    need_masks: bool = True,
) -> list[dict]:
    """Read and validate detections against `gt`. Returns fresh result dicts with image_id,
    category_id, score, bbox (when given) and compressed-RLE segmentation (when given).

    For `list[Instances]`, predictions[i] belongs to image `image_ids[i]` (required) and
    `category_ids[label]` maps labels (default: gt.category_ids, the sorted category ids).
    """
    if isinstance(predictions, (str, Path)):
        entries, source = _read_json(predictions, "predictions"), str(predictions)
        if not isinstance(entries, list):
            raise DataError(
                source, f"a COCO results file is a json list, got {type(entries).__name__}"
            )
    elif (
        isinstance(predictions, Sequence) and predictions and isinstance(predictions[0], Instances)
    ):
        entries, source = (
            _instances_to_results(list(predictions), gt, image_ids, category_ids),
            "predictions",
        )
    elif isinstance(predictions, Sequence):
        entries, source = list(predictions), "predictions"
    else:
        raise TypeError(
            "predictions must be a results json path, a list of result dicts or a list of "
            f"Instances, got {type(predictions).__name__}"
        )
    return _validate_results(entries, gt, source, need_masks)


def _read_json(path: str | Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), f"{what} file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise DataError(str(path), f"not valid json ({error})") from None


class _Invalid(ValueError):
    """A problem with one entry; the caller adds the file and the entry's name."""


def _validate_coco_gt(data: dict, *, source: str, need_masks: bool) -> GroundTruth:
    if not isinstance(data, dict):
        raise DataError(source, f"a COCO ground truth is a json object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(source, f"missing the '{key}' list of a COCO ground truth")
    image_sizes, images = {}, []
    for i, image in enumerate(data["images"]):
        try:
            image_id, height, width = (_int_field(image, k) for k in ("id", "height", "width"))
        except _Invalid as problem:
            raise DataError(source, str(problem), item=f"images[{i}]") from None
        if image_id in image_sizes:
            raise DataError(source, "duplicate image id", item=f"image {image_id}")
        image_sizes[image_id] = (height, width)
        images.append(dict(image))
    names = {}
    for i, category in enumerate(data["categories"]):
        try:
            category_id = _int_field(category, "id")
        except _Invalid as problem:
            raise DataError(source, str(problem), item=f"categories[{i}]") from None
        if category_id in names:
            raise DataError(source, "duplicate category id", item=f"category {category_id}")
        names[category_id] = str(category.get("name", category_id))
    annotations = []
    for index, ann in enumerate(data["annotations"]):
        try:
            annotations.append(_gt_annotation(ann, index + 1, image_sizes, names, need_masks))
        except _Invalid as problem:
            item = f"annotations[{index}]" + (
                f" (id {ann.get('id')})" if isinstance(ann, dict) else ""
            )
            raise DataError(source, str(problem), item=item) from None
    categories = [dict(c) for c in data["categories"]]
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    return GroundTruth(dataset, image_sizes, sorted(names), names, source)


def _gt_annotation(
    ann: dict, new_id: int, image_sizes: dict, names: dict, need_masks: bool
) -> dict:
    """A validated copy of one gt annotation with id `new_id` (COCO matching reads id 0 as
    "unmatched", so ids are renumbered from 1)."""
    if not isinstance(ann, dict):
        raise _Invalid("an annotation must be a json object")
    image_id, category_id = _int_field(ann, "image_id"), _int_field(ann, "category_id")
    if image_id not in image_sizes:
        raise _Invalid(f"image_id {image_id} is not in 'images'")
    if category_id not in names:
        raise _Invalid(f"category_id {category_id} is not in 'categories'")
    if ann.get("ignore", 0):
        raise _Invalid(
            "has 'ignore': 1, which pycocotools honours and faster-coco-eval does not; mark the "
            "object iscrowd=1 or drop the key so both evaluators agree"
        )
    area = ann.get("area")
    if not _is_finite_number(area) or area < 0:
        raise _Invalid(
            f"'area' must be a non-negative number (COCO bins objects by it), got {area!r}"
        )
    out = {
        "id": new_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": int(bool(ann.get("iscrowd", 0))),
        "area": float(area),
    }
    if "bbox" in ann:
        out["bbox"] = _check_box(ann["bbox"])
    if "segmentation" in ann:
        out["segmentation"] = _compressed_rle(ann["segmentation"], image_sizes[image_id])
    elif need_masks:
        raise _Invalid("has no 'segmentation', which mask evaluation needs")
    elif "bbox" not in out:
        raise _Invalid("has neither 'bbox' nor 'segmentation'")
    return out


def _validate_results(entries: list, gt: GroundTruth, source: str, need_masks: bool) -> list[dict]:
    has_box = bool(entries) and isinstance(entries[0], dict) and "bbox" in entries[0]
    results = []
    for index, entry in enumerate(entries):
        result = _plain_result(entry, gt, has_box, need_masks)
        if result is None:  # something unusual: the checked path, which names the problem
            try:
                result = _result(entry, gt, has_box, need_masks)
            except _Invalid as problem:
                raise DataError(source, str(problem), item=_entry_name(entry, index)) from None
        results.append(result)
    return results


_PLAIN_NUMBERS = (float, int)


def _plain_result(entry: object, gt: GroundTruth, has_box: bool, need_masks: bool) -> dict | None:
    """`_result` for the common, valid form (int ids, a float score, a list bbox of floats or
    ints, a str-counts RLE of the image's size); None for anything else, valid or not."""
    if type(entry) is not dict:
        return None
    image_id, category_id, score = (
        entry.get("image_id"),
        entry.get("category_id"),
        entry.get("score"),
    )
    size = gt.image_sizes.get(image_id) if type(image_id) is int else None
    if (
        size is None
        or type(category_id) is not int
        or category_id not in gt.class_names
        or type(score) is not float
        or not math.isfinite(score)
    ):
        return None
    result = {"image_id": image_id, "category_id": category_id, "score": score}
    box = entry.get("bbox")
    if has_box:
        if (
            type(box) is not list
            or len(box) != 4
            or any(type(v) not in _PLAIN_NUMBERS for v in box)
        ):
            return None
        if not (
            math.isfinite(box[0] + box[1]) and 0 <= box[2] < math.inf and 0 <= box[3] < math.inf
        ):
            return None
        result["bbox"] = box
    elif box is not None:
        return None
    segmentation = entry.get("segmentation")
    if segmentation is None:
        return None if need_masks or not has_box else result
    if type(segmentation) is not dict or type(segmentation.get("counts")) is not str:
        return None
    if segmentation.get("size") != [size[0], size[1]]:
        return None
    result["segmentation"] = {"size": segmentation["size"], "counts": segmentation["counts"]}
    return result


def _result(entry: dict, gt: GroundTruth, has_box: bool, need_masks: bool) -> dict:
    """A validated copy of one detection: image_id, category_id, score, bbox, segmentation."""
    if not isinstance(entry, dict):
        raise _Invalid(f"a result must be a json object, got {type(entry).__name__}")
    image_id, category_id = _int_field(entry, "image_id"), _int_field(entry, "category_id")
    if image_id not in gt.image_sizes:
        raise _Invalid(f"image_id {image_id} is not an image of {gt.source}")
    if category_id not in gt.class_names:
        raise _Invalid(f"category_id {category_id} is not a category of {gt.source}")
    score = entry.get("score")
    if not _is_finite_number(score):
        raise _Invalid(f"'score' must be a finite number, got {score!r}")
    result = {"image_id": image_id, "category_id": category_id, "score": float(score)}
    if ("bbox" in entry) != has_box:
        have = "has no" if has_box else "has a"
        raise _Invalid(f"{have} 'bbox' unlike entry 0; give every result a bbox or none")
    if has_box:
        result["bbox"] = _check_box(entry["bbox"])
    if "segmentation" in entry:
        result["segmentation"] = _compressed_rle(entry["segmentation"], gt.image_sizes[image_id])
    elif need_masks:
        raise _Invalid("has no 'segmentation', which mask evaluation needs")
    elif not has_box:
        raise _Invalid("has neither 'bbox' nor 'segmentation'")
    return result


def _entry_name(entry: object, index: int) -> str:
    if isinstance(entry, dict):
        image_id, category_id = entry.get("image_id"), entry.get("category_id")
        return f"entry {index} (image_id {image_id}, category_id {category_id})"
    return f"entry {index}"


def _is_finite_number(value: object) -> bool:
    """A finite real number other than a bool (a fast path for the common float and int)."""
    kind = type(value)
    if kind is float or kind is int:
        return math.isfinite(value)
    return not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)


def _int_field(obj: dict, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, Integral)):
        raise _Invalid(f"'{key}' must be an integer, got {value!r}")
    return int(value)


def _check_box(box: object) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(map(_is_finite_number, box)):
        raise _Invalid(f"'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise _Invalid(f"'bbox' width and height must be >= 0, got {list(box)}")
    return [float(v) for v in box]


def _compressed_rle(segmentation: object, size: tuple[int, int]) -> dict:
    """Validate an RLE (its size must be the image's) or polygons and return a compressed RLE
    with str counts, the form every evaluator reads (polygon parts are unioned, as COCO does)."""
    if isinstance(segmentation, dict):
        counts, rle_size = segmentation.get("counts"), segmentation.get("size")
        if type(counts) is str and type(rle_size) is list and rle_size == [size[0], size[1]]:
            return {"size": rle_size, "counts": counts}  # the common case, already valid
    try:
        if isinstance(segmentation, dict):
            validate_rle(segmentation, *size)
            rle = to_compressed_rle(segmentation)
        else:
            validate_polygons(segmentation)
            parts = [[float(v) for v in part] for part in segmentation]
            rle = coco_mask.merge(coco_mask.frPyObjects(parts, *size))
    except ValueError as error:
        raise _Invalid(f"bad 'segmentation': {error}") from None
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _default_labels(
    items: Sequence[Instances], num_classes: int | None, names: Sequence[str] | None
) -> int:
    if names is not None:
        return len(names)
    if num_classes is not None:
        return num_classes
    labels = [int(it.labels.max()) for it in items if len(it)]
    return max(labels) + 1 if labels else 1


def _instances_to_coco_gt(
    items: list[Instances],
    image_ids: Sequence[int] | None,
    category_ids: Sequence[int] | None,
    class_names: Sequence[str] | None,
    num_classes: int | None,
    need_masks: bool,
) -> dict:
    image_ids = list(range(len(items))) if image_ids is None else list(image_ids)
    if len(image_ids) != len(items):
        raise ValueError(f"image_ids has {len(image_ids)} entries but gt has {len(items)} images")
    k = (
        len(category_ids)
        if category_ids is not None
        else _default_labels(items, num_classes, class_names)
    )
    category_ids = list(range(k)) if category_ids is None else list(category_ids)
    class_names = [str(c) for c in category_ids] if class_names is None else list(class_names)
    if len(class_names) != len(category_ids):
        raise ValueError(
            f"class_names has {len(class_names)} entries but category_ids has {len(category_ids)}"
        )
    annotations = []
    for i, (image_id, inst) in enumerate(zip(image_ids, items, strict=True)):
        if need_masks and inst.masks is None:
            raise ValueError(
                f"gt[{i}] has no masks; mask evaluation needs them (or use iou_types=('bbox',))"
            )
        try:
            entries = inst.to_coco(image_id, category_ids)
        except ValueError as error:
            raise ValueError(f"gt[{i}]: {error}") from None
        for entry in entries:
            entry.setdefault("iscrowd", 0)
            entry["id"] = len(annotations) + 1
            annotations.append(entry)
    return {
        "images": [
            {"id": int(i), "height": it.image_size[0], "width": it.image_size[1]}
            for i, it in zip(image_ids, items, strict=True)
        ],
        "annotations": annotations,
        "categories": [
            {"id": int(c), "name": n} for c, n in zip(category_ids, class_names, strict=True)
        ],
    }


def _instances_to_results(
    items: list[Instances],
    gt: GroundTruth,
    image_ids: Sequence[int] | None,
    category_ids: Sequence[int] | None,
) -> list[dict]:
    if image_ids is None:
        raise ValueError(
            "predictions are Instances: pass image_ids=[...], the image id of each one"
        )
    if len(image_ids) != len(items):
        raise ValueError(f"image_ids has {len(image_ids)} entries but predictions has {len(items)}")
    category_ids = gt.category_ids if category_ids is None else list(category_ids)
    results = []
    for i, (image_id, inst) in enumerate(zip(image_ids, items, strict=True)):
        if inst.scores is None:
            raise ValueError(f"predictions[{i}] has no scores; detections need a confidence each")
        size = gt.image_sizes.get(int(image_id))
        if size is not None and size != inst.image_size:
            raise ValueError(
                f"predictions[{i}] has image_size {inst.image_size} but image {image_id} is {size}"
            )
        try:
            results.extend(inst.to_coco(int(image_id), category_ids))
        except ValueError as error:
            raise ValueError(f"predictions[{i}]: {error}") from None
    return results
