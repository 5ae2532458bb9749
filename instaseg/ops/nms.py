"""Greedy non-maximum suppression with torchvision's semantics, vectorised for the CPU.

Boxes are xyxy in absolute pixels. The greedy rule: visit boxes by decreasing score (ties by
lower index, as torchvision's stable sort does); keep a box unless a kept box overlaps it with
IoU strictly greater than `iou_threshold`. IoU has no "+1" and a pair of zero-area boxes has
IoU 0, so zero-area boxes never suppress anything.

Boxes are visited in blocks of still-undecided boxes. A block is first resolved exactly
among itself (see `_resolve_block`); its kept boxes then suppress every later undecided box
they overlap, through one [kept, remaining] IoU matrix, and suppressed boxes drop out of all
later work. Memory stays O(N * block) instead of O(N^2). `batched_nms` visits boxes category
by category, so a block is only compared with boxes of its own categories.
"""

from __future__ import annotations

import torch
from torch import Tensor

_BLOCK = 256


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS. boxes: float [N, 4] xyxy, scores: float [N] -> int64 [K] indices of the kept
    boxes, sorted by decreasing score."""
    _check_inputs(boxes, scores)
    return _greedy_nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes with different `idxs` never suppress each other.

    boxes: float [N, 4] xyxy, scores: float [N], idxs: int [N] (class or image ids) ->
    int64 [K] indices of the kept boxes, sorted by decreasing score.

    Same result as torchvision's coordinate-offset trick in exact arithmetic, but computed by
    masking cross-category pairs out of the IoU matrix, so it keeps full float precision for
    large coordinates and many categories.
    """
    _check_inputs(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have shape {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if idxs.is_floating_point() or idxs.is_complex():
        raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
    return _greedy_nms(boxes, scores, idxs, iou_threshold)


def batched_nms_top_k(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, k: int
) -> Tensor:
    """The first k results of `batched_nms`, computed from the best-scoring boxes only.

    Exact: greedy NMS decides a box from the higher-scoring boxes alone, so NMS over the top M
    boxes (by decreasing score, ties by lower index) makes the same decisions for them as NMS
    over all; once it keeps k of them, no lower-scoring box can enter the first k. M starts at
    4k and grows fourfold until k boxes are kept or every box was visited. Same arguments as
    `batched_nms`, plus k >= 0 -> int64 [min(k, K)] indices, by decreasing score.
    """
    _check_inputs(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have shape {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    visited = 4 * max(k, 1)
    while True:
        top = order[:visited]
        keep = _greedy_nms(boxes[top], scores[top], idxs[top], iou_threshold)
        if keep.numel() >= k or visited >= order.numel():
            return top[keep[:k]]
        visited *= 4


def _check_inputs(boxes: Tensor, scores: Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have shape [{boxes.shape[0]}] to match boxes, got {tuple(scores.shape)}"
        )
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be a floating-point tensor, got {boxes.dtype}")


def _greedy_nms(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float) -> Tensor:
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    categories = None
    if idxs is not None:
        # category-major, score order within a category: categories never interact, so each
        # block only has to be checked against the boxes of its own categories
        order = order[torch.sort(idxs[order], stable=True).indices]
        categories = idxs[order]
    work_dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    sorted_boxes = boxes.detach()[order].to(work_dtype)
    areas = (sorted_boxes[:, 2] - sorted_boxes[:, 0]) * (sorted_boxes[:, 3] - sorted_boxes[:, 1])
    threshold = _float_threshold(iou_threshold, work_dtype)

    def overlaps(rows: Tensor, cols: Tensor) -> Tensor:
        over = _iou_above(sorted_boxes, areas, rows, cols, threshold)
        if categories is not None:
            over &= categories[rows][:, None] == categories[cols][None, :]
        return over

    alive = torch.arange(len(order), device=boxes.device)  # undecided, in visiting order
    kept = []
    while alive.numel() > 0:
        block, alive = alive[:_BLOCK], alive[_BLOCK:]
        block = block[_resolve_block(overlaps(block, block).triu_(diagonal=1))]
        kept.append(block)
        rivals = alive
        if categories is not None:  # only the later boxes of the block's own categories
            rivals = alive[
                : torch.searchsorted(categories[alive], categories[block[-1]], right=True)
            ]
        if rivals.numel() > 0:
            survivors = ~overlaps(block, rivals).any(dim=0)
            alive = torch.cat([rivals[survivors], alive[rivals.numel() :]])
    keep = order[torch.cat(kept)]
    if categories is not None:  # back to decreasing score, ties by index
        keep = torch.sort(keep).values
        keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    return keep


def _iou_above(
    boxes: Tensor, areas: Tensor, rows: Tensor, cols: Tensor, threshold: float
) -> Tensor:
    """bool [R, C]: IoU(boxes[rows], boxes[cols]) > threshold, with torchvision's arithmetic
    (unclamped areas; a pair with an empty union gives NaN, which suppresses nothing)."""
    x0, y0, x1, y1 = boxes[rows].unbind(dim=1)
    u0, v0, u1, v1 = boxes[cols].unbind(dim=1)
    width = (torch.minimum(x1[:, None], u1) - torch.maximum(x0[:, None], u0)).clamp_(min=0)
    height = (torch.minimum(y1[:, None], v1) - torch.maximum(y0[:, None], v0)).clamp_(min=0)
    inter = width.mul_(height)
    union = (areas[rows][:, None] + areas[cols]).sub_(inter)
    return inter.div_(union) > threshold


def _resolve_block(overlap: Tensor) -> Tensor:
    """Greedy keep flags for B boxes in score order, given overlap[j, i] (j < i) meaning "box j
    suppresses box i if kept" -> bool [B].

    keep[i] = not any(keep[j] and overlap[j, i]) is a recurrence over a DAG, so it has a unique
    fixed point, and Jacobi iteration reaches it: after t sweeps every box whose longest
    chain of predecessors is shorter than t is final. Stopping at the first repeated state is
    therefore exact; real detections settle in a handful of sweeps, B + 1 at worst.
    """
    keep = torch.ones(overlap.shape[0], dtype=torch.bool, device=overlap.device)
    while True:
        updated = ~(overlap & keep[:, None]).any(dim=0)
        if torch.equal(updated, keep):
            return keep
        keep = updated


def _float_threshold(iou_threshold: float, dtype: torch.dtype) -> float:
    """The largest `dtype` value t <= iou_threshold, so that `iou > t` in `dtype` agrees with
    torchvision's comparison of the IoU against the threshold as a double."""
    threshold = torch.tensor(float(iou_threshold), dtype=torch.float64)
    rounded = threshold.to(dtype)
    if rounded.double() > threshold:
        rounded = torch.nextafter(rounded, torch.tensor(float("-inf"), dtype=dtype))
    return rounded.item()
