"""ResNet backbones (He et al. 2016) and ResNet + FPN (Lin et al. 2017).

Inputs are float images already normalised by the detector, [B, 3, H, W]; backbones never
normalise. A feature map at stride s has size ceil(H / s) x ceil(W / s), so any input size
works, odd ones included.

Checkpoint compatibility with torchvision
-----------------------------------------
`ResNet` uses torchvision's module names, so with norm="bn" or "frozen_bn" its state dict has
exactly the keys and shapes of torchvision's ResNet (`conv1.weight`, `bn1.*`,
`layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, `layer1.0.downsample.1.*`, ..., and
`fc.*` when built with `num_classes`). Norm submodules keep the names `bn1`, `bn2`, ... whatever
the norm; a GroupNorm model has the same names without running statistics, so BN checkpoints
load only into "bn" / "frozen_bn" models. `load_resnet_weights` loads a torchvision ImageNet
checkpoint into a feature extractor (dropping `fc.*`).

`BackboneWithFPN` has `.body` (the ResNet) and `.fpn`, as torchvision's does, so a torchvision
detection checkpoint converts by prefix: `body.<key>` is the same on both sides, and
`fpn.lateral_convs.` / `fpn.output_convs.` / `fpn.extra_convs.` are torchvision's
`fpn.inner_blocks.` / `fpn.layer_blocks.` / `fpn.extra_blocks.` (table in `models.fpn`).
Inside a detector both sides add `backbone.`. torchvision's detection backbones use frozen BN
and FPN convs without norm: build them with norm="frozen_bn", fpn_norm=None.

Deformable convolution (DCNv2, Zhu et al. 2019)
-----------------------------------------------
`dcn_stages` and `dcn_interval` replace the 3x3 conv of some blocks by a
`ModulatedDeformConv2d`, as YOLACT++ does (Bolya et al. 2020: C3-C5, interval 3). In each named
stage, block i (0-based) is deformable when i % dcn_interval == 0: blocks 0, 3, 6, ... with
interval 3, so the first, strided block of a stage always is (YOLACT++'s reference code picks
the same blocks). The replaced conv is `conv2`: a Bottleneck's 3x3 (which carries the stride),
and a BasicBlock's second 3x3, so in both block types the deformable conv reads features the
block has already transformed, and a BasicBlock's stride stays on a plain conv. The layer keeps
the name and its `weight` keeps the shape, so a DCN ResNet's state dict is the plain one's plus
`<block>.conv2.conv_offset.{weight,bias}`, and `load_resnet_weights` fills a plain checkpoint
into it, leaving the zero-initialised offset convs (a DCN at zero init is exactly the plain conv).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict, Unpack

import torch
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from instaseg.models.deform_conv import ModulatedDeformConv2d
from instaseg.models.fpn import FPN, ExtraLevels
from instaseg.models.norm import check_norm, make_norm
from instaseg.models.state_dict import preview, state_dict_differences

logger = logging.getLogger(__name__)

LEVELS = ("c2", "c3", "c4", "c5")  # outputs of layer1..layer4, strides 4, 8, 16, 32


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _deformable3x3(in_channels: int, out_channels: int, stride: int = 1) -> ModulatedDeformConv2d:
    return ModulatedDeformConv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _projection(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Module | None:
    """Shortcut of a residual block: identity when shapes agree, else a strided 1x1 conv and
    a norm (projection shortcut, option B of He et al. 2016)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), make_norm(norm, out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (ResNet-18/34). Output channels: planes.
    deformable: conv2 (stride 1) is a ModulatedDeformConv2d."""

    expansion = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int, norm: str, deformable: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = (_deformable3x3 if deformable else _conv3x3)(planes, planes)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, planes, stride, norm)

    @property
    def residual_norm(self) -> nn.Module:
        """The norm that closes the residual branch (zero-initialised to start as identity)."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, in_channels, H, W] -> [B, planes, ceil(H / stride), ceil(W / stride)]
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut  # in place: a fresh tensor that no backward needs
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) plus a shortcut (ResNet-50/101).

    The stride sits on the 3x3 conv ("ResNet v1.5", as in torchvision), not on the first 1x1
    as in the original paper: a strided 1x1 conv would skip three quarters of the input.
    deformable: that 3x3 conv, conv2, is a ModulatedDeformConv2d.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int, norm: str, deformable: bool = False
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = (_deformable3x3 if deformable else _conv3x3)(planes, planes, stride)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = _conv1x1(planes, out_channels)
        self.bn3 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride, norm)

    @property
    def residual_norm(self) -> nn.Module:
        """The norm that closes the residual branch (zero-initialised to start as identity)."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, in_channels, H, W] -> [B, 4 * planes, ceil(H / stride), ceil(W / stride)]
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # [B, planes, H, W]
        out = self.relu(self.bn2(self.conv2(out)))  # [B, planes, H / stride, W / stride]
        out = self.bn3(self.conv3(out))
        out += shortcut  # in place: a fresh tensor that no backward needs
        return self.relu(out)


def _make_stage(
    block: type[BasicBlock | Bottleneck],
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    norm: str,
    dcn_interval: int | None = None,
) -> nn.Sequential:
    """One stage: the first block changes resolution and width, the others keep them.
    Block i is deformable when dcn_interval is set and i % dcn_interval == 0."""
    out_channels = planes * block.expansion
    blocks = []
    for index in range(num_blocks):
        deformable = dcn_interval is not None and index % dcn_interval == 0
        if index == 0:
            blocks.append(block(in_channels, planes, stride, norm, deformable))
        else:
            blocks.append(block(out_channels, planes, 1, norm, deformable))
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """ResNet feature extractor: images [B, 3, H, W] -> OrderedDict of C2..C5 feature maps.

    block, blocks_per_stage: the architecture, e.g. Bottleneck and (3, 4, 6, 3) for ResNet-50.
    norm: "gn" (default, for training from scratch), "bn" or "frozen_bn"; see `models.norm`.
    width: channels of the stem and of layer1's 3x3 convs; each later stage doubles it. 64 is
        the paper's value; smaller values make cheap test models.
    num_classes: adds global average pooling and a linear classifier `fc` (used by `classify`),
        so that an ImageNet checkpoint including `fc.*` loads strictly.
    returned_layers: which of "c2".."c5" `forward` returns (C2 is layer1's output at stride 4,
        C5 is layer4's at stride 32). Stages after the deepest one are not built, unless
        `num_classes` needs them.
    frozen_stages: 0 freezes nothing; k in 1..4 freezes the stem (conv1, bn1) and layer1..layerk:
        requires_grad is off and their norms stay in eval mode. (torchvision's
        trainable_layers=t is frozen_stages=4-t for t <= 3 and 0 for t=5; detectron2's
        FREEZE_AT is k+1 for k >= 1.)
    zero_init_residual: zero the gamma of the last norm in each block, so every block starts
        as the identity (Goyal et al. 2017); frozen BN has no trainable gamma and is left alone.
    dcn_stages: stages among "c2".."c5" whose blocks i with i % dcn_interval == 0 get a
        deformable 3x3 conv2 (DCNv2; see the module docstring). YOLACT++ uses
        ("c3", "c4", "c5") with dcn_interval=3. The stages must be built.

    Attributes: out_channels and strides, both dicts keyed by the returned level names.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks_per_stage: Sequence[int],
        *,
        norm: str = "gn",
        width: int = 64,
        num_classes: int | None = None,
        returned_layers: Sequence[str] = LEVELS,
        frozen_stages: int = 0,
        zero_init_residual: bool = True,
        dcn_stages: Sequence[str] = (),
        dcn_interval: int = 1,
    ) -> None:
        super().__init__()
        _check_resnet_args(blocks_per_stage, norm, width, num_classes, returned_layers)
        if not 0 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4, got {frozen_stages}")
        self.returned_layers = tuple(level for level in LEVELS if level in returned_layers)
        num_stages = 4 if num_classes is not None else LEVELS.index(self.returned_layers[-1]) + 1
        _check_dcn_args(dcn_stages, dcn_interval, num_stages)
        self.dcn_stages = tuple(level for level in LEVELS if level in dcn_stages)
        self.dcn_interval = dcn_interval

        # Stem: 7x7/2 conv and 3x3/2 max-pool, stride 4 in total.
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        in_channels = width
        for index in range(num_stages):
            planes = width * 2**index
            stride = 1 if index == 0 else 2  # layer1 follows the max-pool and keeps stride 4
            interval = dcn_interval if LEVELS[index] in self.dcn_stages else None
            stage = _make_stage(
                block, in_channels, planes, blocks_per_stage[index], stride, norm, interval
            )
            self.add_module(f"layer{index + 1}", stage)
            in_channels = planes * block.expansion
            if LEVELS[index] in self.returned_layers:
                self.out_channels[LEVELS[index]] = in_channels
                self.strides[LEVELS[index]] = 4 * 2**index
        self.num_stages = num_stages

        self.fc: nn.Linear | None = None
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_channels, num_classes)

        self._init_weights(zero_init_residual)
        self.frozen_stages = frozen_stages
        for module in self._frozen_modules():
            module.requires_grad_(False)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, ModulatedDeformConv2d)):
                # He et al. 2015, fan-out as in the original ResNet and torchvision
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, ModulatedDeformConv2d):
                module.reset_offset_parameters()  # the loop above reached conv_offset too
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    norm = module.residual_norm
                    if isinstance(norm, (nn.BatchNorm2d, nn.GroupNorm)):
                        nn.init.zeros_(norm.weight)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages == 0:
            return []
        stages = [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]
        return [self.conv1, self.bn1, *stages[: self.frozen_stages]]

    def train(self, mode: bool = True) -> ResNet:
        """Like nn.Module.train, but frozen stages stay in eval mode, so BN statistics of
        frozen stages never update."""
        super().train(mode)
        for module in self._frozen_modules():
            module.train(False)
        return self

    def _stem(self, images: Tensor) -> Tensor:
        _check_images(images)
        return self.maxpool(self.relu(self.bn1(self.conv1(images))))  # [B, width, H/4, W/4]

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """images: float [B, 3, H, W], normalised -> {"c2": [B, C2, ceil(H/4), ceil(W/4)], ...}
        for the returned levels, fine to coarse."""
        x = self._stem(images)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for index, level in enumerate(LEVELS[: self.num_stages]):
            x = getattr(self, f"layer{index + 1}")(x)
            if level in self.out_channels:
                features[level] = x
            if level == self.returned_layers[-1]:
                break
        return features

    def classify(self, images: Tensor) -> Tensor:
        """Class logits [B, num_classes] for images [B, 3, H, W]; needs `num_classes`."""
        if self.fc is None:
            raise RuntimeError("this ResNet has no classifier; build it with num_classes=...")
        x = self._stem(images)
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _check_resnet_args(
    blocks_per_stage: Sequence[int],
    norm: str,
    width: int,
    num_classes: int | None,
    returned_layers: Sequence[str],
) -> None:
    if len(blocks_per_stage) != 4 or any(n < 1 for n in blocks_per_stage):
        raise ValueError(f"blocks_per_stage must be 4 positive counts, got {blocks_per_stage}")
    check_norm(norm)
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be positive or None, got {num_classes}")
    if isinstance(returned_layers, str):
        raise TypeError(f"returned_layers must be a sequence of names, got {returned_layers!r}")
    unknown = [level for level in returned_layers if level not in LEVELS]
    if unknown or not returned_layers or len(set(returned_layers)) != len(returned_layers):
        raise ValueError(
            f"returned_layers must be distinct names from {LEVELS} (C2 = layer1 output), "
            f"got {tuple(returned_layers)}"
        )


def _check_dcn_args(dcn_stages: Sequence[str], dcn_interval: int, num_stages: int) -> None:
    if isinstance(dcn_stages, str):
        raise TypeError(f"dcn_stages must be a sequence of names, got {dcn_stages!r}")
    unknown = [level for level in dcn_stages if level not in LEVELS]
    if unknown or len(set(dcn_stages)) != len(dcn_stages):
        raise ValueError(
            f"dcn_stages must be distinct names from {LEVELS}, got {tuple(dcn_stages)}"
        )
    not_built = [level for level in dcn_stages if LEVELS.index(level) >= num_stages]
    if not_built:
        raise ValueError(
            f"dcn_stages names {tuple(not_built)}, which this ResNet does not build (its deepest "
            f"stage is {LEVELS[num_stages - 1]}); drop them or return a deeper level"
        )
    if isinstance(dcn_interval, bool) or not isinstance(dcn_interval, int) or dcn_interval < 1:
        raise ValueError(f"dcn_interval must be a positive int, got {dcn_interval!r}")


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be float and normalised (the detector normalises), got {images.dtype}"
        )


_ARCHITECTURES: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNetOptions(TypedDict, total=False):
    """Keyword options of the ResNet builders; meanings and defaults as for `ResNet`."""

    norm: str
    width: int
    num_classes: int | None
    returned_layers: Sequence[str]
    frozen_stages: int
    zero_init_residual: bool
    dcn_stages: Sequence[str]
    dcn_interval: int


def resnet(depth: int, **options: Unpack[ResNetOptions]) -> ResNet:
    """ResNet-`depth` for depth in 18, 34, 50, 101; options as for `ResNet`."""
    if depth not in _ARCHITECTURES:
        raise ValueError(f"depth must be one of {sorted(_ARCHITECTURES)}, got {depth}")
    block, blocks_per_stage = _ARCHITECTURES[depth]
    return ResNet(block, blocks_per_stage, **options)


def resnet18(**options: Unpack[ResNetOptions]) -> ResNet:
    """ResNet-18: BasicBlock x (2, 2, 2, 2); C2..C5 have 64, 128, 256, 512 channels."""
    return resnet(18, **options)


def resnet34(**options: Unpack[ResNetOptions]) -> ResNet:
    """ResNet-34: BasicBlock x (3, 4, 6, 3); C2..C5 have 64, 128, 256, 512 channels."""
    return resnet(34, **options)


def resnet50(**options: Unpack[ResNetOptions]) -> ResNet:
    """ResNet-50: Bottleneck x (3, 4, 6, 3); C2..C5 have 256, 512, 1024, 2048 channels."""
    return resnet(50, **options)


def resnet101(**options: Unpack[ResNetOptions]) -> ResNet:
    """ResNet-101: Bottleneck x (3, 4, 23, 3); C2..C5 have 256, 512, 1024, 2048 channels."""
    return resnet(101, **options)


class BackboneWithFPN(nn.Module):
    """A ResNet `body` followed by an `fpn`: images [B, 3, H, W] -> OrderedDict of P levels.

    Attributes: out_channels (int), strides and names (tuples, fine to coarse), from the FPN.
    """

    def __init__(self, body: ResNet, fpn: FPN) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels
        self.strides = fpn.strides
        self.names = fpn.names

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """images: float [B, 3, H, W], normalised -> {"p2": [B, C, ceil(H/4), ceil(W/4)], ...}."""
        return self.fpn(self.body(images))


def resnet_fpn(
    depth: int,
    *,
    norm: str = "gn",
    fpn_norm: str | None = "gn",
    out_channels: int = 256,
    returned_layers: Sequence[str] = LEVELS,
    extra_levels: ExtraLevels = "maxpool",
    extra_source: Literal["p5", "c5"] = "p5",
    frozen_stages: int = 0,
    zero_init_residual: bool = True,
    width: int = 64,
    dcn_stages: Sequence[str] = (),
    dcn_interval: int = 1,
) -> BackboneWithFPN:
    """ResNet-`depth` (18, 34, 50, 101) with an FPN; by default P2..P6 at strides 4..64, GN in
    both (the from-scratch recipe of He et al. 2019). Arguments as for `ResNet` and `FPN`;
    norm="frozen_bn", fpn_norm=None is torchvision's layout for ImageNet fine-tuning."""
    body = resnet(
        depth,
        norm=norm,
        width=width,
        returned_layers=returned_layers,
        frozen_stages=frozen_stages,
        zero_init_residual=zero_init_residual,
        dcn_stages=dcn_stages,
        dcn_interval=dcn_interval,
    )
    fpn = FPN(
        list(body.out_channels.values()),
        list(body.strides.values()),
        out_channels,
        norm=fpn_norm,
        extra_levels=extra_levels,
        extra_source=extra_source,
    )
    return BackboneWithFPN(body, fpn)


def load_resnet_weights(
    model: ResNet | BackboneWithFPN, weights: str | os.PathLike[str] | Mapping[str, Tensor]
) -> list[str]:
    """Load torchvision-named ResNet weights into a ResNet, or into a BackboneWithFPN's body.

    weights: a state dict, or the path of one saved by torch.save (read with
        weights_only=True) or as safetensors (a path ending in ".safetensors").
    Keys of parts the model was built without are dropped: `fc.*` without num_classes and
    `layerK.*` of stages after the deepest returned level. Everything else must match: missing
    or unexpected keys and shape mismatches raise ValueError listing them, before anything is
    loaded. `num_batches_tracked` is optional: BN models default it, frozen-BN models ignore it.
    The `conv_offset.*` keys of deformable convs are optional too: a plain ResNet checkpoint
    loads into a DCN ResNet, whose offset convs then keep their values (zero at init, so the
    DCN ResNet computes what the plain one does). Returns the dropped keys.
    """
    body = model.body if isinstance(model, BackboneWithFPN) else model
    if not isinstance(body, ResNet):
        raise TypeError(f"model must be a ResNet or BackboneWithFPN, got {type(model).__name__}")
    if isinstance(weights, (str, os.PathLike)):
        state = _read_state_dict(weights)
    else:
        state = dict(weights)
    absent = ["fc."] if body.fc is None else []
    absent += [f"layer{index}." for index in range(body.num_stages + 1, 5)]
    dropped = [key for key in state if key.startswith(tuple(absent))]
    for key in dropped:
        del state[key]
    _check_resnet_state(body, state)
    kept = [key for key in _offset_keys(body) if key not in state]
    current = body.state_dict()
    state.update({key: current[key] for key in kept})
    body.load_state_dict(state, strict=True)
    if kept:
        logger.info(
            "load_resnet_weights: %d deformable-conv offset keys kept as they were", len(kept)
        )
    if dropped:
        logger.info("load_resnet_weights: dropped %d keys: %s", len(dropped), preview(dropped))
    return dropped


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        return load_safetensors(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise TypeError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return dict(state)


def _check_resnet_state(body: ResNet, state: dict[str, Tensor]) -> None:
    """Raise a ValueError that lists every mismatch between `state` and `body`'s state dict."""
    # plain checkpoints have no offset convs
    differences = state_dict_differences(body, state, optional=set(_offset_keys(body)))
    if not differences:
        return
    problems = [
        f"{label} ({len(keys)}): {preview(keys)}"
        for label, keys in (
            ("missing", differences.missing),
            ("unexpected", differences.unexpected),
            ("wrong shape", differences.reshaped),
        )
        if keys
    ]
    raise ValueError(
        "weights do not fit this ResNet; "
        + "; ".join(problems)
        + _hint(body, differences.missing, differences.unexpected)
    )


def _offset_keys(body: ResNet) -> list[str]:
    """State-dict keys of the offset convs inside deformable convs."""
    return [
        f"{name}.conv_offset.{param}"
        for name, module in body.named_modules()
        if isinstance(module, ModulatedDeformConv2d)
        for param, _ in module.conv_offset.named_parameters()
    ]


def _hint(body: ResNet, missing: list[str], unexpected: list[str]) -> str:
    """The likely fix for the commonest mismatches, or ''."""
    if any(".conv_offset." in key for key in unexpected):
        return (
            ". The weights have deformable-conv offsets: build with the dcn_stages and "
            "dcn_interval they were trained with"
        )
    expected = list(body.state_dict())
    for key in unexpected[:1]:
        for name in expected:
            if key.endswith("." + name):
                prefix = key[: -len(name)]
                return f". The keys seem to carry the prefix {prefix!r}: strip it first"
    has_gn = any(isinstance(module, nn.GroupNorm) for module in body.modules())
    if has_gn and any(key.endswith(".running_mean") for key in unexpected):
        return ". The weights have BatchNorm statistics: build with norm='bn' or norm='frozen_bn'"
    if not has_gn and any(key.endswith(".running_mean") for key in missing):
        return (
            ". The weights have no BatchNorm statistics (GroupNorm weights?): build with norm='gn'"
        )
    return ""
