"""Random COCO ground truth and results for the evaluation tests (not a test module)."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask
from scipy import ndimage

from instaseg.ops.masks import mask_to_rle, mask_to_uncompressed_rle

# object half-sizes giving small (< 32^2), medium and large (> 96^2) areas
_RADII = {"small": (2, 9), "medium": (12, 30), "large": (40, 70)}


def ellipse(height: int, width: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """A random filled ellipse (bool [H, W]) of the given size class, clipped by the image."""
    low, high = _RADII[kind]
    ry, rx = rng.integers(low, high + 1, size=2)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    yy, xx = np.ogrid[:height, :width]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if not mask.any():
        mask[cy, cx] = True
    return mask


def jitter(mask: np.ndarray, rng: np.random.Generator, max_shift: int = 3) -> np.ndarray:
    """Shift by up to `max_shift` px, then maybe erode or dilate; never empty."""
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
    moved = np.zeros_like(mask)
    h, w = mask.shape
    moved[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    choice = rng.random()
    if choice < 0.25:
        moved = ndimage.binary_erosion(moved)
    elif choice < 0.5:
        moved = ndimage.binary_dilation(moved)
    return moved if moved.any() else mask


def box_of(rle: dict) -> list[float]:
    return [float(v) for v in coco_mask.toBbox(rle)]


def random_coco_set(
    seed: int, num_images: int = 8, num_categories: int = 3, crowded_image: bool = True
) -> tuple[dict, list[dict]]:
    """(gt dict, results list) mixing classes, crowd regions (uncompressed RLE), polygon gt,
    small/medium/large objects, an image without gt, an image without detections and, when
    `crowded_image`, one image with more than 100 detections of one class."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for index in range(num_images):
        image_id = 10 + index * 3  # ids need not be contiguous
        height, width = (int(v) for v in rng.integers(60, 220, size=2))
        images.append(
            {"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.png"}
        )
        num_gt = 0 if index == 1 else int(rng.integers(1, 9))
        for _ in range(num_gt):
            kind = str(rng.choice(["small", "medium", "large"], p=[0.45, 0.35, 0.2]))
            mask = ellipse(height, width, rng, kind)
            category_id = int(rng.integers(1, num_categories + 1))
            crowd = rng.random() < 0.12
            segmentation = mask_to_uncompressed_rle(mask) if crowd else mask_to_rle(mask)
            if not crowd and rng.random() < 0.2:  # a rectangle as a polygon
                x0, y0, x1, y1 = _rect(mask)
                segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                mask = (
                    coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width))[..., 0] > 0
                )
            rle = mask_to_rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "bbox": box_of(rle),
                    "iscrowd": int(crowd),
                }
            )
            if index != 2:
                for _ in range(int(rng.integers(0, 3))):  # matches and duplicates
                    label = (
                        category_id
                        if rng.random() < 0.85
                        else int(rng.integers(1, num_categories + 1))
                    )
                    results.append(_result(image_id, label, jitter(mask, rng), rng))
        if index != 2:
            num_fp = 130 if crowded_image and index == 0 else int(rng.integers(0, 6))
            for _ in range(num_fp):
                kind = str(rng.choice(["small", "medium", "large"]))
                label = 1 if index == 0 else int(rng.integers(1, num_categories + 1))
                results.append(_result(image_id, label, ellipse(height, width, rng, kind), rng))
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_categories + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _rect(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _result(image_id: int, category_id: int, mask: np.ndarray, rng: np.random.Generator) -> dict:
    rle = mask_to_rle(mask)
    score = float(np.round(rng.random(), 2))  # rounding makes ties
    return {
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "bbox": box_of(rle),
        "score": score,
    }


def jitter_results(
    gt: dict, seed: int, drop: float = 0.1, false_positives: float = 0.15, max_shift: int = 3
) -> list[dict]:
    """COCO results from a gt dict: each object shifted / eroded / dilated (a share `drop`
    left out), plus about `false_positives` times as many random blobs; random scores, with
    jittered true objects scoring higher on average."""
    from instaseg.ops.masks import segmentation_to_mask

    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    results = []
    for ann in gt["annotations"]:
        if rng.random() < drop:
            continue
        mask = segmentation_to_mask(ann["segmentation"], *sizes[ann["image_id"]])
        mask = jitter(mask, rng, max_shift)
        results.append(_scored(ann["image_id"], ann["category_id"], mask, 0.3 + 0.7 * rng.random()))
    image_ids = list(sizes)
    category_ids = [c["id"] for c in gt["categories"]]
    for _ in range(int(false_positives * len(gt["annotations"]))):
        image_id = image_ids[rng.integers(len(image_ids))]
        mask = ellipse(*sizes[image_id], rng, "small")
        results.append(
            _scored(
                image_id, category_ids[rng.integers(len(category_ids))], mask, 0.6 * rng.random()
            )
        )
    return results


def _scored(image_id: int, category_id: int, mask: np.ndarray, score: float) -> dict:
    rle = mask_to_rle(mask)
    return {
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "bbox": box_of(rle),
        "score": score,
    }
