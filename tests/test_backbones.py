import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from instaseg.models import (
    FrozenBatchNorm2d,
    load_resnet_weights,
    resnet,
    resnet18,
    resnet50,
    resnet_fpn,
)
from instaseg.models.backbones import BasicBlock, Bottleneck
from instaseg.models.norm import gn_groups

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {"width": 8, "out_channels": 16}  # cheap FPN builds for behaviour tests


def torchvision_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    data = json.loads((FIXTURES / f"torchvision_{name}_keys.json").read_text())
    return [(key, tuple(shape)) for key, shape in data["keys"]]


def random_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for a torchvision checkpoint: random tensors with its names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in torchvision_keys(name):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These tensors are tiny: on a shared CPU, intra-op threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fpn_models() -> dict[int, nn.Module]:
    torch.manual_seed(0)
    return {depth: resnet_fpn(depth).eval() for depth in (18, 50)}


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_fpn_levels_have_expected_shapes_and_strides(fpn_models, depth, size):
    model = fpn_models[depth]
    with torch.no_grad():
        levels = model(torch.randn(1, 3, *size))
    assert list(levels) == ["p2", "p3", "p4", "p5", "p6"] == list(model.names)
    assert model.strides == (4, 8, 16, 32, 64) and model.out_channels == 256
    for feature, stride in zip(levels.values(), model.strides, strict=True):
        expected = (1, 256, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert tuple(feature.shape) == expected
        assert torch.isfinite(feature).all()


def test_resnet_reports_channels_and_strides_per_level(fpn_models):
    assert fpn_models[18].body.out_channels == {"c2": 64, "c3": 128, "c4": 256, "c5": 512}
    assert fpn_models[50].body.out_channels == {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}
    assert fpn_models[50].body.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def test_gn_default_has_no_batchnorm(fpn_models):
    modules = list(fpn_models[50].modules())
    assert not any(
        isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)) for m in modules
    )
    group_norms = [m for m in modules if isinstance(m, nn.GroupNorm)]
    assert group_norms and all(m.num_groups == 32 for m in group_norms)


@pytest.mark.parametrize("name, depth", [("resnet18", 18), ("resnet50", 50)])
def test_state_dict_matches_torchvision(name, depth):
    model = resnet(depth, norm="bn", num_classes=1000)
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    assert ours == torchvision_keys(name)


def test_fixtures_are_what_the_generator_writes():
    path = FIXTURES / "make_torchvision_resnet_keys.py"
    spec = importlib.util.spec_from_file_location("make_torchvision_resnet_keys", path)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for name in ("resnet18", "resnet50"):
        text = (FIXTURES / f"torchvision_{name}_keys.json").read_text()
        assert generator.fixture_text(name) == text


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_torchvision_checkpoint_loads_strictly(norm):
    state = random_state("resnet50")
    model = resnet50(norm=norm, num_classes=1000)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    assert torch.equal(model.fc.weight, state["fc.weight"])


def test_load_resnet_weights_drops_classifier():
    state = random_state("resnet50")
    model = resnet50(norm="frozen_bn")
    assert load_resnet_weights(model, state) == ["fc.weight", "fc.bias"]
    assert torch.equal(model.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    assert "fc.weight" in state  # the caller's dict is left alone


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_resnet_weights_from_a_path_into_an_fpn_body(tmp_path, suffix):
    state = random_state("resnet18", seed=1)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = resnet_fpn(18, norm="frozen_bn", fpn_norm=None)
    load_resnet_weights(model, path)
    assert torch.equal(
        model.body.layer2[0].downsample[1].weight, state["layer2.0.downsample.1.weight"]
    )


def test_load_resnet_weights_drops_stages_that_were_not_built():
    model = resnet18(norm="bn", returned_layers=("c2", "c3", "c4"))
    assert not hasattr(model, "layer4")
    dropped = load_resnet_weights(model, random_state("resnet18"))
    assert {key.split(".")[0] for key in dropped} == {"layer4", "fc"}


def test_frozen_bn_weights_without_step_counter_load_into_bn():
    state = random_state("resnet18")
    state = {key: value for key, value in state.items() if "num_batches_tracked" not in key}
    model = resnet18(norm="bn", width=64)
    load_resnet_weights(model, state)
    assert torch.equal(model.bn1.running_mean, state["bn1.running_mean"])


def test_load_resnet_weights_explains_mismatches_and_loads_nothing():
    state = random_state("resnet18")
    model = resnet18()  # GroupNorm: no running statistics
    before = model.conv1.weight.clone()
    with pytest.raises(ValueError, match="unexpected.*norm='bn' or norm='frozen_bn'"):
        load_resnet_weights(model, state)
    assert torch.equal(model.conv1.weight, before)

    prefixed = {f"backbone.body.{key}": value for key, value in state.items()}
    with pytest.raises(ValueError, match="prefix 'backbone.body.'"):
        load_resnet_weights(resnet18(norm="bn"), prefixed)

    del state["layer1.0.conv1.weight"]
    state["layer1.0.bn1.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"missing \(1\): layer1.0.conv1.weight.*wrong shape"):
        load_resnet_weights(resnet18(norm="bn"), state)


def test_fpn_keys_map_to_torchvision_by_prefix():
    model = resnet_fpn(18, norm="frozen_bn", fpn_norm=None)
    to_torchvision = {
        "fpn.lateral_convs.": "fpn.inner_blocks.",
        "fpn.output_convs.": "fpn.layer_blocks.",
    }
    ours = []
    for key, value in model.state_dict().items():
        for prefix, theirs in to_torchvision.items():
            key = theirs + key.removeprefix(prefix) if key.startswith(prefix) else key
        ours.append((key, tuple(value.shape)))
    # torchvision's resnet_fpn_backbone: frozen BN (no num_batches_tracked), no fc, and
    # FPN convs with bias; inner_blocks.i is the 1x1 on C(i+2), layer_blocks.i the 3x3.
    body = [
        (f"body.{key}", shape)
        for key, shape in torchvision_keys("resnet18")
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked")
    ]
    fpn = []
    for i, channels in enumerate([64, 128, 256, 512]):
        fpn += [(f"fpn.inner_blocks.{i}.0.weight", (256, channels, 1, 1))]
        fpn += [(f"fpn.inner_blocks.{i}.0.bias", (256,))]
    for i in range(4):
        fpn += [(f"fpn.layer_blocks.{i}.0.weight", (256, 256, 3, 3))]
        fpn += [(f"fpn.layer_blocks.{i}.0.bias", (256,))]
    assert ours == body + fpn


def test_p6p7_extra_levels_and_fewer_input_levels():
    model = resnet_fpn(
        18, returned_layers=("c3", "c4", "c5"), extra_levels="p6p7", extra_source="c5", **TINY
    )
    assert model.names == ("p3", "p4", "p5", "p6", "p7")
    assert model.strides == (8, 16, 32, 64, 128)
    levels = model(torch.randn(1, 3, 65, 97))
    sizes = [tuple(f.shape[-2:]) for f in levels.values()]
    assert sizes == [(9, 13), (5, 7), (3, 4), (2, 2), (1, 1)]
    state = model.state_dict()
    assert tuple(state["fpn.extra_convs.p6.weight"].shape) == (16, 64, 3, 3)  # from C5
    assert "fpn.lateral_convs.0.1.weight" in state  # GN after the lateral conv


def test_frozen_bn_equals_batchnorm_in_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    frozen = FrozenBatchNorm2d(8)
    frozen.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked is ignored
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(frozen(x), bn(x))
    channels_last = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(frozen(channels_last), bn(x))
    assert list(frozen.parameters()) == []


@pytest.mark.parametrize(
    "channels, groups", [(256, 32), (64, 32), (32, 16), (16, 8), (24, 12), (8, 4), (3, 1), (1, 1)]
)
def test_gn_groups_rule(channels, groups):
    assert gn_groups(channels) == groups


def test_frozen_stages_freeze_stem_and_first_stages():
    model = resnet_fpn(18, norm="bn", frozen_stages=2, **TINY)
    frozen_prefixes = ("body.conv1.", "body.bn1.", "body.layer1.", "body.layer2.")
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad != name.startswith(frozen_prefixes), name
    model.train()
    assert not model.body.layer2[1].bn2.training and model.body.layer3[0].bn1.training
    stats = model.body.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.body.layer1[0].bn1.running_mean, stats)


def test_gradient_step_changes_only_unfrozen_weights():
    torch.manual_seed(0)
    model = resnet_fpn(18, frozen_stages=1, zero_init_residual=False, **TINY).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    levels = model(torch.randn(2, 3, 64, 64))
    loss = sum(nn.functional.mse_loss(f, torch.randn_like(f)) for f in levels.values())
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == parameter.requires_grad, name


def test_zero_init_residual_starts_blocks_as_identity():
    model = resnet18(width=8)
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert all(torch.all(block.residual_norm.weight == 0) for block in blocks)
    x = torch.relu(torch.randn(1, 8, 16, 16))
    torch.testing.assert_close(model.layer1[1](x), x)
    # frozen BN has no trainable gamma to zero; it stays the identity transform
    frozen = resnet18(width=8, norm="frozen_bn")
    assert torch.all(frozen.layer1[0].bn2.weight == 1)


def test_channels_last_input_gives_the_same_features():
    torch.manual_seed(0)
    model = resnet_fpn(18, norm="bn", **TINY).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        model = model.to(memory_format=torch.channels_last)
        actual = model(images.to(memory_format=torch.channels_last))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-4, rtol=1e-4)


def test_classifier_is_optional():
    model = resnet18(width=8, num_classes=10).eval()
    assert model.classify(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(RuntimeError, match="num_classes"):
        resnet18(width=8).classify(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: resnet18(norm="batchnorm"), ValueError, "norm must be one of"),
        (lambda: resnet18(frozen_stages=5), ValueError, "frozen_stages must be in 0..4"),
        (lambda: resnet18(returned_layers=("c1", "c2")), ValueError, "returned_layers"),
        (lambda: resnet18(returned_layers="c5"), TypeError, "returned_layers"),
        (lambda: resnet(152), ValueError, "depth must be one of"),
        (lambda: resnet_fpn(18, fpn_norm="group", **TINY), ValueError, "FPN norm"),
        (lambda: resnet_fpn(18, extra_levels="conv", **TINY), ValueError, "extra_levels"),
        (lambda: resnet_fpn(18, extra_source="c5", **TINY), ValueError, "extra_source"),
    ],
)
def test_invalid_arguments_are_rejected(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_images_must_be_float_rgb_batches():
    model = resnet18(width=8)
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(3, 64, 64))
