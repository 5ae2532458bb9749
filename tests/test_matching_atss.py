"""ATSS anchor assignment (models.matching.atss_match) against a loop written from the paper's
Algorithm 1, plus hand-checked cases and the crowd rule."""

from __future__ import annotations

import math

import pytest
import torch
from naive_boxes import iou

from instaseg.models.matching import IGNORED, NEGATIVE, POSITIVE, atss_match


def centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def naive_atss(anchors, per_level, boxes, top_k):
    """Algorithm 1 of Zhang et al. 2020, one object and one anchor at a time; labels are
    POSITIVE / NEGATIVE (no crowd boxes here), matched is -1 for negatives."""
    best = [(-1.0, -1)] * len(anchors)  # (IoU, box index) of each anchor's positive
    for g, box in enumerate(boxes):
        cx, cy = centre(box)
        candidates, start = [], 0
        for count in per_level:
            level = range(start, start + count)
            distance = {i: math.dist((cx, cy), centre(anchors[i])) for i in level}
            candidates += sorted(level, key=lambda i: (distance[i], i))[:top_k]
            start += count
        ious = [iou(box, anchors[i]) for i in candidates]
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((v - mean) ** 2 for v in ious) / len(ious))
        for i, value in zip(candidates, ious, strict=True):
            ax, ay = centre(anchors[i])
            inside = box[0] < ax < box[2] and box[1] < ay < box[3]
            if value >= mean + std and inside and value > 0 and value > best[i][0]:
                best[i] = (value, g)
    labels = [POSITIVE if g >= 0 else NEGATIVE for _, g in best]
    return labels, [g for _, g in best]


def grid_anchors(size: int, stride: int, extent: int) -> list[list[float]]:
    """Square anchors of `size` centred on the cells of a stride grid over [0, extent)^2,
    row-major; centres at (j + 0.5) stride, as the one-stage models place them."""
    anchors = []
    for row in range(extent // stride):
        for col in range(extent // stride):
            x, y = (col + 0.5) * stride, (row + 0.5) * stride
            anchors.append([x - size / 2, y - size / 2, x + size / 2, y + size / 2])
    return anchors


def test_matches_the_papers_algorithm_on_random_boxes():
    generator = torch.Generator().manual_seed(0)
    levels = [grid_anchors(12, 8, 64), grid_anchors(24, 16, 64), grid_anchors(48, 32, 64)]
    anchors = [a for level in levels for a in level]
    per_level = [len(level) for level in levels]
    for trial in range(20):
        count = int(torch.randint(1, 6, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * 50
        wh = torch.rand(count, 2, generator=generator) * 40 + 4
        boxes = torch.cat([xy, (xy + wh).clamp(max=64)], dim=1)
        labels, matched = atss_match(
            torch.tensor(anchors), per_level, boxes, torch.zeros(count, dtype=torch.bool), top_k=5
        )
        expected_labels, expected_matched = naive_atss(anchors, per_level, boxes.tolist(), 5)
        assert labels.tolist() == expected_labels, trial
        positive = labels == POSITIVE
        assert matched[positive].tolist() == [g for g in expected_matched if g >= 0], trial


def test_every_object_gets_positives_on_its_own_scale():
    levels = [grid_anchors(16, 8, 128), grid_anchors(64, 32, 128)]
    anchors = torch.tensor([a for level in levels for a in level])
    per_level = [len(level) for level in levels]
    small = [20.0, 20.0, 36.0, 36.0]  # 16 x 16: the 16-px anchors of the first level fit it
    large = [40.0, 40.0, 104.0, 104.0]  # 64 x 64: the 64-px anchors of the second level
    labels, matched = atss_match(
        anchors, per_level, torch.tensor([small, large]), torch.tensor([False, False])
    )
    positive = torch.nonzero(labels == POSITIVE).flatten()
    small_positives = positive[matched[positive] == 0]
    large_positives = positive[matched[positive] == 1]
    assert len(small_positives) >= 1 and len(large_positives) >= 1
    assert (small_positives < per_level[0]).all()  # all on the fine level
    assert (large_positives >= per_level[0]).all()  # all on the coarse level
    # an anchor centred exactly on the small box is among its positives
    centred = anchors[small_positives]
    assert ((centred[:, :2] + centred[:, 2:]) / 2 == torch.tensor([28.0, 28.0])).all(1).any()
    assert (labels != IGNORED).all()  # ATSS has no ignore band


def test_crowd_boxes_are_never_matched_and_ignore_the_negatives_inside():
    anchors = torch.tensor(grid_anchors(16, 8, 64))
    boxes = torch.tensor([[4.0, 4.0, 24.0, 24.0], [32.0, 32.0, 64.0, 64.0]])
    crowd = torch.tensor([False, True])
    labels, matched = atss_match(anchors, [len(anchors)], boxes, crowd)
    assert (matched[labels == POSITIVE] == 0).all() and (labels == POSITIVE).any()
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    deep_inside = (centres > 40).all(dim=1) & (centres < 56).all(dim=1)
    assert (labels[deep_inside] == IGNORED).all()
    # an image with only crowds or nothing: all negative (or ignored under the crowd)
    labels, _ = atss_match(anchors, [len(anchors)], boxes[1:], crowd[1:])
    assert POSITIVE not in labels.tolist()
    labels, _ = atss_match(anchors, [len(anchors)], torch.zeros(0, 4), torch.zeros(0, dtype=bool))
    assert (labels == NEGATIVE).all()


def test_rejects_a_level_split_that_does_not_add_up():
    anchors = torch.tensor(grid_anchors(16, 8, 32))
    with pytest.raises(ValueError, match="anchors_per_level sums to 10, but there are 16"):
        atss_match(anchors, [8, 2], torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([False]))
