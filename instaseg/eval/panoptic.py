"""Panoptic quality (Kirillov et al., CVPR 2019) on COCO panoptic json + PNGs.

A panoptic PNG stores segment id = R + 256 G + 256^2 B per pixel; 0 is VOID (unlabelled).
`segments_info` gives each id its category and, in the ground truth, `iscrowd`. Per category:

- a predicted and a ground-truth segment of that category match when their IoU > 0.5, where
  the prediction's pixels on ground-truth VOID leave the union; crowd segments never match;
- an unmatched ground-truth segment that is not crowd is a false negative;
- an unmatched prediction is a false positive unless more than half of it lies on VOID or on
  a crowd segment of its category;
- PQ = sum(matched IoU) / (TP + FP/2 + FN/2) = SQ * RQ with SQ = sum(IoU) / TP and
  RQ = TP / (TP + FP/2 + FN/2).

PQ, SQ and RQ of "all", "things" and "stuff" average over the categories with any TP, FP or FN.
Segment areas are counted on the PNGs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.data.errors import DataError

VOID = 0
_OFFSET = 256**3  # larger than any segment id


@dataclass
class CategoryCounts:
    """Matching counts of one category, summed over images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def add(self, other: CategoryCounts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        self.iou_sum += other.iou_sum


@dataclass
class PanopticResult:
    """groups: "all" / "things" / "stuff" -> {"PQ", "SQ", "RQ", "n"} (n: categories counted;
    the fractions are None when n == 0). per_class: name -> {"PQ", "SQ", "RQ"} for categories
    with any TP, FP or FN. counts: category id -> CategoryCounts."""

    groups: dict[str, dict[str, float | int | None]]
    per_class: dict[str, dict[str, float]]
    counts: dict[int, CategoryCounts] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Fractions only: PQ, SQ, RQ (all), *_th (things), *_st (stuff) and per_class."""
        out = {}
        for group, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st")):
            out.update({f"{k}{suffix}": self.groups[group][k] for k in ("PQ", "SQ", "RQ")})
        return {**out, "per_class": self.per_class}


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] panoptic PNG -> int64 [H, W] segment ids."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """int [H, W] segment ids -> uint8 [H, W, 3] panoptic PNG colours."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def image_counts(
    gt_ids: np.ndarray,
    gt_segments: list[dict],
    pred_ids: np.ndarray,
    pred_segments: list[dict],
) -> dict[int, CategoryCounts]:
    """Per-category counts of one image. *_ids: int [H, W] segment-id maps (0 = VOID);
    *_segments: `segments_info` lists (dicts with "id", "category_id", gt also "iscrowd").
    Raises ValueError when a map and its segments disagree."""
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"ground truth is {gt_ids.shape[:2]} but the prediction is {pred_ids.shape[:2]}"
        )
    gt = _segments_with_areas(gt_ids, gt_segments, "ground truth")
    pred = _segments_with_areas(pred_ids, pred_segments, "prediction")
    pairs, overlaps = np.unique(gt_ids.astype(np.int64) * _OFFSET + pred_ids, return_counts=True)
    overlap = {
        (int(p // _OFFSET), int(p % _OFFSET)): int(n) for p, n in zip(pairs, overlaps, strict=True)
    }
    counts: dict[int, CategoryCounts] = defaultdict(CategoryCounts)
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in overlap.items():
        if (
            g == VOID
            or p == VOID
            or gt[g]["iscrowd"]
            or gt[g]["category_id"] != pred[p]["category_id"]
        ):
            continue
        union = gt[g]["area"] + pred[p]["area"] - inter - overlap.get((VOID, p), 0)
        iou = inter / union
        if iou > 0.5:
            stat = counts[gt[g]["category_id"]]
            stat.tp, stat.iou_sum = stat.tp + 1, stat.iou_sum + iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = defaultdict(list)  # category -> crowd segment ids
    for g, info in gt.items():
        if info["iscrowd"]:
            crowd[info["category_id"]].append(g)
        elif g not in gt_matched:
            counts[info["category_id"]].fn += 1
    for p, info in pred.items():
        if p in pred_matched:
            continue
        ignored = overlap.get((VOID, p), 0) + sum(
            overlap.get((g, p), 0) for g in crowd[info["category_id"]]
        )
        if ignored / info["area"] <= 0.5:
            counts[info["category_id"]].fp += 1
    return dict(counts)


def _segments_with_areas(ids: np.ndarray, segments: list[dict], what: str) -> dict[int, dict]:
    """id -> {"category_id", "iscrowd", "area"}, checking that the map and the list agree."""
    info = {}
    for segment in segments:
        if segment["id"] == VOID or segment["id"] in info:
            raise ValueError(f"{what} segment id {segment['id']} is VOID or repeated")
        info[int(segment["id"])] = {
            "category_id": int(segment["category_id"]),
            "iscrowd": int(segment.get("iscrowd", 0)),
            "area": 0,
        }
    labels, areas = np.unique(ids, return_counts=True)
    for label, area in zip(labels.tolist(), areas.tolist(), strict=True):
        if label == VOID:
            continue
        if label not in info:
            raise ValueError(
                f"{what} PNG has segment id {label}, which segments_info does not list"
            )
        info[label]["area"] = area
    missing = [s for s, v in info.items() if v["area"] == 0]
    if missing and what == "prediction":
        raise ValueError(
            f"prediction segments_info lists ids {missing[:5]} that its PNG does not have"
        )
    return info


def panoptic_quality(
    gt_json: str | Path | dict,
    pred_json: str | Path | dict,
    *,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
) -> PanopticResult:
    """PQ of a COCO panoptic prediction. PNGs are `<folder>/<annotation file_name>`; a folder
    defaults to the json path without ".json" (the COCO layout) and is required for dicts.
    Every ground-truth image needs a prediction; categories come from the ground truth."""
    gt_data, gt_dir = _load(gt_json, gt_folder, "ground truth")
    pred_data, pred_dir = _load(pred_json, pred_folder, "predictions")
    categories = {int(c["id"]): c for c in gt_data["categories"]}
    predictions = {int(a["image_id"]): a for a in pred_data["annotations"]}
    totals: dict[int, CategoryCounts] = defaultdict(CategoryCounts)
    for gt_ann in gt_data["annotations"]:
        image_id = int(gt_ann["image_id"])
        if image_id not in predictions:
            raise DataError(
                str(pred_json), "no prediction for this image", item=f"image {image_id}"
            )
        pred_ann = predictions[image_id]
        unknown = {s["category_id"] for s in pred_ann["segments_info"]} - categories.keys()
        if unknown:
            raise DataError(
                str(pred_json), f"unknown category ids {sorted(unknown)}", item=f"image {image_id}"
            )
        gt_ids, pred_ids = (
            _read_ids(gt_dir / gt_ann["file_name"]),
            _read_ids(pred_dir / pred_ann["file_name"]),
        )
        try:
            counts = image_counts(
                gt_ids, gt_ann["segments_info"], pred_ids, pred_ann["segments_info"]
            )
        except ValueError as error:
            raise DataError(str(pred_json), str(error), item=f"image {image_id}") from None
        for category_id, stat in counts.items():
            totals[category_id].add(stat)
    return summarise(totals, categories)


def summarise(totals: dict[int, CategoryCounts], categories: dict[int, dict]) -> PanopticResult:
    """Per-category and averaged PQ / SQ / RQ from summed counts; categories: id -> COCO
    category dict with "name" and "isthing"."""
    per_class, groups = {}, {}
    scores = {}
    for category_id, category in categories.items():
        stat = totals.get(category_id, CategoryCounts())
        if stat.tp + stat.fp + stat.fn == 0:
            continue
        denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
        scores[category_id] = {
            "PQ": stat.iou_sum / denominator,
            "SQ": stat.iou_sum / stat.tp if stat.tp else 0.0,
            "RQ": stat.tp / denominator,
        }
        per_class[str(category.get("name", category_id))] = scores[category_id]
    for group, wanted in (("all", None), ("things", 1), ("stuff", 0)):
        members = [
            s
            for c, s in scores.items()
            if wanted is None or int(categories[c].get("isthing", 1)) == wanted
        ]
        groups[group] = {
            k: float(np.mean([m[k] for m in members])) if members else None
            for k in ("PQ", "SQ", "RQ")
        }
        groups[group]["n"] = len(members)
    return PanopticResult(groups=groups, per_class=per_class, counts=dict(totals))


def _load(source: str | Path | dict, folder: str | Path | None, what: str) -> tuple[dict, Path]:
    if isinstance(source, dict):
        if folder is None:
            raise ValueError(f"{what} is a dict: pass its PNG folder")
        return source, Path(folder)
    path = Path(source)
    if not path.is_file():
        raise DataError(str(path), f"{what} file not found")
    with open(path) as f:
        data = json.load(f)
    for key in ("annotations",) + (("categories",) if what == "ground truth" else ()):
        if not isinstance(data.get(key), list):
            raise DataError(str(path), f"missing the '{key}' list of a COCO panoptic file")
    return data, Path(folder) if folder is not None else path.with_suffix("")


def _read_ids(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(str(path), "panoptic PNG not found")
    with Image.open(path) as image:
        return rgb_to_id(np.asarray(image.convert("RGB")))
