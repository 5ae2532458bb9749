"""Memory-layout conversions: same values, the promised strides, gradients pass through."""

from __future__ import annotations

import pytest
import torch

from instaseg.ops.layout import to_channels_first, to_channels_last


@pytest.mark.parametrize("shape", [(1, 5, 40, 36), (3, 4, 7, 6), (2, 3, 33, 32)])
def test_round_trip_keeps_values_and_sets_strides(shape):
    features = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    last = to_channels_last(features)
    assert torch.equal(last, features)
    assert last.is_contiguous(memory_format=torch.channels_last)
    first = to_channels_first(last)
    assert torch.equal(first, features) and first.is_contiguous()
    assert to_channels_last(last) is last and to_channels_first(features) is features


def test_writes_into_a_given_row_buffer():
    features = torch.randn(2, 3, 40, 30)
    rows = torch.empty(2 * 40 * 30, 3)
    view = to_channels_last(features, out=rows)
    assert torch.equal(view, features) and view.data_ptr() == rows.data_ptr()
    torch.testing.assert_close(rows, features.permute(0, 2, 3, 1).reshape(-1, 3))


def test_gradients_pass_through():
    features = torch.randn(1, 4, 40, 40, requires_grad=True)
    weights = torch.randn(1, 4, 40, 40)
    (to_channels_first(to_channels_last(features)) * weights).sum().backward()
    torch.testing.assert_close(features.grad, weights)
