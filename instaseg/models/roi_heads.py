"""The per-RoI heads of Mask R-CNN (He et al. 2017): Fast R-CNN box head and the mask head.

Class indices. The classifier has num_classes + 1 outputs: logit c < num_classes is label c
(0-based, as in `Instances`), and the LAST logit, index num_classes, is background. Box
regression (4 deltas per class, R-CNN parameterisation with weights (10, 10, 5, 5)) and mask
logits (one 28 x 28 map per class) have no background slot.

Boxes are in the model frame (see `models.image_batch`) except where a name says original.
Pooling: RoIAlign on P2..P5 with FPN's level rule, 7 x 7 for boxes and 14 x 14 for masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.image_batch import ImageBatch, TrainTargets
from instaseg.models.matching import match_candidates, sample_candidates
from instaseg.models.norm import check_norm, make_norm
from instaseg.ops import batched_nms_top_k, clip_boxes, decode_boxes, encode_boxes, roi_align
from instaseg.ops.poolers import roi_pool_levels, stack_levels

BOX_HEADS = ("2fc", "4conv1fc")


def _conv_block(in_channels: int, out_channels: int, norm: str | None) -> nn.Sequential:
    """3x3 conv (index 0, with a bias only without norm) and optional norm (index 1)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm is None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return (
        nn.Sequential(conv) if norm is None else nn.Sequential(conv, make_norm(norm, out_channels))
    )


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer followed by ReLU: uniform init with a linear gain (Caffe2's "xavier")."""
    layer = nn.Linear(in_features, out_features)
    nn.init.kaiming_uniform_(layer.weight, a=1)
    nn.init.zeros_(layer.bias)
    return layer


def _flatten(features: Tensor, channels_last: bool) -> Tensor:
    """[R, C, S, S] -> [R, C * S * S] in (c, h, w) order, or (h, w, c) if channels_last (free
    for channels-last features, such as RoIAlign's output)."""
    if channels_last:
        return features.permute(0, 2, 3, 1).reshape(features.shape[0], -1)
    return features.flatten(1)


@torch.no_grad()
def _permute_columns_hwc(layer: nn.Linear, channels: int, size: int) -> None:
    """Reorder a linear layer's input columns from (c, h, w) to (h, w, c) order."""
    weight = layer.weight.view(layer.out_features, channels, size, size)
    layer.weight.copy_(weight.permute(0, 2, 3, 1).reshape(layer.out_features, -1))


class TwoFCHead(nn.Module):
    """ "2fc": flatten the pooled [R, C, S, S] features (C-major) and apply fc6, fc7 + ReLU."""

    def __init__(self, in_channels: int, pool_size: int, fc_dim: int = 1024) -> None:
        super().__init__()
        self.fc6 = _linear(in_channels * pool_size * pool_size, fc_dim)
        self.fc7 = _linear(fc_dim, fc_dim)
        self.out_features = fc_dim
        self.in_channels, self.pool_size = in_channels, pool_size
        self.channels_last_input = False

    def forward(self, pooled: Tensor) -> Tensor:
        """pooled: [R, C, S, S] -> [R, fc_dim]."""
        hidden = F.relu(self.fc6(_flatten(pooled, self.channels_last_input)), inplace=True)
        return F.relu(self.fc7(hidden), inplace=True)

    def use_channels_last_input_(self) -> None:
        """Inference rewrite: fc6 reads (h, w, c)-ordered features, so that RoIAlign's
        channels-last output flattens without a copy. The state dict no longer matches
        checkpoints of the (c, h, w) layout; see `models.optimize`."""
        if not self.channels_last_input:
            _permute_columns_hwc(self.fc6, self.in_channels, self.pool_size)
            self.channels_last_input = True


class ConvFCHead(nn.Module):
    """ "4conv1fc" (Wu & He 2018): four 3x3 convs (with norm) + ReLU, then one fc + ReLU."""

    def __init__(
        self,
        in_channels: int,
        pool_size: int,
        conv_dim: int = 256,
        fc_dim: int = 1024,
        norm: str | None = "gn",
        num_convs: int = 4,
    ) -> None:
        super().__init__()
        channels = [in_channels] + [conv_dim] * num_convs
        self.convs = nn.ModuleList(
            _conv_block(a, b, norm) for a, b in zip(channels, channels[1:], strict=False)
        )
        self.fc = _linear(conv_dim * pool_size * pool_size, fc_dim)
        self.out_features = fc_dim
        self.conv_dim, self.pool_size = conv_dim, pool_size
        self.channels_last_input = False

    def forward(self, pooled: Tensor) -> Tensor:
        """pooled: [R, C, S, S] -> [R, fc_dim]."""
        x = pooled
        for block in self.convs:
            x = F.relu(block(x), inplace=True)
        return F.relu(self.fc(_flatten(x, self.channels_last_input)), inplace=True)

    def use_channels_last_input_(self) -> None:
        """Inference rewrite: fc reads (h, w, c)-ordered features (see `TwoFCHead`)."""
        if not self.channels_last_input:
            _permute_columns_hwc(self.fc, self.conv_dim, self.pool_size)
            self.channels_last_input = True


class BoxPredictor(nn.Module):
    """Class logits [R, K + 1] (background last) and class-specific deltas [R, K, 4].

    The background bias starts at log(K (1 - f) / f), f the sampled foreground fraction, so
    that the initial class distribution matches the sampled one instead of a uniform guess.
    """

    def __init__(self, in_features: int, num_classes: int, foreground_fraction: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.box_deltas = nn.Linear(in_features, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)
        with torch.no_grad():
            prior = num_classes * (1 - foreground_fraction) / foreground_fraction
            self.cls_score.bias[num_classes] = math.log(prior)
        nn.init.normal_(self.box_deltas.weight, std=0.001)
        nn.init.zeros_(self.box_deltas.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features: [R, D] -> class logits [R, K + 1], deltas [R, K, 4]."""
        deltas = self.box_deltas(features)
        return self.cls_score(features), deltas.view(-1, self.num_classes, 4)


class MaskHead(nn.Module):
    """Four 3x3 convs (optional norm) + ReLU, a 2x2 stride-2 deconv + ReLU, and a 1x1 conv to
    one mask logit map per class: [R, C, S, S] -> [R, K, 2S, 2S]."""

    def __init__(
        self, in_channels: int, num_classes: int, conv_dim: int = 256, norm: str | None = "gn"
    ) -> None:
        super().__init__()
        channels = [in_channels] + [conv_dim] * 4
        self.convs = nn.ModuleList(
            _conv_block(a, b, norm) for a, b in zip(channels, channels[1:], strict=False)
        )
        self.deconv = nn.ConvTranspose2d(conv_dim, conv_dim, 2, stride=2)
        self.logits = nn.Conv2d(conv_dim, num_classes, 1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        nn.init.normal_(self.logits.weight, std=0.001)
        nn.init.zeros_(self.logits.bias)

    def forward(self, pooled: Tensor, labels: Tensor) -> Tensor:
        """pooled: [R, C, S, S], labels: int64 [R] -> the logits of each RoI's own class,
        [R, 2S, 2S] (the other classes' maps are never computed).

        The 2x2 stride-2 deconvolution maps each input pixel's D channels to its own 2x2 output
        block, so it is one matrix product over channels-last pixels; the ReLU and the
        own-class 1x1 logits then contract each block per RoI. Same result as
        logits(relu(deconv(x)))[r, labels[r]], without the full [R, K, 2S, 2S] maps.
        """
        x = pooled
        for block in self.convs:
            x = F.relu(block(x), inplace=True)
        rois, channels, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(rois, height * width, channels)
        kernel = self.deconv.weight.permute(0, 2, 3, 1).reshape(channels, -1)  # [C, 4 * D]
        blocks = torch.matmul(pixels, kernel).view(rois, height * width * 4, -1)
        blocks = blocks.add_(self.deconv.bias).relu_()  # [R, S * S * 4, D], block-major
        weight = self.logits.weight[labels, :, 0, 0]  # [R, D]
        logits = torch.bmm(blocks, weight[:, :, None]) + self.logits.bias[labels, None, None]
        logits = logits.view(rois, height, width, 2, 2).permute(0, 1, 3, 2, 4)
        return logits.reshape(rois, 2 * height, 2 * width)


class RoIHeads(nn.Module):
    """Box and mask heads with their sampling, losses and inference; arguments as in
    `MaskRCNN`. strides: of the pooled levels (P2..P5), fine to coarse."""

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        num_classes: int,
        *,
        box_head: str = "4conv1fc",
        head_norm: str | None = "gn",
        box_conv_dim: int = 256,
        box_fc_dim: int = 1024,
        mask_conv_dim: int = 256,
        box_pool_size: int = 7,
        mask_pool_size: int = 14,
        sampling_ratio: int = 2,
        aligned: bool = True,
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        box_beta: float = 1.0 / 9,
        crowd_ioa_threshold: float = 0.5,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        if box_head not in BOX_HEADS:
            raise ValueError(f"box_head must be one of {BOX_HEADS}, got {box_head!r}")
        if head_norm is not None:
            check_norm(head_norm, "head_norm")
        self.num_classes = num_classes
        self.strides = [int(s) for s in strides]
        if box_head == "2fc":
            self.box_head: nn.Module = TwoFCHead(in_channels, box_pool_size, box_fc_dim)
        else:
            self.box_head = ConvFCHead(
                in_channels, box_pool_size, box_conv_dim, box_fc_dim, norm=head_norm
            )
        self.box_predictor = BoxPredictor(box_fc_dim, num_classes, positive_fraction)
        self.mask_head = MaskHead(in_channels, num_classes, mask_conv_dim, norm=head_norm)
        self.box_pool_size, self.mask_pool_size = box_pool_size, mask_pool_size
        self.sampling_ratio, self.aligned = sampling_ratio, aligned
        self.fg_iou_threshold, self.bg_iou_threshold = fg_iou_threshold, bg_iou_threshold
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.box_coder_weights = tuple(float(w) for w in box_coder_weights)
        self.box_beta = box_beta
        self.crowd_ioa_threshold = crowd_ioa_threshold
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.detections_per_image = detections_per_image

    def pooling_levels(self, features: list[list[Tensor]]) -> list[list[Tensor]]:
        """Per size group, the levels RoIs are pooled from, channels-last in one buffer
        (`stack_levels`): RoIAlign gathers one C-vector per bilinear tap, and one conversion
        serves the box and the mask pooling."""
        levels = len(self.strides)
        return [stack_levels(group[:levels]) for group in features]

    def pool(
        self,
        levels: list[list[Tensor]],
        batch: ImageBatch,
        boxes: list[Tensor],
        output_size: int,
    ) -> Tensor:
        """RoIAlign boxes (per image [K_i, 4], model frame) on each size group's
        `pooling_levels` -> [sum K_i, C, S, S] in image order."""
        pieces: list[Tensor | None] = [None] * len(batch)
        for group, members in zip(levels, batch.members, strict=True):
            pooled = roi_pool_levels(
                group,
                self.strides,
                [boxes[i] for i in members],
                output_size,
                self.sampling_ratio,
                aligned=self.aligned,
            )
            if len(batch.members) == 1:
                return pooled  # one group holds every image, in order
            counts = [len(boxes[i]) for i in members]
            for index, piece in zip(members, pooled.split(counts), strict=True):
                pieces[index] = piece
        return torch.cat(pieces)

    # ---------------------------------------------------------------- training

    def losses(
        self,
        features: list[list[Tensor]],
        batch: ImageBatch,
        proposals: list[Tensor],
        targets: list[TrainTargets],
    ) -> dict[str, Tensor]:
        """Unweighted "classifier", "box" and "mask" losses of the sampled RoIs."""
        samples = [self._sample(p, t) for p, t in zip(proposals, targets, strict=True)]
        boxes = [s[0] for s in samples]
        labels = torch.cat([s[1] for s in samples])  # background = num_classes
        regression = torch.cat([s[2] for s in samples])
        levels = self.pooling_levels(features)
        pooled = self.pool(levels, batch, boxes, self.box_pool_size)
        logits, deltas = self.box_predictor(self.box_head(pooled))
        foreground = torch.nonzero(labels < self.num_classes).flatten()
        box_loss = F.smooth_l1_loss(
            deltas[foreground, labels[foreground]],
            regression[foreground],
            beta=self.box_beta,
            reduction="sum",
        )
        return {
            "classifier": F.cross_entropy(logits, labels),
            "box": box_loss / max(labels.numel(), 1),
            "mask": self._mask_loss(levels, batch, samples, targets),
        }

    @torch.no_grad()
    def _sample(
        self, proposals: Tensor, target: TrainTargets
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sampled RoIs of one image, foreground first: boxes [S, 4], class targets [S]
        (num_classes for background), regression targets [S, 4] (zeros for background) and
        matched ground-truth indices [S]."""
        # the ground truth joins the proposals, so that every object has perfect positives
        candidates = torch.cat([proposals, target.boxes[~target.iscrowd]])
        labels, matched = match_candidates(
            candidates,
            target.boxes,
            target.iscrowd,
            self.fg_iou_threshold,
            self.bg_iou_threshold,
            crowd_ioa_threshold=self.crowd_ioa_threshold,
        )
        positives, negatives = sample_candidates(
            labels, self.batch_size_per_image, self.positive_fraction
        )
        sampled = torch.cat([positives, negatives])
        boxes, gt_index = candidates[sampled], matched[sampled]
        classes = torch.full_like(sampled, self.num_classes)
        classes[: positives.numel()] = target.labels[gt_index[: positives.numel()]]
        regression = torch.zeros_like(boxes)
        regression[: positives.numel()] = encode_boxes(
            target.boxes[gt_index[: positives.numel()]],
            boxes[: positives.numel()],
            self.box_coder_weights,
        )
        return boxes, classes, regression, gt_index

    def _mask_loss(
        self,
        levels: list[list[Tensor]],
        batch: ImageBatch,
        samples: list[tuple[Tensor, Tensor, Tensor, Tensor]],
        targets: list[TrainTargets],
    ) -> Tensor:
        """Mean per-pixel BCE of the foreground RoIs' own-class mask logits; zero (still tied
        to the mask head's parameters) when no image has a foreground RoI."""
        boxes, labels, mask_targets = [], [], []
        for (sample_boxes, classes, _, gt_index), target in zip(samples, targets, strict=True):
            foreground = classes < self.num_classes
            boxes.append(sample_boxes[foreground])
            labels.append(classes[foreground])
            mask_targets.append(self._mask_targets(boxes[-1], gt_index[foreground], target))
        labels = torch.cat(labels)
        if labels.numel() == 0:
            return sum(p.sum() for p in self.mask_head.parameters()) * 0.0
        pooled = self.pool(levels, batch, boxes, self.mask_pool_size)
        logits = self.mask_head(pooled, labels)
        return F.binary_cross_entropy_with_logits(logits, torch.cat(mask_targets))

    @torch.no_grad()
    def _mask_targets(self, boxes: Tensor, gt_index: Tensor, target: TrainTargets) -> Tensor:
        """Binary [P, M, M] targets: each RoI's ground-truth mask cut out by RoIAlign
        (aligned, adaptive sampling) in the original frame, thresholded at 0.5."""
        size = 2 * self.mask_pool_size
        if boxes.shape[0] == 0:
            return boxes.new_zeros((0, size, size))
        x_factor, y_factor = target.to_original
        original = boxes * boxes.new_tensor([x_factor, y_factor, x_factor, y_factor])
        used, inverse = torch.unique(gt_index, return_inverse=True)
        masks = target.masks[used, None].to(boxes.dtype)  # [U, 1, H0, W0]
        rois = torch.cat([inverse[:, None].to(boxes.dtype), original], dim=1)
        cut = roi_align(masks, rois, size, 1.0, sampling_ratio=0, aligned=True)
        return (cut[:, 0] >= 0.5).to(boxes.dtype)

    # ---------------------------------------------------------------- inference

    def predict(
        self, features: list[list[Tensor]], batch: ImageBatch, proposals: list[Tensor]
    ) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per image: boxes [D, 4] (model frame, clipped), scores [D], labels int64 [D] and
        mask probabilities [D, M, M] over each box, best first, D <= detections_per_image."""
        levels = self.pooling_levels(features)
        pooled = self.pool(levels, batch, proposals, self.box_pool_size)
        logits, deltas = self.box_predictor(self.box_head(pooled))
        probs = F.softmax(logits, dim=-1)[:, : self.num_classes]  # drop background
        boxes = decode_boxes(deltas, torch.cat(proposals), self.box_coder_weights)
        counts = [len(p) for p in proposals]
        detections = [
            self._detections(b, p, size)
            for b, p, size in zip(
                boxes.split(counts), probs.split(counts), batch.image_sizes, strict=True
            )
        ]
        det_boxes = [d[0] for d in detections]
        det_labels = [d[2] for d in detections]
        size = 2 * self.mask_pool_size
        mask_probs = boxes.new_zeros((0, size, size))
        if sum(len(b) for b in det_boxes) > 0:
            pooled = self.pool(levels, batch, det_boxes, self.mask_pool_size)
            mask_probs = self.mask_head(pooled, torch.cat(det_labels)).sigmoid()
        mask_probs = mask_probs.split([len(b) for b in det_boxes])
        return [(*d, m) for d, m in zip(detections, mask_probs, strict=True)]

    def _detections(
        self, boxes: Tensor, probs: Tensor, image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Score threshold, per-class NMS and top-k for one image. boxes: [R, K, 4]; probs:
        [R, K] -> boxes [D, 4], scores [D], labels [D]."""
        num_classes = probs.shape[1]
        boxes = clip_boxes(boxes.reshape(-1, 4), image_size)
        scores = probs.reshape(-1)
        labels = torch.arange(num_classes, device=probs.device).repeat(probs.shape[0])
        sizes = boxes[:, 2:] - boxes[:, :2]
        keep = (scores > self.score_threshold) & (sizes >= 1e-2).all(dim=1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms_top_k(
            boxes, scores, labels, self.nms_threshold, self.detections_per_image
        )
        return boxes[keep], scores[keep], labels[keep]
