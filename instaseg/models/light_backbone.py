"""A light CSP backbone for CPU latency: the body of `yolact_nano`.

    images [B, 3, H, W] (normalised)
      -> stem    3x3/2 conv                              16 ch, stride 2
      -> stage2  3x3/2 conv, CSP stage (1 bottleneck)    32 ch, stride 4   "c2"
      -> stage3  3x3/2 conv, CSP stage (2 bottlenecks)   64 ch, stride 8   "c3"
      -> stage4  3x3/2 conv, CSP stage (2 bottlenecks)  128 ch, stride 16  "c4"
      -> stage5  3x3/2 conv, CSP stage (1 bottleneck),  256 ch, stride 32  "c5"
                 SPPF
(channels at width=1.0, bottlenecks at depth=1.0; every conv is conv + norm + ReLU).

A CSP stage (Wang et al. 2020, "CSPNet"; the dense-shortcut form of YOLOv8's C2f): two 1x1
convs split the input into a shortcut half `a` and a working half `b`; n bottlenecks transform
`b` one after another; a 1x1 conv fuses the concatenation [a, b, b_1, ..., b_n]. A bottleneck
is b + conv3x3(conv3x3(b)) with a half-width middle (YOLO11's C3k2 bottleneck), so it costs
9 c^2 multiply-adds per pixel instead of ResNet's 18 c^2. SPPF (YOLOv5) widens C5's receptive
field with three chained 5x5 max-pools, concatenated and fused by a 1x1 conv.

Measured choices (oneDNN on the AVX2 AMD EPYC dev machine, channels-last, 640 x 640 input,
process CPU time of a forward on one thread):
- Dense 3x3 convs, no depthwise convs. oneDNN runs a dense 3x3 conv at ~70-90 GFLOP/s per
  core but a depthwise 3x3 at ~15-30 (it is memory bound): a depthwise-separable bottleneck
  (2 x (dw 3x3 + 1x1)) has 1/8 of the dense one's FLOPs but takes 1/4 of its time, and this
  network with such bottlenecks was no faster (within 5%) while 20% smaller (0.85 M
  parameters, 1.94 GFLOPs): per millisecond the dense convs carry more capacity.
- Half-width bottleneck middles: 2.45 GFLOPs instead of 3.16 with full-width ones (YOLOv8n's
  layout), ~15% less time.
- ReLU, not SiLU: SiLU's exp adds ~10% to the forward.
- The split is two 1x1 convs instead of one conv and a channel split: in channels-last memory
  a channel slice is strided, and the next 3x3 conv would first copy it.
- Every norm directly follows its conv in an nn.Sequential (`ConvNormAct`), so
  `models.optimize.optimize_for_inference` folds all of them (norm="bn") into the convs;
  that and channels-last weights take 20-25% off the eager forward.

norm "bn" suits training from scratch with batches of at least ~4 images (and folds away at
inference); "gn" is independent of the batch size and cannot be folded; "frozen_bn" is for
fine-tuning. Feature maps at stride s have size ceil(H / s) x ceil(W / s) for any H, W.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.norm import check_norm, make_norm

LEVELS = ("c2", "c3", "c4", "c5")  # stages 2..5, strides 4, 8, 16, 32
STEM_CHANNELS = 16
STAGE_CHANNELS = (32, 64, 128, 256)  # at width 1.0
STAGE_BLOCKS = (1, 2, 2, 1)  # bottlenecks per CSP stage at depth 1.0
CHANNEL_MULTIPLE = 8  # scaled widths round up to multiples of 8 (SIMD-friendly, even halves)


class ConvNormAct(nn.Sequential):
    """conv (index 0, no bias) -> norm (1) -> ReLU (2); "same" padding, so a stride-s conv
    maps H to ceil(H / s)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        *,
        norm: str,
    ) -> None:
        padding = kernel_size // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """x + conv3x3(conv3x3(x)), the middle half as wide: [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        middle = channels // 2
        self.conv1 = ConvNormAct(channels, middle, 3, norm=norm)
        self.conv2 = ConvNormAct(middle, channels, 3, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        # out of place: the ReLU's output is needed by its backward
        return x + self.conv2(self.conv1(x))


class CSPStage(nn.Module):
    """Cross-stage partial stage: [B, C_in, H, W] -> [B, C_out, H, W] (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, norm: str) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.shortcut = ConvNormAct(in_channels, hidden, norm=norm)  # a
        self.main = ConvNormAct(in_channels, hidden, norm=norm)  # b
        self.blocks = nn.ModuleList(Bottleneck(hidden, norm) for _ in range(num_blocks))
        self.fuse = ConvNormAct((2 + num_blocks) * hidden, out_channels, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        y = self.main(x)
        parts = [self.shortcut(x), y]
        for block in self.blocks:
            y = block(y)
            parts.append(y)
        return self.fuse(torch.cat(parts, dim=1))  # [B, (2 + n) * hidden, H, W] -> C_out


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (YOLOv5): 1x1 conv to C/2, three chained 5x5/1 max-pools
    (receptive fields 5, 9, 13), concatenation, 1x1 conv back to C. [B, C, H, W] kept."""

    def __init__(self, channels: int, norm: str, pool_size: int = 5) -> None:
        super().__init__()
        hidden = channels // 2
        self.reduce = ConvNormAct(channels, hidden, norm=norm)
        self.fuse = ConvNormAct(4 * hidden, channels, norm=norm)
        self.pool_size = pool_size

    def forward(self, x: Tensor) -> Tensor:
        pooled = [self.reduce(x)]
        for _ in range(3):
            pooled.append(F.max_pool2d(pooled[-1], self.pool_size, 1, self.pool_size // 2))
        return self.fuse(torch.cat(pooled, dim=1))


class NanoBackbone(nn.Module):
    """The light CSP backbone (module docstring): images [B, 3, H, W] -> OrderedDict of the
    returned levels among "c2".."c5" (strides 4..32), fine to coarse.

    stem_channels, stage_channels (4 values), stage_blocks (4 bottleneck counts, >= 0): the
        architecture; `nano_backbone` derives them from width and depth multipliers.
    norm: "bn" (default), "gn" or "frozen_bn" after every conv; see `models.norm`.
    returned_layers: the levels `forward` returns; stages after the deepest are not built.

    Attributes: out_channels and strides, dicts keyed by the returned level names (the
    interface of `models.backbones.ResNet`, so it plugs into `FPN` / `BackboneWithFPN`).
    """

    def __init__(
        self,
        *,
        stem_channels: int = STEM_CHANNELS,
        stage_channels: Sequence[int] = STAGE_CHANNELS,
        stage_blocks: Sequence[int] = STAGE_BLOCKS,
        norm: str = "bn",
        returned_layers: Sequence[str] = ("c3", "c4", "c5"),
    ) -> None:
        super().__init__()
        _check_architecture(stem_channels, stage_channels, stage_blocks)
        check_norm(norm)
        self.returned_layers = _check_levels(returned_layers)
        num_stages = LEVELS.index(self.returned_layers[-1]) + 1
        self.stem = ConvNormAct(3, stem_channels, 3, 2, norm=norm)
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        in_channels = stem_channels
        for index in range(num_stages):
            channels = stage_channels[index]
            layers = [
                ConvNormAct(in_channels, channels, 3, 2, norm=norm),  # downsample
                CSPStage(channels, channels, stage_blocks[index], norm),
            ]
            if index == len(LEVELS) - 1:
                layers.append(SPPF(channels, norm))
            self.add_module(f"stage{index + 2}", nn.Sequential(*layers))
            level = LEVELS[index]
            if level in self.returned_layers:
                self.out_channels[level] = channels
                self.strides[level] = 4 * 2**index
            in_channels = channels
        self.num_stages = num_stages
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He et al. 2015 for ReLU, fan-out as in models.backbones.ResNet
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """images: float [B, 3, H, W], normalised -> {"c3": [B, C3, ceil(H/8), ceil(W/8)],
        ...} for the returned levels, fine to coarse."""
        _check_images(images)
        x = self.stem(images)  # [B, stem_channels, ceil(H/2), ceil(W/2)]
        features: OrderedDict[str, Tensor] = OrderedDict()
        for index in range(self.num_stages):
            x = getattr(self, f"stage{index + 2}")(x)
            if LEVELS[index] in self.out_channels:
                features[LEVELS[index]] = x
        return features


def nano_backbone(
    *,
    width: float = 1.0,
    depth: float = 1.0,
    norm: str = "bn",
    returned_layers: Sequence[str] = ("c3", "c4", "c5"),
) -> NanoBackbone:
    """The light backbone with channels scaled by `width` (rounded up to multiples of 8) and
    bottlenecks per stage scaled by `depth` (rounded, at least 1 where the base has any).
    At 1.0 / 1.0: C3, C4, C5 have 64, 128, 256 channels; 1.03 M parameters with all levels,
    2.45 GFLOPs on a 640 x 640 image (2 per multiply-add)."""
    for name, value in (("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    return NanoBackbone(
        stem_channels=_scaled_channels(STEM_CHANNELS, width),
        stage_channels=[_scaled_channels(c, width) for c in STAGE_CHANNELS],
        stage_blocks=[max(1, round(n * depth)) if n else 0 for n in STAGE_BLOCKS],
        norm=norm,
        returned_layers=returned_layers,
    )


def _scaled_channels(channels: int, width: float) -> int:
    return max(CHANNEL_MULTIPLE, math.ceil(channels * width / CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE)


def _check_architecture(
    stem_channels: int, stage_channels: Sequence[int], stage_blocks: Sequence[int]
) -> None:
    if not isinstance(stem_channels, int) or stem_channels < 1:
        raise ValueError(f"stem_channels must be a positive int, got {stem_channels!r}")
    if len(stage_channels) != len(LEVELS) or any(
        not isinstance(c, int) or c < 4 or c % 4 for c in stage_channels
    ):
        raise ValueError(
            f"stage_channels must be {len(LEVELS)} positive multiples of 4 (a CSP stage halves "
            f"them, its bottlenecks halve them again), got {tuple(stage_channels)}"
        )
    if len(stage_blocks) != len(LEVELS) or any(
        not isinstance(n, int) or n < 0 for n in stage_blocks
    ):
        raise ValueError(f"stage_blocks must be {len(LEVELS)} ints >= 0, got {tuple(stage_blocks)}")


def _check_levels(returned_layers: Sequence[str]) -> tuple[str, ...]:
    """The returned levels in LEVELS order; ValueError unless distinct names from LEVELS."""
    if isinstance(returned_layers, str):
        raise TypeError(f"returned_layers must be a sequence of names, got {returned_layers!r}")
    unknown = [level for level in returned_layers if level not in LEVELS]
    if unknown or not returned_layers or len(set(returned_layers)) != len(returned_layers):
        raise ValueError(
            f"returned_layers must be distinct names from {LEVELS}, got {tuple(returned_layers)}"
        )
    return tuple(level for level in LEVELS if level in returned_layers)


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be float and normalised (the detector normalises), got {images.dtype}"
        )
