"""COCO (and LVIS) detection metrics: segm, bbox and boundary AP, backed by faster-coco-eval.

faster-coco-eval runs pycocotools' matching and accumulation in C++ and gives pycocotools'
numbers (checked in tests/test_eval_coco.py to 1e-9 on random sets with crowd regions, all
area ranges, empty images and more than 100 detections per image). This module validates the
inputs, runs it once per IoU type and turns its arrays into a stable result.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from instaseg.data.errors import DataWarning
from instaseg.eval.boundary import BoundaryCOCOeval
from instaseg.eval.inputs import MASK_IOU_TYPES, GroundTruth, load_ground_truth, load_predictions
from instaseg.eval.lvis import (
    AP_STAT_KEYS,
    LVIS_MAX_DETS,
    cap_per_image,
    is_lvis,
    lvis_stat_keys,
    validate_lvis,
)
from instaseg.structures import Instances

logger = logging.getLogger(__name__)

IOU_TYPES = ("segm", "bbox", "boundary")
COCO_MAX_DETS = 100


def coco_stat_keys(max_dets: int) -> dict[str, str]:
    """Our metric names -> faster-coco-eval `stats_as_dict` labels, in pycocotools' stats order."""
    ar = (
        ("AR_all", "AR_second", "AR_third")
        if max_dets == 100
        else ("AR_1", "AR_10", f"AR_{max_dets}")
    )
    return {
        **AP_STAT_KEYS,
        "AR1": ar[0],
        "AR10": ar[1],
        f"AR{max_dets}": ar[2],
        "ARs": "AR_small",
        "ARm": "AR_medium",
        "ARl": "AR_large",
    }


@dataclass
class EvalResult:
    """Metrics of one evaluation.

    metrics: iou type -> {"AP", "AP50", ...} fractions in 0..1, in pycocotools' stats order
        (LVIS adds APr/APc/APf); None where undefined (no ground truth in that area range).
    per_class: iou type -> class name -> {"AP", "AP50", "AP75"} (None: no ground truth).
    precision: iou type -> float [T, R, K] interpolated precision at area "all" and max_dets,
        for T IoU thresholds, R recall thresholds and K categories; -1 where a category has
        no ground truth.
    """

    metrics: dict[str, dict[str, float | None]]
    per_class: dict[str, dict[str, dict[str, float | None]]]
    precision: dict[str, np.ndarray]
    iou_thresholds: np.ndarray  # [T]
    recall_thresholds: np.ndarray  # [R]
    category_ids: list[int]  # [K]
    class_names: list[str]  # [K], unique
    protocol: str  # "coco" or "lvis"
    max_dets: int
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # the library's stats, -1 undefined

    def to_dict(self) -> dict:
        """The `--out` schema: {iou type: {metric: value}, "per_class": {iou type: {...}}}."""
        return {**self.metrics, "per_class": self.per_class}


def evaluate(
    gt: str | Path | dict | Sequence[Instances],
    predictions: str | Path | Sequence[dict] | Sequence[Instances],
    *,
    iou_types: Sequence[str] = IOU_TYPES,
    image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    max_dets: int | None = None,
    lvis: bool | None = None,
    boundary_dilation_ratio: float = 0.02,
) -> EvalResult:
    """COCO metrics of `predictions` against `gt` for each of `iou_types`.

    gt: COCO json path or dict, or one `Instances` per image (masks, labels, optional iscrowd).
    predictions: COCO results json path or list of dicts, or one `Instances` per image with
        scores, aligned with `image_ids`.
    image_ids: the image id of each Instances (default 0..N-1 when gt is Instances).
    category_ids / class_names: `category_ids[label]` is a label's category id (default: the
        label itself for Instances gt, the sorted category ids for json gt) and
        `class_names[label]` its name (Instances gt only; json gt names its categories).
    max_dets: detections per image and category (COCO, default 100) or per image (LVIS,
        default 300); lower-scoring ones are not evaluated, with a warning.
    lvis: federated LVIS evaluation; None decides from the gt fields (see `instaseg.eval.lvis`).
    """
    iou_types = _check_iou_types(iou_types)
    if max_dets is not None and (not isinstance(max_dets, int) or max_dets < 1):
        raise ValueError(f"max_dets must be a positive integer, got {max_dets!r}")
    need_masks = any(t in MASK_IOU_TYPES for t in iou_types)
    if _is_instances_list(gt):
        image_ids = list(range(len(gt))) if image_ids is None else image_ids
    num_classes = (
        _num_labels(gt, predictions) if category_ids is None and class_names is None else None
    )
    truth = load_ground_truth(
        gt,
        image_ids=image_ids,
        category_ids=category_ids,
        class_names=class_names,
        num_classes=num_classes,
        need_masks=need_masks,
    )
    results = load_predictions(
        predictions, truth, image_ids=image_ids, category_ids=category_ids, need_masks=need_masks
    )
    use_lvis = is_lvis(truth.dataset) if lvis is None else lvis
    if use_lvis:
        validate_lvis(truth.dataset, truth.source)
    max_dets = max_dets or (LVIS_MAX_DETS if use_lvis else COCO_MAX_DETS)
    if use_lvis:
        results = cap_per_image(results, max_dets)
    else:
        _warn_over_max_dets(results, max_dets)
    return _run_all(truth, results, iou_types, use_lvis, max_dets, boundary_dilation_ratio)


def _run_all(
    truth: GroundTruth,
    results: list[dict],
    iou_types: tuple[str, ...],
    lvis: bool,
    max_dets: int,
    ratio: float,
) -> EvalResult:
    coco_gt = COCO(truth.dataset)
    coco_dt = coco_gt.loadRes(results)
    keys = lvis_stat_keys(max_dets) if lvis else coco_stat_keys(max_dets)
    names = _unique_names(truth)
    metrics, per_class, precision, stats = {}, {}, {}, {}
    for iou_type in iou_types:
        e = _run_one(coco_gt, coco_dt, iou_type, lvis, max_dets, ratio)
        labels = e.stats_as_dict
        metrics[iou_type] = {key: _defined(labels[label]) for key, label in keys.items()}
        stats[iou_type] = np.asarray(e.stats, dtype=np.float64)
        precision[iou_type] = np.asarray(e.eval["precision"])[:, :, :, 0, -1]
        per_class[iou_type] = _per_class(precision[iou_type], e.params.iouThrs, names)
    return EvalResult(
        metrics=metrics,
        per_class=per_class,
        precision=precision,
        iou_thresholds=np.asarray(e.params.iouThrs),
        recall_thresholds=np.asarray(e.params.recThrs),
        category_ids=list(truth.category_ids),
        class_names=names,
        protocol="lvis" if lvis else "coco",
        max_dets=max_dets,
        stats=stats,
    )


def _run_one(coco_gt: COCO, coco_dt: COCO, iou_type: str, lvis: bool, max_dets: int, ratio: float):
    """evaluate + accumulate + summarize of one IoU type; boundary runs as segm with
    Boundary IoUs (see `instaseg.eval.boundary`)."""
    options = {"print_function": logger.debug, "lvis_style": lvis}
    if iou_type == "boundary":
        e = BoundaryCOCOeval(coco_gt, coco_dt, "segm", dilation_ratio=ratio, **options)
    else:
        e = COCOeval_faster(coco_gt, coco_dt, iou_type, **options)
    e.params.maxDets = [max_dets] if lvis else [1, 10, max_dets]
    e.evaluate()
    e.accumulate()
    e.summarize()
    return e


def _per_class(precision: np.ndarray, iou_thresholds: np.ndarray, names: list[str]) -> dict:
    """precision [T, R, K] -> {name: {"AP", "AP50", "AP75"}} with None for no ground truth."""
    t50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))
    table = {}
    for k, name in enumerate(names):
        p = precision[:, :, k]
        table[name] = {
            "AP": _mean_defined(p),
            "AP50": _mean_defined(p[t50]),
            "AP75": _mean_defined(p[t75]),
        }
    return table


def _mean_defined(values: np.ndarray) -> float | None:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def _defined(value: float) -> float | None:
    return None if value < 0 else float(value)


def _unique_names(truth: GroundTruth) -> list[str]:
    names = [truth.class_names[c] for c in truth.category_ids]
    counts = Counter(names)
    return [
        n if counts[n] == 1 else f"{n} (id {c})"
        for n, c in zip(names, truth.category_ids, strict=True)
    ]


def _warn_over_max_dets(results: list[dict], max_dets: int) -> None:
    counts = Counter((r["image_id"], r["category_id"]) for r in results)
    over = {pair: n for pair, n in counts.items() if n > max_dets}
    if over:
        dropped = sum(n - max_dets for n in over.values())
        (image_id, category_id), worst = max(over.items(), key=lambda kv: kv[1])
        warnings.warn(
            f"{dropped} detections beyond maxDets={max_dets} per image and category are not "
            f"evaluated (COCO protocol); {len(over)} image/category pairs have more, e.g. image "
            f"{image_id}, category {category_id} with {worst}",
            DataWarning,
            stacklevel=3,
        )


def _check_iou_types(iou_types: Sequence[str]) -> tuple[str, ...]:
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise ValueError(
            f"iou_types must be a non-empty subset of {IOU_TYPES}, got {list(iou_types)}"
        )
    return tuple(dict.fromkeys(iou_types))


def _is_instances_list(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, Instances) for v in value)
    )


def _num_labels(gt: object, predictions: object) -> int | None:
    """1 + the largest label over Instances inputs, so a class only predicted still has an id."""
    labels = [
        int(item.labels.max())
        for source in (gt, predictions)
        if _is_instances_list(source)
        for item in source
        if len(item)
    ]
    return max(labels) + 1 if labels else None
