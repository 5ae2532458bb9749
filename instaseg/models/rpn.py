"""Region Proposal Network (Ren et al. 2015) on a feature pyramid (Lin et al. 2017).

Every pyramid level gets A = len(aspect_ratios) anchors per location, of one size per level
(32 .. 512 px for P2 .. P6), and one shared head scores them: a 3x3 conv and ReLU, then a
1x1 conv for the objectness logit of each anchor and one for its box deltas (R-CNN
parameterisation, weights (1, 1, 1, 1)). Proposals: per level the `pre_nms_topk` best
anchors, decoded and clipped to the image, then NMS per level and the `post_nms_topk` best
over all levels. Training: 256 anchors per image, half positives at most (IoU >= 0.7, plus
each object's best anchors), negatives below 0.3, crowd rule of `models.matching`.
All boxes are in the model frame (see `models.image_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.image_batch import ImageBatch, TrainTargets
from instaseg.models.matching import POSITIVE, match_candidates, sample_candidates
from instaseg.ops import AnchorGenerator, batched_nms_top_k, clip_boxes, decode_boxes, encode_boxes


class RPNHead(nn.Module):
    """Shared head: a 3x3 conv + ReLU, then 1x1 convs to A objectness logits and 4A deltas.

    Parameters: conv.*, objectness.* ([A, C, 1, 1]), box_deltas.* ([4A, C, 1, 1], channel
    4a + k is coordinate k of anchor a - torchvision's layout).
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.box_deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for conv in (self.conv, self.objectness, self.box_deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """features: per level [B, C, H_l, W_l] -> per level objectness [B, H_l * W_l * A] and
        deltas [B, H_l * W_l * A, 4], rows in the anchor generator's order (location-major)."""
        num_anchors = self.objectness.out_channels
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature), inplace=True)
            outputs = self._pointwise(hidden)  # [B, H * W, 5A]
            batch = outputs.shape[0]
            logits.append(outputs[..., :num_anchors].reshape(batch, -1))
            deltas.append(outputs[..., num_anchors:].reshape(batch, -1, 4))
        return logits, deltas

    def _pointwise(self, hidden: Tensor) -> Tensor:
        """Both 1x1 convs as one matrix product over pixels: [B, C, H, W] -> [B, H * W, 5A]
        (objectness, then deltas with channel 4a + k). A product in the input's own memory
        layout is several times faster on the CPU than a 1x1 conv with few outputs."""
        batch, channels, height, width = hidden.shape
        weight = torch.cat([self.objectness.weight, self.box_deltas.weight]).view(-1, channels)
        bias = torch.cat([self.objectness.bias, self.box_deltas.bias])
        if hidden.is_contiguous(memory_format=torch.channels_last):
            pixels = hidden.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
            return F.linear(pixels, weight, bias)
        planes = hidden.reshape(batch, channels, height * width)
        return (torch.matmul(weight, planes) + bias[:, None]).transpose(1, 2)


class RegionProposalNetwork(nn.Module):
    """Anchors, head, proposal selection and the RPN losses; arguments as in `MaskRCNN`.

    strides: input pixels per feature pixel of each level, fine to coarse, one entry per
    anchor size.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        *,
        anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        pre_nms_topk: tuple[int, int] = (2000, 1000),
        post_nms_topk: tuple[int, int] = (2000, 1000),
        nms_threshold: float = 0.7,
        fg_iou_threshold: float = 0.7,
        bg_iou_threshold: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        box_beta: float = 1.0 / 9,
        crowd_ioa_threshold: float = 0.5,
        min_box_size: float = 1e-3,
    ) -> None:
        super().__init__()
        if len(anchor_sizes) != len(strides):
            raise ValueError(
                f"anchor_sizes needs one size per feature level ({len(strides)} levels with "
                f"strides {tuple(strides)}), got {tuple(anchor_sizes)}"
            )
        self.strides = tuple(int(s) for s in strides)
        self.anchor_generator = AnchorGenerator(
            [(size,) for size in anchor_sizes], [tuple(aspect_ratios)] * len(anchor_sizes)
        )
        self.head = RPNHead(in_channels, len(aspect_ratios))
        self.pre_nms_topk = pre_nms_topk  # (training, testing), per level
        self.post_nms_topk = post_nms_topk  # (training, testing), per image
        self.nms_threshold = nms_threshold
        self.fg_iou_threshold = fg_iou_threshold
        self.bg_iou_threshold = bg_iou_threshold
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_beta = box_beta
        self.crowd_ioa_threshold = crowd_ioa_threshold
        self.min_box_size = min_box_size

    def forward(
        self,
        features: list[list[Tensor]],
        batch: ImageBatch,
        targets: list[TrainTargets] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """features: per size group, per level [B_g, C, H_l, W_l].

        Returns per image the proposals float [P_i, 4] (model frame, no gradient, best first)
        and, when targets are given, the unweighted losses "rpn_objectness" and "rpn_box".
        """
        logits, deltas, anchors = self._predict(features, batch)
        training = targets is not None
        proposals = [
            self._select_proposals(logits[i], deltas[i], anchors[i], batch.image_sizes[i], training)
            for i in range(len(batch))
        ]
        if not training:
            return proposals, {}
        return proposals, self._losses(logits, deltas, anchors, targets)

    def _predict(
        self, features: list[list[Tensor]], batch: ImageBatch
    ) -> tuple[list[list[Tensor]], list[list[Tensor]], list[list[Tensor]]]:
        """Per image and level: objectness [N_l], deltas [N_l, 4], anchors [N_l, 4]."""
        logits: list = [None] * len(batch)
        deltas: list = [None] * len(batch)
        anchors: list = [None] * len(batch)
        for group, members in zip(features, batch.members, strict=True):
            group_logits, group_deltas = self.head(group)
            sizes = [(f.shape[-2], f.shape[-1]) for f in group]
            group_anchors = self.anchor_generator.grid_anchors(
                sizes, self.strides, dtype=group[0].dtype, device=group[0].device
            )
            for row, index in enumerate(members):
                logits[index] = [level[row] for level in group_logits]
                deltas[index] = [level[row] for level in group_deltas]
                anchors[index] = group_anchors
        return logits, deltas, anchors

    @torch.no_grad()
    def _select_proposals(
        self,
        logits: list[Tensor],
        deltas: list[Tensor],
        anchors: list[Tensor],
        image_size: tuple[int, int],
        training: bool,
    ) -> Tensor:
        """The best anchors per level, decoded and clipped, after per-level NMS -> [P, 4]."""
        pre_nms_topk = self.pre_nms_topk[0 if training else 1]
        boxes, scores, levels = [], [], []
        for level, (level_logits, level_deltas, level_anchors) in enumerate(
            zip(logits, deltas, anchors, strict=True)
        ):
            top = level_logits.topk(min(pre_nms_topk, level_logits.numel())).indices
            decoded = decode_boxes(level_deltas[top].float(), level_anchors[top].float())
            boxes.append(clip_boxes(decoded, image_size))
            scores.append(level_logits[top].float())
            levels.append(torch.full_like(top, level))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        sizes = boxes[:, 2:] - boxes[:, :2]
        valid = (sizes >= self.min_box_size).all(dim=1) & torch.isfinite(scores)
        boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        post_nms_topk = self.post_nms_topk[0 if training else 1]
        return boxes[batched_nms_top_k(boxes, scores, levels, self.nms_threshold, post_nms_topk)]

    def _losses(
        self,
        logits: list[list[Tensor]],
        deltas: list[list[Tensor]],
        anchors: list[list[Tensor]],
        targets: list[TrainTargets],
    ) -> dict[str, Tensor]:
        """Objectness BCE over the sampled anchors of all images, and smooth-L1 box loss of
        the positives; both divided by the number of sampled anchors."""
        sampled_logits, sampled_labels, positive_deltas, positive_targets = [], [], [], []
        for image_logits, image_deltas, image_anchors, target in zip(
            logits, deltas, anchors, targets, strict=True
        ):
            all_anchors = torch.cat(image_anchors)
            labels, matched = match_candidates(
                all_anchors,
                target.boxes,
                target.iscrowd,
                self.fg_iou_threshold,
                self.bg_iou_threshold,
                allow_low_quality=True,
                crowd_ioa_threshold=self.crowd_ioa_threshold,
            )
            positives, negatives = sample_candidates(
                labels, self.batch_size_per_image, self.positive_fraction
            )
            sampled = torch.cat([positives, negatives])
            sampled_logits.append(torch.cat(image_logits)[sampled])
            sampled_labels.append((labels[sampled] == POSITIVE).to(sampled_logits[-1].dtype))
            positive_deltas.append(torch.cat(image_deltas)[positives])
            positive_targets.append(
                encode_boxes(target.boxes[matched[positives]], all_anchors[positives])
            )
        sampled_logits, sampled_labels = torch.cat(sampled_logits), torch.cat(sampled_labels)
        normaliser = max(sampled_logits.numel(), 1)
        objectness = F.binary_cross_entropy_with_logits(
            sampled_logits, sampled_labels, reduction="sum"
        )
        box = F.smooth_l1_loss(
            torch.cat(positive_deltas),
            torch.cat(positive_targets),
            beta=self.box_beta,
            reduction="sum",
        )
        return {"rpn_objectness": objectness / normaliser, "rpn_box": box / normaliser}
