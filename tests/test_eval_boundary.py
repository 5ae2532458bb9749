"""Boundary IoU / Boundary AP against a plain independent implementation (erosion, dense IoU,
pycocotools' matcher on min(mask IoU, boundary IoU))."""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pycocotools.mask as coco_mask
import pytest
from eval_synthetic import box_of, ellipse, jitter, random_coco_set
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from instaseg.eval import boundary_iou, evaluate, mask_boundary
from instaseg.eval.boundary import boundary_width, rle_boundary_pixels, rle_counts, rle_pixels
from instaseg.ops.masks import mask_to_rle, mask_to_uncompressed_rle


def reference_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """Cheng et al.: erode the zero-padded mask d times with a 3x3 square, keep the rest."""
    h, w = mask.shape
    d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
    eroded = ndimage.binary_erosion(
        mask, structure=np.ones((3, 3), bool), iterations=d, border_value=0
    )
    return mask & ~eroded


def dense_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """[D, H, W] x [G, H, W] -> [D, G]; a crowd gt divides by the detection's area."""
    d = dt.reshape(len(dt), -1).astype(np.float64)
    g = gt.reshape(len(gt), -1).astype(np.float64)
    inter = d @ g.T
    union = d.sum(1)[:, None] + g.sum(1)[None, :] - inter
    union = np.where(crowd[None, :], d.sum(1)[:, None], union)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class ReferenceBoundaryEval(COCOeval):
    """pycocotools' matching and accumulation on min(mask IoU, boundary IoU)."""

    def computeIoU(self, imgId, catId):  # pycocotools' name
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gt or not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: self.params.maxDets[-1]]
        gt_masks = np.stack([coco_mask.decode(g["segmentation"]).astype(bool) for g in gt])
        dt_masks = np.stack([coco_mask.decode(d["segmentation"]).astype(bool) for d in dt])
        crowd = np.array([bool(g["iscrowd"]) for g in gt])
        mask_ious = dense_iou(dt_masks, gt_masks, crowd)
        edges = dense_iou(
            np.stack([reference_boundary(m) for m in dt_masks]),
            np.stack([reference_boundary(m) for m in gt_masks]),
            crowd,
        )
        return np.where(crowd[None, :], mask_ious, np.minimum(mask_ious, edges))


def reference_stats(gt: dict, results: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        e = ReferenceBoundaryEval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def add_image(
    gt: dict, results: list[dict], size: tuple[int, int], masks: list[np.ndarray], seed: int
):
    """Append an image with these gt masks (category 1) and one jittered detection each."""
    rng = np.random.default_rng(seed)
    image_id = max(im["id"] for im in gt["images"]) + 1
    gt["images"].append({"id": image_id, "height": size[0], "width": size[1]})
    for mask in masks:
        rle = mask_to_rle(mask)
        gt["annotations"].append(
            {
                "id": len(gt["annotations"]) + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": box_of(rle),
                "iscrowd": 0,
            }
        )
        moved = mask_to_rle(jitter(mask, rng))
        results.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "segmentation": moved,
                "bbox": box_of(moved),
                "score": float(rng.random()),
            }
        )


def full_height_bars(size: tuple[int, int]) -> list[np.ndarray]:
    bars = []
    for x in range(10, size[1] - 40, 60):
        bar = np.zeros(size, dtype=bool)
        bar[:, x : x + 40] = True
        bars.append(bar)
    return bars


def test_rle_decoding_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 90, size=2))
        mask = rng.random((h, w)) < rng.random()
        rle = mask_to_rle(mask)
        assert rle_counts(rle["counts"]).tolist() == mask_to_uncompressed_rle(mask)["counts"]
        rows, cols = rle_pixels(rle)
        rebuilt = np.zeros((h, w), dtype=bool)
        rebuilt[rows, cols] = True
        assert np.array_equal(rebuilt, mask)


def test_mask_boundary_matches_erosion():
    rng = np.random.default_rng(1)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(3, 120, size=2))
        mask = ellipse(h, w, rng, str(rng.choice(["small", "medium", "large"])))
        if trial % 3 == 0:
            mask = ndimage.binary_opening(rng.random((h, w)) < 0.6)
        ratio = float(rng.choice([0.02, 0.05, 0.1]))
        expected = reference_boundary(mask, ratio)
        assert np.array_equal(mask_boundary(mask, boundary_width((h, w), ratio)), expected)
        flat = np.zeros(h * w, dtype=bool)
        flat[rle_boundary_pixels(mask_to_rle(mask), boundary_width((h, w), ratio))] = True
        assert np.array_equal(flat.reshape(w, h).T, expected)  # column-major indices


def test_boundary_width_rounds_like_the_reference():
    assert boundary_width((45, 60)) == 2  # 0.02 * 75 = 1.5
    assert boundary_width((105, 140)) == 4  # 3.5
    assert boundary_width((480, 640)) == 16
    assert boundary_width((4, 4)) == 1  # at least one pixel


def test_boundary_iou_hand_case():
    """20x20 image, d = 1: a 10x10 square and the same square one column to the right.
    Each ring has 36 pixels; they share the top and bottom rows' 9 common columns."""
    a = np.zeros((20, 20), dtype=bool)
    a[5:15, 5:15] = True
    b = np.roll(a, 1, axis=1)
    assert boundary_iou(a, b) == pytest.approx(18 / 54)
    assert boundary_iou(a, a) == 1.0
    assert boundary_iou(a, np.zeros_like(a)) == 0.0


def test_boundary_ap_equals_the_reference():
    """Random sets plus the cases where faster-coco-eval's own boundary is off: full-height
    masks in a short image (2 * d >= height) and sizes where d * 2 is odd (45x60, 105x140)."""
    for seed in range(3):
        gt, results = random_coco_set(seed, num_images=5, crowded_image=False)
        add_image(gt, results, (8, 300), full_height_bars((8, 300)), seed)
        rng = np.random.default_rng(seed)
        add_image(gt, results, (45, 60), [ellipse(45, 60, rng, "medium") for _ in range(3)], seed)
        add_image(
            gt, results, (105, 140), [ellipse(105, 140, rng, "large") for _ in range(3)], seed
        )
        ours = evaluate(gt, results, iou_types=("boundary",)).stats["boundary"]
        np.testing.assert_allclose(ours, reference_stats(gt, results), rtol=0, atol=1e-9)


def test_boundary_ap_is_stricter_than_mask_ap():
    gt, results = random_coco_set(7, num_images=5, crowded_image=False)
    result = evaluate(gt, results, iou_types=("segm", "boundary"))
    assert result.metrics["boundary"]["AP"] <= result.metrics["segm"]["AP"]
    with pytest.raises(ValueError, match="dilation_ratio"):
        evaluate(gt, results, iou_types=("boundary",), boundary_dilation_ratio=0.0)
