"""Anchor boxes for region proposal networks, with torchvision's conventions.

Cell anchors: for each aspect ratio r = h / w and size s, a box of area ~s^2 with
h = s * sqrt(r) and w = s / sqrt(r), centred on 0 and rounded to integer coordinates
(round half to even). Order: ratio-major, size-minor. Grid anchors: the cell anchors shifted
to every feature location (x, y) = (j * stride_w, i * stride_h), location-major (row by row),
so anchor a at location (i, j) of a level is row (i * W + j) * A + a of that level's tensor.
Anchors are xyxy in input-image pixels and are the same for every image of a padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """Anchors for a feature pyramid: `sizes[l]` and `aspect_ratios[l]` belong to level l.

    Example: five FPN levels with one size each and three shared ratios:
    `AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)`.
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
    ) -> None:
        if len(sizes) == 0 or len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"sizes and aspect_ratios need one entry per level, got {len(sizes)} and "
                f"{len(aspect_ratios)}; to share ratios write ((0.5, 1.0, 2.0),) * {len(sizes)}"
            )
        for name, per_level in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
            for level, values in enumerate(per_level):
                if not isinstance(values, Sequence) or len(values) == 0:
                    raise ValueError(
                        f"{name}[{level}] must be a non-empty sequence, got {values!r}"
                    )
                if not all(float(v) > 0 for v in values):
                    raise ValueError(f"{name}[{level}] must hold positive numbers, got {values!r}")
        self.sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature location A_l, for each level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def cell_anchors(
        self, level: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
    ) -> Tensor:
        """[A_l, 4] xyxy anchors of one level centred on (0, 0)."""
        sizes = torch.tensor(self.sizes[level], dtype=dtype, device=device)
        ratios = torch.tensor(self.aspect_ratios[level], dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        widths = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
        heights = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
        return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()

    def grid_anchors(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        strides: Sequence[int | tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> list[Tensor]:
        """Per level, [H_l * W_l * A_l, 4] xyxy anchors for feature maps of (H_l, W_l) whose
        locations are `strides[l]` input pixels apart (an int, or (stride_h, stride_w))."""
        if len(feature_sizes) != len(self.sizes) or len(strides) != len(self.sizes):
            raise ValueError(
                f"expected {len(self.sizes)} feature sizes and strides (one per level), got "
                f"{len(feature_sizes)} and {len(strides)}"
            )
        anchors = []
        for level, ((height, width), stride) in enumerate(zip(feature_sizes, strides, strict=True)):
            stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
            shift_x = torch.arange(width, dtype=dtype, device=device) * stride_w
            shift_y = torch.arange(height, dtype=dtype, device=device) * stride_h
            grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
            cell = self.cell_anchors(level, dtype, device)
            anchors.append((shifts + cell[None]).reshape(-1, 4))
        return anchors

    def __call__(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        strides: Sequence[int | tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> Tensor:
        """All levels' anchors concatenated, finest level first -> [sum_l H_l * W_l * A_l, 4]."""
        return torch.cat(self.grid_anchors(feature_sizes, strides, dtype, device))

    def __repr__(self) -> str:
        return f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios})"
