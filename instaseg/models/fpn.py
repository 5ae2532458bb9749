"""Feature Pyramid Network (Lin et al. 2017): a top-down pathway with lateral connections.

Parameter names map to torchvision's `FeaturePyramidNetwork` by prefix (i = 0 for the finest
input level, as in torchvision):

    ours                            torchvision
    lateral_convs.{i}.0.<param>     inner_blocks.{i}.0.<param>    1x1 lateral conv
    lateral_convs.{i}.1.<param>     inner_blocks.{i}.1.<param>    its norm, if any
    output_convs.{i}.0.<param>      layer_blocks.{i}.0.<param>    3x3 output conv
    output_convs.{i}.1.<param>      layer_blocks.{i}.1.<param>    its norm, if any
    extra_convs.p6.<param>          extra_blocks.p6.<param>       extra_levels="p6p7" only
    extra_convs.p7.<param>          extra_blocks.p7.<param>

The "maxpool" extra level has no parameters, in either library.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.norm import check_norm, make_norm

ExtraLevels = Literal["maxpool", "p6p7"] | None


def _conv_norm(
    in_channels: int, out_channels: int, kernel_size: int, norm: str | None
) -> nn.Sequential:
    """Conv (index 0) and optional norm (index 1); the conv has a bias only without a norm,
    which the norm's own shift would make redundant. Indices match torchvision's
    Conv2dNormActivation, so keys map one to one."""
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm is None
    )
    # No ReLU follows FPN convs, so use the gain of a linear layer (a=1), as Detectron does.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    if norm is None:
        return nn.Sequential(conv)
    return nn.Sequential(conv, make_norm(norm, out_channels))


class FPN(nn.Module):
    """Feature Pyramid Network (Lin et al. 2017): features C_l -> P_l, all `out_channels` wide.

    P_top = out(lat(C_top)); going down, M_l = lat(C_l) + nearest_upsample(M_{l+1}) to C_l's
    exact size (so odd sizes line up) and P_l = out(M_l), where lat is a 1x1 conv and out a
    3x3 conv that smooths upsampling aliasing. Extra coarser levels:

    extra_levels="maxpool": P6 = P5 subsampled with stride 2 (max-pool, kernel 1), as in Mask
        R-CNN's FPN, for the RPN's largest anchors.
    extra_levels="p6p7": P6 = 3x3/2 conv of `extra_source` and P7 = 3x3/2 conv of relu(P6), as
        in RetinaNet; extra_source "p5" is the coarsest output level, "c5" the coarsest input
        (P5 and C5 with the default levels; torchvision's RetinaNet v1 uses P5, v2 C5).
    extra_levels=None: no extra level.

    in_channels, in_strides: channels and strides of the input levels, fine to coarse; strides
    are powers of two, and a level of stride 2^l is named "p{l}".
    norm: None, "gn", "bn" or "frozen_bn" after each lateral and output conv.

    Attributes: out_channels (int), strides and names (tuples, fine to coarse).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_channels: int = 256,
        *,
        norm: str | None = None,
        extra_levels: ExtraLevels = "maxpool",
        extra_source: Literal["p5", "c5"] = "p5",
    ) -> None:
        super().__init__()
        _check_fpn_args(in_channels, in_strides, out_channels, norm, extra_levels, extra_source)
        self.lateral_convs = nn.ModuleList(
            _conv_norm(c, out_channels, 1, norm) for c in in_channels
        )
        self.output_convs = nn.ModuleList(
            _conv_norm(out_channels, out_channels, 3, norm) for _ in in_channels
        )
        self.extra_levels = extra_levels
        self.extra_source = extra_source
        num_extra = {"maxpool": 1, "p6p7": 2, None: 0}[extra_levels]
        self.strides = tuple(in_strides) + tuple(
            in_strides[-1] * 2**k for k in range(1, num_extra + 1)
        )
        self.names = tuple(f"p{stride.bit_length() - 1}" for stride in self.strides)
        self.out_channels = out_channels
        self.extra_convs: nn.ModuleDict | None = None
        if extra_levels == "p6p7":
            source_channels = out_channels if extra_source == "p5" else in_channels[-1]
            self.extra_convs = nn.ModuleDict(
                {
                    "p6": nn.Conv2d(source_channels, out_channels, 3, stride=2, padding=1),
                    "p7": nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1),
                }
            )
            for conv in self.extra_convs.values():
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """features: the input levels fine to coarse, [B, in_channels[i], H_i, W_i] ->
        {"p2": [B, out_channels, H_2, W_2], ...} with keys `names`."""
        if len(features) != len(self.lateral_convs):
            raise ValueError(
                f"FPN expects {len(self.lateral_convs)} feature maps, got {len(features)} "
                f"({list(features)})"
            )
        inputs = list(features.values())
        merged = self.lateral_convs[-1](inputs[-1])  # [B, out_channels, H_top, W_top]
        outputs = [self.output_convs[-1](merged)]
        for index in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral_convs[index](inputs[index])
            # size=, not scale_factor=2: strides divide with ceiling, so an odd-sized level is
            # one pixel smaller than twice the next coarser one
            top_down = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral.add_(top_down)  # in place: no backward needs the lateral output
            outputs.insert(0, self.output_convs[index](merged))
        outputs += self._extra(outputs[-1], inputs[-1])
        return OrderedDict(zip(self.names, outputs, strict=True))

    def _extra(self, top_output: Tensor, top_input: Tensor) -> list[Tensor]:
        if self.extra_levels == "maxpool":
            return [F.max_pool2d(top_output, kernel_size=1, stride=2)]
        if self.extra_convs is not None:
            p6 = self.extra_convs["p6"](top_output if self.extra_source == "p5" else top_input)
            return [p6, self.extra_convs["p7"](F.relu(p6))]
        return []


def _check_fpn_args(
    in_channels: Sequence[int],
    in_strides: Sequence[int],
    out_channels: int,
    norm: str | None,
    extra_levels: str | None,
    extra_source: str,
) -> None:
    if not in_channels or len(in_channels) != len(in_strides):
        raise ValueError(
            f"in_channels and in_strides must be non-empty and of equal length, "
            f"got {list(in_channels)} and {list(in_strides)}"
        )
    powers = all(s >= 1 and s & (s - 1) == 0 for s in in_strides)
    if not powers or any(a >= b for a, b in zip(in_strides, in_strides[1:], strict=False)):
        raise ValueError(f"in_strides must be increasing powers of two, got {list(in_strides)}")
    if out_channels < 1:
        raise ValueError(f"out_channels must be positive, got {out_channels}")
    if norm is not None:
        check_norm(norm, "FPN norm")
    if extra_levels not in ("maxpool", "p6p7", None):
        raise ValueError(f"extra_levels must be 'maxpool', 'p6p7' or None, got {extra_levels!r}")
    if extra_source not in ("p5", "c5"):
        raise ValueError(f"extra_source must be 'p5' or 'c5', got {extra_source!r}")
    if extra_source == "c5" and extra_levels != "p6p7":
        raise ValueError("extra_source='c5' only applies to extra_levels='p6p7'")
