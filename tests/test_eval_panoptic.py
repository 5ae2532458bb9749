"""Panoptic quality: a hand-computed case, file round trip, and COCO128 panoptic gt against
itself and against perturbed copies."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from instaseg.data.errors import DataError
from instaseg.eval import panoptic_quality
from instaseg.eval.panoptic import id_to_rgb, image_counts, rgb_to_id, summarise

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PANOPTIC = SHARED / "coco128" / "panoptic_segmentation" / "annotations"
needs_data = pytest.mark.skipif(not PANOPTIC.is_dir(), reason="../shared/data is absent")

CATEGORIES = {
    1: {"id": 1, "name": "person", "isthing": 1},
    2: {"id": 2, "name": "grass", "isthing": 0},
    3: {"id": 3, "name": "sky", "isthing": 0},
}
GT_IDS = np.array(
    [
        [1, 1, 1, 1, 2, 2, 2, 2],
        [1, 1, 1, 1, 2, 2, 2, 2],
        [0, 0, 3, 3, 2, 2, 2, 2],
        [0, 0, 3, 3, 2, 2, 2, 2],
    ]
)
GT_SEGMENTS = [
    {"id": 1, "category_id": 1, "iscrowd": 0},
    {"id": 2, "category_id": 2, "iscrowd": 0},
    {"id": 3, "category_id": 1, "iscrowd": 1},
]
PRED_IDS = np.array(
    [
        [5, 5, 5, 5, 6, 6, 0, 0],
        [5, 5, 5, 0, 6, 6, 0, 0],
        [5, 5, 7, 7, 6, 6, 0, 0],
        [8, 8, 7, 7, 6, 6, 0, 0],
    ]
)
PRED_SEGMENTS = [
    {"id": 5, "category_id": 1},  # 9 px: 7 on gt 1, 2 on VOID -> IoU 7 / (9 + 8 - 7 - 2) = 7/8
    {"id": 6, "category_id": 2},  # 8 px inside gt 2 (16 px): IoU exactly 0.5, no match
    {"id": 7, "category_id": 1},  # entirely on the person crowd region: ignored
    {"id": 8, "category_id": 3},  # entirely on VOID: ignored
]


def test_hand_case_counts_and_scores():
    counts = image_counts(GT_IDS, GT_SEGMENTS, PRED_IDS, PRED_SEGMENTS)
    assert (counts[1].tp, counts[1].fp, counts[1].fn) == (1, 0, 0)
    assert counts[1].iou_sum == pytest.approx(7 / 8)
    assert (counts[2].tp, counts[2].fp, counts[2].fn) == (0, 1, 1)
    assert 3 not in counts  # sky: nothing counted
    result = summarise(counts, CATEGORIES)
    assert result.per_class == {
        "person": pytest.approx({"PQ": 7 / 8, "SQ": 7 / 8, "RQ": 1.0}),
        "grass": {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0},
    }
    assert result.groups["things"] == pytest.approx({"PQ": 7 / 8, "SQ": 7 / 8, "RQ": 1.0, "n": 1})
    assert result.groups["stuff"] == pytest.approx({"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "n": 1})
    assert result.groups["all"] == pytest.approx({"PQ": 7 / 16, "SQ": 7 / 16, "RQ": 0.5, "n": 2})


def write_panoptic(
    folder: Path, name: str, images: dict[int, tuple[np.ndarray, list[dict]]]
) -> Path:
    (folder / name).mkdir(parents=True)
    annotations = []
    for image_id, (ids, segments) in images.items():
        Image.fromarray(id_to_rgb(ids)).save(folder / name / f"{image_id}.png")
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments}
        )
    data = {"annotations": annotations, "categories": list(CATEGORIES.values())}
    (folder / f"{name}.json").write_text(json.dumps(data))
    return folder / f"{name}.json"


def test_files_round_trip_and_errors(tmp_path):
    big = 256 * 256 + 3  # ids above 255 use more than the red channel
    gt_json = write_panoptic(tmp_path, "gt", {1: (GT_IDS, GT_SEGMENTS)})
    pred_json = write_panoptic(
        tmp_path,
        "pred",
        {
            1: (
                np.where(PRED_IDS == 5, big, PRED_IDS),
                [{**PRED_SEGMENTS[0], "id": big}, *PRED_SEGMENTS[1:]],
            )
        },
    )
    assert np.array_equal(rgb_to_id(id_to_rgb(np.array([[big]]))), [[big]])
    result = panoptic_quality(gt_json, pred_json)
    assert result.to_dict()["PQ"] == pytest.approx(7 / 16)
    assert result.to_dict()["PQ_th"] == pytest.approx(7 / 8)
    broken = write_panoptic(tmp_path / "b", "pred", {1: (PRED_IDS, PRED_SEGMENTS[:-1])})
    with pytest.raises(DataError, match=r"image 1: prediction PNG has segment id 8"):
        panoptic_quality(gt_json, broken)
    missing = write_panoptic(tmp_path / "c", "pred", {2: (PRED_IDS, PRED_SEGMENTS)})
    with pytest.raises(DataError, match=r"image 1: no prediction for this image"):
        panoptic_quality(gt_json, missing)


def subset(count: int) -> dict:
    data = json.loads((PANOPTIC / "panoptic_val2017.json").read_text())
    data["annotations"] = data["annotations"][:count]
    return data


def copy_pngs(data: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for ann in data["annotations"]:
        shutil.copy(PANOPTIC / "panoptic_val2017" / ann["file_name"], folder / ann["file_name"])
    return folder


@pytest.mark.shared_data
@needs_data
def test_coco128_against_itself():
    gt = subset(40)
    result = panoptic_quality(
        gt, gt, gt_folder=PANOPTIC / "panoptic_val2017", pred_folder=PANOPTIC / "panoptic_val2017"
    )
    for group in ("all", "things", "stuff"):
        assert result.groups[group]["PQ"] == 1.0 and result.groups[group]["n"] > 0
    assert all(c.fp == 0 and c.fn == 0 for c in result.counts.values())


def first_plain_segment(data: dict) -> tuple[dict, dict]:
    for ann in data["annotations"]:
        for segment in ann["segments_info"]:
            if not segment["iscrowd"] and segment["area"] > 500:
                return ann, segment
    raise AssertionError("no segment to perturb")


@pytest.mark.shared_data
@needs_data
def test_coco128_dropped_and_relabelled_segments(tmp_path):
    gt = subset(12)
    gt_dir = PANOPTIC / "panoptic_val2017"
    reference = panoptic_quality(gt, gt, gt_folder=gt_dir, pred_folder=gt_dir).counts
    names = {c["id"]: c["name"] for c in gt["categories"]}
    # drop one segment: its pixels become unassigned, its gt a false negative
    dropped = copy.deepcopy(gt)
    ann, segment = first_plain_segment(dropped)
    ann["segments_info"].remove(segment)
    folder = copy_pngs(dropped, tmp_path / "dropped")
    ids = rgb_to_id(np.asarray(Image.open(folder / ann["file_name"]).convert("RGB")))
    Image.fromarray(id_to_rgb(np.where(ids == segment["id"], 0, ids))).save(
        folder / ann["file_name"]
    )
    n = reference[segment["category_id"]].tp
    result = panoptic_quality(gt, dropped, gt_folder=gt_dir, pred_folder=folder)
    expected_pq = (n - 1) / (n - 1 + 0.5)
    assert result.per_class[names[segment["category_id"]]]["PQ"] == pytest.approx(expected_pq)
    others = [v for k, v in result.per_class.items() if k != names[segment["category_id"]]]
    assert all(v["PQ"] == 1.0 for v in others)
    # relabel one segment to another category: an FN for the old one, an FP for the new one
    swapped = copy.deepcopy(gt)
    ann, segment = first_plain_segment(swapped)
    old, new = segment["category_id"], next(c for c in names if c not in reference)
    segment["category_id"] = new
    result = panoptic_quality(gt, swapped, gt_folder=gt_dir, pred_folder=gt_dir)
    assert (result.counts[new].tp, result.counts[new].fp) == (0, 1)
    assert result.counts[old].fn == 1 and result.counts[old].tp == reference[old].tp - 1


@pytest.mark.shared_data
@needs_data
def test_coco128_eroded_prediction_lowers_sq(tmp_path):
    gt = subset(6)
    folder = copy_pngs(gt, tmp_path / "eroded")
    for ann in gt["annotations"]:
        ids = rgb_to_id(np.asarray(Image.open(folder / ann["file_name"]).convert("RGB")))
        edge = ndimage.grey_dilation(ids, size=3) != ndimage.grey_erosion(ids, size=3)
        Image.fromarray(id_to_rgb(np.where(edge, 0, ids))).save(folder / ann["file_name"])
    kept = copy.deepcopy(gt)
    for ann in kept["annotations"]:  # a segment eroded away entirely is no longer predicted
        ids = rgb_to_id(np.asarray(Image.open(folder / ann["file_name"]).convert("RGB")))
        present = set(np.unique(ids).tolist())
        ann["segments_info"] = [s for s in ann["segments_info"] if s["id"] in present]
    result = panoptic_quality(gt, kept, gt_folder=PANOPTIC / "panoptic_val2017", pred_folder=folder)
    assert 0.5 < result.groups["all"]["SQ"] < 1.0
    assert result.groups["all"]["PQ"] < result.groups["all"]["SQ"] * 1.0000001
    for scores in result.per_class.values():
        assert scores["PQ"] == pytest.approx(scores["SQ"] * scores["RQ"])
