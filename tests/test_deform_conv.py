import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import instaseg.ops.deform_conv as deform_conv_module
from instaseg.models import load_resnet_weights, optimize_for_inference, resnet18, resnet50
from instaseg.models.backbones import resnet_fpn
from instaseg.models.deform_conv import ModulatedDeformConv2d
from instaseg.ops.deform_conv import deform_conv2d

FIXTURES = Path(__file__).parent / "fixtures"
DCN_R50 = {"dcn_stages": ("c3", "c4", "c5"), "dcn_interval": 3}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These tensors are tiny: on a shared CPU, intra-op threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(value):
    return (value, value) if isinstance(value, int) else value


def _out_size(size, kernel, stride, padding, dilation):
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    return tuple(
        (size[d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
        for d in range(2)
    )


def bilinear(image: np.ndarray, y: float, x: float) -> float:
    """Bilinear value of image [H, W] at (y, x), pixel (r, s) at y = r, x = s, zero outside."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for row, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for col, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= row < height and 0 <= col < width:
                total += wy * wx * image[row, col]
    return total


def naive_deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask):
    """torchvision's definition, one output value and one tap at a time, in float64."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    x, off, w = input.double().numpy(), offset.double().numpy(), weight.double().numpy()
    m = None if mask is None else mask.double().numpy()
    batch, channels, _, _ = x.shape
    out_channels, group_channels, kh, kw = w.shape
    groups, taps = channels // group_channels, kh * kw
    offset_groups = off.shape[1] // (2 * taps)
    out_h, out_w = off.shape[2:]
    out = np.zeros((batch, out_channels, out_h, out_w))
    for b in range(batch):
        for o in range(out_channels):
            group = o // (out_channels // groups)
            for oy in range(out_h):
                for ox in range(out_w):
                    total = 0.0 if bias is None else float(bias[o])
                    for ci in range(group_channels):
                        c = group * group_channels + ci
                        g = c // (channels // offset_groups)
                        for i in range(kh):
                            for j in range(kw):
                                k = g * taps + i * kw + j
                                y = oy * sh - ph + i * dh + off[b, 2 * k, oy, ox]
                                xx = ox * sw - pw + j * dw + off[b, 2 * k + 1, oy, ox]
                                scale = 1.0 if m is None else m[b, k, oy, ox]
                                total += w[o, ci, i, j] * scale * bilinear(x[b, c], y, xx)
                    out[b, o, oy, ox] = total
    return torch.from_numpy(out)


CONV_CASES = [
    # (C_in, C_out, kernel, stride, padding, dilation, groups)
    (4, 6, (3, 3), 1, 1, 1, 1),
    (4, 6, (3, 3), 2, 1, 1, 2),
    (6, 4, (3, 3), 1, 2, 2, 1),
    (4, 8, (2, 3), (2, 1), (0, 2), (1, 2), 4),
    (3, 5, (1, 1), 3, 0, 1, 1),
    (4, 4, (5, 1), 1, (2, 0), 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_zero_offsets_and_unit_mask_equal_conv2d(case):
    c_in, c_out, kernel, stride, padding, dilation, groups = case
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 11, 13, generator=generator)
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=generator)
    weight /= math.sqrt(weight[0].numel())
    bias = torch.randn(c_out, generator=generator)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    for offset_groups in (1, 2) if c_in % 2 == 0 else (1,):
        taps = kernel[0] * kernel[1]
        offset = torch.zeros(2, 2 * offset_groups * taps, *expected.shape[2:])
        mask = torch.ones(2, offset_groups * taps, *expected.shape[2:])
        for m in (None, mask):
            out = deform_conv2d(
                x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=m
            )
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_integer_offsets_equal_conv_of_shifted_input(case):
    c_in, c_out, kernel, stride, padding, dilation, groups = case
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, c_in, 9, 10, generator=generator)
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=generator) / 3
    dy, dx = 1, -2
    # The padded input shifted with zero fill, shifted[u, v] = x[u - pad_h + dy, v - pad_w + dx]
    # (zero outside x), convolved without padding: each tap reads (dy, dx) pixels away.
    (pad_h, pad_w), margin = _pair(padding), 5
    wide = F.pad(x, (margin,) * 4)
    top, left = margin - pad_h + dy, margin - pad_w + dx
    shifted = wide[:, :, top : top + 9 + 2 * pad_h, left : left + 10 + 2 * pad_w]
    expected = F.conv2d(shifted, weight, None, stride, 0, dilation, groups)
    taps = kernel[0] * kernel[1]
    offset = torch.tensor([float(dy), float(dx)]).repeat(taps).reshape(1, 2 * taps, 1, 1)
    offset = offset.expand(2, -1, *expected.shape[2:])
    out = deform_conv2d(x, offset, weight, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_hand_computed_samples():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    weight = torch.ones(1, 1, 1, 1)
    # (dy, dx) at the four output pixels: inside, half outside at the top, at y = -1, at y = H
    offset = torch.tensor([[0.5, 0.25], [-1.5, 0.0], [-2.0, 0.5], [1.0, -1.0]])
    offset = offset.reshape(2, 2, 2).permute(2, 0, 1)[None]  # [1, 2, 2, 2]
    out = deform_conv2d(x, offset, weight)
    # (0.5, 0.25): rows 0/1 half each, cols 0/1 at 3/4 and 1/4 -> (1.25 + 3.25) / 2
    # (0, 1) + (-1.5, 0) = (-1.5, 1): outside; (1, 0) + (-2, 0.5) = (-1, 0.5): nothing
    # (1, 1) + (1, -1) = (2, 0) = (H, 0): nothing
    assert torch.allclose(out, torch.tensor([[[[2.25, 0.0], [0.0, 0.0]]]]))
    half_row_up = torch.tensor([-0.5, 0.0]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2)
    out = deform_conv2d(x, half_row_up, weight)
    # the mean of each pixel and the one above it, zero above the image
    assert torch.allclose(out, torch.tensor([[[[0.5, 1.0], [2.0, 3.0]]]]))


@pytest.mark.parametrize(
    "case",
    [
        (4, 4, (3, 3), 1, 1, 1, 1, 2),
        (4, 6, (2, 3), (2, 1), (1, 0), (1, 2), 2, 1),
        (6, 2, (3, 2), 2, 2, 2, 2, 3),
    ],
)
def test_fractional_offsets_and_mask_match_naive_reference(case):
    c_in, c_out, kernel, stride, padding, dilation, groups, offset_groups = case
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, c_in, 5, 6, generator=generator)
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=generator)
    bias = torch.randn(c_out, generator=generator)
    out_size = _out_size((5, 6), kernel, stride, padding, dilation)
    taps = kernel[0] * kernel[1]
    # offsets of a few pixels: many samples land outside the image, some straddle its border
    offset = 2 * torch.randn(2, 2 * offset_groups * taps, *out_size, generator=generator)
    mask = torch.rand(2, offset_groups * taps, *out_size, generator=generator)
    expected = naive_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        out = deform_conv2d(
            x.to(dtype),
            offset.to(dtype),
            weight.to(dtype),
            bias.to(dtype),
            stride=stride,
            padding=padding,
            dilation=dilation,
            mask=mask.to(dtype),
        )
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), expected, atol=tolerance, rtol=tolerance)


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, 5, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    # whole pixels plus fractions in [0.2, 0.8], so no sample sits on a pixel row or column
    whole = torch.randint(-2, 3, (1, 36, 4, 5), generator=generator).double()
    fraction = 0.2 + 0.6 * torch.rand(1, 36, 4, 5, generator=generator, dtype=torch.float64)
    offset = whole + fraction
    mask = torch.rand(1, 18, 4, 5, generator=generator, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, offset, weight, bias, mask))

    def function(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

    assert torch.autograd.gradcheck(function, inputs)


def test_chunks_channels_last_and_empty_batch(monkeypatch):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 6, 7, generator=generator)
    weight = torch.randn(5, 4, 3, 3, generator=generator)
    offset = torch.randn(3, 36, 6, 7, generator=generator)
    mask = torch.rand(3, 18, 6, 7, generator=generator)
    whole = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    monkeypatch.setattr(deform_conv_module, "_CHUNK_ELEMENTS", 4 * 9 * 42 * 2)  # 2 images
    chunked = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    out = deform_conv2d(channels_last, offset, weight, padding=1, mask=mask)
    torch.testing.assert_close(out, whole, atol=1e-6, rtol=0)
    empty = deform_conv2d(x[:0], offset[:0], weight, padding=1, mask=mask[:0])
    assert empty.shape == (0, 5, 6, 7)


def test_bfloat16_keeps_its_dtype():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 6, 7, generator=generator)
    weight = torch.randn(5, 4, 3, 3, generator=generator) / 6
    offset = torch.randn(1, 18, 6, 7, generator=generator)
    expected = deform_conv2d(x, offset, weight, padding=1)
    out = deform_conv2d(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), padding=1)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    "change, argument",
    [
        ({"input": torch.zeros(4, 6, 7)}, "input"),
        ({"offset": torch.zeros(1, 17, 6, 7)}, "offset"),
        ({"offset": torch.zeros(1, 18, 5, 7)}, "offset"),
        ({"offset": torch.zeros(2, 18, 6, 7)}, "offset"),
        ({"offset": torch.zeros(1, 54, 6, 7)}, "offset_groups"),  # 3 groups, 4 channels
        ({"mask": torch.zeros(1, 18, 6, 7)}, "mask"),
        ({"weight": torch.zeros(5, 3, 3, 3)}, "weight"),
        ({"weight": torch.zeros(5, 2, 3, 3)}, "C_out"),  # groups = 2 must divide 5
        ({"bias": torch.zeros(4)}, "bias"),
        ({"stride": 0}, "stride"),
        ({"padding": (1, -1)}, "padding"),
        ({"dilation": (1, 2, 3)}, "dilation"),
        ({"input": torch.zeros(1, 4, 1, 1), "padding": 0}, "too small"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(change, argument):
    arguments = {
        "input": torch.zeros(1, 4, 6, 7),
        "offset": torch.zeros(1, 18, 6, 7),
        "weight": torch.zeros(5, 4, 3, 3),
        "bias": torch.zeros(5),
        "mask": torch.ones(1, 9, 6, 7),
        "padding": 1,
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=argument):
        deform_conv2d(
            arguments.pop("input"), arguments.pop("offset"), arguments.pop("weight"), **arguments
        )


def test_integer_tensors_raise_type_error():
    offset, weight = torch.zeros(1, 18, 6, 7), torch.zeros(5, 4, 3, 3)
    with pytest.raises(TypeError, match="input"):
        deform_conv2d(torch.zeros(1, 4, 6, 7, dtype=torch.long), offset, weight, padding=1)


def test_module_starts_as_plain_conv_and_uses_its_predictions():
    torch.manual_seed(6)
    layer = ModulatedDeformConv2d(
        6, 8, (3, 2), stride=2, padding=(1, 0), dilation=(2, 1), groups=2, offset_groups=3
    )
    assert layer.conv_offset.out_channels == 3 * 3 * 6
    assert layer.weight.shape == (8, 3, 3, 2) and layer.bias.shape == (8,)
    x = torch.randn(2, 6, 9, 8)
    expected = F.conv2d(x, layer.weight, layer.bias, 2, (1, 0), (2, 1), 2)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)

    # offsets first (dy, dx pairs), then mask logits, mask = 2 * sigmoid(logits)
    nn.init.normal_(layer.conv_offset.weight, std=0.3)
    nn.init.normal_(layer.conv_offset.bias, std=0.3)
    predicted = layer.conv_offset(x)
    mask = 2 * torch.sigmoid(predicted[:, 36:])
    expected = deform_conv2d(
        x, predicted[:, :36], layer.weight, layer.bias, stride=2, padding=(1, 0),
        dilation=(2, 1), mask=mask,
    )  # fmt: skip
    out = layer(x)
    torch.testing.assert_close(out, expected)
    assert (out - F.conv2d(x, layer.weight, layer.bias, 2, (1, 0), (2, 1), 2)).abs().max() > 0.1

    out.square().sum().backward()
    assert layer.conv_offset.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="offset_groups"):
        ModulatedDeformConv2d(6, 8, 3, offset_groups=4)


def _dcn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, ModulatedDeformConv2d)]


def _perturb_offsets(model: nn.Module, std: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulatedDeformConv2d):
                for param in module.conv_offset.parameters():
                    param.copy_(std * torch.randn(param.shape, generator=generator))


def test_dcn_resnet50_blocks_keys_and_training_step():
    torch.manual_seed(8)
    # zero_init_residual would zero every block's output, and so the gradients inside it
    model = resnet50(width=8, zero_init_residual=False, **DCN_R50)
    # blocks 0, 3, 6, ... of C3 (4 blocks), C4 (6) and C5 (3): 2 + 2 + 1
    assert _dcn_names(model) == [
        "layer2.0.conv2", "layer2.3.conv2", "layer3.0.conv2", "layer3.3.conv2", "layer4.0.conv2"
    ]  # fmt: skip
    assert model.layer2[0].conv2.stride == (2, 2)
    for module in model.modules():
        if isinstance(module, ModulatedDeformConv2d):
            assert not module.conv_offset.weight.any() and not module.conv_offset.bias.any()
            assert module.weight.std() > 0.05  # He init, not left at zero

    plain = resnet50(width=8, zero_init_residual=False)
    dcn_state, plain_state = model.state_dict(), plain.state_dict()
    offset_keys = [key for key in dcn_state if ".conv_offset." in key]
    assert len(offset_keys) == 10
    kept = [(k, v.shape) for k, v in dcn_state.items() if k not in offset_keys]
    assert kept == [(k, v.shape) for k, v in plain_state.items()]

    features = model(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for f in features.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert all(model.get_submodule(n).conv_offset.weight.grad.any() for n in _dcn_names(model))


def test_dcn_resnet50_full_width_keys_are_torchvision_plus_offsets():
    with torch.device("meta"):
        model = resnet50(norm="bn", num_classes=1000, **DCN_R50)
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if ".conv_offset." not in k]
    data = json.loads((FIXTURES / "torchvision_resnet50_keys.json").read_text())
    assert keys == [(key, tuple(shape)) for key, shape in data["keys"]]
    assert model.layer3[3].conv2.conv_offset.weight.shape == (27, 256, 3, 3)


def test_load_plain_weights_into_dcn_resnet(tmp_path):
    torch.manual_seed(9)
    plain = resnet50(width=8, norm="bn")
    generator = torch.Generator().manual_seed(9)
    state = {}
    for key, value in plain.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        else:
            state[key] = 0.3 * torch.randn(value.shape, generator=generator)
    path = tmp_path / "resnet50_w8.safetensors"
    save_file(state, str(path))
    plain.load_state_dict(state)

    model = resnet50(width=8, norm="bn", **DCN_R50)
    assert load_resnet_weights(model, path) == []
    assert torch.equal(model.layer3[3].conv2.weight, state["layer3.3.conv2.weight"])
    assert not model.layer3[3].conv2.conv_offset.weight.any()
    images = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        expected, out = plain.eval()(images), model.eval()(images)
    for level in expected:
        torch.testing.assert_close(out[level], expected[level], atol=1e-4, rtol=1e-4)

    # a DCN checkpoint brings its offsets, and does not fit a plain model
    _perturb_offsets(model)
    dcn_state = model.state_dict()
    other = resnet50(width=8, norm="bn", **DCN_R50)
    load_resnet_weights(other, dcn_state)
    assert torch.equal(
        other.layer4[0].conv2.conv_offset.bias, dcn_state["layer4.0.conv2.conv_offset.bias"]
    )
    with pytest.raises(ValueError, match="dcn_stages"):
        load_resnet_weights(resnet50(width=8, norm="bn"), dcn_state)


def test_basic_block_deforms_conv2_and_fpn_passes_options():
    model = resnet18(width=8, dcn_stages=("c2", "c5"))
    assert _dcn_names(model) == [
        "layer1.0.conv2",
        "layer1.1.conv2",
        "layer4.0.conv2",
        "layer4.1.conv2",
    ]
    assert type(model.layer4[0].conv1) is nn.Conv2d and model.layer4[0].conv1.stride == (2, 2)
    fpn = resnet_fpn(50, width=8, out_channels=16, dcn_stages=("c4",), dcn_interval=2)
    assert _dcn_names(fpn.body) == ["layer3.0.conv2", "layer3.2.conv2", "layer3.4.conv2"]
    assert _dcn_names(resnet50(width=8)) == []


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"dcn_stages": "c3"}, TypeError, "dcn_stages"),
        ({"dcn_stages": ("c6",)}, ValueError, "dcn_stages"),
        ({"dcn_stages": ("c3", "c3")}, ValueError, "dcn_stages"),
        ({"dcn_stages": ("c5",), "returned_layers": ("c2", "c3")}, ValueError, "does not build"),
        ({"dcn_stages": ("c3",), "dcn_interval": 0}, ValueError, "dcn_interval"),
    ],
)
def test_bad_dcn_options_raise(options, error, message):
    with pytest.raises(error, match=message):
        resnet18(width=8, **options)


def test_optimize_for_inference_keeps_dcn_blocks_exact():
    torch.manual_seed(10)
    model = resnet50(width=8, norm="frozen_bn", **DCN_R50)
    generator = torch.Generator().manual_seed(10)
    with torch.no_grad():  # frozen-BN statistics and affine terms away from the identity
        for name, buffer in model.named_buffers():
            noise = torch.randn(buffer.shape, generator=generator)
            if name.endswith("running_var"):
                buffer.copy_(0.5 + noise.abs())
            else:
                buffer.copy_(0.1 * noise + name.endswith("weight"))
    _perturb_offsets(model)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.eval()(images)
        out = optimize_for_inference(model)(images)
    for level in expected:
        torch.testing.assert_close(out[level], expected[level], atol=1e-4, rtol=1e-4)
