"""Cell metrics on hand-computed cases: AP@tau, F1, AJI, SBD, boundary F."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_synthetic import random_coco_set

from instaseg.eval import cell_metrics, cell_metrics_from_coco
from instaseg.eval.cells import DEFAULT_THRESHOLDS, match
from instaseg.ops.boxes import masks_to_boxes
from instaseg.structures import Instances


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """10x10 label images.

    gt:   1 = rows 0-3 x cols 0-3 (16 px), 2 = rows 6-9 x cols 6-9 (16 px),
          3 = rows 0-1 x cols 7-9 (6 px).
    pred: 1 = rows 0-3 x cols 0-2 (12 px): IoU 12/16 = 0.75 with gt 1;
          2 = rows 6-9 x cols 5-9 (20 px): IoU 16/20 = 0.8 with gt 2;
          3 = rows 4-5 x cols 0-1 (4 px): overlaps nothing.
    """
    gt = np.zeros((10, 10), dtype=np.int32)
    gt[0:4, 0:4], gt[6:10, 6:10], gt[0:2, 7:10] = 1, 2, 3
    pred = np.zeros((10, 10), dtype=np.int32)
    pred[0:4, 0:3], pred[6:10, 5:10], pred[4:6, 0:2] = 1, 2, 3
    return gt, pred


def test_ap_at_tau_hand_case():
    gt, pred = hand_case()
    m = cell_metrics([gt], [pred])
    # tau 0.50-0.70: TP 2, FP 1, FN 1 -> 2/4; tau 0.75 (IoU must exceed it): TP 1 -> 1/5;
    # tau >= 0.80: no match -> 0
    assert m.ap == pytest.approx([0.5] * 5 + [0.2] + [0.0] * 4)
    assert (m.tp[0], m.fp[0], m.fn[0]) == (2, 1, 1)
    assert (m.tp[5], m.fp[5], m.fn[5]) == (1, 2, 2)
    assert m.mean_ap == pytest.approx(2.7 / 10)
    assert m.f1 == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.mean_matched_iou == pytest.approx((0.75 + 0.8) / 2)


def test_aji_and_sbd_hand_case():
    gt, pred = hand_case()
    m = cell_metrics([gt], [pred])
    # AJI: C = 12 + 16; U = 16 + 20 + 6 (gt 3, nothing overlaps) + 4 (pred 3, never chosen)
    assert m.aji == pytest.approx(28 / 46)
    # Dice: gt1-pred1 24/28, gt2-pred2 32/36; gt 3 and pred 3 have none: both sides average 3
    assert m.sbd == pytest.approx((24 / 28 + 32 / 36) / 3)


def test_sbd_takes_the_worse_direction():
    gt = np.zeros((8, 8), dtype=np.int32)
    gt[0:4, 0:4] = 1
    pred = gt.copy()
    pred[5:8, 5:8] = 2  # an extra prediction: gt -> pred is perfect, pred -> gt averages 1 and 0
    assert cell_metrics([gt], [pred]).sbd == pytest.approx(0.5)


def test_boundary_f_hand_case():
    """A 6x6 square and the same square one column to the right: 20-pixel rings sharing the
    5 common columns of the top and bottom rows (10 px). Within 1 px every pixel has a match."""
    gt = np.zeros((12, 12), dtype=np.int32)
    gt[2:8, 2:8] = 1
    pred = np.roll(gt, 1, axis=1)
    exact = cell_metrics([gt], [pred], boundary_tolerance=0)
    assert (exact.boundary_precision, exact.boundary_recall, exact.boundary_f) == pytest.approx(
        (0.5, 0.5, 0.5)
    )
    assert cell_metrics([gt], [pred], boundary_tolerance=1).boundary_f == pytest.approx(1.0)
    assert cell_metrics([gt], [gt]).boundary_f == 1.0


def test_matching_is_one_to_one_and_maximal():
    # gt 0 overlaps preds 0 and 1, gt 1 only pred 0: greedy by IoU would match one pair
    iou = np.array([[0.6, 0.3], [0.2, 0.0]])
    assert match(iou, 0.1) == (2, pytest.approx(0.5))
    assert match(iou, 0.5) == (1, pytest.approx(0.6))
    assert match(np.zeros((0, 3)), 0.5) == (0, 0.0)


def test_pooling_versus_per_image_mean():
    gt, pred = hand_case()
    single = np.zeros((10, 10), dtype=np.int32)
    single[2:6, 2:6] = 1
    pooled = cell_metrics([gt, single], [pred, single], thresholds=(0.5,))
    per_image = cell_metrics([gt, single], [pred, single], thresholds=(0.5,), by_image=True)
    assert pooled.ap == pytest.approx([3 / 5])  # TP 3, FP 1, FN 1 over both images
    assert per_image.ap == pytest.approx([(0.5 + 1.0) / 2])


def test_input_forms_agree():
    gt, pred = hand_case()
    masks = torch.from_numpy(np.stack([pred == k for k in (1, 2, 3)]))
    predicted = Instances(
        (10, 10), masks_to_boxes(masks), torch.zeros(3, dtype=torch.long), masks=masks
    )
    gt_masks = torch.from_numpy(np.stack([gt == k for k in (1, 2, 3)] + [np.ones((10, 10), bool)]))
    crowd = torch.tensor([False, False, False, True])  # the crowd region is left out
    truth = Instances(
        (10, 10),
        masks_to_boxes(gt_masks),
        torch.zeros(4, dtype=torch.long),
        masks=gt_masks,
        iscrowd=crowd,
    )
    reference = cell_metrics([gt], [pred]).to_dict()
    assert cell_metrics([truth], [predicted]).to_dict() == reference
    assert cell_metrics([torch.from_numpy(gt)], [masks.numpy()]).to_dict() == reference


def test_empty_cases():
    gt, _ = hand_case()
    empty = np.zeros_like(gt)
    missed = cell_metrics([gt], [empty])
    assert missed.ap == [0.0] * len(DEFAULT_THRESHOLDS)
    assert (missed.aji, missed.sbd, missed.f1, missed.boundary_f) == (0.0, 0.0, 0.0, 0.0)
    nothing = cell_metrics([empty], [empty]).to_dict()
    assert all(v is None for v in nothing.values())  # undefined without objects
    with pytest.raises(ValueError, match="image 0: gt is"):
        cell_metrics([gt], [np.zeros((5, 5), dtype=np.int32)])
    with pytest.raises(TypeError, match="label image"):
        cell_metrics([gt.astype(float)], [gt])


def test_from_coco_ignores_categories_and_thresholds_scores():
    gt, results = random_coco_set(2, num_images=4, crowded_image=False)
    perfect = [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "segmentation": a["segmentation"],
            "score": 0.9,
        }
        for a in gt["annotations"]
        if not a["iscrowd"] and isinstance(a["segmentation"], dict)
    ]
    polygons = [
        a for a in gt["annotations"] if not a["iscrowd"] and not isinstance(a["segmentation"], dict)
    ]
    m = cell_metrics_from_coco(gt, perfect)
    assert m.fn[0] == len(polygons) and m.fp[0] == 0 and m.tp[0] == len(perfect)
    low = [{**r, "score": 0.2} for r in perfect]
    assert cell_metrics_from_coco(gt, low).tp[0] == 0
    assert cell_metrics_from_coco(gt, low, score_threshold=0.1).tp[0] == len(perfect)
    assert (
        0
        < cell_metrics_from_coco(
            gt, [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        ).aji
        < 1
    )
