"""Multi-class NMS over class-agnostic boxes: Fast NMS (Bolya et al. 2019, YOLACT, Sec. 3.3)
and standard greedy NMS on the same candidates, for comparison.

Both functions take one set of boxes shared by every class, as a one-stage detector with
class-agnostic box regression predicts them, and a score per (box, class):

    boxes: float [N, 4] xyxy;  scores: float [N, C], no background column.

Candidates. For each class the `top_k` boxes with the highest scores for that class (ties by
lower box index) are the candidates of that class; the others take no part.

Fast NMS. Per class, with the candidates sorted by decreasing score, the IoU matrix X [k, k]
is kept above its diagonal (X_ij for i < j: box i scores higher than box j) and box j is kept
when max_i X_ij <= iou_threshold. Unlike greedy NMS, a box that is itself suppressed may
still suppress lower-scoring boxes, so Fast NMS removes slightly more; in exchange it is a
handful of batched tensor operations over all classes at once ([C, k, k]), with no
sequential loop. Standard NMS keeps box j unless a *kept* higher-scoring box overlaps it by
more than iou_threshold (`instaseg.ops.nms.batched_nms`, one category per class).

Then both keep the candidates scoring above `score_threshold` and return the best
`max_detections` over all classes, by decreasing score; ties by lower class, then by the
rank within the class. A box may be returned for several classes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from instaseg.ops.nms import batched_nms_top_k

Detections = tuple[Tensor, Tensor, Tensor]
_CHUNK_ELEMENTS = 1 << 17  # pairs per chunk of classes in fast_nms


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.5,
    *,
    top_k: int = 200,
    score_threshold: float = 0.05,
    max_detections: int = 100,
) -> Detections:
    """Fast NMS (module docstring). boxes: float [N, 4] xyxy; scores: float [N, C] ->
    (box indices int64 [D], labels int64 [D], scores [D]), best first, D <= max_detections."""
    _check_inputs(boxes, scores, top_k, max_detections)
    candidate_scores, candidates = _candidates(scores, top_k, score_threshold)  # [C, k] each
    if candidates.numel() == 0:
        return _empty(scores)
    candidate_boxes = boxes.detach()[candidates]  # [C, k, 4]
    # a few classes at a time: the [c, k, k] temporaries stay small and cache-resident
    step = max(1, _CHUNK_ELEMENTS // candidates.shape[1] ** 2)
    suppressed = torch.cat(
        [
            # X_ij for i < j only: box j against each higher-scoring box i of its class
            _overlaps_above(chunk, iou_threshold).triu_(diagonal=1).any(dim=1)
            for chunk in candidate_boxes.split(step)
        ]
    )  # [C, k]
    keep = ~suppressed & (candidate_scores > score_threshold)
    labels = torch.arange(scores.shape[1], device=scores.device)[:, None].expand_as(candidates)
    return _best(candidates[keep], labels[keep], candidate_scores[keep], max_detections)


def standard_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.5,
    *,
    top_k: int = 200,
    score_threshold: float = 0.05,
    max_detections: int = 100,
) -> Detections:
    """Greedy NMS per class on the same candidates as `fast_nms`, with the same arguments and
    results' layout (module docstring)."""
    _check_inputs(boxes, scores, top_k, max_detections)
    candidate_scores, candidates = _candidates(scores, top_k, score_threshold)
    labels = torch.arange(scores.shape[1], device=scores.device)[:, None].expand_as(candidates)
    above = candidate_scores > score_threshold
    candidates, labels, candidate_scores = candidates[above], labels[above], candidate_scores[above]
    if candidates.numel() == 0:
        return _empty(scores)
    # candidates are class-major, rank-minor: batched_nms' ties by lower index are ours
    keep = batched_nms_top_k(
        boxes.detach()[candidates], candidate_scores, labels, iou_threshold, max_detections
    )
    return candidates[keep], labels[keep], candidate_scores[keep]


NMS_METHODS: dict[str, Callable[..., Detections]] = {"fast": fast_nms, "standard": standard_nms}


def _candidates(scores: Tensor, top_k: int, score_threshold: float) -> tuple[Tensor, Tensor]:
    """Per class, the top_k scores [C, k] and their box indices [C, k], best first (ties by
    lower box index). k is cut to the most candidates any class has above score_threshold:
    the candidates below it rank after all those above, so they can neither suppress them
    nor be returned."""
    values = scores.detach().T.contiguous()  # [C, N]
    k = min(top_k, values.shape[1])
    if k == 0 or values.shape[0] == 0:
        return values[:, :0], torch.zeros_like(values[:, :0], dtype=torch.int64)
    if k == values.shape[1]:
        ordered, indices = torch.sort(values, dim=1, descending=True, stable=True)
    else:
        # one more than k: ties across the cut show as an equal (k + 1)-th value, and then
        # the lowest indices among the tied must win, as in a stable sort
        top, indices = values.topk(k + 1, dim=1)  # ties in no particular order
        indices, kth = indices[:, :k], top[:, k - 1 : k]
        if bool((top[:, k] == top[:, k - 1]).any()):
            tied = values == kth
            wanted = k - (values > kth).sum(dim=1, keepdim=True)
            chosen = (values > kth) | (tied & (tied.cumsum(dim=1) <= wanted))
            indices = torch.nonzero(chosen)[:, 1].view(-1, k)
        indices = torch.sort(indices, dim=1).values  # index order: the stable sort breaks ties
        ordered, order = torch.sort(values.gather(1, indices), dim=1, descending=True, stable=True)
        indices = indices.gather(1, order)
    k = int((ordered > score_threshold).sum(dim=1).max())
    return ordered[:, :k], indices[:, :k]


def _overlaps_above(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Whether each pair of boxes within each row overlaps with IoU > iou_threshold: boxes
    [C, k, 4] xyxy -> bool [C, k, k]. Tested as inter (1 + t) > t (area_i + area_j), which is
    IoU > t without a division; a pair with an empty union never overlaps."""
    x0, y0, x1, y1 = (coordinate.contiguous() for coordinate in boxes.unbind(dim=2))  # [C, k]
    width = torch.minimum(x1[:, :, None], x1[:, None]).sub_(
        torch.maximum(x0[:, :, None], x0[:, None])
    )
    height = torch.minimum(y1[:, :, None], y1[:, None]).sub_(
        torch.maximum(y0[:, :, None], y0[:, None])
    )
    inter = width.clamp_(min=0).mul_(height.clamp_(min=0))  # [C, k, k]
    area = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)  # [C, k]
    bound = (area[:, :, None] + area[:, None]).mul_(iou_threshold)
    return inter.mul_(1 + iou_threshold) > bound


def _best(indices: Tensor, labels: Tensor, scores: Tensor, max_detections: int) -> Detections:
    """The max_detections best of (box index, label, score) triples given class-major, rank
    order, by decreasing score with ties kept in that order."""
    order = torch.sort(scores, descending=True, stable=True).indices[:max_detections]
    return indices[order], labels[order], scores[order]


def _empty(scores: Tensor) -> Detections:
    none = torch.zeros((0,), dtype=torch.int64, device=scores.device)
    return none, none.clone(), scores.new_zeros((0,))


def _check_inputs(boxes: Tensor, scores: Tensor, top_k: int, max_detections: int) -> None:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be a floating-point tensor, got {boxes.dtype}")
    if scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have shape [{boxes.shape[0]}, C] (one column per class) to match "
            f"boxes, got {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    for name, value in (("top_k", top_k), ("max_detections", max_detections)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
