"""Training-target assignment shared by the RPN, the RoI heads and the one-stage heads: IoU
matching with crowd regions ignored, ATSS matching, and balanced sampling of positives and
negatives.

Label convention of a candidate (an anchor or a proposal): 1 positive, 0 negative, -1 ignored
(neither; it gets no loss). All boxes are xyxy in one frame (the model frame).

Crowd rule. Crowd boxes (`iscrowd`) never take part in matching, so no candidate is ever a
positive of a crowd box. A candidate that would be a negative but has more than
`crowd_ioa_threshold` of its own area inside one crowd box (intersection over the candidate's
area) is ignored instead: it most likely shows one of the unlabelled objects of the crowd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from instaseg.ops import box_ioa, box_iou

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


def match_candidates(
    candidates: Tensor,
    gt_boxes: Tensor,
    gt_crowd: Tensor,
    fg_iou_threshold: float,
    bg_iou_threshold: float,
    *,
    allow_low_quality: bool = False,
    crowd_ioa_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Label candidates [N, 4] against ground truth [G, 4] (gt_crowd: bool [G]).

    IoU with the best non-crowd box >= fg_iou_threshold is positive, < bg_iou_threshold is
    negative, in between ignored. allow_low_quality (the RPN rule of Ren et al. 2015) also makes
    positive every candidate whose IoU with some box is that box's highest (and above zero),
    so every object gets at least one positive. Then the crowd rule of the module docstring.

    Returns labels int64 [N] (1, 0, -1) and matched int64 [N]: for each candidate, the index
    into gt_boxes of its best non-crowd box (0 when the image has none; read it for positives
    only).
    """
    num = candidates.shape[0]
    device = candidates.device
    labels = torch.full((num,), NEGATIVE, dtype=torch.int64, device=device)
    matched = torch.zeros((num,), dtype=torch.int64, device=device)
    real = torch.nonzero(~gt_crowd).flatten()
    if real.numel() > 0 and num > 0:
        iou = box_iou(gt_boxes[real], candidates)  # [G_real, N]
        best_iou, best = iou.max(dim=0)
        matched = real[best]
        labels[best_iou >= bg_iou_threshold] = IGNORED
        labels[best_iou >= fg_iou_threshold] = POSITIVE
        if allow_low_quality:
            highest = iou.max(dim=1, keepdim=True).values  # [G_real, 1]
            is_best = (iou == highest) & (highest > 0)
            labels[is_best.any(dim=0)] = POSITIVE
    _ignore_under_crowds(labels, candidates, gt_boxes, gt_crowd, crowd_ioa_threshold)
    return labels, matched


def atss_match(
    anchors: Tensor,
    anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_crowd: Tensor,
    *,
    top_k: int = 9,
    crowd_ioa_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Adaptive Training Sample Selection (Zhang et al., CVPR 2020) of anchors [N, 4] against
    ground truth [G, 4] (gt_crowd: bool [G]).

    anchors_per_level: how many of the anchors, in order, belong to each pyramid level. For
    each non-crowd box: on every level the top_k anchors whose centres are nearest to the
    box's centre are its candidates; its IoU threshold is the mean plus the standard deviation
    of the candidates' IoUs; the candidates at or above it whose centres lie inside the box are
    positive. An anchor positive for several boxes goes to the one it overlaps most. Every
    other anchor is negative, then the crowd rule of the module docstring applies.

    The threshold adapts to each object, so a small object, whose anchors all overlap it
    poorly, still gets positives on its best level, and a large one gets them only where they
    fit well: several positives per object instead of the one or two of a fixed IoU of 0.5.

    Returns labels int64 [N] (1, 0, -1) and matched int64 [N], as `match_candidates`.
    """
    if sum(anchors_per_level) != anchors.shape[0]:
        raise ValueError(
            f"anchors_per_level sums to {sum(anchors_per_level)}, but there are "
            f"{anchors.shape[0]} anchors"
        )
    num = anchors.shape[0]
    device = anchors.device
    labels = torch.full((num,), NEGATIVE, dtype=torch.int64, device=device)
    matched = torch.zeros((num,), dtype=torch.int64, device=device)
    real = torch.nonzero(~gt_crowd).flatten()
    if real.numel() > 0 and num > 0:
        boxes = gt_boxes[real]
        iou = box_iou(boxes, anchors)  # [G, N]
        candidates = _nearest_per_level(anchors, anchors_per_level, boxes, top_k)  # [G, K]
        candidate_iou = iou.gather(1, candidates)
        threshold = candidate_iou.mean(dim=1) + candidate_iou.std(dim=1, unbiased=False)
        centres = (anchors[candidates, :2] + anchors[candidates, 2:]) / 2  # [G, K, 2]
        inside = (centres > boxes[:, None, :2]).all(dim=2) & (centres < boxes[:, None, 2:]).all(
            dim=2
        )
        chosen = (candidate_iou >= threshold[:, None]) & inside & (candidate_iou > 0)
        positive_iou = torch.full_like(iou, -1.0)
        rows = torch.arange(boxes.shape[0], device=device)[:, None].expand_as(candidates)
        positive_iou[rows[chosen], candidates[chosen]] = candidate_iou[chosen]
        best_iou, best = positive_iou.max(dim=0)
        labels[best_iou >= 0] = POSITIVE
        matched = real[best]
    _ignore_under_crowds(labels, anchors, gt_boxes, gt_crowd, crowd_ioa_threshold)
    return labels, matched


def _ignore_under_crowds(
    labels: Tensor, candidates: Tensor, gt_boxes: Tensor, gt_crowd: Tensor, threshold: float
) -> None:
    """The crowd rule (module docstring), in place: a negative with more than `threshold` of
    its area inside one crowd box becomes ignored."""
    crowd = torch.nonzero(gt_crowd).flatten()
    if crowd.numel() > 0 and candidates.shape[0] > 0:
        covered = box_ioa(gt_boxes[crowd], candidates).amax(dim=0)  # [N]
        labels[(labels == NEGATIVE) & (covered > threshold)] = IGNORED


def _nearest_per_level(
    anchors: Tensor, anchors_per_level: Sequence[int], boxes: Tensor, top_k: int
) -> Tensor:
    """Indices int64 [G, K] into anchors of the top_k anchors per level (fewer on a level with
    fewer anchors) whose centres are nearest to each box's centre."""
    anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distances = (box_centres[:, None] - anchor_centres[None]).square().sum(dim=2)  # [G, N]
    nearest, start = [], 0
    for count in anchors_per_level:
        if count > 0:
            level = distances[:, start : start + count]
            k = min(top_k, count)
            nearest.append(level.topk(k, dim=1, largest=False).indices + start)
        start += count
    return torch.cat(nearest, dim=1)


def sample_candidates(
    labels: Tensor, num_samples: int, positive_fraction: float
) -> tuple[Tensor, Tensor]:
    """Pick at most num_samples candidates, at most a positive_fraction of them positive, the
    rest negative (fewer when there are not enough), uniformly at random (the global torch
    generator, so torch.manual_seed fixes it). labels: int64 [N] (1, 0, -1) -> indices of the
    sampled positives [P] and negatives [Q]."""
    positives = torch.nonzero(labels == POSITIVE).flatten()
    negatives = torch.nonzero(labels == NEGATIVE).flatten()
    num_pos = min(positives.numel(), int(num_samples * positive_fraction))
    num_neg = min(negatives.numel(), num_samples - num_pos)
    positives = positives[torch.randperm(positives.numel(), device=labels.device)[:num_pos]]
    negatives = negatives[torch.randperm(negatives.numel(), device=labels.device)[:num_neg]]
    return positives, negatives
