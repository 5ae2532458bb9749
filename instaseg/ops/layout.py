"""Memory-layout conversions of feature maps that are fast on the CPU.

`Tensor.contiguous(memory_format=...)` converts between NCHW and channels-last with a generic
strided copy, which on the CPU runs several times slower than a copy of 2-D transposes
(torch blocks those for the cache). These functions convert large maps image by image as
[C, H*W] <-> [H*W, C] transposes on the CPU and defer to torch elsewhere (small maps, where
the per-image loop costs more than it saves, and other devices). Shapes never change; only
the strides do. Both are differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MIN_PIXELS = 1024  # maps smaller than this (per image) use torch's own copy


def to_channels_last(features: Tensor, out: Tensor | None = None) -> Tensor:
    """[N, C, H, W] -> the same values in channels-last memory (a no-op if already so and no
    `out` is given). out: optional [N * H * W, C] buffer to write the pixel rows into."""
    batch, channels, height, width = features.shape
    if out is None:
        if features.is_contiguous(memory_format=torch.channels_last):
            return features
        out = features.new_empty((batch * height * width, channels))
    rows = out.view(batch, height * width, channels)
    if _transpose_pays(features) and not features.is_contiguous(memory_format=torch.channels_last):
        for image in range(batch):
            rows[image].copy_(features[image].reshape(channels, height * width).t())
    else:
        rows.copy_(features.permute(0, 2, 3, 1).reshape(batch, height * width, channels))
    return rows.view(batch, height, width, channels).permute(0, 3, 1, 2)


def to_channels_first(features: Tensor) -> Tensor:
    """[N, C, H, W] -> the same values in contiguous (NCHW) memory (a no-op if already so)."""
    if features.is_contiguous():
        return features
    if not _transpose_pays(features):
        return features.contiguous()
    batch, channels, height, width = features.shape
    planes = features.new_empty((batch, channels, height * width))
    for image in range(batch):
        planes[image].copy_(features[image].permute(1, 2, 0).reshape(height * width, channels).t())
    return planes.view(batch, channels, height, width)


def _transpose_pays(features: Tensor) -> bool:
    return (
        features.device.type == "cpu"
        and features.ndim == 4
        and features.shape[2] * features.shape[3] >= _MIN_PIXELS
    )
