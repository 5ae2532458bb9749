"""Models. Backbones take float images normalised by the detector, [B, 3, H, W], and return
an OrderedDict of feature maps keyed by level ("c2".."c5" for a ResNet, "p2".."p6" with FPN).
Detectors take lists of uint8 images [3, H, W] and return losses (train) or `Instances` in
each image's original frame (eval); `MODELS` names the builders."""

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
from instaseg.models.convert import convert_checkpoint, convert_torchvision_maskrcnn
from instaseg.models.deform_conv import ModulatedDeformConv2d
from instaseg.models.fpn import FPN
from instaseg.models.light_backbone import nano_backbone
from instaseg.models.mask_rcnn import MaskRCNN
from instaseg.models.norm import FrozenBatchNorm2d, make_norm
from instaseg.models.optimize import optimize_for_inference
from instaseg.models.yolact import YOLACT
from instaseg.models.zoo import (
    MODELS,
    build_model,
    mask_rcnn_r18_fpn,
    mask_rcnn_r34_fpn,
    mask_rcnn_r50_fpn,
    mask_rcnn_r50_fpn_torchvision,
    mask_rcnn_r101_fpn,
    model_info,
    yolact_nano,
    yolact_plus_r50,
    yolact_r50,
    yolact_r101,
)

__all__ = [
    "FPN",
    "MODELS",
    "BackboneWithFPN",
    "FrozenBatchNorm2d",
    "MaskRCNN",
    "ModulatedDeformConv2d",
    "YOLACT",
    "ResNet",
    "build_model",
    "convert_checkpoint",
    "convert_torchvision_maskrcnn",
    "load_resnet_weights",
    "make_norm",
    "mask_rcnn_r18_fpn",
    "mask_rcnn_r34_fpn",
    "mask_rcnn_r50_fpn",
    "mask_rcnn_r50_fpn_torchvision",
    "mask_rcnn_r101_fpn",
    "model_info",
    "nano_backbone",
    "optimize_for_inference",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet_fpn",
    "yolact_nano",
    "yolact_plus_r50",
    "yolact_r50",
    "yolact_r101",
]
