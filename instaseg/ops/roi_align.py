"""RoIAlign (He et al. 2017) in pure torch, with torchvision's exact sampling rules.

Coordinates: boxes are xyxy in the pixels of the image the features were computed from;
`spatial_scale` maps them onto the feature map, where feature pixel (i, j) covers
[j, j+1) x [i, i+1) and its value sits at (j, i) when `aligned=False` (torchvision's legacy
convention) or at (j + 0.5, i + 0.5) when `aligned=True`.

How it is computed. Each output bin averages grid_h x grid_w bilinear samples laid on a
regular grid, and both the bilinear weights and the validity rule (a sample outside
[-1, H] x [-1, W] contributes zero) factor into a y part and an x part. So each RoI's output
is Ay @ F @ Ax^T, with Ay [out_h, Ly] and Ax [out_w, Lx] small interpolation matrices over the
Ly rows and Lx columns the RoI touches. Per axis those are either a contiguous window (cheap
when samples are dense) or the list of sampled taps (cheap when a big RoI is sampled
sparsely), whichever is shorter. RoIs are sorted by cost and pooled in chunks whose gathered
crops stay under a fixed element budget (one RoI per chunk at least), so scratch memory does
not grow with the number of RoIs.
With few samples per bin (sampling_ratio <= 2, Mask R-CNN's setting) a bin reads at most
16 feature vectors (4 bilinear taps per sample), so it is cheaper still to skip the crops:
each bin is then a weighted sum of gathered rows, which `embedding_bag` computes in one fused
pass ("bag" path, several times faster on the CPU).
The result is differentiable with respect to `input`: through a hand-written backward (the
adjoint contraction, scattered with one index_add per chunk) on the crop path, through
embedding_bag's own backward on the bag path; boxes get no gradient, as in torchvision, and
there is no double backward on the crop path.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from instaseg.ops.layout import to_channels_last

_CHUNK_ELEMENTS = 1 << 21  # gathered crop elements (or bag taps) per chunk
_MAX_BAG_TAPS = 16  # taps per bin up to which bins are pooled as embedding bags


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Pool features inside boxes to a fixed size by averaging bilinear samples.

    input: float [N, C, H, W] feature maps.
    boxes: float [K, 5] rows (batch_index, x0, y0, x1, y1), or a list of N float [L_n, 4]
        xyxy tensors, one per image; coordinates in input-image pixels.
    output_size: out_h = out_w, or (out_h, out_w).
    spatial_scale: feature pixels per input pixel (1 / stride).
    sampling_ratio: samples per bin along each axis; <= 0 means adaptive,
        ceil(roi_height / out_h) and ceil(roi_width / out_w) for each RoI.
    aligned: shift the scaled box by -0.5 so that sample positions line up with pixel centres;
        when False a RoI narrower or shorter than one feature pixel is widened to 1.
    Returns float [K, C, out_h, out_w], RoIs in the order given.
    """
    out_h, out_w = _pair(output_size, "output_size")
    _check_scale(spatial_scale)
    rois = _as_rois(input, boxes)
    num_images, channels, height, width = input.shape
    if rois.shape[0] > 0 and (height == 0 or width == 0):
        raise ValueError(f"input must have non-empty spatial size, got {tuple(input.shape)}")
    work_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    batch, scaled, size = _scale_rois(
        rois.detach().to(work_dtype), num_images, spatial_scale, aligned
    )
    y_axis = _axis_samples(scaled[:, 1], size[:, 1], out_h, height, sampling_ratio)
    x_axis = _axis_samples(scaled[:, 0], size[:, 0], out_w, width, sampling_ratio)
    flat = feature_rows(input, work_dtype)
    if _few_taps(y_axis, x_axis):
        index, weight = _bag_taps(batch, y_axis, x_axis, (height, width))
        pooled = pool_taps(flat, index, weight)
        return pooled.view(-1, out_h, out_w, channels).permute(0, 3, 1, 2).to(input.dtype)
    chunks = []
    for chunk in _plan_chunks(y_axis, x_axis, channels):
        rows = _axis_operator(y_axis, chunk, height)
        cols = _axis_operator(x_axis, chunk, width)
        pixel = (batch[chunk, None, None] * height + rows.index[:, :, None]) * width
        chunks.append(_Chunk(chunk, pixel + cols.index[:, None, :], rows, cols))
    pooled = _PoolChunks.apply(flat, chunks, (rois.shape[0], channels, out_h, out_w))
    return pooled.to(input.dtype)


def _scale_rois(
    rois: Tensor, num_images: int, spatial_scale: float, aligned: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """rois [K, 5] -> batch indices int64 [K], feature-map corners [K, 4] (x0, y0, x1, y1) and
    sizes [K, 2] (width, height), at least 1 when not aligned, as torchvision computes them."""
    batch = rois[:, 0].long()
    outside = (batch < 0) | (batch >= num_images)
    if outside.any():
        bad = rois[outside, 0].unique()[:5].tolist()
        raise ValueError(f"box batch indices must lie in [0, {num_images}), got {bad}")
    scaled = rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)
    size = scaled[:, 2:] - scaled[:, :2]
    return batch, scaled, size if aligned else size.clamp(min=1.0)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _as_rois(input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
    """Validate the inputs and return boxes as [K, 5] (batch_index, x0, y0, x1, y1)."""
    if input.ndim != 4:
        raise ValueError(f"input must have shape [N, C, H, W], got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(
                "boxes must be a [K, 5] tensor of (batch_index, x0, y0, x1, y1) or a list of "
                f"[L, 4] tensors, got a tensor of shape {tuple(boxes.shape)}"
            )
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a Tensor or a list of Tensors, got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.ndim != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"boxes[{i}] must have shape [L, 4], got {shape}")
    if not boxes:
        return input.new_zeros((0, 5))
    dtype = torch.promote_types(boxes[0].dtype, torch.float32)
    ids = [torch.full((len(b), 1), i, dtype=dtype, device=b.device) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(ids), torch.cat([b.to(dtype) for b in boxes])], dim=1)


def _axis_samples(
    start: Tensor, length: Tensor, out_size: int, size: int, sampling_ratio: int
) -> dict[str, Tensor]:
    """Bilinear taps of every sample along one axis, following torchvision's kernel.

    start, length: [K] scaled RoI start and (clamped) length. Returns `taps` int64
    [K, out, G, 2] (low and high neighbour), `weights` [K, out, G, 2] (bilinear weight / grid,
    zero for padding or out-of-range samples), `grid` int64 [K] samples per bin, `low`/`high`
    int64 [K] the first and last feature index any sample touches.
    """
    bin_size = length / out_size
    if sampling_ratio > 0:
        grid = torch.full_like(start, sampling_ratio, dtype=torch.int64)
    else:
        # a NaN or infinite RoI gets no samples instead of an unbounded grid
        grid = torch.ceil(length / out_size).nan_to_num(0, posinf=0).clamp(min=0).long()
    max_grid = max(int(grid.max()), 1) if grid.numel() > 0 else 1
    bins = torch.arange(out_size, dtype=start.dtype, device=start.device)[None, :, None]
    steps = torch.arange(max_grid, device=start.device)[None, None, :]
    divisor = grid.clamp(min=1).to(start.dtype)[:, None, None]
    # same operation order as torchvision: start + bin * size + (step + 0.5) * size / grid
    pos = start[:, None, None] + bins * bin_size[:, None, None]
    pos = pos + (steps + 0.5) * bin_size[:, None, None] / divisor  # [K, out, G]
    valid = (steps < grid[:, None, None]) & (pos >= -1) & (pos <= size)  # NaN is invalid
    pos = torch.where(valid, pos, 0).clamp(min=0)
    low = pos.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    frac = pos - low
    scale = valid.to(pos.dtype) / divisor
    taps = torch.stack([low, torch.where(at_edge, low, low + 1)], dim=-1)
    weights = torch.stack([(1 - frac) * scale, frac * scale], dim=-1)
    used = (weights != 0).flatten(1)
    first = torch.where(used, taps.flatten(1), size).amin(dim=1)
    last = torch.where(used, taps.flatten(1), -1).amax(dim=1)
    first = torch.where(last >= 0, first, 0)
    return {"taps": taps, "weights": weights, "grid": grid, "low": first, "high": last}


def _few_taps(y_axis: dict[str, Tensor], x_axis: dict[str, Tensor]) -> bool:
    """Whether every bin reads at most _MAX_BAG_TAPS feature vectors (sampling ratio <= 2)."""
    grid_y, grid_x = y_axis["taps"].shape[2], x_axis["taps"].shape[2]
    return 4 * grid_y * grid_x <= _MAX_BAG_TAPS


def roi_align_taps(
    input_shape: tuple[int, int, int, int],
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> tuple[Tensor, Tensor] | None:
    """`roi_align` in bag form, for pooling several maps in one `pool_taps` call.

    input_shape: (N, C, H, W) of the features; rois: float [K, 5] (batch_index, x0, y0, x1,
    y1), other arguments as for `roi_align`. Returns index int64 [K * out_h * out_w, T] (rows
    of `feature_rows(input)`) and weights [K * out_h * out_w, T] in rois' dtype, bins in
    (RoI, row, column) order, or None when a bin reads more than 16 taps (sampling ratio > 2).
    """
    out_h, out_w = _pair(output_size, "output_size")
    _check_scale(spatial_scale)
    num_images, _, height, width = input_shape
    batch, scaled, size = _scale_rois(rois.detach(), num_images, spatial_scale, aligned)
    y_axis = _axis_samples(scaled[:, 1], size[:, 1], out_h, height, sampling_ratio)
    x_axis = _axis_samples(scaled[:, 0], size[:, 0], out_w, width, sampling_ratio)
    if not _few_taps(y_axis, x_axis):
        return None
    return _bag_taps(batch, y_axis, x_axis, (height, width))


def feature_rows(input: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """[N, C, H, W] -> [N * H * W, C]: one row per pixel, so that each bilinear tap gathers one
    contiguous C-vector (free for channels-last inputs)."""
    rows = to_channels_last(input).permute(0, 2, 3, 1)
    return rows.to(dtype or input.dtype).reshape(-1, input.shape[1])


def _bag_taps(
    batch: Tensor, y_axis: dict[str, Tensor], x_axis: dict[str, Tensor], size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Each bin's T = T_y x T_x taps (zero weights for padding samples): rows of the flattened
    channels-last map [K * out_h * out_w, T] and their weights."""
    height, width = size
    y_taps, y_weights = y_axis["taps"].flatten(2), y_axis["weights"].flatten(2)  # [K, oh, Ty]
    x_taps, x_weights = x_axis["taps"].flatten(2), x_axis["weights"].flatten(2)  # [K, ow, Tx]
    taps = y_taps.shape[2] * x_taps.shape[2]
    base = batch[:, None, None, None, None] * height
    index = (base + y_taps[:, :, None, :, None]) * width + x_taps[:, None, :, None, :]
    weight = y_weights[:, :, None, :, None] * x_weights[:, None, :, None, :]
    return index.reshape(-1, taps), weight.reshape(-1, taps)


def pool_taps(flat: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Weighted sums of gathered rows: out[b] = sum_t weight[b, t] * flat[index[b, t]].

    This is exactly `embedding_bag` in "sum" mode with per-sample weights: one fused
    gather-multiply-add per bin, no crops in memory, and autograd gives the scatter-add
    backward. flat: [P, C]; index, weight: [B, T] -> [B, C]. Bins go in chunks of at most
    _CHUNK_ELEMENTS taps.
    """
    per_chunk = max(1, _CHUNK_ELEMENTS // max(index.shape[1], 1))
    pooled = [
        F.embedding_bag(
            index[start : start + per_chunk],
            flat,
            mode="sum",
            per_sample_weights=weight[start : start + per_chunk].to(flat.dtype),
        )
        for start in range(0, max(index.shape[0], 1), per_chunk)  # one empty chunk when B = 0
    ]
    return torch.cat(pooled) if len(pooled) > 1 else pooled[0]


def _axis_lengths(axis: dict[str, Tensor], out_size: int) -> tuple[Tensor, Tensor]:
    """[K] lengths of the window and of the tap-list representations of each RoI's operator."""
    window = (axis["high"] - axis["low"] + 1).clamp(min=1)
    taps = out_size * 2 * axis["grid"].clamp(min=1)
    return window, taps


def _plan_chunks(y_axis: dict[str, Tensor], x_axis: dict[str, Tensor], channels: int) -> list:
    """Split RoIs, sorted by gathered-crop size, into chunks of at most _CHUNK_ELEMENTS."""
    out_h, out_w = y_axis["taps"].shape[1], x_axis["taps"].shape[1]
    y_window, y_taps = _axis_lengths(y_axis, out_h)
    x_window, x_taps = _axis_lengths(x_axis, out_w)
    cost = torch.minimum(y_window, y_taps) * torch.minimum(x_window, x_taps)
    order = torch.argsort(cost, stable=True)
    lengths = torch.stack([y_window, y_taps, x_window, x_taps], dim=1)[order].tolist()
    chunks, start, longest = [], 0, [0, 0, 0, 0]
    for i, row in enumerate(lengths):
        grown = [max(a, b) for a, b in zip(longest, row, strict=True)]
        crop = min(grown[0], grown[1]) * min(grown[2], grown[3]) * max(channels, 1)
        if i > start and (i - start + 1) * crop > _CHUNK_ELEMENTS:
            chunks.append(order[start:i])
            start, grown = i, row
        longest = grown
    if start < len(lengths):
        chunks.append(order[start:])
    return chunks


class _AxisOperator(NamedTuple):
    """Pooling along one axis for a chunk of RoIs, in one of two layouts:

    dense:  index [Kc, L] (a window of consecutive features), weights [Kc, out, L];
            pooled = weights @ features[index].
    banded: index [Kc, out * T] (T taps per bin, bin-major), weights [Kc, out, T];
            pooled[o] = weights[o] @ features[index[o * T : (o + 1) * T]].
    """

    index: Tensor
    weights: Tensor
    banded: bool


def _axis_operator(axis: dict[str, Tensor], chunk: Tensor, size: int) -> _AxisOperator:
    """The cheaper of the window (dense) and tap-list (banded) operators for `chunk`."""
    taps, weights = axis["taps"][chunk], axis["weights"][chunk]  # [Kc, out, G, 2]
    kc, out_size = taps.shape[:2]
    grid = max(int(axis["grid"][chunk].max()), 1)
    low = axis["low"][chunk]
    window = max(int((axis["high"][chunk] - low).max()) + 1, 1)
    if window > out_size * 2 * grid:
        taps, weights = taps[:, :, :grid].flatten(2), weights[:, :, :grid].flatten(2)
        return _AxisOperator(taps.flatten(1), weights, banded=True)
    local = (taps - low[:, None, None, None]).clamp(0, window - 1)
    matrix = weights.new_zeros((kc, out_size, window))
    matrix.scatter_add_(2, local.flatten(2), weights.flatten(2))
    index = low[:, None] + torch.arange(window, device=low.device)
    return _AxisOperator(index.clamp(max=size - 1), matrix, banded=False)


class _Chunk(NamedTuple):
    """RoIs pooled together: their indices [Kc], the flat feature rows of their crops
    [Kc, Ly, Lx], and the two axis operators."""

    rois: Tensor
    pixels: Tensor
    rows: _AxisOperator
    cols: _AxisOperator


class _Scratch:
    """Reusable buffers for the temporaries of one call. Each chunk's crops are megabytes, and
    a fresh allocation that size costs a page fault per 4 KiB on first touch, more than the
    gather itself; so the buffers are allocated once and reused by every chunk."""

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.buffers: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[name] = self.like.new_empty(numel)
        return buffer[:numel].view(shape)


class _PoolChunks(torch.autograd.Function):
    """Gather-and-contract over chunks, with a hand-written backward: one gradient buffer for
    the whole feature map and an index_add per chunk, instead of autograd's full-size
    gradient per chunk, and no crops kept for the backward pass."""

    @staticmethod
    def forward(ctx, flat: Tensor, chunks: list[_Chunk], shape: tuple[int, ...]) -> Tensor:
        ctx.chunks, ctx.flat_shape = chunks, flat.shape
        pooled = flat.new_empty(shape)  # [K, C, oh, ow]
        scratch = _Scratch(flat)
        for chunk in chunks:
            crops = scratch.take("crops", (chunk.pixels.numel(), flat.shape[1]))
            torch.index_select(flat, 0, chunk.pixels.flatten(), out=crops)
            crops = crops.view(*chunk.pixels.shape, flat.shape[1])
            result = _contract(crops, chunk.rows, chunk.cols, scratch)
            pooled.index_copy_(0, chunk.rois, result.permute(0, 3, 1, 2))
        return pooled

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_pooled: Tensor) -> tuple[Tensor, None, None]:
        grad = grad_pooled.new_zeros(ctx.flat_shape)
        for chunk in ctx.chunks:
            grad_chunk = grad_pooled.index_select(0, chunk.rois).permute(0, 2, 3, 1)
            grad_crops = _contract_transposed(grad_chunk, chunk.rows, chunk.cols)
            grad.index_add_(0, chunk.pixels.flatten(), grad_crops.reshape(-1, grad.shape[1]))
        return grad, None, None


def _contract(crops: Tensor, rows: _AxisOperator, cols: _AxisOperator, scratch: _Scratch) -> Tensor:
    """crops [Kc, Ly, Lx, C] gathered at rows.index x cols.index -> [Kc, oh, ow, C].

    A banded axis is pooled as one small dot product per bin (a batched matrix-vector
    product), which is several times cheaper than multiplying by its mostly-zero dense form.
    """
    kc, ly, lx, channels = crops.shape
    out_h, out_w = rows.weights.shape[1], cols.weights.shape[1]
    if rows.banded:
        taps = rows.weights.shape[2]
        weights = rows.weights.reshape(kc * out_h, 1, taps)
        middle = scratch.take("rows", (kc * out_h, 1, lx * channels))
        torch.bmm(weights, crops.view(kc * out_h, taps, lx * channels), out=middle)
    else:
        middle = scratch.take("rows", (kc, out_h, lx * channels))
        torch.bmm(rows.weights, crops.view(kc, ly, lx * channels), out=middle)
    middle = middle.view(kc, out_h, lx, channels)
    if cols.banded:
        taps = cols.weights.shape[2]
        weights = cols.weights.view(kc, 1, out_w, 1, taps)
        pooled = scratch.take("cols", (kc, out_h, out_w, 1, channels))
        torch.matmul(weights, middle.view(kc, out_h, out_w, taps, channels), out=pooled)
    else:
        pooled = scratch.take("cols", (kc, out_h, out_w, channels))
        torch.matmul(cols.weights[:, None], middle, out=pooled)
    return pooled.view(kc, out_h, out_w, channels)


def _contract_transposed(grad: Tensor, rows: _AxisOperator, cols: _AxisOperator) -> Tensor:
    """The adjoint of `_contract`: grad [Kc, oh, ow, C] -> [Kc, Ly, Lx, C]."""
    kc, out_h, out_w, channels = grad.shape
    if cols.banded:
        taps = cols.weights.shape[2]
        weights = cols.weights.view(kc, 1, out_w, taps, 1)
        spread = torch.matmul(weights, grad.reshape(kc, out_h, out_w, 1, channels))
    else:
        spread = torch.matmul(cols.weights.transpose(1, 2)[:, None], grad)
    spread = spread.reshape(kc, out_h, -1)  # [Kc, oh, Lx * C]
    if rows.banded:
        taps = rows.weights.shape[2]
        weights = rows.weights.reshape(kc * out_h, taps, 1)
        spread = torch.bmm(weights, spread.view(kc * out_h, 1, -1))
    else:
        spread = torch.bmm(rows.weights.transpose(1, 2), spread)
    return spread.reshape(kc, -1, spread.shape[-1] // channels, channels)


def _check_scale(spatial_scale: float) -> None:
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale}")
