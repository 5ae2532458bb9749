"""encode_boxes / decode_boxes: hand case, round trip, per-class deltas, clamp behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.ops import decode_boxes, encode_boxes


def _random_boxes(seed: int, num: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(num, 2, generator=generator, dtype=torch.float64) * 500
    size = 1 + torch.rand(num, 2, generator=generator, dtype=torch.float64) * 200
    return torch.cat([corner, corner + size], dim=1)


def test_hand_computed():
    proposal = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size (20, 40)
    target = torch.tensor([[15.0, 20.0, 55.0, 80.0]])  # centre (35, 50), size (40, 60)
    deltas = encode_boxes(target, proposal, weights=(10.0, 10.0, 5.0, 5.0))
    want = torch.tensor([[10 * 15 / 20, 10 * 10 / 40, 5 * math.log(2.0), 5 * math.log(1.5)]])
    torch.testing.assert_close(deltas, want)
    torch.testing.assert_close(
        decode_boxes(deltas, proposal, weights=(10.0, 10.0, 5.0, 5.0)), target
    )


@pytest.mark.parametrize(
    "weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 0.5)]
)
def test_round_trip(weights):
    proposals, targets = _random_boxes(0, 50), _random_boxes(1, 50)
    deltas = encode_boxes(targets, proposals, weights)
    torch.testing.assert_close(decode_boxes(deltas, proposals, weights), targets, rtol=0, atol=1e-9)
    torch.testing.assert_close(
        encode_boxes(decode_boxes(deltas, proposals, weights), proposals, weights), deltas
    )


def test_identity_and_empty():
    boxes = _random_boxes(2, 10)
    assert torch.equal(encode_boxes(boxes, boxes), torch.zeros(10, 4, dtype=torch.float64))
    torch.testing.assert_close(decode_boxes(torch.zeros(10, 4, dtype=torch.float64), boxes), boxes)
    assert encode_boxes(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert decode_boxes(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert decode_boxes(torch.zeros(0, 3, 4), torch.zeros(0, 4)).shape == (0, 3, 4)


def test_per_class_deltas():
    proposals = _random_boxes(3, 6)
    per_class = [_random_boxes(10 + c, 6) for c in range(3)]
    deltas = torch.stack([encode_boxes(t, proposals) for t in per_class], dim=1)  # [6, 3, 4]
    decoded = decode_boxes(deltas, proposals)
    assert decoded.shape == (6, 3, 4)
    for c in range(3):
        torch.testing.assert_close(decoded[:, c], per_class[c], rtol=0, atol=1e-9)


def test_scale_deltas_are_clamped_before_exp():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[0.0, 0.0, 50.0, 1e4]])
    decoded = decode_boxes(huge, box)
    # dw, dh clamp to log(1000 / 16): the box grows at most to 1000 x 1000, centred at (8, 8)
    torch.testing.assert_close(decoded, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]))
    assert torch.isfinite(decoded).all()
    # the clamp applies after dividing by the weight, and only from above
    decoded = decode_boxes(
        torch.tensor([[0.0, 0.0, 5 * math.log(2.0), -50.0]]), box, (1.0, 1.0, 5.0, 5.0)
    )
    torch.testing.assert_close(decoded[0, 2] - decoded[0, 0], torch.tensor(32.0))
    # no clamp from below: the height shrinks to 16 * e^-10, far under 16 / 62.5
    assert abs((decoded[0, 3] - decoded[0, 1]).item() - 16 * math.exp(-10)) < 1e-5
    decoded = decode_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), box, clamp=0.5)
    torch.testing.assert_close(decoded[0, 2] - decoded[0, 0], torch.tensor(16 * math.exp(0.5)))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same shape"):
        encode_boxes(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="deltas"):
        decode_boxes(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="weights"):
        decode_boxes(torch.zeros(3, 4), torch.zeros(3, 4), weights=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(TypeError, match="proposals"):
        encode_boxes(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.int64))
