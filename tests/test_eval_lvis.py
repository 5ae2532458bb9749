"""LVIS-style federated evaluation on a hand-reasoned case."""

from __future__ import annotations

import copy

import pytest

from instaseg.data.errors import DataError, DataWarning
from instaseg.eval import evaluate

LVIS_KEYS = [
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "APr",
    "APc",
    "APf",
    "AR300",
    "ARs",
    "ARm",
    "ARl",
]


def box_ann(ann_id: int, image_id: int, category_id: int, box: list[float]) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": 0,
    }


def det(image_id: int, category_id: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


def lvis_gt() -> dict:
    """Image 1 has apple and banana; cherry is verified absent (negative) and banana is not
    exhaustively annotated. Image 2 has a date; apple is verified absent."""
    return {
        "images": [
            {
                "id": 1,
                "height": 100,
                "width": 100,
                "neg_category_ids": [3],
                "not_exhaustive_category_ids": [2],
            },
            {
                "id": 2,
                "height": 100,
                "width": 100,
                "neg_category_ids": [1],
                "not_exhaustive_category_ids": [],
            },
        ],
        "annotations": [
            box_ann(1, 1, 1, [10, 10, 20, 20]),
            box_ann(2, 1, 2, [50, 50, 20, 20]),
            box_ann(3, 2, 4, [10, 10, 30, 30]),
        ],
        "categories": [
            {"id": 1, "name": "apple", "frequency": "f"},
            {"id": 2, "name": "banana", "frequency": "c"},
            {"id": 3, "name": "cherry", "frequency": "r"},
            {"id": 4, "name": "date", "frequency": "f"},
        ],
    }


DETECTIONS = [
    det(1, 1, [10, 10, 20, 20], 0.9),  # apple found
    det(2, 1, [60, 60, 10, 10], 0.95),  # apple where it is verified absent: a false positive
    det(1, 2, [0, 70, 10, 10], 0.95),  # unmatched banana, but banana is not exhaustive: ignored
    det(1, 2, [50, 50, 20, 20], 0.5),  # banana found
    det(2, 2, [70, 0, 10, 10], 0.99),  # banana in image 2: neither present nor negative: dropped
    det(1, 3, [80, 80, 10, 10], 0.8),  # cherry false positive; cherry has no gt anywhere
    det(2, 4, [10, 10, 30, 30], 0.7),  # date found
]


def test_federated_rules_hand_case():
    result = evaluate(lvis_gt(), DETECTIONS, iou_types=("bbox",))
    assert result.protocol == "lvis" and result.max_dets == 300
    metrics = result.metrics["bbox"]
    assert list(metrics) == LVIS_KEYS
    per_class = {name: ap["AP"] for name, ap in result.per_class["bbox"].items()}
    # apple: the higher-scoring negative-image detection halves precision at full recall
    assert per_class == pytest.approx({"apple": 0.5, "banana": 1.0, "cherry": None, "date": 1.0})
    assert metrics["AP"] == pytest.approx(2.5 / 3)
    assert metrics["APf"] == pytest.approx(0.75)
    assert metrics["APc"] == pytest.approx(1.0)
    assert metrics["APr"] is None  # no rare category has ground truth
    assert metrics["AR300"] == pytest.approx(1.0)
    assert metrics["APs"] == pytest.approx(metrics["AP"]) and metrics["APm"] is None


def test_same_data_under_the_coco_protocol():
    """COCO counts the two banana detections that LVIS leaves out as false positives."""
    result = evaluate(lvis_gt(), DETECTIONS, iou_types=("bbox",), lvis=False)
    assert result.protocol == "coco" and "APr" not in result.metrics["bbox"]
    per_class = {name: ap["AP"] for name, ap in result.per_class["bbox"].items()}
    assert per_class == pytest.approx({"apple": 0.5, "banana": 1 / 3, "cherry": None, "date": 1.0})


def test_300_detections_per_image_over_all_categories():
    gt = lvis_gt()
    detections = [det(1, 1 + k % 2, [80, 80, 5, 5], 0.9) for k in range(300)]
    detections.append(det(1, 1, [10, 10, 20, 20], 0.1))  # the only hit scores lowest
    with pytest.warns(DataWarning, match=r"1 detections beyond 300 per image"):
        capped = evaluate(gt, detections, iou_types=("bbox",))
    assert capped.per_class["bbox"]["apple"]["AP"] == 0.0
    wider = evaluate(gt, detections, iou_types=("bbox",), max_dets=301)
    assert wider.metrics["bbox"]["AR301"] == pytest.approx(1 / 3)  # apple found; banana, date not
    assert wider.per_class["bbox"]["apple"]["AP"] > 0


def test_lvis_fields_are_validated():
    plain = lvis_gt()
    for image in plain["images"]:
        del image["neg_category_ids"]
    assert evaluate(plain, DETECTIONS, iou_types=("bbox",)).protocol == "coco"
    bad = copy.deepcopy(lvis_gt())
    bad["categories"][0]["frequency"] = "often"
    with pytest.raises(DataError, match=r"category 1: LVIS 'frequency' must be one of"):
        evaluate(bad, DETECTIONS, iou_types=("bbox",))
    bad = copy.deepcopy(lvis_gt())
    bad["images"][1]["neg_category_ids"] = [42]
    with pytest.raises(
        DataError, match=r"image 2: 'neg_category_ids' names unknown categories \[42\]"
    ):
        evaluate(bad, DETECTIONS, iou_types=("bbox",))
