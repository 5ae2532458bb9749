"""YOLACT (Bolya et al., ICCV 2019) and YOLACT++ (Bolya et al., TPAMI 2020): real-time
instance segmentation as a per-detection linear combination of shared prototype masks.

    images -> resize, normalise, pad      (models.image_batch)
           -> backbone + FPN              P3..P7, strides 8..128
           -> prediction head (shared)    per anchor: C + 1 class logits (background last),
                                          4 box deltas, k mask coefficients c (tanh)
           -> protonet on P3              k prototypes P at stride 4 (ReLU)
           -> Fast NMS                    (ops.fast_nms; or greedy NMS) on the decoded boxes
           -> masks                       sigmoid(P c^T) per detection, cropped by its box,
                                          pasted into the original frame at threshold 0.5
           [YOLACT++ mask re-scoring]     score = class score x predicted mask IoU

Training (Sec. 3 of the 2019 paper). Anchors with IoU >= 0.5 with an object are positive,
< 0.4 negative, in between ignored; each object also gets its best anchor; crowd regions as
in `models.matching`. Losses: softmax cross entropy over the positives and the hardest
negatives (OHEM, 3 per positive); smooth L1 on the positives' box deltas (weights 10, 10,
5, 5 as the paper's variances 0.1, 0.2); for each positive, the BCE of sigmoid(P c^T) against
its object's mask, cropped by the ground-truth box and divided by the box's area; the
auxiliary semantic segmentation BCE of a 1x1 conv on P3 (training only); for YOLACT++ the
squared error of the predicted mask IoU. The first three are divided by the number of
positives in the batch, as in the paper's code.

Where this implementation departs from the papers, and why:
- Images keep their aspect ratio (resize, then pad; `models.image_batch`), like every other
  instaseg model; the papers warp each image to a 550 x 550 square. Anchor sizes scale with
  max_size: 3 strides per level at 550 (24, 48, ..., 384), as in the paper.
- Mask targets at prototype resolution are area averages of the ground truth (soft values),
  not thresholded at 0.5: they keep where a boundary crosses a cell.
- The crop is a soft weight (the fraction of each prototype cell inside the box, see
  `box_crop_weights`), so a box smaller than a cell still trains its mask.
- An image without objects still contributes `ohem_ratio` hard negatives (the paper's rule
  picks ohem_ratio x positives, i.e. none, so such images would never teach silence).
- At most `masks_per_image` positives per image train the mask (the paper's code uses 100),
  and the mask loss is their mean.
- Inference samples each mask's probabilities bilinearly at the original pixels whose
  centres lie inside its box (the crop rule of Mask R-CNN's paste), assembling sigmoid(P c^T)
  only over the prototype cells those pixels read; the paper crops at prototype resolution
  and then upsamples whole images, whose cost grows with detections x image area.
- GroupNorm in the prediction head and protonet by default, for training from scratch
  (head_norm=None is the paper's), and the class branch starts at foreground probability
  0.01 (`PredictionHead`). Anchors are centred on their cells, as in the paper's code.
- The mask-IoU head learns from detached masks, so it cannot change them; its loss is the
  paper's L2 (mean squared error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.image_batch import (
    ImageBatch,
    TrainTargets,
    batch_images,
    boxes_to_original,
    check_images,
    check_targets,
    train_targets,
)
from instaseg.models.matching import NEGATIVE, POSITIVE, atss_match, match_candidates
from instaseg.models.yolact_heads import (
    MaskIoUHead,
    PredictionHead,
    Protonet,
    box_crop_weights,
    check_head_norm,
    check_protonet_upsampling,
    paste_prototype_masks,
    prototype_targets,
    semantic_head,
    semantic_loss,
)
from instaseg.ops.anchors import AnchorGenerator
from instaseg.ops.box_coder import decode_boxes, encode_boxes
from instaseg.ops.boxes import clip_boxes
from instaseg.ops.fast_nms import NMS_METHODS
from instaseg.structures import Instances

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 units
IMAGENET_STD = (58.395, 57.12, 57.375)
PAPER_SIZE = 550  # the input size of the paper's anchor sizes
ASSIGNERS = ("iou", "atss")


@dataclass
class YolactOutput:
    """The network's output for one image (`YOLACT.infer`), in the model frame.

    class_logits [N, C + 1] (background last), box_deltas [N, 4], coefficients [N, k] and
    anchors [N, 4] (xyxy) for the N anchors of all levels, anchors_per_level how many of them
    each level has (fine to coarse); prototypes [H_p, W_p, k] (channels last, so a mask is
    `prototypes @ c`); semantic_logits [C, H_3, W_3] in training, else None.
    """

    class_logits: Tensor
    box_deltas: Tensor
    coefficients: Tensor
    anchors: Tensor
    prototypes: Tensor
    semantic_logits: Tensor | None = None
    anchors_per_level: tuple[int, ...] = ()


@dataclass
class _ImageLosses:
    """One image's loss terms: sums over its anchors (classifier, box), one value per trained
    mask [P] (mask), the semantic loss (None without that branch), and the mask-IoU head's
    predictions and targets ([P'] each)."""

    num_positives: int
    classifier: Tensor
    box: Tensor
    mask: Tensor
    semantic: Tensor | None
    mask_iou: tuple[Tensor, Tensor]


class YOLACT(nn.Module):
    """YOLACT / YOLACT++ over a backbone that maps normalised images [B, 3, H, W] to an
    OrderedDict of pyramid levels P3..P7 (e.g. `resnet_fpn(..., extra_levels="p6p7")`), with
    attributes `out_channels` (int) and `strides` (fine to coarse; the protonet reads the
    finest level, the prototypes have half its stride).

    num_classes: real classes; labels are 0 .. num_classes - 1.
    Images: min_size / max_size as in `MaskRCNN` (550 / 550: the long side becomes 550);
        size_divisibility pads to a multiple; pixel_mean / pixel_std (RGB, 0..255 units).
    Anchors: anchor_sizes, one base size per level (None: 3 strides x max_size / 550), times
        each of anchor_scales, at each of anchor_aspect_ratios (h / w). YOLACT uses scales
        (1,) and ratios (1, 1/2, 2); YOLACT++ scales (1, 2^(1/3), 2^(2/3)).
    Head: head_channels wide, head_convs shared 3x3 convs before the three branches, whose
        convs have head_kernel_size 3 (the paper) or 1 (cheaper); head_norm "gn", "bn",
        "frozen_bn" or None for the head and the protonet.
    Masks: num_prototypes k, protonet_channels, separable_refine and protonet_upsampling
        ("bilinear" or "pixel_shuffle"; `Protonet`); semantic_loss
        adds the auxiliary semantic segmentation branch (training only); mask_rescoring adds
        YOLACT++'s mask-IoU head, trained on objects of at least mask_iou_min_area prototype
        cells.
    Training: assigner "iou" (the paper: fg_iou_threshold / bg_iou_threshold) or "atss"
        (`models.matching.atss_match` with atss_top_k anchors per level), ohem_ratio negatives per
        positive, masks_per_image, box_coder_weights and box_beta (smooth L1) for the boxes,
        crowd_ioa_threshold (models.matching).
    Inference: score_threshold; the anchors_before_nms anchors with the highest class scores
        (RetinaNet's pre-NMS cut; it bounds the work when many anchors pass the threshold);
        nms_method "fast" (Fast NMS) or "standard" (greedy), per-class nms_threshold and
        top_k candidates, detections_per_image, mask_threshold on the pasted probabilities.
    Loss weights multiply each loss (defaults: the paper's 1, 1.5, 6.125, 1).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        min_size: int | None = PAPER_SIZE,
        max_size: int = PAPER_SIZE,
        size_divisibility: int = 32,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        anchor_sizes: Sequence[float] | None = None,
        anchor_scales: Sequence[float] = (1.0,),
        anchor_aspect_ratios: Sequence[float] = (1.0, 0.5, 2.0),
        head_channels: int = 256,
        head_convs: int = 1,
        head_kernel_size: int = 3,
        head_norm: str | None = "gn",
        num_prototypes: int = 32,
        protonet_channels: int = 256,
        separable_refine: bool = False,
        protonet_upsampling: str = "bilinear",
        semantic_loss: bool = True,
        mask_rescoring: bool = False,
        mask_iou_min_area: float = 25.0,
        assigner: str = "iou",
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.4,
        atss_top_k: int = 9,
        ohem_ratio: float = 3.0,
        masks_per_image: int = 100,
        box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        box_beta: float = 1.0,
        crowd_ioa_threshold: float = 0.5,
        score_threshold: float = 0.05,
        nms_method: str = "fast",
        nms_threshold: float = 0.5,
        anchors_before_nms: int = 1000,
        top_k: int = 200,
        detections_per_image: int = 100,
        mask_threshold: float = 0.5,
        loss_classifier_weight: float = 1.0,
        loss_box_weight: float = 1.5,
        loss_mask_weight: float = 6.125,
        loss_semantic_weight: float = 1.0,
        loss_mask_iou_weight: float = 1.0,
    ) -> None:
        super().__init__()
        strides = _check_backbone(backbone)
        _check_options(
            num_classes=num_classes,
            min_size=min_size,
            max_size=max_size,
            size_divisibility=size_divisibility,
            head_channels=head_channels,
            head_convs=head_convs,
            head_kernel_size=head_kernel_size,
            head_norm=head_norm,
            num_prototypes=num_prototypes,
            protonet_channels=protonet_channels,
            protonet_upsampling=protonet_upsampling,
            assigner=assigner,
            fg_iou_threshold=fg_iou_threshold,
            bg_iou_threshold=bg_iou_threshold,
            atss_top_k=atss_top_k,
            ohem_ratio=ohem_ratio,
            masks_per_image=masks_per_image,
            nms_method=nms_method,
            top_k=top_k,
            anchors_before_nms=anchors_before_nms,
            detections_per_image=detections_per_image,
        )
        if anchor_sizes is None:
            anchor_sizes = [3 * stride * max_size / PAPER_SIZE for stride in strides]
        if len(anchor_sizes) != len(strides):
            raise ValueError(
                f"anchor_sizes needs one size per pyramid level ({len(strides)} levels with "
                f"strides {tuple(strides)}), got {tuple(anchor_sizes)}"
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.min_size, self.max_size = min_size, max_size
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", _rgb(pixel_mean, "pixel_mean"))
        self.register_buffer("pixel_std", _rgb(pixel_std, "pixel_std"))
        if (self.pixel_std <= 0).any():
            raise ValueError(f"pixel_std must be positive, got {tuple(pixel_std)}")
        self.strides = strides
        self.prototype_stride = strides[0] / 2
        self.anchor_generator = AnchorGenerator(
            [tuple(float(size) * float(scale) for scale in anchor_scales) for size in anchor_sizes],
            [tuple(anchor_aspect_ratios)] * len(strides),
        )
        num_anchors = len(anchor_scales) * len(anchor_aspect_ratios)
        channels = backbone.out_channels
        self.head = PredictionHead(
            channels,
            num_anchors,
            num_classes,
            num_prototypes,
            channels=head_channels,
            num_convs=head_convs,
            kernel_size=head_kernel_size,
            norm=head_norm,
            num_levels=len(strides),
        )
        self.protonet = Protonet(
            channels,
            num_prototypes,
            channels=protonet_channels,
            norm=head_norm,
            separable_refine=separable_refine,
            upsampling=protonet_upsampling,
        )
        self.semantic_head = semantic_head(channels, num_classes) if semantic_loss else None
        self.mask_iou_head = MaskIoUHead(num_classes) if mask_rescoring else None
        self.mask_iou_min_area = mask_iou_min_area
        self.assigner = assigner
        self.fg_iou_threshold, self.bg_iou_threshold = fg_iou_threshold, bg_iou_threshold
        self.atss_top_k = atss_top_k
        self.ohem_ratio = ohem_ratio
        self.masks_per_image = masks_per_image
        self.box_coder_weights = box_coder_weights
        self.box_beta = box_beta
        self.crowd_ioa_threshold = crowd_ioa_threshold
        self.score_threshold = score_threshold
        self.nms_method = nms_method
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.anchors_before_nms = anchors_before_nms
        self.detections_per_image = detections_per_image
        self.mask_threshold = mask_threshold
        self.loss_weights = {
            "loss_classifier": loss_classifier_weight,
            "loss_box": loss_box_weight,
            "loss_mask": loss_mask_weight,
            "loss_semantic": loss_semantic_weight,
            "loss_mask_iou": loss_mask_iou_weight,
        }

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

    # ------------------------------------------------------------------ training

    def compute_losses(self, images: list[Tensor], targets: list[Instances]) -> dict[str, Tensor]:
        """The weighted losses of one batch (see `forward`): loss_classifier, loss_box,
        loss_mask, plus loss_semantic and loss_mask_iou when those branches exist."""
        check_images(images)
        check_targets(targets, images, self.num_classes, "YOLACT")
        batch = self._batch(images)
        outputs = self._network(batch, with_semantic=self.semantic_head is not None)
        gt = train_targets(targets, batch)
        terms = [
            self._image_losses(output, target, batch, index)
            for index, (output, target) in enumerate(zip(outputs, gt, strict=True))
        ]
        num_positives = max(sum(term.num_positives for term in terms), 1)
        losses = {
            "loss_classifier": sum(term.classifier for term in terms) / num_positives,
            "loss_box": sum(term.box for term in terms) / num_positives,
            "loss_mask": _mean_or_zero(
                torch.cat([term.mask for term in terms]),
                [tensor for o in outputs for tensor in (o.coefficients, o.prototypes)],
            ),
        }
        if self.semantic_head is not None:
            losses["loss_semantic"] = torch.stack([term.semantic for term in terms]).mean()
        if self.mask_iou_head is not None:
            predicted = torch.cat([term.mask_iou[0] for term in terms])
            wanted = torch.cat([term.mask_iou[1] for term in terms])
            losses["loss_mask_iou"] = _mean_or_zero(
                (predicted - wanted) ** 2, list(self.mask_iou_head.parameters())
            )
        return {name: loss * self.loss_weights[name] for name, loss in losses.items()}

    def _image_losses(
        self, output: YolactOutput, target: TrainTargets, batch: ImageBatch, index: int
    ) -> _ImageLosses:
        """One image's unnormalised loss terms."""
        labels, matched = self._match(output, target)
        mask_targets = prototype_targets(
            target.masks,
            batch.image_sizes[index],
            tuple(output.prototypes.shape[:2]),
            round(self.prototype_stride),
        )
        mask, mask_iou = self._mask_losses(output, labels, matched, target, mask_targets)
        semantic = None
        if output.semantic_logits is not None:
            semantic = semantic_loss(output.semantic_logits, mask_targets, target.labels)
        return _ImageLosses(
            num_positives=int((labels == POSITIVE).sum()),
            classifier=self._classifier_loss(output.class_logits, labels, matched, target),
            box=self._box_loss(output, labels, matched, target),
            mask=mask,
            semantic=semantic,
            mask_iou=mask_iou,
        )

    def _match(self, output: YolactOutput, target: TrainTargets) -> tuple[Tensor, Tensor]:
        """Anchor labels int64 [N] (1 positive, 0 negative, -1 ignored) and matched gt [N]."""
        if self.assigner == "atss":
            return atss_match(
                output.anchors,
                output.anchors_per_level,
                target.boxes,
                target.iscrowd,
                top_k=self.atss_top_k,
                crowd_ioa_threshold=self.crowd_ioa_threshold,
            )
        return match_candidates(
            output.anchors,
            target.boxes,
            target.iscrowd,
            self.fg_iou_threshold,
            self.bg_iou_threshold,
            allow_low_quality=True,
            crowd_ioa_threshold=self.crowd_ioa_threshold,
        )

    def _classifier_loss(
        self, logits: Tensor, labels: Tensor, matched: Tensor, target: TrainTargets
    ) -> Tensor:
        """Summed softmax cross entropy of the positives and the hardest negatives: those with
        the highest background loss, ohem_ratio per positive (at least ohem_ratio)."""
        logits = logits.float()
        positives = torch.nonzero(labels == POSITIVE).flatten()
        classes = torch.full_like(labels, self.num_classes)  # background
        classes[positives] = target.labels[matched[positives]]
        with torch.no_grad():
            background_loss = torch.logsumexp(logits, dim=1) - logits[:, self.num_classes]
            background_loss[labels != NEGATIVE] = -math.inf
        num_negatives = int(self.ohem_ratio * max(positives.numel(), 1))
        num_negatives = min(num_negatives, int((labels == NEGATIVE).sum()))
        hardest = background_loss.topk(num_negatives).indices
        chosen = torch.cat([positives, hardest])
        return F.cross_entropy(logits[chosen], classes[chosen], reduction="sum")

    def _box_loss(
        self, output: YolactOutput, labels: Tensor, matched: Tensor, target: TrainTargets
    ) -> Tensor:
        """Summed smooth L1 of the positives' deltas (zero, still in the graph, without any)."""
        positives = torch.nonzero(labels == POSITIVE).flatten()
        wanted = encode_boxes(
            target.boxes[matched[positives]], output.anchors[positives], self.box_coder_weights
        )
        return F.smooth_l1_loss(
            output.box_deltas[positives].float(), wanted, beta=self.box_beta, reduction="sum"
        )

    def _mask_losses(
        self,
        output: YolactOutput,
        labels: Tensor,
        matched: Tensor,
        target: TrainTargets,
        mask_targets: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Per trained positive, its box-normalised mask BCE [P]; and the mask-IoU head's
        predictions and targets [P'] (empty without that head)."""
        positives = torch.nonzero(labels == POSITIVE).flatten()
        if positives.numel() > self.masks_per_image:
            chosen = torch.randperm(positives.numel(), device=positives.device)
            positives = positives[chosen[: self.masks_per_image]]
        objects = matched[positives]
        prototypes = output.prototypes.float()
        height, width = prototypes.shape[:2]
        logits = (prototypes @ output.coefficients[positives].float().T).permute(2, 0, 1)
        crop = box_crop_weights(target.boxes[objects], (height, width), self.prototype_stride)
        bce = F.binary_cross_entropy_with_logits(logits, mask_targets[objects], reduction="none")
        per_mask = (bce * crop).sum(dim=(1, 2)) / crop.sum(dim=(1, 2)).clamp(min=1e-6)
        empty = logits.new_zeros((0,))
        if self.mask_iou_head is None:
            return per_mask, (empty, empty)
        return per_mask, self._mask_iou_pairs(logits, crop, mask_targets[objects], objects, target)

    def _mask_iou_pairs(
        self, logits: Tensor, crop: Tensor, wanted: Tensor, objects: Tensor, target: TrainTargets
    ) -> tuple[Tensor, Tensor]:
        """The mask-IoU head's prediction for each trained mask of a large enough object, and
        the IoU of that (binarised, cropped) mask with the object's mask at prototype
        resolution."""
        with torch.no_grad():
            cropped = logits.sigmoid() * crop  # [P, H_p, W_p]
            truth = wanted >= 0.5
            large = truth.sum(dim=(1, 2)) >= self.mask_iou_min_area
            predicted = cropped[large] >= 0.5
            intersection = (predicted & truth[large]).sum(dim=(1, 2))
            union = (predicted | truth[large]).sum(dim=(1, 2)).clamp(min=1)
            iou = intersection / union
        scores = self.mask_iou_head(cropped[large][:, None])  # [P', C]
        classes = target.labels[objects[large]]
        return scores.gather(1, classes[:, None])[:, 0], iou

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[Instances]:
        """Detections of each uint8 image [3, H_i, W_i]: boxes (clipped), scores, labels and
        bool masks [D, H_i, W_i], all in the image's original frame, best first."""
        batch = self.preprocess(images)
        return self.postprocess(self.infer(batch), batch)

    # Inference in three stages, so that `instaseg bench` can time each one:
    # preprocess (resize, normalise, pad) -> infer (the network: backbone, FPN, head,
    # protonet) -> postprocess (decode, NMS, masks assembled, re-scored, pasted).

    def preprocess(self, images: list[Tensor]) -> ImageBatch:
        """uint8 images [3, H_i, W_i] -> a normalised, resized, padded ImageBatch."""
        check_images(images)
        return self._batch(images)

    @torch.no_grad()
    def infer(self, batch: ImageBatch) -> list[YolactOutput]:
        """The network's raw output for each image (`YolactOutput`)."""
        return self._network(batch, with_semantic=False)

    @torch.no_grad()
    def postprocess(self, outputs: list[YolactOutput], batch: ImageBatch) -> list[Instances]:
        """`infer`'s outputs -> Instances in each image's original frame."""
        return [self._detections(output, batch, index) for index, output in enumerate(outputs)]

    def _detections(self, output: YolactOutput, batch: ImageBatch, index: int) -> Instances:
        scores = F.softmax(output.class_logits.float(), dim=1)[:, : self.num_classes]
        boxes = decode_boxes(output.box_deltas.float(), output.anchors, self.box_coder_weights)
        boxes = clip_boxes(boxes, batch.image_sizes[index])
        coefficients = output.coefficients
        # anchors with no class score above the threshold cannot survive NMS: drop them first,
        # and keep at most anchors_before_nms of the rest, those with the highest scores
        best = scores.amax(dim=1)
        candidates = torch.nonzero(best > self.score_threshold).flatten()
        if len(candidates) > self.anchors_before_nms:
            top = best[candidates].topk(self.anchors_before_nms, sorted=False).indices
            candidates = candidates[top.sort().values]
        if len(candidates) < len(scores):
            boxes, scores = boxes[candidates], scores[candidates]
            coefficients = coefficients[candidates]
        chosen, labels, scores = NMS_METHODS[self.nms_method](
            boxes,
            scores,
            self.nms_threshold,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            max_detections=self.detections_per_image,
        )
        boxes, coefficients = boxes[chosen], coefficients[chosen].float()
        prototypes = output.prototypes.float()
        if self.mask_iou_head is not None and len(boxes) > 0:
            scores = scores * self.rescore(prototypes, coefficients, boxes, labels)
            order = torch.sort(scores, descending=True, stable=True).indices
            boxes, scores, labels = boxes[order], scores[order], labels[order]
            coefficients = coefficients[order]
        size = batch.original_sizes[index]
        masks = paste_prototype_masks(
            prototypes,
            coefficients,
            boxes,
            batch.to_original(index),
            size,
            self.prototype_stride,
            self.mask_threshold,
        )
        return Instances(
            image_size=size,
            boxes=boxes_to_original(boxes, batch, index),
            labels=labels,
            scores=scores,
            masks=masks,
        )

    def rescore(
        self, prototypes: Tensor, coefficients: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """YOLACT++'s mask IoU of each detection, in [0, 1], [D]: the masks sigmoid(P c^T)
        (prototypes [H_p, W_p, k], coefficients [D, k]) cropped by the boxes [D, 4] (model
        frame) go through the mask-IoU head; labels [D] pick the class."""
        mask_probs = torch.sigmoid(prototypes @ coefficients.T).permute(2, 0, 1)  # [D, H_p, W_p]
        crop = box_crop_weights(boxes, tuple(mask_probs.shape[1:]), self.prototype_stride)
        predicted = self.mask_iou_head((mask_probs * crop)[:, None])
        return predicted.gather(1, labels[:, None])[:, 0].clamp(0, 1)

    # ------------------------------------------------------------------ network

    def _batch(self, images: list[Tensor]) -> ImageBatch:
        return batch_images(
            images,
            self.pixel_mean,
            self.pixel_std,
            self.min_size,
            self.max_size,
            self.size_divisibility,
        )

    def _network(self, batch: ImageBatch, with_semantic: bool) -> list[YolactOutput]:
        """Backbone, head, protonet (and semantic head) per size group -> one output per image."""
        outputs: list = [None] * len(batch)
        for tensor, members in zip(batch.tensors, batch.members, strict=True):
            features = list(self.backbone(tensor).values())
            logits, deltas, coefficients = self.head(features)
            prototypes = self.protonet(features[0]).permute(0, 2, 3, 1)  # [B, H_p, W_p, k]
            semantic = self.semantic_head(features[0]) if with_semantic else None
            anchors = self._anchors(features)
            per_location = self.anchor_generator.num_anchors_per_location()
            anchors_per_level = tuple(
                f.shape[-2] * f.shape[-1] * a for f, a in zip(features, per_location, strict=True)
            )
            for row, index in enumerate(members):
                outputs[index] = YolactOutput(
                    class_logits=logits[row],
                    box_deltas=deltas[row],
                    coefficients=coefficients[row],
                    anchors=anchors,
                    anchors_per_level=anchors_per_level,
                    prototypes=prototypes[row],
                    semantic_logits=semantic[row] if semantic is not None else None,
                )
        return outputs

    def _anchors(self, features: list[Tensor]) -> Tensor:
        """All levels' anchors [N, 4], centred on their cells: (j + 0.5) stride."""
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        grids = self.anchor_generator.grid_anchors(sizes, self.strides, device=features[0].device)
        return torch.cat(
            [grid + stride / 2 for grid, stride in zip(grids, self.strides, strict=True)]
        )


def _mean_or_zero(values: Tensor, graph: list[Tensor]) -> Tensor:
    """The mean of values [P]; with none, a zero that is still tied to the `graph` tensors,
    so that the parameters behind them get a (zero) gradient, as distributed training
    requires."""
    if values.numel() > 0:
        return values.mean()
    return sum(tensor.sum() for tensor in graph) * 0.0


def _rgb(values: Sequence[float], name: str) -> Tensor:
    if len(values) != 3:
        raise ValueError(f"{name} must hold 3 values (R, G, B in 0..255 units), got {values}")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def _check_options(
    *,
    min_size: int | None,
    head_convs: int,
    head_kernel_size: int,
    head_norm: str | None,
    protonet_upsampling: str,
    assigner: str,
    fg_iou_threshold: float,
    bg_iou_threshold: float,
    ohem_ratio: float,
    nms_method: str,
    detections_per_image: int,
    **positive_ints: int,
) -> None:
    """Raise ValueError naming the first bad constructor argument of `YOLACT`."""
    if min_size is not None:
        positive_ints["min_size"] = min_size
    for name, value in positive_ints.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("head_convs", head_convs), ("detections_per_image", detections_per_image)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if head_kernel_size not in (1, 3):
        raise ValueError(f"head_kernel_size must be 1 or 3, got {head_kernel_size!r}")
    check_head_norm(head_norm, "head_norm")
    check_protonet_upsampling(protonet_upsampling, "protonet_upsampling")
    if not 0 <= bg_iou_threshold <= fg_iou_threshold <= 1:
        raise ValueError(
            "need 0 <= bg_iou_threshold <= fg_iou_threshold <= 1, got "
            f"{bg_iou_threshold} and {fg_iou_threshold}"
        )
    if assigner not in ASSIGNERS:
        raise ValueError(f"assigner must be one of {ASSIGNERS}, got {assigner!r}")
    if not ohem_ratio > 0:
        raise ValueError(f"ohem_ratio must be positive, got {ohem_ratio}")
    if nms_method not in NMS_METHODS:
        raise ValueError(f"nms_method must be one of {tuple(NMS_METHODS)}, got {nms_method!r}")


def _check_backbone(backbone: nn.Module) -> tuple[int, ...]:
    """The backbone's strides, fine to coarse."""
    for attribute in ("out_channels", "strides"):
        if not hasattr(backbone, attribute):
            raise TypeError(
                f"backbone must have an `{attribute}` attribute (an FPN backbone such as "
                f"resnet_fpn(..., extra_levels='p6p7')), got {type(backbone).__name__}"
            )
    if not isinstance(backbone.out_channels, int):
        raise TypeError(
            f"backbone.out_channels must be one int (an FPN's width), got {backbone.out_channels!r}"
        )
    strides = tuple(int(s) for s in backbone.strides)
    if not strides or strides[0] < 2 or strides[0] % 2:
        raise ValueError(f"backbone.strides must start with an even stride (P3: 8), got {strides}")
    return strides
