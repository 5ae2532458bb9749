"""Paste box-relative mask predictions (Mask R-CNN's M x M probabilities) into the image.

Convention. Mask cell (a, b) of an M_h x M_w prediction covers the box's a-th row and b-th
column of an even grid, and its value sits at the cell centre. A pixel (i, j) - centre
(j + 0.5, i + 0.5) - is set when its centre lies in the box, x0 <= j + 0.5 < x1 and
y0 <= i + 0.5 < y1, and the mask bilinearly interpolated there is >= threshold. Between the
outermost cell centres and the box edge the interpolation holds the edge value
(grid_sample with align_corners=False, padding_mode="border"), so a mask of all ones fills
exactly the pixels whose centres lie inside the box.

This differs from detectron2's paste (grid_sample with zero padding) only in the outer half
cell: detectron2 fades the mask towards 0 at the box edge, which rounds off the corners of
an all-ones mask; torchvision's legacy paste (a 1-cell zero border and integer boxes) fades
similarly. Pixels whose centres lie outside the box are never set, for any threshold.

Only each box's own crop of the image is computed, so time and scratch memory scale with
the boxes' areas, not with N full images.
"""

from __future__ import annotations

import torch
from torch import Tensor


def paste_masks_in_image(
    mask_probs: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """mask_probs: float [N, M_h, M_w] in box-relative cells; boxes: float [N, 4] xyxy in
    image pixels; image_size: (height, width) -> bool [N, height, width]."""
    if mask_probs.ndim != 3:
        raise ValueError(f"mask_probs must have shape [N, M_h, M_w], got {tuple(mask_probs.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != mask_probs.shape[0]:
        raise ValueError(
            f"boxes must have shape [{mask_probs.shape[0]}, 4] to match mask_probs, got "
            f"{tuple(boxes.shape)}"
        )
    height, width = (int(v) for v in image_size)
    if height < 0 or width < 0:
        raise ValueError(f"image_size must be (height, width) >= 0, got {image_size}")
    masks = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=mask_probs.device)
    if len(boxes) == 0 or mask_probs.shape[1] == 0 or mask_probs.shape[2] == 0:
        return masks
    coords = boxes.detach().to(torch.float64)
    rows = _centre_range(coords[:, 1], coords[:, 3], height).tolist()
    cols = _centre_range(coords[:, 0], coords[:, 2], width).tolist()
    probs = mask_probs.detach().float()
    for n, ((r0, r1), (c0, c1)) in enumerate(zip(rows, cols, strict=True)):
        if r1 <= r0 or c1 <= c0:
            continue
        y = _cell_positions(r0, r1, coords[n, 1], coords[n, 3], probs.shape[1])
        x = _cell_positions(c0, c1, coords[n, 0], coords[n, 2], probs.shape[2])
        masks[n, r0:r1, c0:c1] = _interpolate(probs[n], y, x) >= threshold
    return masks


def _centre_range(start: Tensor, end: Tensor, size: int) -> Tensor:
    """int64 [N, 2]: the pixel range [first, last) whose centres k + 0.5 lie in [start, end),
    clipped to [0, size]."""
    first = torch.ceil(start - 0.5).clamp(0, size)
    last = torch.ceil(end - 0.5).clamp(0, size)
    return torch.stack([first, last], dim=1).nan_to_num(0).long()


def _cell_positions(first: int, last: int, start: Tensor, end: Tensor, cells: int) -> Tensor:
    """Pixel centres first + 0.5 .. last - 0.5 in the mask's cell coordinates, where cell c's
    centre is at c (so the box spans [-0.5, cells - 0.5]) -> float64 [last - first]."""
    centres = torch.arange(first, last, dtype=torch.float64, device=start.device) + 0.5
    return (centres - start) / (end - start) * cells - 0.5


def _interpolate(mask: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Bilinear samples of mask [M_h, M_w] at the grid y [h] x x [w] (cell coordinates), edge
    values held outside the cell centres -> float [h, w]."""
    rows = _interpolation_matrix(y, mask.shape[0], mask.dtype)  # [h, M_h]
    cols = _interpolation_matrix(x, mask.shape[1], mask.dtype)  # [w, M_w]
    return rows @ (mask @ cols.T)


def _interpolation_matrix(pos: Tensor, cells: int, dtype: torch.dtype) -> Tensor:
    """[L, cells] linear-interpolation weights of positions [L] clamped to the cell centres
    [0, cells - 1]: two neighbouring cells per row, weights summing to 1."""
    pos = pos.clamp(0, cells - 1)
    low = pos.floor().long().clamp(max=cells - 1)
    high = (low + 1).clamp(max=cells - 1)
    frac = (pos - low).to(dtype)
    matrix = torch.zeros((len(pos), cells), dtype=dtype, device=pos.device)
    matrix.scatter_add_(1, low[:, None], (1 - frac)[:, None])
    return matrix.scatter_add_(1, high[:, None], frac[:, None])
