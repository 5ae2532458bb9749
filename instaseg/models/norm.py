"""Normalisation layers chosen by name: "bn", "frozen_bn" or "gn".

- "bn": `nn.BatchNorm2d`. Statistics depend on the batch, which in detection is a few images
  per device, so it suits fine-tuning with large per-device batches or synchronised BN.
- "frozen_bn": `FrozenBatchNorm2d`, BatchNorm with statistics and affine parameters fixed to a
  checkpoint's values (the usual choice when fine-tuning ImageNet weights with small batches).
- "gn": `nn.GroupNorm` (Wu & He 2018), independent of the batch size; the default, because
  detectors trained from scratch with GN match ImageNet pre-training (He et al. 2019,
  "Rethinking ImageNet Pre-training").

"bn" and "frozen_bn" have the same state-dict keys (weight, bias, running_mean, running_var;
BN also has num_batches_tracked, which FrozenBatchNorm2d accepts and ignores), so a BN
checkpoint loads into either. GroupNorm has only weight and bias: a BN checkpoint does not
load into a GN model, and vice versa.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

NORMS = ("bn", "frozen_bn", "gn")

GN_MAX_GROUPS = 32
GN_MIN_CHANNELS_PER_GROUP = 2


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d in inference form with fixed statistics and affine parameters.

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, computed as one fused
    per-channel scale and shift. All four tensors are buffers (nothing trains), with BN's
    state-dict names; `num_batches_tracked` in a loaded state dict is accepted and ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # BN checkpoints carry a step counter that has no meaning once the statistics are fixed.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]; any memory format, output in x's dtype."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # [C]
        shift = self.bias - self.running_mean * scale  # [C]
        # reshape (not view) keeps this valid for channels-last inputs
        scale = scale.to(x.dtype).reshape(1, -1, 1, 1)
        shift = shift.to(x.dtype).reshape(1, -1, 1, 1)
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def gn_groups(channels: int) -> int:
    """Number of GroupNorm groups for `channels`: 32 when possible, fewer for narrow layers.

    The rule: the largest divisor of `channels` that is at most 32 and leaves at least 2
    channels per group; 1 when no divisor does (channels < 4 or prime). Standard ResNet and
    FPN widths (multiples of 64) always get 32. One channel per group would turn GN into
    InstanceNorm, which Wu & He (2018, Table 3) found clearly worse.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    limit = min(GN_MAX_GROUPS, channels // GN_MIN_CHANNELS_PER_GROUP)
    for groups in range(limit, 1, -1):
        if channels % groups == 0:
            return groups
    return 1


def make_norm(name: str, channels: int) -> nn.Module:
    """The normalisation layer called `name` ("bn", "frozen_bn" or "gn") for `channels`."""
    if name == "bn":
        return nn.BatchNorm2d(channels)
    if name == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if name == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def check_norm(name: str, argument: str = "norm") -> None:
    """Raise ValueError naming `argument` unless `name` is a known norm."""
    if name not in NORMS:
        raise ValueError(f"{argument} must be one of {NORMS}, got {name!r}")
