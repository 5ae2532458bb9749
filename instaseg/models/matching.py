"""Training-target assignment shared by the RPN and the RoI heads: IoU matching with crowd
regions ignored, and balanced sampling of positives and negatives.

Label convention of a candidate (an anchor or a proposal): 1 positive, 0 negative, -1 ignored
(neither; it gets no loss). All boxes are xyxy in one frame (the model frame).

Crowd rule. Crowd boxes (`iscrowd`) never take part in matching, so no candidate is ever a
positive of a crowd box. A candidate that would be a negative but has more than
`crowd_ioa_threshold` of its own area inside one crowd box (intersection over the candidate's
area) is ignored instead: it most likely shows one of the unlabelled objects of the crowd.
"""

from __future__ import annotations

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
    crowd = torch.nonzero(gt_crowd).flatten()
    if crowd.numel() > 0 and num > 0:
        covered = box_ioa(gt_boxes[crowd], candidates).amax(dim=0)  # [N]
        labels[(labels == NEGATIVE) & (covered > crowd_ioa_threshold)] = IGNORED
    return labels, matched


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
