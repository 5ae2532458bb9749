"""Models. Backbones take float images normalised by the detector, [B, 3, H, W], and return
an OrderedDict of feature maps keyed by level ("c2".."c5" for a ResNet, "p2".."p6" with FPN)."""

from instaseg.models.backbones import (
    BackboneWithFPN,
    ResNet,
    load_resnet_weights,
    resnet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet_fpn,
)
from instaseg.models.fpn import FPN
from instaseg.models.norm import FrozenBatchNorm2d, make_norm

__all__ = [
    "FPN",
    "BackboneWithFPN",
    "FrozenBatchNorm2d",
    "ResNet",
    "load_resnet_weights",
    "make_norm",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet_fpn",
]
