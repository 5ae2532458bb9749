"""Multi-level RoIAlign: FPN level rule by hand, and pooling equal to per-box roi_align."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.ops import assign_fpn_levels, roi_align, roi_pool_levels


def _square(side: float, x: float = 0.0, y: float = 0.0) -> list[float]:
    return [x, y, x + side, y + side]


def test_level_rule_by_hand():
    sides = [224.0, 223.0, 112.0, 111.0, 448.0, 447.0, 8.0, 5000.0, 56.0]
    boxes = torch.tensor([_square(s) for s in sides])
    # floor(4 + log2(side / 224 + 1e-6)) clamped to [2, 5]
    want = [4, 3, 3, 2, 5, 4, 2, 5, 2]
    assert assign_fpn_levels(boxes, 2, 5).tolist() == want
    for side, level in zip(sides, want, strict=True):
        assert level == min(5, max(2, math.floor(4 + math.log2(side / 224 + 1e-6))))


def test_level_rule_uses_area_and_canonical_arguments():
    boxes = torch.tensor([[0.0, 0.0, 448.0, 112.0], [0.0, 0.0, 0.0, 50.0]])  # sqrt area 224; empty
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [4, 2]
    assert assign_fpn_levels(boxes, 2, 6, canonical_scale=112, canonical_level=3).tolist() == [4, 2]


def _pyramid(generator, num_images=2, channels=3, size=64, strides=(4, 8, 16, 32)):
    return [
        torch.randn(
            num_images, channels, size // s, size // s, generator=generator, dtype=torch.float64
        )
        for s in strides
    ], list(strides)


def test_pools_each_box_from_its_level_in_input_order():
    generator = torch.Generator().manual_seed(0)
    features, strides = _pyramid(generator, size=512)
    boxes = [
        torch.tensor(
            [_square(300, 10, 20), _square(20, 5, 5), _square(130, 100, 50)], dtype=torch.float64
        ),
        torch.tensor([_square(60, 0, 0), _square(500, 0, 0)], dtype=torch.float64),
    ]
    got = roi_pool_levels(features, strides, boxes, (7, 5), sampling_ratio=2)
    assert got.shape == (5, 3, 7, 5)
    levels = [4, 2, 3, 2, 5]  # from the level rule on sides 300, 20, 130, 60, 500
    images = [0, 0, 0, 1, 1]
    flat = torch.cat(boxes)
    for k, (level, image) in enumerate(zip(levels, images, strict=True)):
        index = level - 2
        rois = torch.cat(
            [torch.tensor([[float(image)]], dtype=torch.float64), flat[k : k + 1]], dim=1
        )
        want = roi_align(features[index], rois, (7, 5), 1.0 / strides[index], 2)
        torch.testing.assert_close(got[k : k + 1], want, rtol=0, atol=0)


def test_single_level_and_empty():
    generator = torch.Generator().manual_seed(1)
    features, strides = _pyramid(generator, strides=(8,))
    boxes = [
        torch.tensor([_square(30, 2, 2)], dtype=torch.float64),
        torch.zeros(0, 4, dtype=torch.float64),
    ]
    got = roi_pool_levels(features, strides, boxes, 4)
    want = roi_align(features[0], boxes, 4, 1 / 8, 2)
    torch.testing.assert_close(got, want)
    features, strides = _pyramid(generator)
    empty = roi_pool_levels(features, strides, [torch.zeros(0, 4), torch.zeros(0, 4)], 7)
    assert empty.shape == (0, 3, 7, 7)


def test_gradients_reach_every_level():
    generator = torch.Generator().manual_seed(2)
    features, strides = _pyramid(generator, num_images=1, size=512)
    features = [f.requires_grad_() for f in features]
    boxes = [
        torch.tensor([_square(20), _square(130), _square(300), _square(500)], dtype=torch.float64)
    ]
    roi_pool_levels(features, strides, boxes, 3).sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


def test_rejects_bad_pyramids():
    generator = torch.Generator().manual_seed(3)
    features, strides = _pyramid(generator)
    boxes = [torch.zeros(0, 4), torch.zeros(0, 4)]
    with pytest.raises(ValueError, match="strides"):
        roi_pool_levels(features, [4, 8, 16], boxes, 7)
    with pytest.raises(ValueError, match="power of two"):
        roi_pool_levels(features, [4, 8, 12, 32], boxes, 7)
    with pytest.raises(ValueError, match="double"):
        roi_pool_levels(features, [4, 8, 32, 64], boxes, 7)
    with pytest.raises(ValueError, match="one \\[L, 4\\] tensor per image"):
        roi_pool_levels(features, strides, boxes[:1], 7)
    with pytest.raises(ValueError, match="boxes\\[1\\]"):
        roi_pool_levels(features, strides, [torch.zeros(0, 4), torch.zeros(2, 5)], 7)


@pytest.mark.parametrize("sampling_ratio", [-1, 1, 3])
def test_other_sampling_ratios_pool_each_box_from_its_level(sampling_ratio):
    # ratios up to 2 pool all levels as one bag of taps, others level by level: same results
    generator = torch.Generator().manual_seed(2)
    features, strides = _pyramid(generator, num_images=1, size=256)
    boxes = [
        torch.tensor(
            [_square(200, 10, 20), _square(20, 5, 5), _square(90, 30, 50)], dtype=torch.float64
        )
    ]
    got = roi_pool_levels(features, strides, boxes, 4, sampling_ratio=sampling_ratio)
    for k, level in enumerate([3, 2, 2]):  # sides 200, 20, 90
        rois = torch.cat([torch.zeros(1, 1, dtype=torch.float64), boxes[0][k : k + 1]], dim=1)
        want = roi_align(features[level - 2], rois, 4, 1.0 / strides[level - 2], sampling_ratio)
        torch.testing.assert_close(got[k : k + 1], want, rtol=0, atol=1e-12)


def test_stacked_levels_pool_the_same_without_restacking():
    from instaseg.ops.poolers import stack_levels

    generator = torch.Generator().manual_seed(3)
    features, strides = _pyramid(generator, size=128)
    features[2] = features[2].contiguous(memory_format=torch.channels_last)
    boxes = [
        torch.tensor([_square(100, 5, 5), _square(20, 40, 30)], dtype=torch.float64),
        torch.tensor([_square(60, 10, 10)], dtype=torch.float64),
    ]
    leaves = [f.clone().requires_grad_() for f in features]
    stacked = stack_levels(leaves)
    assert all(torch.equal(a, b) for a, b in zip(stacked, features, strict=True))
    assert all(s.is_contiguous(memory_format=torch.channels_last) for s in stacked)
    got = roi_pool_levels(stacked, strides, boxes, 5)
    torch.testing.assert_close(got, roi_pool_levels(features, strides, boxes, 5), rtol=0, atol=0)
    got.sum().backward()
    plain = [f.clone().requires_grad_() for f in features]
    roi_pool_levels(plain, strides, boxes, 5).sum().backward()
    for a, b in zip(leaves, plain, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
