"""Box geometry as free functions. Boxes are float [N, 4]; xyxy in absolute pixels unless a
function's name says otherwise."""

from __future__ import annotations

import torch
from torch import Tensor


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """[N, 4] xyxy -> [N, 4] COCO xywh (top-left corner, width, height)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[N, 4] COCO xywh -> [N, 4] xyxy."""
    x0, y0, w, h = boxes.unbind(-1)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """[N, 4] xyxy -> [N, 4] centre x, centre y, width, height."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[N, 4] centre x, centre y, width, height -> [N, 4] xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """[N, 4] xyxy -> [N] areas (zero for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes to an image of (height, width)."""
    h, w = image_size
    x = boxes[:, 0::2].clamp(0, w)
    y = boxes[:, 1::2].clamp(0, h)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=-1)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes of bool masks [N, H, W] -> float32 [N, 4]; an empty mask gives zeros.

    Pixel (i, j) covers [j, j+1) x [i, i+1), so a one-pixel mask at (0, 0) is [0, 0, 1, 1].
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    cols = masks.any(dim=1)  # [N, W]
    rows = masks.any(dim=2)  # [N, H]
    x_index = torch.arange(w, device=masks.device)
    y_index = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, x_index, w).amin(dim=1)
    x1 = torch.where(cols, x_index + 1, 0).amax(dim=1)
    y0 = torch.where(rows, y_index, h).amin(dim=1)
    y1 = torch.where(rows, y_index + 1, 0).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def _pairwise_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Intersection areas of xyxy boxes a: [N, 4], b: [M, 4] -> [N, M]."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)  # [N, M, 2]
    return size[..., 0] * size[..., 1]


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, with 0 where the denominator is not positive."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1), 0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes. a: [N, 4], b: [M, 4] -> [N, M].

    No "+1" in widths. A pair whose union is empty (two zero-area boxes) has IoU 0, where
    torchvision returns NaN; for well-formed boxes (x1 >= x0, y1 >= y0) every other value is
    bit-identical to torchvision's.
    """
    inter = _pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return _safe_divide(inter, union)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of xyxy boxes. a: [N, 4], b: [M, 4]
    -> [N, M] in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C|, C the smallest box enclosing both. Boxes should satisfy
    x1 >= x0 and y1 >= y0; a pair with an empty enclosing box (two identical points) gives 0.
    """
    inter = _pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    iou = _safe_divide(inter, union)
    top_left = torch.minimum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)  # [N, M, 2]
    enclosing = size[..., 0] * size[..., 1]
    return iou - _safe_divide(enclosing - union, enclosing)


def box_ioa(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection over the area of the second box. a: [N, 4], b: [M, 4] -> [N, M].

    Entry (i, j) is |a_i n b_j| / |b_j|: the fraction of b_j covered by a_i; 0 when b_j has
    zero area.
    """
    return _safe_divide(_pairwise_intersection(a, b), box_area(b)[None, :])
