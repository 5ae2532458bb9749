"""paste_masks_in_image against a per-pixel bilinear loop, and the all-ones coverage rule."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.ops import paste_masks_in_image


def _reference(mask_probs, boxes, image_size, threshold):
    """Per pixel: is the centre in the box, then bilinear between cell centres, edge held.
    Returns (bool masks, float values) so that near-threshold pixels can be told apart."""
    height, width = image_size
    count, cells_h, cells_w = mask_probs.shape
    values = torch.full((count, height, width), -1.0, dtype=torch.float64)
    probs = mask_probs.double().tolist()
    for n, (x0, y0, x1, y1) in enumerate(boxes.double().tolist()):
        for i in range(height):
            for j in range(width):
                cx, cy = j + 0.5, i + 0.5
                if not (x0 <= cx < x1 and y0 <= cy < y1):
                    continue
                u = min(max((cx - x0) / (x1 - x0) * cells_w - 0.5, 0.0), cells_w - 1)
                v = min(max((cy - y0) / (y1 - y0) * cells_h - 0.5, 0.0), cells_h - 1)
                a, b = math.floor(v), math.floor(u)
                a1, b1 = min(a + 1, cells_h - 1), min(b + 1, cells_w - 1)
                fv, fu = v - a, u - b
                values[n, i, j] = (
                    (1 - fv) * (1 - fu) * probs[n][a][b]
                    + (1 - fv) * fu * probs[n][a][b1]
                    + fv * (1 - fu) * probs[n][a1][b]
                    + fv * fu * probs[n][a1][b1]
                )
    return values >= threshold, values


@pytest.mark.parametrize("seed", range(6))
def test_matches_per_pixel_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    count, size = 5, (23, 31)
    cells = (4, 4) if seed % 2 == 0 else (3, 5)
    probs = torch.rand(count, *cells, generator=generator)
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([36.0, 28.0]) - 4
    extent = 0.3 + torch.rand(count, 2, generator=generator) * 18
    boxes = torch.cat([corner, corner + extent], dim=1)  # some cross the image border
    boxes[0] = torch.tensor([0.0, 0.0, 31.0, 23.0])
    threshold = [0.5, 0.3, 0.7][seed % 3]
    got = paste_masks_in_image(probs, boxes, size, threshold)
    want, values = _reference(probs, boxes, size, threshold)
    assert got.dtype == torch.bool and got.shape == (count, *size)
    undecided = (values - threshold).abs() < 1e-5
    assert torch.equal(got & ~undecided, want & ~undecided)


@pytest.mark.parametrize(
    "box",
    [
        [2.0, 3.0, 9.0, 7.0],
        [2.5, 3.5, 9.5, 7.5],
        [2.4, 3.6, 2.6, 3.4],
        [-3.3, -2.0, 4.7, 30.0],
        [10.49, 0.51, 15.51, 6.49],
    ],
)
def test_all_ones_covers_exactly_the_pixel_centres_inside_the_box(box):
    height, width = 12, 14
    got = paste_masks_in_image(torch.ones(1, 28, 28), torch.tensor([box]), (height, width))
    centres_x = torch.arange(width) + 0.5
    centres_y = torch.arange(height) + 0.5
    inside_x = (centres_x >= box[0]) & (centres_x < box[2])
    inside_y = (centres_y >= box[1]) & (centres_y < box[3])
    assert torch.equal(got[0], inside_y[:, None] & inside_x[None, :])


def test_integer_box_and_one_cell_mask():
    got = paste_masks_in_image(
        torch.full((1, 1, 1), 0.6), torch.tensor([[1.0, 2.0, 4.0, 3.0]]), (4, 5)
    )
    want = torch.zeros(4, 5, dtype=torch.bool)
    want[2, 1:4] = True
    assert torch.equal(got[0], want)


def test_left_half_mask():
    # a 2-cell-wide mask [1, 0]: values fall from 1 at the left cell centre to 0 at the right
    probs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    got = paste_masks_in_image(probs, torch.tensor([[0.0, 0.0, 8.0, 2.0]]), (2, 8))
    # pixel centres j + 0.5 sit at cell coordinate (j + 0.5) / 4 - 0.5: >= 0.5 up to j = 3
    assert got[0, 0].tolist() == [True] * 4 + [False] * 4


def test_empty_and_degenerate():
    assert paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (7, 9)).shape == (
        0,
        7,
        9,
    )
    boxes = torch.tensor([[3.0, 3.0, 3.0, 8.0], [20.0, 20.0, 30.0, 30.0], [5.0, 5.0, 4.0, 4.0]])
    got = paste_masks_in_image(torch.ones(3, 28, 28), boxes, (10, 10))
    assert not got.any()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mask_probs"):
        paste_masks_in_image(torch.zeros(2, 1, 28, 28), torch.zeros(2, 4), (10, 10))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(torch.zeros(2, 28, 28), torch.zeros(3, 4), (10, 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(9)
    probs = torch.rand(20, 28, 28, generator=generator)
    corner = torch.rand(20, 2, generator=generator) * 60
    boxes = torch.cat([corner, corner + 5 + torch.rand(20, 2, generator=generator) * 40], dim=1)
    want = paste_masks_in_image(probs, boxes, (80, 90))
    got = paste_masks_in_image(probs.cuda(), boxes.cuda(), (80, 90)).cpu()
    assert (got != want).float().mean() < 1e-3  # only float ties at the threshold may differ
