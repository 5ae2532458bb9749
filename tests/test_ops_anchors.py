"""AnchorGenerator against hand-computed anchors."""

from __future__ import annotations

import pytest
import torch

from instaseg.ops import AnchorGenerator


def test_cell_anchors_by_hand():
    generator = AnchorGenerator(((32.0, 64.0),), ((0.5, 1.0, 2.0),))
    # ratio h / w = 0.5: w = 32 * sqrt(2) = 45.25, h = 22.63 -> half sizes 22.63, 11.31 -> round
    want = torch.tensor(
        [
            [-23.0, -11.0, 23.0, 11.0],  # r 0.5, size 32
            [-45.0, -23.0, 45.0, 23.0],  # r 0.5, size 64
            [-16.0, -16.0, 16.0, 16.0],  # r 1, size 32
            [-32.0, -32.0, 32.0, 32.0],  # r 1, size 64
            [-11.0, -23.0, 11.0, 23.0],  # r 2, size 32
            [-23.0, -45.0, 23.0, 45.0],  # r 2, size 64
        ]
    )
    assert torch.equal(generator.cell_anchors(0), want)
    assert generator.num_anchors_per_location() == [6]


def test_grid_anchors_one_level_by_hand():
    generator = AnchorGenerator(((16.0,),), ((1.0, 2.0),))
    (anchors,) = generator.grid_anchors(
        [(2, 3)], [(8, 10)]
    )  # H = 2, W = 3; stride_h 8, stride_w 10
    cell = [[-8.0, -8.0, 8.0, 8.0], [-6.0, -11.0, 6.0, 11.0]]  # r 2: w 11.31, h 22.63
    want = []
    for i in range(2):
        for j in range(3):
            for a in cell:
                want.append([a[0] + 10 * j, a[1] + 8 * i, a[2] + 10 * j, a[3] + 8 * i])
    assert torch.equal(anchors, torch.tensor(want))


def test_pyramid_concatenation_and_counts():
    generator = AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    sizes, strides = [(8, 8), (4, 4), (2, 2)], [4, 8, 16]
    levels = generator.grid_anchors(sizes, strides)
    assert [len(x) for x in levels] == [8 * 8 * 3, 4 * 4 * 3, 2 * 2 * 3]
    anchors = generator(sizes, strides)
    assert torch.equal(anchors, torch.cat(levels))
    assert anchors.dtype == torch.float32
    # the square anchor of the last location of level 1 is centred at (3 * 8, 3 * 8)
    assert levels[1][-2].tolist() == [24.0 - 32, 24.0 - 32, 24.0 + 32, 24.0 + 32]
    assert generator(sizes, strides, dtype=torch.float64).dtype == torch.float64


def test_empty_feature_map():
    generator = AnchorGenerator(((32,),), ((1.0,),))
    assert generator([(0, 5)], [4]).shape == (0, 4)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one entry per level"):
        AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),))
    with pytest.raises(ValueError, match="sizes\\[1\\]"):
        AnchorGenerator(((32,), ()), ((1.0,), (1.0,)))
    with pytest.raises(ValueError, match="aspect_ratios\\[0\\]"):
        AnchorGenerator(((32,),), ((0.0,),))
    with pytest.raises(ValueError, match="feature sizes and strides"):
        AnchorGenerator(((32,),), ((1.0,),))([(4, 4), (2, 2)], [4, 8])
