"""Mask R-CNN (He et al. 2017): Faster R-CNN (Ren et al. 2015) on a feature pyramid
(Lin et al. 2017) with a parallel mask branch.

    images -> resize, normalise, pad  (models.image_batch)
           -> backbone + FPN          P2..P6 feature maps
           -> RPN                     ~1000 class-agnostic proposals per image (models.rpn)
           -> RoIAlign 7x7 -> box head -> class scores and class-specific box refinements
           -> RoIAlign 14x14 -> mask head -> a 28x28 mask per detection (models.roi_heads)
           -> back to each image's original frame: boxes scaled and clipped, masks pasted

Training loss (Eq. 1 of the paper): L = L_cls + L_box + L_mask for the RoI heads, plus the
RPN's objectness and box losses; the mask loss is a per-pixel sigmoid BCE on the ground-truth
class's mask only, so classes do not compete for a pixel.

Labels are 0-based without a background slot; internally the classifier's last logit is
background (see models.roi_heads).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from instaseg.models.image_batch import (
    ImageBatch,
    batch_images,
    boxes_to_original,
    check_images,
    check_targets,
    train_targets,
)
from instaseg.models.roi_heads import RoIHeads
from instaseg.models.rpn import RegionProposalNetwork
from instaseg.ops import paste_masks_in_image
from instaseg.structures import Instances

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 units
IMAGENET_STD = (58.395, 57.12, 57.375)


class MaskRCNN(nn.Module):
    """Mask R-CNN over a backbone that maps normalised images [B, 3, H, W] to an OrderedDict
    of FPN levels (e.g. `resnet_fpn`), with attributes `out_channels` and `strides`.

    num_classes: real classes; labels are 0 .. num_classes - 1.
    Images: min_size / max_size resize each image's short side to min_size with its long side
        at most max_size (None: keep the input size); size_divisibility pads to a multiple;
        pixel_mean / pixel_std (RGB, 0..255 units) normalise, stored as buffers.
    RPN: one anchor size per pyramid level (anchor_sizes) with anchor_aspect_ratios (h / w);
        rpn_pre_nms_topk_* per level and rpn_post_nms_topk_* per image, for training and
        testing; matching thresholds, sampled anchors per image and their positive fraction,
        smooth-L1 beta of the box loss (0 is L1).
    RoI heads: box_head "4conv1fc" (four convs with head_norm, one fc; the better choice from
        scratch) or "2fc" (two fcs, torchvision's); head_norm "gn", "bn", "frozen_bn" or None
        for the box head's convs and the mask head's convs; widths; pooled_levels (the pyramid
        levels RoIs are pooled from) with pooler_sampling_ratio and pooler_aligned (RoIAlign's
        half-pixel correction; torchvision's models use False); sampling and matching as for
        the RPN; box_coder_weights and box_beta for the box loss.
    Inference: score_threshold, per-class nms_threshold, detections_per_image, mask_threshold
        on the pasted mask probabilities.
    Crowd regions: crowd_ioa_threshold (models.matching).
    Loss weights: multiply each loss before it is returned.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        min_size: int | None = 800,
        max_size: int = 1333,
        size_divisibility: int = 32,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
        anchor_aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_pre_nms_topk_train: int = 2000,
        rpn_pre_nms_topk_test: int = 1000,
        rpn_post_nms_topk_train: int = 2000,
        rpn_post_nms_topk_test: int = 1000,
        rpn_nms_threshold: float = 0.7,
        rpn_fg_iou_threshold: float = 0.7,
        rpn_bg_iou_threshold: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_box_beta: float = 1.0 / 9,
        box_head: str = "4conv1fc",
        head_norm: str | None = "gn",
        box_conv_dim: int = 256,
        box_fc_dim: int = 1024,
        mask_conv_dim: int = 256,
        pooled_levels: Sequence[str] = ("p2", "p3", "p4", "p5"),
        pooler_sampling_ratio: int = 2,
        pooler_aligned: bool = True,
        box_fg_iou_threshold: float = 0.5,
        box_bg_iou_threshold: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        box_beta: float = 1.0 / 9,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
        mask_threshold: float = 0.5,
        crowd_ioa_threshold: float = 0.5,
        loss_rpn_objectness_weight: float = 1.0,
        loss_rpn_box_weight: float = 1.0,
        loss_classifier_weight: float = 1.0,
        loss_box_weight: float = 1.0,
        loss_mask_weight: float = 1.0,
    ) -> None:
        super().__init__()
        names, strides = _check_backbone(backbone, pooled_levels)
        _check_positive(
            num_classes=num_classes, max_size=max_size, size_divisibility=size_divisibility
        )
        if min_size is not None:
            _check_positive(min_size=min_size)
        self.backbone = backbone
        self.num_classes = num_classes
        self.min_size, self.max_size = min_size, max_size
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", _rgb(pixel_mean, "pixel_mean"))
        self.register_buffer("pixel_std", _rgb(pixel_std, "pixel_std"))
        if (self.pixel_std <= 0).any():
            raise ValueError(f"pixel_std must be positive, got {tuple(pixel_std)}")
        self.rpn = RegionProposalNetwork(
            backbone.out_channels,
            strides,
            anchor_sizes=anchor_sizes,
            aspect_ratios=anchor_aspect_ratios,
            pre_nms_topk=(rpn_pre_nms_topk_train, rpn_pre_nms_topk_test),
            post_nms_topk=(rpn_post_nms_topk_train, rpn_post_nms_topk_test),
            nms_threshold=rpn_nms_threshold,
            fg_iou_threshold=rpn_fg_iou_threshold,
            bg_iou_threshold=rpn_bg_iou_threshold,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction,
            box_beta=rpn_box_beta,
            crowd_ioa_threshold=crowd_ioa_threshold,
        )
        self.pooled_levels = [names.index(level) for level in pooled_levels]
        self.roi_heads = RoIHeads(
            backbone.out_channels,
            [strides[i] for i in self.pooled_levels],
            num_classes,
            box_head=box_head,
            head_norm=head_norm,
            box_conv_dim=box_conv_dim,
            box_fc_dim=box_fc_dim,
            mask_conv_dim=mask_conv_dim,
            sampling_ratio=pooler_sampling_ratio,
            aligned=pooler_aligned,
            fg_iou_threshold=box_fg_iou_threshold,
            bg_iou_threshold=box_bg_iou_threshold,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction,
            box_coder_weights=box_coder_weights,
            box_beta=box_beta,
            crowd_ioa_threshold=crowd_ioa_threshold,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            detections_per_image=detections_per_image,
        )
        self.mask_threshold = mask_threshold
        self.loss_weights = {
            "loss_rpn_objectness": loss_rpn_objectness_weight,
            "loss_rpn_box": loss_rpn_box_weight,
            "loss_classifier": loss_classifier_weight,
            "loss_box": loss_box_weight,
            "loss_mask": loss_mask_weight,
        }

    @property
    def score_threshold(self) -> float:
        """Detections scoring at most this are dropped (the box head's threshold)."""
        return self.roi_heads.score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.roi_heads.score_threshold = value

    def forward(
        self, images: list[Tensor], targets: list[Instances] | None = None
    ) -> dict[str, Tensor] | list[Instances]:
        """images: uint8 [3, H_i, W_i] RGB, sizes may differ. In train(): targets (boxes,
        labels, masks; optional iscrowd) in each image's frame -> weighted scalar losses
        "loss_*". In eval(): one Instances per image, in its original frame, with scores and
        bool masks."""
        if not self.training:
            return self.predict(images)
        if targets is None:
            raise ValueError("training needs targets; call model.eval() to get predictions")
        return self.compute_losses(images, targets)

    def compute_losses(self, images: list[Tensor], targets: list[Instances]) -> dict[str, Tensor]:
        """The weighted losses of one batch (see `forward`)."""
        check_images(images)
        check_targets(targets, images, self.num_classes, "Mask R-CNN")
        batch = self._batch(images)
        features = self._features(batch)
        gt = train_targets(targets, batch)
        proposals, rpn_losses = self.rpn(features, batch, gt)
        roi_losses = self.roi_heads.losses(features, batch, proposals, gt)
        losses = {
            "loss_rpn_objectness": rpn_losses["rpn_objectness"],
            "loss_rpn_box": rpn_losses["rpn_box"],
            "loss_classifier": roi_losses["classifier"],
            "loss_box": roi_losses["box"],
            "loss_mask": roi_losses["mask"],
        }
        return {name: loss * self.loss_weights[name] for name, loss in losses.items()}

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[Instances]:
        """Detections of each uint8 image [3, H_i, W_i]: boxes (clipped), scores, labels and
        bool masks [D, H_i, W_i], all in the image's original frame, best first."""
        batch = self.preprocess(images)
        return self.postprocess(self.infer(batch), batch)

    # Inference in three stages, so that `instaseg bench` can time each one:
    # preprocess (resize, normalise, pad) -> infer (the network, including the RPN's and
    # the box head's NMS) -> postprocess (boxes to the original frame, masks pasted).

    def preprocess(self, images: list[Tensor]) -> ImageBatch:
        """uint8 images [3, H_i, W_i] -> a normalised, resized, padded ImageBatch."""
        check_images(images)
        return self._batch(images)

    @torch.no_grad()
    def infer(self, batch: ImageBatch) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per image: boxes [D, 4] (model frame), scores [D], labels [D] and mask
        probabilities [D, 28, 28], best first."""
        features = self._features(batch)
        proposals, _ = self.rpn(features, batch)
        return self.roi_heads.predict(features, batch, proposals)

    def postprocess(
        self, detections: list[tuple[Tensor, Tensor, Tensor, Tensor]], batch: ImageBatch
    ) -> list[Instances]:
        """`infer`'s detections -> Instances in each image's original frame."""
        results = []
        for index, (boxes, scores, labels, mask_probs) in enumerate(detections):
            original_boxes = boxes_to_original(boxes, batch, index)
            size = batch.original_sizes[index]
            masks = paste_masks_in_image(mask_probs, original_boxes, size, self.mask_threshold)
            results.append(
                Instances(
                    image_size=size, boxes=original_boxes, labels=labels, scores=scores, masks=masks
                )
            )
        return results

    def _batch(self, images: list[Tensor]) -> ImageBatch:
        return batch_images(
            images,
            self.pixel_mean,
            self.pixel_std,
            self.min_size,
            self.max_size,
            self.size_divisibility,
        )

    def _features(self, batch: ImageBatch) -> list[list[Tensor]]:
        """Per size group, the backbone's levels fine to coarse, [B_g, C, H_l, W_l]."""
        return [list(self.backbone(tensor).values()) for tensor in batch.tensors]


def _rgb(values: Sequence[float], name: str) -> Tensor:
    if len(values) != 3:
        raise ValueError(f"{name} must hold 3 values (R, G, B in 0..255 units), got {values}")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_backbone(
    backbone: nn.Module, pooled_levels: Sequence[str]
) -> tuple[list[str], list[int]]:
    """The backbone's level names and strides; pooled_levels must be among the names."""
    for attribute in ("out_channels", "strides"):
        if not hasattr(backbone, attribute):
            raise TypeError(
                f"backbone must have an `{attribute}` attribute (an FPN backbone such as "
                f"resnet_fpn), got {type(backbone).__name__}"
            )
    strides = list(backbone.strides)
    names = list(getattr(backbone, "names", [f"p{s.bit_length() - 1}" for s in strides]))
    unknown = [level for level in pooled_levels if level not in names]
    if unknown or not pooled_levels:
        raise ValueError(
            f"pooled_levels must be among the backbone's levels {names}, got {list(pooled_levels)}"
        )
    return names, strides
