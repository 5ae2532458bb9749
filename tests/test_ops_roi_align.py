"""roi_align against a per-RoI, per-bin, per-sample loop written from torchvision's rules."""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import pytest
import torch

from instaseg.ops import roi_align


def _bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision's bilinear_interpolate on one [C, H, W] map, written out by hand."""
    _, height, width = feature.shape
    if not (-1.0 <= y <= height and -1.0 <= x <= width):
        return np.zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feature[:, y_low, x_low]
        + hy * lx * feature[:, y_low, x_high]
        + ly * hx * feature[:, y_high, x_low]
        + ly * lx * feature[:, y_high, x_high]
    )


def _reference(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    features, rois = features.double().numpy(), rois.double().tolist()
    out_h, out_w = output_size
    result = np.zeros((len(rois), features.shape[1], out_h, out_w))
    offset = 0.5 if aligned else 0.0
    for k, (b, x0, y0, x1, y1) in enumerate(rois):
        x0, y0 = x0 * spatial_scale - offset, y0 * spatial_scale - offset
        x1, y1 = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w, roi_h = x1 - x0, y1 - y0
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for ph, pw in itertools.product(range(out_h), range(out_w)):
            total = np.zeros(features.shape[1])
            for iy, ix in itertools.product(range(grid_h), range(grid_w)):
                y = y0 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                x = x0 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                total += _bilinear(features[int(b)], y, x)
            result[k, :, ph, pw] = total / count
    return torch.from_numpy(result)


def _random_rois(generator, num, num_images, height, width, scale):
    """Boxes in input-image pixels: inside, partly outside, tiny, on the border, reversed."""
    img_h, img_w = height / scale, width / scale
    centre = torch.rand(num, 2, generator=generator) * torch.tensor(
        [img_w, img_h]
    ) * 1.4 - 0.2 * torch.tensor([img_w, img_h])
    size = torch.rand(num, 2, generator=generator) ** 2 * torch.tensor([img_w, img_h])
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, img_w, img_h])  # whole image, edges on the border
    boxes[1] = torch.tensor([img_w - 0.3, img_h - 0.2, img_w, img_h])  # tiny, bottom-right corner
    boxes[2] = torch.tensor([2.0, 3.0, 2.0, 3.0])  # zero size
    boxes[3] = torch.tensor([-5.0, -3.0, 1.0, 2.0])  # mostly outside
    boxes[4] = torch.tensor([3.0, 4.0, 1.0, 2.0])  # reversed corners
    batch = torch.randint(0, num_images, (num, 1), generator=generator).float()
    return torch.cat([batch, boxes], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25])
def test_matches_reference(aligned, sampling_ratio, spatial_scale):
    generator = torch.Generator().manual_seed(
        int(spatial_scale * 100) + sampling_ratio * 7 + aligned
    )
    features = torch.randn(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    rois = _random_rois(generator, 12, 2, 9, 11, spatial_scale).double()
    for output_size in [(3, 3), (2, 4)]:
        got = roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        want = _reference(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_float32_matches_reference():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 13, 10, generator=generator)
    rois = _random_rois(generator, 16, 2, 13, 10, 0.5)
    got = roi_align(features, rois, 4, spatial_scale=0.5, sampling_ratio=-1, aligned=True)
    want = _reference(features, rois, (4, 4), 0.5, -1, True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_list_of_boxes_equals_rois():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 8, 8, generator=generator)
    first, second = (
        torch.tensor([[1.0, 1.0, 5.0, 6.0]]),
        torch.tensor([[0.0, 2.0, 7.5, 4.0], [2.0, 2.0, 3.0, 3.0]]),
    )
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), torch.cat([first, second])], dim=1)
    torch.testing.assert_close(
        roi_align(features, [first, second], 2, sampling_ratio=2),
        roi_align(features, rois, 2, sampling_ratio=2),
    )


def test_constant_feature_gives_constant_output():
    features = torch.full((1, 2, 10, 10), 3.5)
    rois = torch.tensor(
        [[0.0, 0.0, 0.0, 10.0, 10.0], [0.0, 2.3, 1.7, 6.1, 9.9], [0.0, 4.0, 4.0, 4.2, 4.1]]
    )
    for aligned in (False, True):
        got = roi_align(features, rois, (5, 3), sampling_ratio=2, aligned=aligned)
        torch.testing.assert_close(got, torch.full_like(got, 3.5))


def test_linear_ramp_gives_exact_bin_centres():
    # value = x at feature pixel (i, j) sitting at x = j (aligned=False); a bilinear sample of
    # a linear function is exact, so each bin averages its sample x positions: the bin centre
    height, width = 6, 16
    ramp = torch.arange(width, dtype=torch.float64).expand(1, 1, height, width)
    rois = torch.tensor([[0.0, 2.0, 1.0, 10.0, 4.0]], dtype=torch.float64)
    got = roi_align(ramp, rois, (1, 4), sampling_ratio=2)
    torch.testing.assert_close(
        got.flatten(), torch.tensor([3.0, 5.0, 7.0, 9.0], dtype=torch.float64)
    )
    # aligned=True shifts by half a pixel: pixel j holds the value at x = j + 0.5
    got = roi_align(ramp, rois, (1, 4), sampling_ratio=2, aligned=True)
    torch.testing.assert_close(
        got.flatten(), torch.tensor([2.5, 4.5, 6.5, 8.5], dtype=torch.float64)
    )


def test_samples_beyond_minus_one_are_zero():
    features = torch.ones(1, 1, 4, 4)
    # one sample per bin at y, x = -1.5 (outside) and at 0.5 (inside)
    rois = torch.tensor([[0.0, -2.0, -2.0, 1.0, 1.0]])
    got = roi_align(features, rois, 2, sampling_ratio=1)
    torch.testing.assert_close(got[0, 0], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_empty_boxes():
    features = torch.randn(2, 5, 8, 8, requires_grad=True)
    got = roi_align(features, torch.zeros(0, 5), (7, 6))
    assert got.shape == (0, 5, 7, 6)
    got.sum().backward()
    assert torch.equal(features.grad, torch.zeros_like(features))
    assert roi_align(features, [torch.zeros(0, 4), torch.zeros(0, 4)], 3).shape == (0, 5, 3, 3)


@pytest.mark.parametrize(
    ("aligned", "ratio", "output_size", "height"),
    [
        (False, 2, (2, 3), 5),
        (True, -1, (2, 3), 5),
        # a big map sampled once per bin: both axes use the tap-list (banded) operator
        (False, 1, (2, 2), 9),
        (True, 1, (3, 2), 9),
    ],
)
def test_gradcheck(aligned, ratio, output_size, height):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 1, height, 6 + height // 2, generator=generator, dtype=torch.float64)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.2, 3.9], [1, -1.0, 1.0, 6.5, 5.5], [1, 2.0, 2.0, 2.5, 2.1]],
        dtype=torch.float64,
    )
    rois[:, 1:] *= height / 5

    def pool(f):
        return roi_align(f, rois, output_size, 1.0, ratio, aligned)

    assert torch.autograd.gradcheck(pool, (features.requires_grad_(),))


def test_mixed_sizes_across_chunks(monkeypatch):
    # a tiny chunk budget forces many chunks and both operator layouts; results must not change
    # the package exports the function under the module's name, so fetch the module itself
    module = importlib.import_module("instaseg.ops.roi_align")

    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 20, 24, generator=generator, dtype=torch.float64)
    rois = _random_rois(generator, 40, 2, 20, 24, 1.0).double()
    want = roi_align(features, rois, 3, sampling_ratio=1)
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 64)
    torch.testing.assert_close(
        roi_align(features, rois, 3, sampling_ratio=1), want, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        roi_align(features, rois, 3, sampling_ratio=-1),
        _reference(features, rois, (3, 3), 1.0, -1, False),
        rtol=0,
        atol=1e-12,
    )


def test_rejects_bad_arguments():
    features = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="boxes"):
        roi_align(features, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(features, torch.tensor([[1.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(features, torch.zeros(0, 5), 0)
    with pytest.raises(ValueError, match="input"):
        roi_align(torch.zeros(1, 4, 4), torch.zeros(0, 5), 2)


def test_low_precision_and_channels_last_inputs():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 4, 10, 12, generator=generator)
    rois = _random_rois(generator, 10, 2, 10, 12, 1.0)
    want = roi_align(features, rois, 3, sampling_ratio=2)
    got = roi_align(
        features.contiguous(memory_format=torch.channels_last), rois, 3, sampling_ratio=2
    )
    torch.testing.assert_close(got, want)
    half = roi_align(features.bfloat16(), rois, 3, sampling_ratio=2)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), want, rtol=0.02, atol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(2, 8, 30, 40, generator=generator)
    rois = _random_rois(generator, 50, 2, 30, 40, 0.5)
    want = roi_align(features, rois, 7, spatial_scale=0.5, sampling_ratio=-1, aligned=True)
    got = roi_align(
        features.cuda(), rois.cuda(), 7, spatial_scale=0.5, sampling_ratio=-1, aligned=True
    )
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
