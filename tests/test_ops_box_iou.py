"""box_iou, generalized_box_iou and box_ioa: hand cases, empty inputs, symmetry, a loop."""

from __future__ import annotations

import pytest
import torch

from instaseg.ops import box_ioa, box_iou, generalized_box_iou


def _pair_terms(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """Intersection, union, enclosing area and area of b for two xyxy boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter, area_a + area_b - inter, enclosing, area_b


def _loop(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    result = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, box_a in enumerate(a.tolist()):
        for j, box_b in enumerate(b.tolist()):
            inter, union, enclosing, area_b = _pair_terms(box_a, box_b)
            iou = inter / union if union > 0 else 0.0
            if kind == "iou":
                result[i, j] = iou
            elif kind == "giou":
                result[i, j] = iou - ((enclosing - union) / enclosing if enclosing > 0 else 0.0)
            else:
                result[i, j] = inter / area_b if area_b > 0 else 0.0
    return result


def _boxes(seed: int, num: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(num, 2, generator=generator, dtype=torch.float64) * 50
    size = torch.rand(num, 2, generator=generator, dtype=torch.float64) * 30
    size[::5] = 0  # some zero-area boxes
    return torch.cat([corner, corner + size], dim=1)


def test_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor(
        [[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.5, 0.5, 1.0, 1.0]]
    )
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0, 0.0625]]))
    # enclosing boxes: 3x3 = 9, 4x2 = 8, 2x2, 2x2
    torch.testing.assert_close(
        generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, 0.0, 1.0, 0.0625]])
    )
    torch.testing.assert_close(box_ioa(a, b), torch.tensor([[0.25, 0.0, 1.0, 1.0]]))
    # disjoint boxes far apart approach GIoU -1
    far = torch.tensor([[100.0, 100.0, 102.0, 102.0]])
    assert generalized_box_iou(a, far).item() < -0.99


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou, box_ioa])
def test_empty_inputs(fn):
    boxes = torch.rand(3, 4)
    assert fn(torch.zeros(0, 4), boxes).shape == (0, 3)
    assert fn(boxes, torch.zeros(0, 4)).shape == (3, 0)
    assert fn(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 0)


@pytest.mark.parametrize("seed", range(5))
def test_against_loop_and_symmetry(seed):
    a, b = _boxes(seed, 13), _boxes(seed + 50, 9)
    for fn, kind in [(box_iou, "iou"), (generalized_box_iou, "giou"), (box_ioa, "ioa")]:
        torch.testing.assert_close(fn(a, b), _loop(a, b, kind), rtol=0, atol=1e-12)
    torch.testing.assert_close(box_iou(a, b), box_iou(b, a).T)
    torch.testing.assert_close(generalized_box_iou(a, b), generalized_box_iou(b, a).T)


def test_zero_area_pairs_are_finite():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(point, point).item() == 0.0
    assert generalized_box_iou(point, point).item() == 0.0
    assert box_ioa(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), point).item() == 0.0
    assert torch.isfinite(generalized_box_iou(_boxes(1, 20), _boxes(2, 20))).all()


def test_ranges():
    a, b = _boxes(3, 30), _boxes(4, 30)
    assert ((box_iou(a, b) >= 0) & (box_iou(a, b) <= 1)).all()
    giou = generalized_box_iou(a, b)
    assert ((giou >= -1) & (giou <= 1)).all()
    assert (giou <= box_iou(a, b) + 1e-12).all()
