"""Named builders of both model families, the `MODELS` table, `build_model` and `model_info`.

Every builder is `(num_classes, *, weights=None, **overrides) -> nn.Module`; an unknown
override raises TypeError naming the closest valid ones.

Mask R-CNN (`mask_rcnn_*`). The defaults are the from-scratch recipe (He et al. 2019,
"Rethinking ImageNet Pre-training"): GroupNorm in the ResNet, the FPN and both heads, and the
"4conv1fc" box head. Overrides are the keyword arguments of `MaskRCNN`, plus these backbone
options: norm, fpn_norm, width (stem width of the ResNet), fpn_channels (the FPN's output
width), frozen_stages, zero_init_residual.

YOLACT (`yolact_*`, models.yolact). ResNet-FPN P3..P7 with GroupNorm (from scratch) and
YOLACT's defaults: 550 x 550 inputs, 3 anchors per location, Fast NMS. `yolact_plus_r50` is
YOLACT++: deformable convs (DCNv2) in every third block of C3..C5, 9 anchors per location
(scales 1, 2^(1/3), 2^(2/3)) and mask re-scoring. Overrides are the keyword arguments of
`YOLACT`, plus the Mask R-CNN backbone options and dcn_stages, dcn_interval.
`yolact_nano` is the light backbone (models.light_backbone) with a narrow FPN, head and
protonet at 640 x 640, BatchNorm throughout and ATSS anchor assignment; its backbone options
are norm, fpn_norm, width and depth (float multipliers of the light backbone's channels and
blocks) and fpn_channels.

`mask_rcnn_r50_fpn_torchvision` is the architecture of torchvision's maskrcnn_resnet50_fpn
(frozen BN, FPN without norm, "2fc" box head, mask head without norm, RoIAlign without the
half-pixel correction), the target of `models.convert`.

Weights are read only from a path the caller passes: safetensors for a ".safetensors" path,
else torch.load(weights_only=True).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from instaseg.models.backbones import BackboneWithFPN, resnet_fpn
from instaseg.models.fpn import FPN
from instaseg.models.light_backbone import nano_backbone
from instaseg.models.mask_rcnn import MaskRCNN
from instaseg.models.norm import FrozenBatchNorm2d
from instaseg.models.state_dict import state_dict_differences
from instaseg.models.yolact import YOLACT

BACKBONE_OPTIONS = (
    "norm",
    "fpn_norm",
    "width",
    "fpn_channels",
    "frozen_stages",
    "zero_init_residual",
)


YOLACT_BACKBONE_OPTIONS = (*BACKBONE_OPTIONS, "dcn_stages", "dcn_interval")
NANO_BACKBONE_OPTIONS = ("norm", "fpn_norm", "width", "depth", "fpn_channels")
YOLACT_LEVELS = ("c3", "c4", "c5")  # -> P3..P5, plus P6 and P7 from the FPN


def _split_options(
    overrides: dict[str, Any],
    backbone_options: tuple[str, ...],
    model_class: type[nn.Module],
    family: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides -> (backbone options, with fpn_channels renamed out_channels; model options).
    An unknown key raises TypeError naming the closest valid keys."""
    valid = backbone_options + tuple(_model_options(model_class))
    backbone, model = {}, {}
    for key, value in overrides.items():
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown {family} option {key!r}{hint}")
        if key in backbone_options:
            backbone["out_channels" if key == "fpn_channels" else key] = value
        else:
            model[key] = value
    return backbone, model


def _build(
    depth: int, num_classes: int, weights: str | None, overrides: dict[str, Any]
) -> MaskRCNN:
    backbone_options, model_options = _split_options(
        overrides, BACKBONE_OPTIONS, MaskRCNN, "Mask R-CNN"
    )
    backbone = resnet_fpn(depth, **{"norm": "gn", "fpn_norm": "gn", **backbone_options})
    model = MaskRCNN(backbone, num_classes, **model_options)
    if weights is not None:
        load_weights(model, weights)
    return model


def _build_yolact(
    depth: int, num_classes: int, weights: str | None, options: dict[str, Any]
) -> YOLACT:
    backbone_options, model_options = _split_options(
        options, YOLACT_BACKBONE_OPTIONS, YOLACT, "YOLACT"
    )
    backbone = resnet_fpn(
        depth,
        **{
            "norm": "gn",
            "fpn_norm": "gn",
            "returned_layers": YOLACT_LEVELS,
            "extra_levels": "p6p7",
            **backbone_options,
        },
    )
    model = YOLACT(backbone, num_classes, **model_options)
    if weights is not None:
        load_weights(model, weights)
    return model


def _build_yolact_nano(num_classes: int, weights: str | None, options: dict[str, Any]) -> YOLACT:
    backbone_options, model_options = _split_options(
        options, NANO_BACKBONE_OPTIONS, YOLACT, "YOLACT"
    )
    fpn_channels = backbone_options.pop("out_channels")
    fpn_norm = backbone_options.pop("fpn_norm")
    body = nano_backbone(returned_layers=YOLACT_LEVELS, **backbone_options)
    fpn = FPN(
        list(body.out_channels.values()),
        list(body.strides.values()),
        fpn_channels,
        norm=fpn_norm,
        extra_levels="p6p7",
    )
    model = YOLACT(BackboneWithFPN(body, fpn), num_classes, **model_options)
    if weights is not None:
        load_weights(model, weights)
    return model


def _model_options(model_class: type[nn.Module]) -> list[str]:
    parameters = inspect.signature(model_class.__init__).parameters
    return [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_weights(model: nn.Module, weights: str | os.PathLike[str]) -> None:
    """Load a state dict from `weights` (safetensors or torch.save) strictly into `model`."""
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path} holds a {type(state).__name__}, expected a state dict")
    load_state_strictly(model, state, path)


def load_state_strictly(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """model.load_state_dict(state) with every key and shape checked first
    (`models.state_dict`); a mismatch raises ValueError naming `source` (the checkpoint) and
    the first differences, instead of torch's list of every tensor."""
    try:
        differences = state_dict_differences(model, state)
    except TypeError as error:  # values that are not tensors
        raise TypeError(f"{source}: {error}") from None
    if differences:
        details = "; ".join(
            f"{len(keys)} {what}, e.g. {', '.join(keys[:2])}"
            for what, keys in (
                ("missing", differences.missing),
                ("unexpected", differences.unexpected),
                ("with other shapes", differences.reshaped),
            )
            if keys
        )
        raise ValueError(
            f"{source}: the weights do not fit {type(model).__name__} as built ({details}). "
            "They come from another architecture: another model or options, or a version of "
            "instaseg whose defaults for this model differed."
        )
    model.load_state_dict(state, strict=True)


def mask_rcnn_r18_fpn(
    num_classes: int, *, weights: str | None = None, **overrides: Any
) -> MaskRCNN:
    """Mask R-CNN, ResNet-18-FPN, GroupNorm throughout, 4conv1fc box head."""
    return _build(18, num_classes, weights, overrides)


def mask_rcnn_r34_fpn(
    num_classes: int, *, weights: str | None = None, **overrides: Any
) -> MaskRCNN:
    """Mask R-CNN, ResNet-34-FPN, GroupNorm throughout, 4conv1fc box head."""
    return _build(34, num_classes, weights, overrides)


def mask_rcnn_r50_fpn(
    num_classes: int, *, weights: str | None = None, **overrides: Any
) -> MaskRCNN:
    """Mask R-CNN, ResNet-50-FPN, GroupNorm throughout, 4conv1fc box head."""
    return _build(50, num_classes, weights, overrides)


def mask_rcnn_r101_fpn(
    num_classes: int, *, weights: str | None = None, **overrides: Any
) -> MaskRCNN:
    """Mask R-CNN, ResNet-101-FPN, GroupNorm throughout, 4conv1fc box head."""
    return _build(101, num_classes, weights, overrides)


def mask_rcnn_r50_fpn_torchvision(
    num_classes: int,
    *,
    weights: str | None = None,
    frozen_bn_eps: float = 0.0,
    **overrides: Any,
) -> MaskRCNN:
    """torchvision's maskrcnn_resnet50_fpn architecture, for converted weights (labels l of
    a converted COCO model are torchvision's l + 1, i.e. COCO category id l + 1).

    frozen_bn_eps: torchvision evaluates its COCO checkpoint with eps 0 in the frozen BNs.
    """
    options = {
        "norm": "frozen_bn",
        "fpn_norm": None,
        "box_head": "2fc",
        "head_norm": None,
        "pooler_aligned": False,
    }
    model = _build(50, num_classes, None, {**options, **overrides})
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = frozen_bn_eps
    if weights is not None:
        load_weights(model, weights)
    return model


def yolact_r50(num_classes: int, *, weights: str | None = None, **overrides: Any) -> YOLACT:
    """YOLACT, ResNet-50-FPN (P3..P7), GroupNorm throughout, 550 x 550, Fast NMS."""
    return _build_yolact(50, num_classes, weights, overrides)


def yolact_r101(num_classes: int, *, weights: str | None = None, **overrides: Any) -> YOLACT:
    """YOLACT, ResNet-101-FPN (P3..P7): the paper's main model, with GroupNorm."""
    return _build_yolact(101, num_classes, weights, overrides)


YOLACT_PLUS_OPTIONS: dict[str, Any] = {
    "dcn_stages": YOLACT_LEVELS,
    "dcn_interval": 3,
    "anchor_scales": (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
    "mask_rescoring": True,
}


def yolact_plus_r50(num_classes: int, *, weights: str | None = None, **overrides: Any) -> YOLACT:
    """YOLACT++, ResNet-50-FPN: DCNv2 in every third block of C3..C5, 9 anchors per location
    (3 ratios x 3 scales), fast mask re-scoring."""
    return _build_yolact(50, num_classes, weights, {**YOLACT_PLUS_OPTIONS, **overrides})


# ~1.2 M parameters and ~3.6 GFLOPs at 640 x 640 with 80 classes (`model_info`): the light backbone
# at width 1.0 with one bottleneck per stage (depth 0.5), and narrow FPN and head (48 channels) and
# protonet (32), where most of the FLOPs are (P3). Every conv of the protonet runs at P3's
# resolution and a sub-pixel conv makes the stride-4 prototypes
# (protonet_upsampling="pixel_shuffle"; the paper's 3x3 conv at stride 4 was the costliest layer).
# One square anchor per location: with ATSS assignment one anchor per location does as well as
# several (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection"),
# and it makes the predictor convs, their outputs and the post-processing 3x smaller. Together
# these, and the FPN and head at 48 channels instead of 64, took ~40% off the network's time
# (interleaved A/B runs), for a loss of mask AP on the synthetic set within the noise of 12-minute
# runs (0.00-0.02; benchmarks/RESULTS.md). 1x1 predictor convs, as in YOLO heads, cost a ninth of
# YOLACT's 3x3 ones. BN everywhere, so that every norm folds into its conv at inference; the shared
# head keeps one BN per pyramid level (`yolact_heads.LevelNormConv`; GN there cost ~12 ms). ATSS
# assignment: the paper's IoU >= 0.5 rule gives an object one or two positive anchors, too little
# signal for a small model learning from scratch (benchmarks/RESULTS.md). Greedy NMS: on the CPU it
# takes about a third of Fast NMS's time at 80 classes x 200 candidates (Fast NMS's [C, k, k] IoU
# pays on a GPU), and it is slightly more accurate.
YOLACT_NANO_OPTIONS: dict[str, Any] = {
    "width": 1.0,
    "depth": 0.5,
    "norm": "bn",
    "fpn_norm": "bn",
    "fpn_channels": 48,
    "min_size": 640,
    "max_size": 640,
    "head_channels": 48,
    "head_kernel_size": 1,
    "head_norm": "bn",
    "protonet_channels": 32,
    "protonet_upsampling": "pixel_shuffle",
    "anchor_aspect_ratios": (1.0,),
    "assigner": "atss",
    "nms_method": "standard",
}


def yolact_nano(num_classes: int, *, weights: str | None = None, **overrides: Any) -> YOLACT:
    """YOLACT on the light CSP backbone (models.light_backbone), 640 x 640, for CPU latency:
    ~1.2 M parameters, ~3.6 GFLOPs at 640 with 80 classes, greedy NMS. Backbone options:
    width and depth (float multipliers of the light backbone), norm, fpn_norm, fpn_channels."""
    return _build_yolact_nano(num_classes, weights, {**YOLACT_NANO_OPTIONS, **overrides})


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mask_rcnn_r18_fpn": mask_rcnn_r18_fpn,
    "mask_rcnn_r34_fpn": mask_rcnn_r34_fpn,
    "mask_rcnn_r50_fpn": mask_rcnn_r50_fpn,
    "mask_rcnn_r101_fpn": mask_rcnn_r101_fpn,
    "mask_rcnn_r50_fpn_torchvision": mask_rcnn_r50_fpn_torchvision,
    "yolact_r50": yolact_r50,
    "yolact_r101": yolact_r101,
    "yolact_plus_r50": yolact_plus_r50,
    "yolact_nano": yolact_nano,
}


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """The model `MODELS[name]`; an unknown name raises ValueError with the closest names."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (known: {', '.join(MODELS)})")
    return MODELS[name](num_classes, **kwargs)


def model_info(model: nn.Module, image_size: int = 640) -> dict[str, float]:
    """{"params": parameter count, "gflops": FLOPs / 1e9 of one eval forward}.

    FLOPs as torch.utils.flop_counter.FlopCounterMode counts them: 2 per multiply-add of the
    convolutions, linear layers and matrix products (elementwise ops, norms, RoIAlign's
    gathers and NMS are not counted). The forward runs on one fixed random uint8 image of
    image_size x image_size; the share of the per-detection parts (Mask R-CNN's mask head,
    YOLACT's mask assembly and re-scoring) depends on how many detections pass the score
    threshold (few or none for an untrained model).
    """
    params = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(
        0, 256, (3, image_size, image_size), dtype=torch.uint8, generator=generator
    )
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model([image.to(device)])
    finally:
        model.train(was_training)
    return {"params": params, "gflops": counter.get_total_flops() / 1e9}
