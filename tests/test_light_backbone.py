"""The light CSP backbone (models.light_backbone) and the generic inference rewrites
(models.optimize) on it and on hand-built conv/norm layouts."""

import math

import pytest
import torch
from torch import nn

from instaseg.models.backbones import BackboneWithFPN
from instaseg.models.fpn import FPN
from instaseg.models.light_backbone import NanoBackbone, nano_backbone
from instaseg.models.norm import FrozenBatchNorm2d
from instaseg.models.optimize import optimize_for_inference

ALL_LEVELS = ("c2", "c3", "c4", "c5")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These tensors are tiny: on a shared CPU, intra-op threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that folding them changes the
    convs (with the defaults, mean 0 and var 1, folding would be nearly a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)


# ------------------------------------------------------------------------------ architecture


@pytest.mark.parametrize("size", [(65, 47), (33, 97), (1, 1), (64, 64)])
def test_levels_have_ceil_sizes_strides_and_channels(size):
    torch.manual_seed(0)
    model = nano_backbone(returned_layers=ALL_LEVELS).eval()
    height, width = size
    with torch.no_grad():
        features = model(torch.randn(2, 3, height, width))
    assert list(features) == list(ALL_LEVELS)
    assert model.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
    assert model.out_channels == {"c2": 32, "c3": 64, "c4": 128, "c5": 256}
    for level, feature in features.items():
        stride = model.strides[level]
        expected = (2, model.out_channels[level], math.ceil(height / stride), -(-width // stride))
        assert tuple(feature.shape) == expected, level


def test_default_levels_and_unbuilt_stages():
    model = nano_backbone()
    assert list(model.out_channels) == ["c3", "c4", "c5"]
    shallow = nano_backbone(returned_layers=("c3",))
    assert not hasattr(shallow, "stage4") and not hasattr(shallow, "stage5")
    assert list(shallow(torch.randn(1, 3, 32, 32))) == ["c3"]


def conv_norm_params(in_channels: int, out_channels: int, kernel: int) -> int:
    return in_channels * out_channels * kernel * kernel + 2 * out_channels  # conv + BN affine


def expected_params(stem: int, channels: list[int], blocks: list[int]) -> int:
    """The design, counted by hand: stem; per stage a 3x3/2 conv and a CSP stage (two 1x1
    splits, n bottlenecks h -> h/2 -> h, a 1x1 fuse); SPPF after the last stage."""
    total = conv_norm_params(3, stem, 3)
    previous = stem
    for c, n in zip(channels, blocks, strict=True):
        h = c // 2
        total += conv_norm_params(previous, c, 3)
        total += 2 * conv_norm_params(c, h, 1)
        total += n * (conv_norm_params(h, h // 2, 3) + conv_norm_params(h // 2, h, 3))
        total += conv_norm_params((2 + n) * h, c, 1)
        previous = c
    c = channels[-1]
    return total + conv_norm_params(c, c // 2, 1) + conv_norm_params(2 * c, c, 1)


def test_parameter_count_is_the_designed_one():
    model = nano_backbone()
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_params(16, [32, 64, 128, 256], [1, 2, 2, 1])
    assert 1.0e6 < count < 1.1e6  # the budget: well under 1.5 M for the whole backbone
    wide = nano_backbone(width=1.25, depth=2.0)
    assert wide.out_channels == {"c3": 80, "c4": 160, "c5": 320}
    assert sum(p.numel() for p in wide.parameters()) == expected_params(
        24, [40, 80, 160, 320], [2, 4, 4, 2]
    )


def test_width_rounds_to_multiples_of_eight_and_depth_keeps_a_block():
    model = nano_backbone(width=0.3, depth=0.1)
    assert model.out_channels == {"c3": 24, "c4": 40, "c5": 80}
    assert all(len(getattr(model, f"stage{k}")[1].blocks) == 1 for k in range(2, 6))


def test_forward_and_backward_train_every_parameter():
    torch.manual_seed(0)
    model = nano_backbone().train()
    features = model(torch.randn(4, 3, 64, 48))
    loss = sum(feature.square().mean() for feature in features.values())
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.stem.parameters())


def test_group_norm_variant_has_no_batch_norm():
    model = nano_backbone(norm="gn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    features = model(torch.randn(1, 3, 40, 40))  # GN trains with one image
    assert features["c5"].shape == (1, 256, 2, 2)


def test_plugs_into_fpn_like_a_resnet():
    body = nano_backbone()
    fpn = FPN(
        list(body.out_channels.values()), list(body.strides.values()), 32, extra_levels="p6p7"
    )
    backbone = BackboneWithFPN(body, fpn).eval()
    with torch.no_grad():
        levels = backbone(torch.randn(1, 3, 100, 70))
    assert list(levels) == ["p3", "p4", "p5", "p6", "p7"]
    assert backbone.strides == (8, 16, 32, 64, 128)
    assert levels["p3"].shape == (1, 32, 13, 9)
    assert levels["p7"].shape == (1, 32, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"width": 0}, ValueError, "width must be a positive number"),
        ({"depth": -1.0}, ValueError, "depth must be a positive number"),
        ({"norm": "layer"}, ValueError, "norm must be one of"),
        ({"returned_layers": ("c6",)}, ValueError, "returned_layers must be distinct"),
        ({"returned_layers": "c5"}, TypeError, "sequence of names"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        nano_backbone(**kwargs)


def test_bad_architecture_and_images_are_named():
    with pytest.raises(ValueError, match="stage_channels"):
        NanoBackbone(stage_channels=(32, 63, 128, 256))
    model = nano_backbone()
    with pytest.raises(TypeError, match="must be float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(3, 32, 32))


# --------------------------------------------------------------------------- inference rewrites


def test_optimized_backbone_matches_with_every_norm_folded():
    torch.manual_seed(0)
    model = nano_backbone(returned_layers=ALL_LEVELS)
    randomise_norms(model)
    model.eval()
    images = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        want = model(images)
        optimized = optimize_for_inference(model)
        got = optimized(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in optimized.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    for level in ALL_LEVELS:
        difference = (got[level] - want[level]).abs().max().item()
        assert difference <= 1e-4 * max(1.0, want[level].abs().max().item()), level
        assert got[level].is_contiguous(memory_format=torch.channels_last), level


class NamedPairs(nn.Module):
    """Norms found by name: bn1 after conv1, bn after conv, norm2 after a depthwise conv2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 1, bias=False)
        self.bn = FrozenBatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.norm2 = nn.BatchNorm2d(8)
        self.grouped = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1, groups=4), nn.BatchNorm2d(12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn(self.conv(x))
        return self.grouped(self.norm2(self.conv2(x)))


class ReluBetween(nn.Sequential):
    """A Sequential subclass whose forward puts a ReLU between conv and norm: not foldable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](torch.relu(self[0](x)))


def test_named_pairs_and_grouped_convs_fold_exactly():
    torch.manual_seed(0)
    model = NamedPairs()
    randomise_norms(model, seed=1)
    model.eval()
    x = torch.randn(2, 3, 9, 11)
    optimized = optimize_for_inference(model)
    for name in ("bn1", "bn", "norm2"):
        assert isinstance(getattr(optimized, name), nn.Identity), name
    assert isinstance(optimized.grouped[1], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(optimized(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_norm_that_does_not_follow_its_conv_directly_stays():
    torch.manual_seed(0)
    model = nn.Sequential(ReluBetween(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    randomise_norms(model, seed=2)
    model.eval()
    optimized = optimize_for_inference(model)
    assert isinstance(optimized[0][1], nn.BatchNorm2d)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(optimized(x), model(x), rtol=1e-5, atol=1e-5)
