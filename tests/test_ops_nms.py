"""nms / batched_nms against greedy suppression written as explicit Python loops."""

from __future__ import annotations

import importlib

import pytest
import torch
from naive_boxes import iou

from instaseg.ops import batched_nms, nms


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    box_list, score_list = boxes.tolist(), scores.tolist()
    order = sorted(range(len(box_list)), key=lambda i: -score_list[i])  # stable: ties by index
    kept: list[int] = []
    for i in order:
        if all(iou(box_list[k], box_list[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


def _random_case(seed: int, num: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(num, 2, generator=generator, dtype=dtype) * 100
    size = torch.rand(num, 2, generator=generator, dtype=dtype) * 40
    boxes = torch.cat([corner, corner + size], dim=1)
    # quantised scores give many ties; a few exact duplicates and zero-area boxes
    scores = (torch.rand(num, generator=generator, dtype=dtype) * 8).floor() / 8
    if num >= 10:
        boxes[3] = boxes[7]
        boxes[5] = boxes[2]
        scores[5] = scores[2]
        boxes[8, 2] = boxes[8, 0]  # zero width
        boxes[9, 2:] = boxes[9, :2]  # a point
        boxes[4] = boxes[9]  # two identical points
    return boxes, scores


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_greedy_loop(seed, threshold):
    boxes, scores = _random_case(seed, 60 + 7 * seed)
    got = nms(boxes, scores, threshold)
    assert got.dtype == torch.int64
    assert got.tolist() == _greedy(boxes, scores, threshold)


def test_nms_many_boxes_across_blocks():
    # more boxes than one block, clustered so that suppression chains cross block boundaries
    boxes, scores = _random_case(123, 600)
    boxes[:, 0::2] *= 0.3
    for threshold in (0.2, 0.5):
        assert nms(boxes, scores, threshold).tolist() == _greedy(boxes, scores, threshold)


def test_nms_chain_needs_many_sweeps(monkeypatch):
    # box i overlaps only box i + 1: keep alternates, the worst case for the block resolver
    module = importlib.import_module("instaseg.ops.nms")
    monkeypatch.setattr(module, "_BLOCK", 16)
    x = torch.arange(40, dtype=torch.float64) * 6
    boxes = torch.stack([x, torch.zeros(40), x + 10, torch.ones(40) * 10], dim=1)
    scores = torch.linspace(1, 0, 40, dtype=torch.float64)
    assert nms(boxes, scores, 0.2).tolist() == list(range(0, 40, 2))
    assert nms(boxes, scores, 0.2).tolist() == _greedy(boxes, scores, 0.2)


def test_nms_float32():
    boxes, scores = _random_case(7, 300, dtype=torch.float32)
    assert nms(boxes, scores, 0.5).tolist() == _greedy(boxes, scores, 0.5)


def test_nms_threshold_compared_as_double():
    # IoU exactly 0.3 in float32 arithmetic rounds above the double 0.3, like torchvision's
    # float IoU compared with a double threshold: strictly greater suppresses
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 3.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    iou = 30.0 / 100.0
    assert torch.tensor(iou, dtype=torch.float32).double() > iou
    assert nms(boxes, scores, iou).tolist() == [0]
    assert nms(boxes.double(), scores.double(), iou).tolist() == [0, 1]


def test_nms_hand_case_and_ties():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 50, 60]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.95])
    # IoU(0, 1) = 81 / 119 = 0.68; box 3 duplicates box 0 and loses the tie on index
    assert nms(boxes, scores, 0.5).tolist() == [4, 1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [4, 1, 0, 2]


def test_nms_border_boxes():
    boxes = torch.tensor(
        [[0, 0, 640, 480], [0, 0, 640, 470], [600, 440, 640, 480]], dtype=torch.float32
    )
    scores = torch.tensor([0.8, 0.9, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
    ).shape == (0,)


def test_nms_zero_area_boxes_are_kept():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(10))
def test_batched_nms_matches_per_class_loop(seed):
    boxes, scores = _random_case(100 + seed, 150)
    generator = torch.Generator().manual_seed(seed)
    idxs = torch.randint(0, 1 + seed, (150,), generator=generator)
    kept = []
    for category in idxs.unique().tolist():
        members = torch.nonzero(idxs == category).flatten().tolist()
        kept += [members[i] for i in _greedy(boxes[members], scores[members], 0.5)]
    kept.sort(key=lambda i: (-scores[i].item(), i))
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == kept


def test_batched_nms_large_coordinates_do_not_leak_across_classes():
    boxes = torch.tensor([[1e5, 1e5, 1e5 + 10, 1e5 + 10], [1e5 + 1, 1e5, 1e5 + 11, 1e5 + 10]])
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([0, 0]), 0.5).tolist() == [0]
    assert batched_nms(boxes, scores, torch.tensor([3, 70]), 0.5).tolist() == [0, 1]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="boxes"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="idxs"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    boxes, scores = _random_case(5, 700, dtype=torch.float32)
    idxs = torch.arange(700) % 3
    assert nms(boxes.cuda(), scores.cuda(), 0.5).cpu().tolist() == nms(boxes, scores, 0.5).tolist()
    got = batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu()
    assert got.tolist() == batched_nms(boxes, scores, idxs, 0.5).tolist()


@pytest.mark.parametrize(("num", "k", "categories"), [(3000, 100, 20), (400, 300, 3), (30, 50, 2)])
def test_batched_nms_top_k_equals_the_head_of_batched_nms(num, k, categories):
    from instaseg.ops import batched_nms_top_k

    generator = torch.Generator().manual_seed(num)
    corner = torch.rand(num, 2, generator=generator) * 300
    boxes = torch.cat([corner, corner + torch.rand(num, 2, generator=generator) * 80 + 1], dim=1)
    scores = torch.rand(num, generator=generator).round(decimals=2)  # many ties
    idxs = torch.randint(0, categories, (num,), generator=generator)
    want = batched_nms(boxes, scores, idxs, 0.5)[:k]
    assert torch.equal(batched_nms_top_k(boxes, scores, idxs, 0.5, k), want)
    assert batched_nms_top_k(boxes, scores, idxs, 0.5, 0).numel() == 0
