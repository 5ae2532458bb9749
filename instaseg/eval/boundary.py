"""Boundary IoU and Boundary AP (Cheng et al., CVPR 2021).

The boundary of a mask is the set of its pixels within `d` pixels (chessboard distance) of
the mask's exterior, where everything outside the image counts as exterior (the reference
code erodes the zero-padded mask `d` times with a 3x3 square), and
`d = max(1, round(dilation_ratio * image_diagonal))` with Python's rounding, as in the
reference code. Boundary AP matches detections on min(mask IoU, boundary IoU); a crowd region
keeps its mask IoU (intersection over the detection's area).

Matching and accumulation run in faster-coco-eval, but not its "boundary" IoU type: in 1.8.0
its boundaries differ from the definition in two ways (checked against the erosion reference):
a mask that spans the full height of an image with 2 * d >= height gets a wrong boundary, and
`d` rounds exact halves down (a 45x60 or 105x140 image gets d one pixel thinner than the
reference). `BoundaryCOCOeval` therefore supplies its own IoUs to the library's matcher.
"""

from __future__ import annotations

import math

import numpy as np
from faster_coco_eval import COCOeval_faster
from scipy import ndimage, sparse


def boundary_width(image_size: tuple[int, int], dilation_ratio: float = 0.02) -> int:
    """d = max(1, round(dilation_ratio * diagonal)) pixels for an image of (height, width)."""
    height, width = image_size
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def mask_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Bool [H, W] -> bool [H, W]: pixels of `mask` within `width` px (chessboard) of its
    exterior; pixels outside the array count as exterior."""
    out = np.zeros(np.shape(mask), dtype=bool)
    out[pixel_boundary(*np.nonzero(mask), width)] = True
    return out


def boundary_iou(mask_a: np.ndarray, mask_b: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two bool masks [H, W] of the same image; 0 when both are empty."""
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"masks must have the same shape, got {mask_a.shape} and {mask_b.shape}")
    width = boundary_width(mask_a.shape, dilation_ratio)
    a, b = mask_boundary(mask_a, width), mask_boundary(mask_b, width)
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def rle_counts(counts: str | bytes) -> np.ndarray:
    """Decode COCO's compressed RLE string -> run lengths int64 [M], column-major, starting
    with a background run. Each value is 5-bit groups (low first) in chars offset by 48, bit
    0x20 meaning "more groups", 0x10 in the last group the sign; from the fourth value on,
    the value is stored as a difference to the one two places back."""
    data = np.frombuffer(counts.encode("ascii") if isinstance(counts, str) else counts, np.uint8)
    if data.size == 0:
        return np.zeros(0, dtype=np.int64)
    groups = data.astype(np.int64) - 48
    last = (groups & 0x20) == 0  # the final group of each value
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(groups.size) - np.repeat(starts, np.diff(np.append(starts, groups.size)))
    values = np.add.reduceat((groups & 0x1F) << (5 * position), starts)
    negative = (groups[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (position[last][negative] + 1))
    values[1::2] = np.cumsum(values[1::2])  # undo the differences to the value two back
    values[2::2] = np.cumsum(values[2::2])
    return values


def rle_pixels(rle: dict) -> tuple[np.ndarray, np.ndarray]:
    """Foreground (rows, cols) int64 [A] of a compressed RLE, without decoding the full image."""
    height = rle["size"][0]
    counts = rle_counts(rle["counts"])
    ends = np.cumsum(counts)
    lengths, run_starts = counts[1::2], (ends - counts)[1::2]
    offsets = np.repeat(run_starts - (np.cumsum(lengths) - lengths), lengths)
    flat = np.arange(int(lengths.sum()), dtype=np.int64) + offsets  # column-major indices
    return flat % height, flat // height


def pixel_boundary(rows: np.ndarray, cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boundary (see module doc) of the object made of pixels (rows, cols), int [A] each ->
    the boundary pixels' (rows, cols), computed in the object's bounding box."""
    if rows.size == 0:
        return rows, cols
    y0, x0 = int(rows.min()), int(cols.min())
    # a one-pixel zero frame is the exterior: the object has no pixel beyond its box, and
    # beyond the image edge is exterior by definition
    crop = np.zeros((int(rows.max()) - y0 + 3, int(cols.max()) - x0 + 3), dtype=np.uint8)
    crop[rows - y0 + 1, cols - x0 + 1] = 1
    distance = ndimage.distance_transform_cdt(crop, metric=_CHESSBOARD)
    by, bx = np.nonzero((crop == 1) & (distance <= width))
    return by + (y0 - 1), bx + (x0 - 1)


def rle_boundary_pixels(rle: dict, width: int) -> np.ndarray:
    """Column-major flat indices int64 [B] of the boundary of a compressed RLE."""
    rows, cols = pixel_boundary(*rle_pixels(rle), width)
    return cols * rle["size"][0] + rows


_CHESSBOARD = np.ones((3, 3), dtype=bool)


class BoundaryCOCOeval(COCOeval_faster):
    """faster-coco-eval with Boundary AP IoUs: create it with iouType "segm" (same areas,
    thresholds and RLEs); `computeIoU` returns min(mask IoU, boundary IoU) [D, G]."""

    def __init__(self, *args, dilation_ratio: float = 0.02, **kwargs):
        super().__init__(*args, **kwargs)
        if self.params.iouType != "segm":
            raise ValueError("BoundaryCOCOeval runs on iouType 'segm'")
        if not 0 < dilation_ratio < 1:
            raise ValueError(f"dilation_ratio must be in (0, 1), got {dilation_ratio}")
        self.dilation_ratio = dilation_ratio

    def computeIoU(self, imgId: int, catId: int):  # the library's (pycocotools') name
        mask_ious = super().computeIoU(imgId, catId)
        if len(mask_ious) == 0:
            return mask_ious
        use_cats = bool(self.params.useCats)
        cats = [catId] if use_cats else self.params.catIds
        gt = self.gt_dataset.get_instances([imgId], cats, use_cats)[0][0]
        dt = self.dt_dataset.get_instances([imgId], cats, use_cats)[0][0]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
        dt = [dt[i] for i in order]  # the order and cap the mask IoUs use
        boundary_ious = self._boundary_ious(dt, gt)
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gt])
        return np.where(crowd[None, :], mask_ious, np.minimum(mask_ious, boundary_ious))

    def _boundary_ious(self, dt: list[dict], gt: list[dict]) -> np.ndarray:
        """float [D, G] IoU of the boundaries."""
        width = boundary_width(tuple(gt[0]["segmentation"]["size"]), self.dilation_ratio)
        d_sets, g_sets = _pixel_matrix(dt, width), _pixel_matrix(gt, width)
        inter = (d_sets @ g_sets.T).toarray().astype(np.float64)
        d_area = np.asarray(d_sets.sum(axis=1), dtype=np.float64)  # [D, 1]
        g_area = np.asarray(g_sets.sum(axis=1), dtype=np.float64).T  # [1, G]
        union = d_area + g_area - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _pixel_matrix(anns: list[dict], width: int) -> sparse.csr_matrix:
    """Sparse bool [N, H*W] of the annotations' boundaries, cached on each annotation dict."""
    pixels = []
    for ann in anns:
        if ann.get("_boundary_width") != width:
            ann["_boundary_pixels"] = rle_boundary_pixels(ann["segmentation"], width)
            ann["_boundary_width"] = width
        pixels.append(ann["_boundary_pixels"])
    height, image_width = anns[0]["segmentation"]["size"]
    rows = np.repeat(np.arange(len(pixels)), [len(p) for p in pixels])
    cols = np.concatenate(pixels)
    data = np.ones(len(cols), dtype=np.int32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(pixels), height * image_width))
