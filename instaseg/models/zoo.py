"""Named Mask R-CNN builders, the `MODELS` table, `build_model` and `model_info`.

Every builder is `(num_classes, *, weights=None, **overrides) -> MaskRCNN`. The defaults are
the from-scratch recipe (He et al. 2019, "Rethinking ImageNet Pre-training"): GroupNorm in
the ResNet, the FPN and both heads, and the "4conv1fc" box head. Overrides are the keyword
arguments of `MaskRCNN`, plus these backbone options: norm, fpn_norm, width (stem width of
the ResNet), fpn_channels (the FPN's output width), frozen_stages, zero_init_residual.

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

from instaseg.models.backbones import resnet_fpn
from instaseg.models.mask_rcnn import MaskRCNN
from instaseg.models.norm import FrozenBatchNorm2d

BACKBONE_OPTIONS = (
    "norm",
    "fpn_norm",
    "width",
    "fpn_channels",
    "frozen_stages",
    "zero_init_residual",
)


def _build(
    depth: int, num_classes: int, weights: str | None, overrides: dict[str, Any]
) -> MaskRCNN:
    backbone_options = {"norm": "gn", "fpn_norm": "gn"}
    model_options = {}
    valid = BACKBONE_OPTIONS + tuple(_model_options())
    for key, value in overrides.items():
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown Mask R-CNN option {key!r}{hint}")
        if key in BACKBONE_OPTIONS:
            backbone_options["out_channels" if key == "fpn_channels" else key] = value
        else:
            model_options[key] = value
    backbone = resnet_fpn(depth, **backbone_options)
    model = MaskRCNN(backbone, num_classes, **model_options)
    if weights is not None:
        load_weights(model, weights)
    return model


def _model_options() -> list[str]:
    parameters = inspect.signature(MaskRCNN.__init__).parameters
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


MODELS: dict[str, Callable[..., MaskRCNN]] = {
    "mask_rcnn_r18_fpn": mask_rcnn_r18_fpn,
    "mask_rcnn_r34_fpn": mask_rcnn_r34_fpn,
    "mask_rcnn_r50_fpn": mask_rcnn_r50_fpn,
    "mask_rcnn_r101_fpn": mask_rcnn_r101_fpn,
    "mask_rcnn_r50_fpn_torchvision": mask_rcnn_r50_fpn_torchvision,
}


def build_model(name: str, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """The model `MODELS[name]`; an unknown name raises ValueError with the closest names."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (known: {', '.join(MODELS)})")
    return MODELS[name](num_classes, **kwargs)


def model_info(model: MaskRCNN, image_size: int = 640) -> dict[str, float]:
    """{"params": parameter count, "gflops": FLOPs / 1e9 of one eval forward}.

    FLOPs as torch.utils.flop_counter.FlopCounterMode counts them: 2 per multiply-add of the
    convolutions, linear layers and matrix products (elementwise ops, norms, RoIAlign's
    gathers and NMS are not counted). The forward runs on one fixed random uint8 image of
    image_size x image_size; the mask head's share depends on how many detections pass the
    score threshold (none for an untrained model).
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
