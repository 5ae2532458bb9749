"""Box regression targets in the R-CNN parameterisation (torchvision's BoxCoder semantics).

For a reference box with centre (cx, cy) and size (w, h) (w = x1 - x0, no "+1") and a target
box (cx', cy', w', h'), the deltas are
    dx = wx * (cx' - cx) / w,  dy = wy * (cy' - cy) / h,
    dw = ww * log(w' / w),     dh = wh * log(h' / h).
Common weights: (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def encode_boxes(
    reference_boxes: Tensor,
    proposals: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Deltas that turn `proposals` into `reference_boxes` (the matched ground truth).

    reference_boxes, proposals: float [N, 4] xyxy -> float [N, 4] (dx, dy, dw, dh).
    Proposals must have positive width and height; a degenerate target gives -inf in dw/dh.
    """
    _check_boxes(reference_boxes, "reference_boxes")
    _check_boxes(proposals, "proposals")
    if reference_boxes.shape != proposals.shape:
        raise ValueError(
            f"reference_boxes and proposals must have the same shape, got "
            f"{tuple(reference_boxes.shape)} and {tuple(proposals.shape)}"
        )
    wx, wy, ww, wh = _check_weights(weights)
    src_ctr, src_size = _centre_size(proposals)
    dst_ctr, dst_size = _centre_size(reference_boxes)
    dx = wx * (dst_ctr[:, 0] - src_ctr[:, 0]) / src_size[:, 0]
    dy = wy * (dst_ctr[:, 1] - src_ctr[:, 1]) / src_size[:, 1]
    dw = ww * torch.log(dst_size[:, 0] / src_size[:, 0])
    dh = wh * torch.log(dst_size[:, 1] / src_size[:, 1])
    return torch.stack([dx, dy, dw, dh], dim=1)


def decode_boxes(
    deltas: Tensor,
    boxes: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = DEFAULT_SCALE_CLAMP,
) -> Tensor:
    """Apply deltas to boxes: the inverse of `encode_boxes`.

    deltas: float [N, 4], or [N, C, 4] for class-specific regression; boxes: float [N, 4] xyxy
    -> xyxy boxes shaped like `deltas`, in `deltas`' dtype. dw and dh are divided by their
    weights and clamped to at most `clamp` before exp, so that a wild prediction cannot
    overflow (the default caps growth at 1000/16 = 62.5x).
    """
    _check_boxes(boxes, "boxes")
    if deltas.ndim not in (2, 3) or deltas.shape[-1] != 4 or deltas.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"deltas must have shape [{boxes.shape[0]}, 4] or [{boxes.shape[0]}, C, 4] to match "
            f"boxes, got {tuple(deltas.shape)}"
        )
    wx, wy, ww, wh = _check_weights(weights)
    ctr, size = _centre_size(boxes.to(deltas.dtype))
    if deltas.ndim == 3:
        ctr, size = ctr[:, None], size[:, None]
    dx, dy, dw, dh = deltas.unbind(-1)
    dw = (dw / ww).clamp(max=clamp)
    dh = (dh / wh).clamp(max=clamp)
    pred_cx = dx / wx * size[..., 0] + ctr[..., 0]
    pred_cy = dy / wy * size[..., 1] + ctr[..., 1]
    half_w = 0.5 * (torch.exp(dw) * size[..., 0])
    half_h = 0.5 * (torch.exp(dh) * size[..., 1])
    return torch.stack([pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], -1)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """xyxy [N, 4] -> centres [N, 2] and sizes [N, 2]."""
    size = boxes[:, 2:] - boxes[:, :2]
    return boxes[:, :2] + 0.5 * size, size


def _check_boxes(boxes: Tensor, name: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {boxes.dtype}")


def _check_weights(weights: tuple[float, float, float, float]) -> tuple[float, ...]:
    if len(weights) != 4 or not all(float(w) > 0 for w in weights):
        raise ValueError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(w) for w in weights)
