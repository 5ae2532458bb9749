"""Modulated deformable convolution (DCNv2; Zhu et al. 2019) in pure torch, with the semantics
of torchvision.ops.deform_conv2d.

What it computes. Input channel c belongs to offset group g = c // (C_in / offset_groups)
(contiguous blocks). For output pixel (oy, ox) and kernel tap k = i * kw + j (row-major), the
tap reads channel c at the input-pixel position

    y = oy * stride_h - pad_h + i * dilation_h + dy
    x = ox * stride_w - pad_w + j * dilation_w + dx

where (dy, dx) = offset[b, 2 * (g * kh * kw + k) + (0, 1), oy, ox], by bilinear interpolation
of the pixel values (pixel (r, s) holds the value at y = r, x = s) with zeros outside the image:
a corner outside the image contributes zero, so a sample at y <= -1 or y >= H reads nothing.
The sample is multiplied by mask[b, g * kh * kw + k, oy, ox] (DCNv2's modulation; DCNv1 when
mask is None), and the samples are weighted and summed as in an ordinary convolution. With
zero offsets and a unit mask this is exactly F.conv2d.

How it is computed: im2col at learned positions. One F.grid_sample per chunk of the batch
samples every tap of every output pixel into columns [B, C_in * kh * kw, H_out * W_out], in the
order of weight.flatten(1), and one (grouped) matmul with the weight gives the output.
grid_sample's zero padding with align_corners=False is exactly the sampling rule above once a
pixel coordinate x maps to its normalised coordinate u = (2 x + 1) / W - 1 (pixel centres). The
sampling runs in float32 at least: in half precision, positions on a 100-pixel map would be off
by a tenth of a pixel. Autograd reaches input, offset, mask, weight and bias through grid_sample
and matmul (an offset's gradient is one-sided where a sample lands exactly on a pixel row or
column, as in torchvision).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_ELEMENTS = (
    1 << 25
)  # column elements sampled at once (128 MiB in float32), one image at least


class _Geometry(NamedTuple):
    groups: int
    offset_groups: int
    kernel: tuple[int, int]
    out_size: tuple[int, int]


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution v2 (v1 when mask is None), as torchvision.ops.deform_conv2d.

    input: float [B, C_in, H, W].
    offset: [B, 2 * offset_groups * kh * kw, H_out, W_out], (dy, dx) in input pixels for each
        offset group and kernel tap (taps row-major); offset_groups must divide C_in.
    weight: [C_out, C_in / groups, kh, kw]; groups = C_in / weight.shape[1] must divide C_out.
    bias: [C_out] or None.
    stride, padding, dilation: int or (h, w), as for F.conv2d.
    mask: [B, offset_groups * kh * kw, H_out, W_out] modulation scalars, or None for all ones.
    Returns [B, C_out, H_out, W_out] in input's dtype, H_out = (H + 2 pad_h - dilation_h
    (kh - 1) - 1) // stride_h + 1 and likewise W_out.
    """
    stride_hw = _pair(stride, "stride", minimum=1)
    padding_hw = _pair(padding, "padding", minimum=0)
    dilation_hw = _pair(dilation, "dilation", minimum=1)
    geometry = _check_args(input, offset, weight, bias, mask, stride_hw, padding_hw, dilation_hw)
    batch, channels, height, width = input.shape
    out_h, out_w = geometry.out_size
    kh, kw = geometry.kernel
    per_image = channels * kh * kw * out_h * out_w
    chunk = max(1, _CHUNK_ELEMENTS // max(per_image, 1))
    outputs = []
    for start in range(0, max(batch, 1), chunk):  # once for an empty batch
        end = min(start + chunk, batch)
        columns = _sample_columns(
            input[start:end],
            offset[start:end],
            None if mask is None else mask[start:end],
            geometry,
            stride_hw,
            padding_hw,
            dilation_hw,
        )  # [b, C_in * kh * kw, H_out * W_out]
        outputs.append(_grouped_matmul(weight, columns, geometry.groups))
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # [B, C_out, L]
    if bias is not None:
        output = output + bias.reshape(1, -1, 1)
    return output.reshape(batch, weight.shape[0], out_h, out_w)


def _sample_columns(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    geometry: _Geometry,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """Bilinear samples of `input` at the deformed taps, times the mask: [B, C_in * K, L] with
    row c * K + k for channel c and tap k (K = kh * kw, L = H_out * W_out)."""
    batch, channels, height, width = input.shape
    groups = geometry.offset_groups
    (kh, kw), (out_h, out_w) = geometry.kernel, geometry.out_size
    taps = kh * kw
    work_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    y, x = _tap_positions(offset.to(work_dtype), geometry, stride, padding, dilation)
    # [B, G, K, H_out, W_out] pixel coordinates -> grid_sample's (x, y) in [-1, 1] at the
    # outer image edges, pixel centres at (2 x + 1) / W - 1 (align_corners=False)
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    grid = grid.reshape(batch * groups, taps * out_h, out_w, 2)
    images = input.to(work_dtype).reshape(batch * groups, channels // groups, height, width)
    samples = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # [B * G, C_in / G, K * H_out, W_out]
    if mask is not None:
        scale = mask.to(work_dtype).reshape(batch * groups, 1, taps * out_h, out_w)
        # in place unless the mask's gradient needs the unscaled samples
        needs_samples = torch.is_grad_enabled() and scale.requires_grad
        samples = samples * scale if needs_samples else samples.mul_(scale)
    return samples.reshape(batch, channels * taps, out_h * out_w).to(input.dtype)


def _tap_positions(
    offset: Tensor,
    geometry: _Geometry,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Sample rows y and columns x, each [B, G, K, H_out, W_out], in input pixels."""
    (kh, kw), (out_h, out_w) = geometry.kernel, geometry.out_size
    options = {"dtype": offset.dtype, "device": offset.device}
    rows = torch.arange(out_h, **options) * stride[0] - padding[0]  # [H_out]
    cols = torch.arange(out_w, **options) * stride[1] - padding[1]  # [W_out]
    tap_y = (torch.arange(kh, **options) * dilation[0]).repeat_interleave(kw)  # [K], row-major
    tap_x = (torch.arange(kw, **options) * dilation[1]).repeat(kh)  # [K]
    offset = offset.reshape(offset.shape[0], geometry.offset_groups, kh * kw, 2, out_h, out_w)
    y = offset[:, :, :, 0] + (tap_y[:, None] + rows)[:, :, None]  # [B, G, K, H_out, W_out]
    x = offset[:, :, :, 1] + (tap_x[:, None] + cols)[:, None, :]
    return y, x


def _grouped_matmul(weight: Tensor, columns: Tensor, groups: int) -> Tensor:
    """weight [C_out, C_in / groups, kh, kw] times columns [B, C_in * K, L] -> [B, C_out, L]."""
    out_channels = weight.shape[0]
    batch, rows, length = columns.shape
    if groups == 1:
        # a batched product: matmul would fold 2-d @ 3-d into one mm and then transpose-copy
        return torch.bmm(weight.reshape(1, out_channels, rows).expand(batch, -1, -1), columns)
    kernels = weight.reshape(groups, out_channels // groups, rows // groups)
    grouped = columns.reshape(batch, groups, rows // groups, length)
    return torch.matmul(kernels, grouped).reshape(batch, out_channels, length)


def _pair(value: int | tuple[int, int], name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if (
        len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        or min(pair) < minimum
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair


def _check_args(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> _Geometry:
    """Check every tensor's type, shape and device; return the convolution's geometry."""
    for name, tensor in (("input", input), ("offset", offset), ("weight", weight)):
        if not isinstance(tensor, Tensor) or tensor.ndim != 4:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a 4-d tensor, got {shape}")
    for name, tensor in (("input", input), ("offset", offset), ("weight", weight), ("mask", mask)):
        if tensor is not None and not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    batch, in_channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    if group_channels == 0 or in_channels % group_channels or kh == 0 or kw == 0:
        raise ValueError(
            f"weight must have shape [C_out, C_in / groups, kh, kw] with C_in = {in_channels} "
            f"divisible by its dim 1 and a non-empty kernel, got {tuple(weight.shape)}"
        )
    groups = in_channels // group_channels
    if out_channels % groups:
        raise ValueError(
            f"weight's C_out = {out_channels} must be divisible by groups = C_in / "
            f"weight.shape[1] = {groups}"
        )
    out_size = _output_size((height, width), (kh, kw), stride, padding, dilation)
    if min(out_size) < 1:
        raise ValueError(
            f"input's spatial size {(height, width)} is too small for a {kh}x{kw} kernel with "
            f"padding {padding} and dilation {dilation} (output size {out_size})"
        )
    taps = kh * kw
    if offset.shape[0] != batch or offset.shape[2:] != out_size or offset.shape[1] % (2 * taps):
        raise ValueError(
            f"offset must have shape [B, 2 * offset_groups * kh * kw, H_out, W_out] = "
            f"[{batch}, 2 * offset_groups * {taps}, {out_size[0]}, {out_size[1]}], "
            f"got {tuple(offset.shape)}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    if offset_groups == 0 or in_channels % offset_groups:
        raise ValueError(
            f"offset's {offset.shape[1]} channels mean offset_groups = {offset_groups}, which "
            f"must be positive and divide C_in = {in_channels}"
        )
    expected_mask = (batch, offset_groups * taps, *out_size)
    if mask is not None and tuple(mask.shape) != expected_mask:
        raise ValueError(
            f"mask must have shape [B, offset_groups * kh * kw, H_out, W_out] = "
            f"{list(expected_mask)}, got {tuple(mask.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(
            f"bias must have shape [C_out] = [{out_channels}], got {tuple(bias.shape)}"
        )
    named = (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask))
    for name, tensor in named:
        if tensor is not None and tensor.device != input.device:
            raise ValueError(f"{name} is on {tensor.device} but input is on {input.device}")
    return _Geometry(groups, offset_groups, (kh, kw), out_size)


def _output_size(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (size[d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
        for d in range(2)
    )
