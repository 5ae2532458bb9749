"""Modulated deformable convolution layer (DCNv2; Zhu et al. 2019, "Deformable ConvNets v2:
More Deformable, Better Results").

Data flow: features x [B, C_in, H, W] -> `conv_offset` (an ordinary conv with the same kernel,
stride, padding and dilation) -> [B, 3 * G * kh * kw, H_out, W_out], split into offsets
[B, 2 * G * kh * kw, ...] ((dy, dx) per offset group and tap, in input pixels) and mask logits
[B, G * kh * kw, ...] -> modulation m = 2 * sigmoid(logits) -> `ops.deform_conv2d` with
`weight` -> [B, C_out, H_out, W_out].

Modulation: the paper uses m = sigmoid(logits), which is 0.5 everywhere at the zero init, so a
fresh layer computes half of a plain convolution. We use m = 2 * sigmoid(logits), range (0, 2):
at the zero init (offsets 0, m = 1) the layer is exactly the plain convolution with `weight`.
That matters when ImageNet ResNet weights are loaded into a DCN ResNet (the pretrained network
is reproduced exactly, and the norm after the conv sees the statistics it was trained with),
and when training from scratch (the block starts as a conv, whose init the rest of the network
assumes). The DCN then learns to deform and modulate from there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from instaseg.ops.deform_conv import deform_conv2d


def _pair(value: int | tuple[int, int], name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair) or min(pair) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair


class ModulatedDeformConv2d(nn.Module):
    """A conv whose taps move and scale per output pixel, both predicted from its input.

    Arguments as for nn.Conv2d, plus offset_groups (G): input channels split into G contiguous
    groups, each with its own offsets and mask. Parameters: `weight` [C_out, C_in / groups, kh,
    kw] and `bias` [C_out] (or None), named and shaped as nn.Conv2d's, so a plain conv's
    checkpoint keys fit; `conv_offset.weight` / `.bias` predict the offsets and mask logits and
    are zero-initialised (`reset_offset_parameters`), so the layer starts as a plain conv.
    Not an nn.Conv2d subclass: code that rewrites nn.Conv2d modules must not treat it as one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
            ("offset_groups", offset_groups),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups = {groups} must divide in_channels = {in_channels} and "
                f"out_channels = {out_channels}"
            )
        if in_channels % offset_groups:
            raise ValueError(
                f"offset_groups = {offset_groups} must divide in_channels = {in_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self.groups = groups
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        # offsets (2 per tap and group) then mask logits (1 per tap and group)
        self.conv_offset = nn.Conv2d(
            in_channels,
            3 * offset_groups * kh * kw,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's default init for weight and bias; zero offsets and unit mask."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        self.reset_offset_parameters()

    def reset_offset_parameters(self) -> None:
        """Zero `conv_offset`, so that offsets are 0 and the mask is 1: a plain conv."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C_in, H, W] -> offsets [B, 2 G kh kw, H_out, W_out] (dy, dx pairs in input
        pixels) and mask [B, G kh kw, H_out, W_out] in (0, 2)."""
        num_offsets = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        predicted = self.conv_offset(x)
        offsets, mask_logits = predicted.split(
            [num_offsets, predicted.shape[1] - num_offsets], dim=1
        )
        return offsets, 2 * torch.sigmoid(mask_logits)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, H_out, W_out], H_out as for nn.Conv2d
        offsets, mask = self.offsets_and_mask(x)
        return deform_conv2d(
            x,
            offsets,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, offset_groups={self.offset_groups}, "
            f"bias={self.bias is not None}"
        )
