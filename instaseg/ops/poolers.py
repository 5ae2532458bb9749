"""Multi-level RoIAlign for feature pyramids: each box is pooled from the level its size maps to.

Level rule (FPN paper, eq. 1, with torchvision's eps):
    k = floor(canonical_level + log2(sqrt(w * h) / canonical_scale + eps)),
clamped to the levels present. A level's index k is log2 of its stride, so with strides
(4, 8, 16, 32) the levels are 2 .. 5 and a 224 x 224 box goes to level 4 (stride 16).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from instaseg.ops.boxes import box_area
from instaseg.ops.layout import to_channels_last
from instaseg.ops.roi_align import feature_rows, pool_taps, roi_align, roi_align_taps


def assign_fpn_levels(
    boxes: Tensor,
    min_level: int,
    max_level: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN level of each xyxy box [K, 4] in input-image pixels -> int64 [K] in
    [min_level, max_level]."""
    scale = torch.sqrt(box_area(boxes))
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_scale + eps))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


def roi_pool_levels(
    features: list[Tensor],
    strides: list[int],
    boxes: list[Tensor],
    output_size: int | tuple[int, int],
    sampling_ratio: int = 2,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign each box on the pyramid level chosen by `assign_fpn_levels` (torchvision's
    MultiScaleRoIAlign, with strides given instead of inferred from the image sizes).

    features: per level, float [N, C, H_l, W_l], finest first.
    strides: per level, input pixels per feature pixel; powers of two doubling per level
        (e.g. [4, 8, 16, 32]).
    boxes: per image, float [L_n, 4] xyxy in input-image pixels.
    sampling_ratio, aligned: as in `roi_align`; Mask R-CNN uses 2 and False.
    Returns float [sum L_n, C, out_h, out_w], boxes in the order given (image by image).
    """
    levels = _check_pyramid(features, strides, boxes)
    rois = _rois(boxes, features[0])
    if len(features) == 1 or rois.shape[0] == 0:
        return roi_align(features[0], rois, output_size, 1.0 / strides[0], sampling_ratio, aligned)
    target = assign_fpn_levels(rois[:, 1:], levels[0], levels[-1], canonical_scale, canonical_level)
    if 0 < sampling_ratio <= 2:
        return _pool_as_one_bag(
            features, strides, levels, rois, target, output_size, sampling_ratio, aligned
        )
    result = None
    for level, feature, stride in zip(levels, features, strides, strict=True):
        selected = torch.nonzero(target == level).flatten()
        if selected.numel() == 0:
            continue
        pooled = roi_align(
            feature, rois[selected], output_size, 1.0 / stride, sampling_ratio, aligned
        )
        if selected.numel() == rois.shape[0]:
            return pooled  # every box on one level, already in order
        if result is None:
            # one copy into place per level, in the pooled tensors' memory layout
            shape = (rois.shape[0], *pooled.shape[1:])
            result = torch.empty(
                shape, dtype=pooled.dtype, device=pooled.device, memory_format=_layout(pooled)
            )
        result.index_copy_(0, selected, pooled)
    return result


def _pool_as_one_bag(
    features: list[Tensor],
    strides: list[int],
    levels: list[int],
    rois: Tensor,
    target: Tensor,
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """All levels in one `pool_taps` call over the stacked rows of every level: each RoI's taps
    point into its own level's rows, and the bins come out in input order, with no per-level
    results to copy into place."""
    work_dtype = torch.promote_types(features[0].dtype, torch.float32)
    if work_dtype not in (torch.float32, torch.float64):
        work_dtype = torch.float32
    rows, index, weight, offset = [], None, None, 0
    for level, feature, stride in zip(levels, features, strides, strict=True):
        rows.append(feature_rows(feature, work_dtype))
        selected = torch.nonzero(target == level).flatten()
        if selected.numel() > 0:
            level_index, level_weight = roi_align_taps(
                tuple(feature.shape),
                rois[selected],
                output_size,
                1.0 / stride,
                sampling_ratio,
                aligned,
            )
            if index is None:
                bins = level_index.shape[0] // selected.numel()
                index = level_index.new_empty((rois.shape[0], bins, level_index.shape[1]))
                weight = level_weight.new_empty(index.shape)
            index[selected] = level_index.view(selected.numel(), -1, index.shape[2]) + offset
            weight[selected] = level_weight.view(selected.numel(), -1, index.shape[2])
        offset += rows[-1].shape[0]
    pooled = pool_taps(_stack_rows(rows), index.flatten(0, 1), weight.flatten(0, 1))
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    pooled = pooled.view(rois.shape[0], out_h, out_w, -1).permute(0, 3, 1, 2)
    return pooled.to(features[0].dtype)


def _stack_rows(rows: list[Tensor]) -> Tensor:
    """torch.cat(rows) for [P_l, C] row blocks, without copying when the blocks already lie
    back to back in one buffer (see `stack_levels`)."""
    first = rows[0]
    itemsize = first.element_size()
    adjacent = all(
        block.is_contiguous()
        and block.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        and block.data_ptr() == previous.data_ptr() + previous.numel() * itemsize
        for previous, block in zip(rows, rows[1:], strict=False)
    )
    if not (adjacent and first.is_contiguous()):
        return torch.cat(rows)
    total = sum(block.shape[0] for block in rows)
    return first.as_strided((total, first.shape[1]), first.stride())


def stack_levels(features: list[Tensor]) -> list[Tensor]:
    """The pyramid levels [N, C, H_l, W_l] copied channels-last into one buffer, back to back,
    as views with the input shapes. `roi_pool_levels` then pools all levels from that buffer
    without stacking them again; converting the levels to channels-last costs the same copy."""
    channels = features[0].shape[1]
    sizes = [f.shape[0] * f.shape[2] * f.shape[3] for f in features]
    dtype = torch.promote_types(features[0].dtype, torch.float32)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    buffer = features[0].new_empty((sum(sizes), channels), dtype=dtype)
    starts = [sum(sizes[:level]) for level in range(len(sizes))]
    # narrow, not split: autograd lets single views be written in place
    return [
        to_channels_last(feature, out=buffer.narrow(0, start, size))
        for feature, start, size in zip(features, starts, sizes, strict=True)
    ]


def _layout(tensor: Tensor) -> torch.memory_format:
    channels_last = tensor.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _check_pyramid(features: list[Tensor], strides: list[int], boxes: list[Tensor]) -> list[int]:
    """Validate the pyramid and return the level index log2(stride) of each feature map."""
    if not features or len(features) != len(strides):
        raise ValueError(
            f"features and strides must be non-empty lists of equal length, got {len(features)} "
            f"feature maps and {len(strides)} strides"
        )
    levels = []
    for i, (feature, stride) in enumerate(zip(features, strides, strict=True)):
        if feature.ndim != 4 or feature.shape[:2] != features[0].shape[:2]:
            raise ValueError(
                f"features[{i}] must have shape [N, C, H, W] with N, C = "
                f"{tuple(features[0].shape[:2])}, got {tuple(feature.shape)}"
            )
        level = math.log2(stride) if isinstance(stride, int) and stride > 0 else -1.0
        if level < 0 or level != int(level):
            raise ValueError(f"strides[{i}] must be a positive power of two, got {stride!r}")
        levels.append(int(level))
    if any(b - a != 1 for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"strides must double from one level to the next, got {list(strides)}")
    if len(boxes) != features[0].shape[0]:
        raise ValueError(
            f"boxes must hold one [L, 4] tensor per image ({features[0].shape[0]} images), "
            f"got {len(boxes)}"
        )
    return levels


def _rois(boxes: list[Tensor], like: Tensor) -> Tensor:
    """Per-image [L_n, 4] boxes -> [K, 5] (batch_index, x0, y0, x1, y1)."""
    for i, b in enumerate(boxes):
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must have shape [L, 4], got {tuple(b.shape)}")
    dtype = torch.promote_types(like.dtype, torch.float32)
    ids = [torch.full((len(b), 1), i, dtype=dtype, device=like.device) for i, b in enumerate(boxes)]
    coords = [b.to(device=like.device, dtype=dtype) for b in boxes]
    return torch.cat([torch.cat(ids), torch.cat(coords)], dim=1)
