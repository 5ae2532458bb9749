"""Inference-only rewrites of a model for CPU latency; the math stays the same.

`optimize_for_inference(model)` works on any of our detectors (and on bare backbones): it
returns a copy in eval mode with
- fixed batch norms (FrozenBatchNorm2d, and BatchNorm2d / SyncBatchNorm, whose eval-mode
  statistics are fixed too) folded into the convolution that feeds them: w' = w * s,
  b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps), per output channel, so grouped
  and depthwise convs fold the same way. A norm is known to follow a conv when it is the next
  item of a plain nn.Sequential, or by name: "bnK" / "normK" after a sibling "convK" (K may be
  empty: "bn" after "conv"), the naming of torchvision's ResNet and of our heads. A module that
  applies its norms in its own forward (a conv shared by pyramid levels, each with its own
  norm) folds them in its `fold_norms_()` method, which is called. GroupNorm depends on its
  input and cannot be folded.
- 3x3 stride-1 convolutions computed with NNPACK's Winograd kernels on the CPU when torch
  ships NNPACK (`torch._nnpack_available()`) and the convolution is large enough to gain
  (`WinogradConv2d`): about 2-3x fewer multiplications than direct convolution, with float32
  results within ~1e-4 relative error. Other devices, dtypes or autograd use the ordinary
  convolution.
- spatial conv kernels (depthwise ones included) in channels-last memory, so that oneDNN runs
  the network channels-last from the first conv on (1x1 convs follow their input's layout):
  faster on the CPU for most ResNet shapes, ~5x for a 3-channel stem, ~1.4x for depthwise
  convs.
  Modules that read features in a layout-dependent order offer a `use_channels_last_input_()`
  method, which is called (the box heads' first fc reads RoIAlign's channels-last output in
  (h, w, c) order, so that flattening it copies nothing).

The copy is for inference only: its state dict lacks the folded norms, so never train or
save it; keep the original for that.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from instaseg.models.deform_conv import ModulatedDeformConv2d
from instaseg.models.norm import FrozenBatchNorm2d
from instaseg.ops.layout import to_channels_first

NORM_PREFIXES = ("bn", "norm")  # a norm named <prefix>K follows the sibling conv "convK"


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, undilated, ungrouped Conv2d that runs on NNPACK (Winograd) where that
    pays: float32 CPU inputs of at least `min_size` x `min_size` pixels and `min_macs`
    multiply-adds, when no gradient is needed. Winograd's 6x6 output tiles waste work on small
    maps, and for small convolutions the NCHW copy NNPACK needs costs more than it saves; those
    use the ordinary convolution. Same parameters and state dict as nn.Conv2d."""

    min_size = 14
    min_macs = 2e9

    def forward(self, input: Tensor) -> Tensor:
        if self._nnpack_pays(input):
            return torch._nnpack_spatial_convolution(
                to_channels_first(input), self.weight.contiguous(), self.bias, list(self.padding)
            )
        return super().forward(input)

    def _nnpack_pays(self, input: Tensor) -> bool:
        if torch.compiler.is_compiling():  # torch.compile cannot trace the NNPACK op
            return False
        if input.device.type != "cpu" or input.dtype != torch.float32 or input.ndim != 4:
            return False
        if torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad):
            return False
        batch, channels, height, width = input.shape
        macs = batch * channels * self.out_channels * 9 * height * width
        # _nnpack_available also initialises NNPACK, which must precede the first call
        return min(height, width) >= self.min_size and macs >= self.min_macs and _nnpack_ready()


def _nnpack_ready() -> bool:
    return torch._nnpack_available()


def optimize_for_inference(
    model: nn.Module, *, winograd: bool = True, channels_last: bool = True
) -> nn.Module:
    """An eval-mode copy of `model` with fixed norms folded, 3x3 stride-1 convs on Winograd
    kernels where they pay (if `winograd` and NNPACK is available), and spatial kernels in
    channels-last memory (if `channels_last`; oneDNN then runs the convs that follow
    channels-last, which is faster on the CPU for most of a ResNet's shapes)."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if callable(getattr(module, "fold_norms_", None)):  # norms it applies itself
            module.fold_norms_()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            conv_name = _conv_before(parent, name) if _foldable(child) else None
            if conv_name is not None:
                fold_norm(getattr(parent, conv_name), child)
                setattr(parent, name, nn.Identity())
    if winograd and torch._nnpack_available():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if _winograd_shaped(child):
                    setattr(parent, name, _as_winograd(child))
    if channels_last:
        for module in model.modules():
            if _channels_last_pays(module):
                module.weight.data = module.weight.data.contiguous(
                    memory_format=torch.channels_last
                )
            if callable(getattr(module, "use_channels_last_input_", None)):
                module.use_channels_last_input_()
    return model


def _channels_last_pays(module: nn.Module) -> bool:
    """Spatial kernels go channels-last, so that the stem turns the whole ResNet
    channels-last; 1x1 convs follow their input's layout either way. (Winograd convs copy
    their kernel to NCHW for NNPACK, a small cost next to the large convolutions they run.)"""
    return isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)


def _conv_before(parent: nn.Module, name: str) -> str | None:
    """The name of the Conv2d of `parent` whose output feeds its child norm `name` directly:
    index i - 1 of a plain nn.Sequential (not a subclass with its own forward), or the
    sibling "convK" of a norm named "bnK" or "normK". None when there is none, or when its
    output channels differ from the norm's."""
    if isinstance(parent, nn.Sequential) and name.isdigit():
        if int(name) == 0 or type(parent).forward is not nn.Sequential.forward:
            return None
        candidate = str(int(name) - 1)
    else:
        suffixes = [name[len(p) :] for p in NORM_PREFIXES if name.startswith(p)]
        if not suffixes or not (suffixes[0] == "" or suffixes[0].isdigit()):
            return None
        candidate = "conv" + suffixes[0]
    conv = getattr(parent, candidate, None)
    if not isinstance(conv, (nn.Conv2d, ModulatedDeformConv2d)):  # both: y = w * x + b
        return None
    return candidate if conv.out_channels == getattr(parent, name).num_features else None


def _foldable(module: nn.Module) -> bool:
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return (
        isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm))
        and module.track_running_stats
        and module.running_var is not None
        and module.affine
    )


@torch.no_grad()
def fold_norm(conv: nn.Conv2d | ModulatedDeformConv2d, norm: nn.Module) -> None:
    """Fold a fixed batch norm (eval-mode statistics) that follows `conv` into it, in place:
    the module docstring's w' and b'; the norm is then to be dropped."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # [C_out]
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


def _winograd_shaped(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def _as_winograd(conv: nn.Conv2d) -> WinogradConv2d:
    fast = WinogradConv2d(
        conv.in_channels, conv.out_channels, 3, padding=conv.padding, bias=conv.bias is not None
    )
    fast.weight = conv.weight
    fast.bias = conv.bias
    return fast
