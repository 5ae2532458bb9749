"""fast_nms / standard_nms against their definitions written as explicit Python loops."""

from __future__ import annotations

import pytest
import torch
from naive_boxes import iou

from instaseg.ops.fast_nms import NMS_METHODS, fast_nms, standard_nms


def _reference(boxes, scores, threshold, top_k, score_threshold, max_detections, greedy):
    """Per class: rank boxes by score (ties by index), keep the first top_k; Fast NMS drops a
    box that overlaps ANY higher-ranked candidate by > threshold, greedy NMS one that overlaps
    a KEPT higher-ranked candidate. Then scores > score_threshold, best first over classes
    (ties by class, then rank)."""
    box_list, score_list = boxes.tolist(), scores.tolist()
    found = []
    for c in range(scores.shape[1]):
        ranked = sorted(range(len(box_list)), key=lambda i: -score_list[i][c])[:top_k]
        kept: list[int] = []
        for rank, j in enumerate(ranked):
            rivals = kept if greedy else ranked[:rank]
            if all(iou(box_list[i], box_list[j]) <= threshold for i in rivals):
                kept.append(j)
                if score_list[j][c] > score_threshold:
                    found.append((-score_list[j][c], c, rank, j))
    found.sort()
    return [(j, c, -s) for s, c, _, j in found[:max_detections]]


def _random_case(seed: int, num: int, num_classes: int):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(num, 2, generator=generator, dtype=torch.float64) * 60
    size = torch.rand(num, 2, generator=generator, dtype=torch.float64) * 40 + 1
    boxes = torch.cat([corner, corner + size], dim=1)
    # quantised scores: many ties within and across classes
    scores = (torch.rand(num, num_classes, generator=generator, dtype=torch.float64) * 10).floor()
    scores = scores / 10
    boxes[5] = boxes[2]  # an exact duplicate
    return boxes, scores


def _as_list(result):
    indices, labels, scores = result
    assert indices.dtype == torch.int64 and labels.dtype == torch.int64
    return list(zip(indices.tolist(), labels.tolist(), scores.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_fast_and_standard_nms_match_their_definitions(seed, threshold):
    boxes, scores = _random_case(seed, 30 + 5 * seed, num_classes=1 + seed % 4)
    top_k, score_threshold, max_detections = 12 + seed, 0.15, 25
    for function, greedy in ((fast_nms, False), (standard_nms, True)):
        got = function(
            boxes,
            scores,
            threshold,
            top_k=top_k,
            score_threshold=score_threshold,
            max_detections=max_detections,
        )
        want = _reference(boxes, scores, threshold, top_k, score_threshold, max_detections, greedy)
        assert _as_list(got) == want, function.__name__


def test_fast_nms_lets_suppressed_boxes_suppress():
    # a overlaps b, b overlaps c, a does not touch c
    boxes = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    assert fast_nms(boxes, scores, 0.3, score_threshold=0.0)[0].tolist() == [0]
    assert standard_nms(boxes, scores, 0.3, score_threshold=0.0)[0].tolist() == [0, 2]
    # classes never suppress each other; a box can be returned for two classes
    two_classes = torch.tensor([[0.9, 0.1], [0.8, 0.85], [0.7, 0.2]])
    indices, labels, values = fast_nms(boxes, two_classes, 0.3, score_threshold=0.15)
    assert list(zip(indices.tolist(), labels.tolist(), strict=True)) == [(0, 0), (1, 1)]
    torch.testing.assert_close(values, torch.tensor([0.9, 0.85]))


def test_top_k_and_max_detections_cut():
    # five disjoint boxes: nothing suppresses anything
    boxes = torch.tensor([[20.0 * i, 0, 20 * i + 10, 10] for i in range(5)])
    scores = torch.tensor([[0.5, 0.1], [0.9, 0.2], [0.7, 0.3], [0.6, 0.4], [0.8, 0.5]])
    for function in NMS_METHODS.values():
        indices, labels, _ = function(boxes, scores, 0.5, top_k=2, score_threshold=0.0)
        assert list(zip(indices.tolist(), labels.tolist(), strict=True)) == [
            (1, 0),
            (4, 0),
            (4, 1),
            (3, 1),
        ]
        indices, _, values = function(boxes, scores, 0.5, top_k=5, max_detections=3)
        assert indices.tolist() == [1, 4, 2] and values.tolist() == pytest.approx([0.9, 0.8, 0.7])


@pytest.mark.parametrize("function", [fast_nms, standard_nms])
def test_empty_inputs(function):
    for boxes, scores in (
        (torch.zeros(0, 4), torch.zeros(0, 3)),
        (torch.ones(4, 4), torch.zeros(4, 0)),
        (torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[0.01]])),  # below the threshold
    ):
        indices, labels, values = function(boxes, scores, 0.5)
        assert indices.shape == labels.shape == values.shape == (0,)
        assert indices.dtype == labels.dtype == torch.int64


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"scores must have shape \[3, C\]"):
        fast_nms(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\]"):
        standard_nms(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="top_k"):
        fast_nms(torch.zeros(3, 4), torch.zeros(3, 2), top_k=-1)
