"""COCO evaluation: equality with pycocotools, input validation, edge cases, Instances input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from eval_synthetic import ellipse, random_coco_set
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instaseg.data.errors import DataError, DataWarning
from instaseg.eval import evaluate
from instaseg.ops.boxes import masks_to_boxes
from instaseg.ops.masks import mask_to_rle
from instaseg.structures import Instances

STAT_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def pycocotools_eval(gt: dict, results: list[dict], iou_type: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        e = COCOeval(coco_gt, coco_dt, iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def quiet_evaluate(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return evaluate(*args, **kwargs)


def test_random_sets_equal_pycocotools():
    """20 random sets: all 12 segm and bbox stats and the per-class AP equal pycocotools'."""
    covered = {"crowd": 0, "empty image": 0, "over 100 dets": 0, "undefined stat": 0}
    for seed in range(20):
        gt, results = random_coco_set(seed)
        covered["crowd"] += any(a["iscrowd"] for a in gt["annotations"])
        covered["empty image"] += len({a["image_id"] for a in gt["annotations"]}) < len(
            gt["images"]
        )
        covered["over 100 dets"] += (
            sum(r["image_id"] == gt["images"][0]["id"] for r in results) > 100
        )
        ours = quiet_evaluate(gt, results, iou_types=("segm", "bbox"))
        for iou_type in ("segm", "bbox"):
            reference = pycocotools_eval(gt, results, iou_type)
            mine = ours.metrics[iou_type]
            assert list(mine) == STAT_KEYS
            for key, expected in zip(STAT_KEYS, reference.stats, strict=True):
                if expected == -1:
                    assert mine[key] is None, (seed, iou_type, key)
                    covered["undefined stat"] += 1
                else:
                    assert abs(mine[key] - expected) <= 1e-9, (
                        seed,
                        iou_type,
                        key,
                        mine[key],
                        expected,
                    )
            precision = reference.eval["precision"][:, :, :, 0, -1]
            for k, name in enumerate(ours.class_names):
                valid = precision[:, :, k][precision[:, :, k] > -1]
                expected = valid.mean() if valid.size else None
                got = ours.per_class[iou_type][name]["AP"]
                assert (got is None) if expected is None else abs(got - expected) <= 1e-9
    assert all(covered.values()), covered


def test_inputs_are_not_mutated_and_paths_work(tmp_path):
    gt, results = random_coco_set(3, num_images=4, crowded_image=False)
    gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)
    from_dicts = evaluate(gt, results, iou_types=("segm",))
    assert gt == gt_copy and results == results_copy
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    from_files = evaluate(tmp_path / "gt.json", str(tmp_path / "res.json"), iou_types=("segm",))
    assert from_files.metrics == from_dicts.metrics


def test_empty_predictions_give_zeros():
    gt, _ = random_coco_set(4, num_images=3, crowded_image=False)
    result = evaluate(gt, [], iou_types=("segm", "bbox", "boundary"))
    for metrics in result.metrics.values():
        assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
        assert all(v is None or v == 0.0 for v in metrics.values())


def test_detections_beyond_max_dets_are_capped_with_a_warning():
    gt, results = random_coco_set(0)
    with pytest.warns(DataWarning, match=r"beyond maxDets=100 per image and category"):
        capped = evaluate(gt, results, iou_types=("bbox",))
    reference = pycocotools_eval(gt, results, "bbox")
    assert np.allclose(capped.stats["bbox"], reference.stats, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        evaluate(gt, results, iou_types=("bbox",), max_dets=200)
    assert "AR200" in evaluate(gt, results, iou_types=("bbox",), max_dets=200).metrics["bbox"]


def _bad(gt: dict, results: list[dict], index: int, **change) -> list[dict]:
    results = copy.deepcopy(results)
    results[index].update(change)
    return results


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_id": 999}, r"entry 3 \(image_id 999.*image_id 999 is not an image"),
        ({"category_id": 7}, r"entry 3 .*category_id 7 is not a category"),
        ({"score": math.nan}, r"entry 3 .*'score' must be a finite number, got nan"),
        ({"score": "high"}, r"entry 3 .*'score' must be a finite number"),
        ({"bbox": [0, 0, -1, 5]}, r"entry 3 .*width and height must be >= 0"),
        (
            {"segmentation": {"size": [5, 5], "counts": "PP"}},
            r"entry 3 .*RLE size \[5, 5\] does not match",
        ),
    ],
)
def test_bad_predictions_name_the_entry(change, message):
    gt, results = random_coco_set(5, crowded_image=False)
    with pytest.raises(DataError, match=message):
        evaluate(gt, _bad(gt, results, 3, **change), iou_types=("segm",))


def test_bad_inputs_raise_clear_errors(tmp_path):
    gt, results = random_coco_set(5, crowded_image=False)
    missing_box = copy.deepcopy(results)
    del missing_box[2]["bbox"]
    with pytest.raises(DataError, match=r"entry 2 .*has no 'bbox' unlike entry 0"):
        evaluate(gt, missing_box, iou_types=("bbox",))
    no_mask = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    with pytest.raises(DataError, match=r"entry 0 .*no 'segmentation'"):
        evaluate(gt, no_mask, iou_types=("segm",))
    assert evaluate(gt, no_mask, iou_types=("bbox",)).metrics["bbox"]["AP"] >= 0
    ignored = copy.deepcopy(gt)
    ignored["annotations"][0]["ignore"] = 1
    with pytest.raises(DataError, match=r"annotations\[0\].*'ignore': 1"):
        evaluate(ignored, results, iou_types=("bbox",))
    (tmp_path / "res.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match=r"res.json: a COCO results file is a json list"):
        evaluate(gt, tmp_path / "res.json")
    with pytest.raises(ValueError, match=r"iou_types must be a non-empty subset"):
        evaluate(gt, results, iou_types=("mask",))


def _instances(
    masks: list[np.ndarray], labels: list[int], scores=None, crowd=None, size=None
) -> Instances:
    size = masks[0].shape if masks else size
    stacked = (
        torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, *size), dtype=torch.bool)
    )
    return Instances(
        image_size=size,
        boxes=masks_to_boxes(stacked),
        labels=torch.tensor(labels, dtype=torch.int64),
        scores=None if scores is None else torch.tensor(scores, dtype=torch.float32),
        masks=stacked,
        iscrowd=None if crowd is None else torch.tensor(crowd, dtype=torch.bool),
    )


def test_instances_input_matches_json_input():
    rng = np.random.default_rng(0)
    gt_items, pred_items = [], []
    for index in range(4):
        h, w = 64 + 8 * index, 80
        masks = [ellipse(h, w, rng, "medium") for _ in range(3)] if index != 1 else []
        labels = [int(v) for v in rng.integers(0, 2, size=len(masks))]
        crowd = [False, False, True][: len(masks)]
        gt_items.append(_instances(masks, labels, crowd=crowd, size=(h, w)))
        moved = [np.roll(m, 2, axis=1) for m in masks]
        scores = [0.9, 0.5, 0.7][: len(masks)]
        pred_items.append(_instances(moved, labels, scores=scores, size=(h, w)))
    image_ids, category_ids, names = [5, 6, 7, 8], [3, 1], ["cat", "dog"]
    result = evaluate(
        gt_items, pred_items, image_ids=image_ids, category_ids=category_ids, class_names=names
    )
    gt_json = {
        "images": [
            {"id": i, "height": g.image_size[0], "width": g.image_size[1]}
            for i, g in zip(image_ids, gt_items, strict=True)
        ],
        "annotations": [],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
    }
    for image_id, item in zip(image_ids, gt_items, strict=True):
        for entry in item.to_coco(image_id, category_ids):
            gt_json["annotations"].append({**entry, "id": len(gt_json["annotations"]) + 1})
    results = [
        r for i, p in zip(image_ids, pred_items, strict=True) for r in p.to_coco(i, category_ids)
    ]
    from_json = evaluate(gt_json, results)
    assert result.metrics == from_json.metrics
    assert set(result.per_class["segm"]) == {"cat", "dog"}
    for iou_type in ("segm", "bbox"):
        reference = pycocotools_eval(gt_json, results, iou_type).stats
        got = np.array([-1 if v is None else v for v in result.metrics[iou_type].values()])
        assert np.allclose(got, reference, atol=1e-9)
    # json gt with Instances predictions: the image ids are required
    with pytest.raises(ValueError, match="pass image_ids"):
        evaluate(gt_json, pred_items)
    mixed = evaluate(gt_json, pred_items, image_ids=image_ids, category_ids=category_ids)
    assert mixed.metrics == from_json.metrics


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(1)
    masks = [ellipse(90, 120, rng, kind) for kind in ("small", "medium", "large")]
    gt = [_instances(masks, [0, 1, 0])]
    perfect = [_instances(masks, [0, 1, 0], scores=[0.9, 0.8, 0.7])]
    result = evaluate(gt, perfect)
    for metrics in result.metrics.values():
        assert metrics["AP"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)
    assert result.per_class["boundary"]["0"]["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"predictions\[0\] has no scores"):
        evaluate(gt, gt)


def test_gt_segmentation_forms_agree():
    """Polygon, uncompressed and compressed RLE ground truth evaluate the same."""
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:25, 10:40] = True
    rle = mask_to_rle(mask)
    polygon = [[10.0, 5.0, 40.0, 5.0, 40.0, 25.0, 10.0, 25.0]]
    detections = [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 0.5}]
    for segmentation in (rle, polygon):
        gt = {
            "images": [{"id": 1, "height": 40, "width": 50}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "segmentation": segmentation,
                    "area": 600.0,
                    "bbox": [10, 5, 30, 20],
                    "iscrowd": 0,
                }
            ],
            "categories": [{"id": 1, "name": "box"}],
        }
        assert evaluate(gt, detections, iou_types=("segm",)).metrics["segm"]["AP"] == pytest.approx(
            1.0
        )
