"""Mask R-CNN: train and eval contracts, frames, batching, crowd rule, learning (overfit),
torchvision weight conversion, the model zoo and the inference rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from overfit import fit, four_synthetic_images
from safetensors import safe_open
from safetensors.torch import save_file

from instaseg.eval import evaluate
from instaseg.models.convert import convert_checkpoint, convert_torchvision_maskrcnn
from instaseg.models.image_batch import resized_size
from instaseg.models.matching import IGNORED, NEGATIVE, POSITIVE, match_candidates
from instaseg.models.optimize import WinogradConv2d, optimize_for_inference
from instaseg.models.zoo import (
    MODELS,
    build_model,
    mask_rcnn_r18_fpn,
    mask_rcnn_r50_fpn_torchvision,
    model_info,
)
from instaseg.ops import masks_to_boxes
from instaseg.structures import Instances

FIXTURES = Path(__file__).parent / "fixtures"
# narrow layers: the behaviour tests need the code paths, not the capacity
TINY = {
    "width": 8,
    "fpn_channels": 32,
    "box_conv_dim": 32,
    "box_fc_dim": 64,
    "mask_conv_dim": 32,
    "anchor_sizes": (16, 32, 64, 128, 256),
    "rpn_pre_nms_topk_test": 200,
    "rpn_post_nms_topk_test": 50,
    "box_batch_size_per_image": 64,
}


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


def tiny_model(num_classes: int = 3, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return mask_rcnn_r18_fpn(num_classes, **{**TINY, "min_size": None, **overrides})


def random_image(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def target_from_masks(masks: torch.Tensor, labels: list[int], crowd: list[bool]) -> Instances:
    return Instances(
        image_size=tuple(masks.shape[1:]),
        boxes=masks_to_boxes(masks),
        labels=torch.tensor(labels, dtype=torch.int64),
        masks=masks,
        iscrowd=torch.tensor(crowd, dtype=torch.bool),
    )


def two_objects_and_a_crowd() -> Instances:
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 8:30, 6:28] = True
    masks[1, 36:60, 30:62] = True
    masks[2, 2:20, 40:62] = True  # a crowd region
    return target_from_masks(masks, [0, 2, 1], [False, False, True])


# ----------------------------------------------------------------------------- training


def test_train_step_is_finite_and_every_loss_gets_gradients():
    model = tiny_model().train()
    images = [random_image(64, 64, 0), random_image(64, 64, 1)]
    targets = [two_objects_and_a_crowd(), Instances.empty((64, 64))]
    losses = model(images, targets)
    expected = {"loss_rpn_objectness", "loss_rpn_box", "loss_classifier", "loss_box", "loss_mask"}
    assert set(losses) == expected
    assert all(loss.ndim == 0 and torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    for name in ("rpn.head.conv.weight", "roi_heads.mask_head.logits.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_image_without_instances_has_zero_box_and_mask_losses():
    model = tiny_model().train()
    losses = model([random_image(64, 64, 2)], [Instances.empty((64, 64))])
    assert all(torch.isfinite(loss) for loss in losses.values())
    for name in ("loss_rpn_box", "loss_box", "loss_mask"):
        assert losses[name].item() == 0.0
    assert losses["loss_rpn_objectness"] > 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()  # the zero mask loss stays tied to the graph


def test_loss_weights_scale_the_losses():
    images, targets = [random_image(64, 64, 0)], [two_objects_and_a_crowd()]
    torch.manual_seed(1)
    plain = tiny_model().train()(images, targets)
    torch.manual_seed(1)
    weighted = tiny_model(loss_mask_weight=2.0, loss_box_weight=0.0).train()(images, targets)
    torch.testing.assert_close(weighted["loss_mask"], 2 * plain["loss_mask"])
    assert weighted["loss_box"].item() == 0.0


def test_crowd_boxes_are_never_positives_and_cover_their_negatives():
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 80.0, 80.0]])
    crowd = torch.tensor([False, True])
    candidates = torch.tensor(
        [
            [0.0, 0.0, 20.0, 20.0],  # the object itself: positive
            [40.0, 40.0, 80.0, 80.0],  # exactly the crowd box: ignored, not positive
            [50.0, 50.0, 60.0, 60.0],  # inside the crowd: ignored
            [70.0, 70.0, 100.0, 100.0],  # a third inside the crowd: negative
            [0.0, 0.0, 30.0, 30.0],  # IoU 0.44 with the object: negative
        ]
    )
    labels, matched = match_candidates(candidates, gt, crowd, 0.5, 0.5)
    assert labels.tolist() == [POSITIVE, IGNORED, IGNORED, NEGATIVE, NEGATIVE]
    assert matched[0] == 0
    # the RPN's rule: 0.3 <= IoU < 0.7 is ignored, and each object's best candidate is positive
    labels, _ = match_candidates(candidates[3:], gt, crowd, 0.7, 0.3, allow_low_quality=True)
    assert labels.tolist() == [NEGATIVE, POSITIVE]


# ----------------------------------------------------------------------------- inference


def test_eval_returns_instances_in_each_original_frame():
    model = tiny_model(min_size=96, max_size=200, score_threshold=0.0).eval()
    images = [random_image(64, 80, 3), random_image(70, 50, 4)]
    results = model(images)
    for image, result in zip(images, results, strict=True):
        height, width = image.shape[1:]
        assert result.image_size == (height, width)
        assert (
            result.masks.shape == (len(result), height, width) and result.masks.dtype == torch.bool
        )
        assert len(result) > 0 and result.scores.dtype == torch.float32
        assert (result.boxes >= 0).all()
        assert (result.boxes[:, 2] <= width).all() and (result.boxes[:, 3] <= height).all()
        assert (result.scores[:-1] >= result.scores[1:]).all()
        assert result.labels.min() >= 0 and result.labels.max() < 3


def test_model_frame_boxes_map_back_to_the_original_frame(monkeypatch):
    model = tiny_model(min_size=96, max_size=200).eval()
    images = [random_image(64, 80, 5), random_image(70, 50, 6)]

    def full_image_detections(features, batch, proposals):
        # one detection covering each resized image exactly, with a certain all-ones mask
        return [
            (
                torch.tensor([[0.0, 0.0, w, h]]),
                torch.tensor([0.9]),
                torch.tensor([1]),
                torch.ones(1, 28, 28),
            )
            for h, w in batch.image_sizes
        ]

    monkeypatch.setattr(model.roi_heads, "predict", full_image_detections)
    results = model(images)
    assert resized_size((64, 80), 96, 200) == (96, 120)
    for image, result in zip(images, results, strict=True):
        height, width = image.shape[1:]
        torch.testing.assert_close(result.boxes, torch.tensor([[0.0, 0.0, width, height]]))
        assert result.masks.all()


def test_image_without_detections_gives_empty_instances():
    model = tiny_model(score_threshold=1.0).eval()
    (result,) = model([random_image(70, 50, 7)])
    assert len(result) == 0
    assert result.masks.shape == (0, 70, 50) and result.boxes.shape == (0, 4)


def test_batch_gives_the_same_results_as_single_images():
    model = tiny_model(score_threshold=0.0).eval()
    # the first two share a padded size (one stacked tensor), the third has its own
    images = [random_image(64, 64, 8), random_image(60, 62, 9), random_image(70, 50, 10)]
    batched = model(images)
    for image, together in zip(images, batched, strict=True):
        (alone,) = model([image])
        assert len(alone) == len(together) > 0
        torch.testing.assert_close(together.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(together.scores, alone.scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(together.labels, alone.labels)
        assert (together.masks != alone.masks).float().mean() < 1e-3


@pytest.mark.parametrize(
    ("images", "targets", "error", "match"),
    [
        (random_image(64, 64, 0), None, TypeError, "list of uint8"),
        ([random_image(64, 64, 0).float()], None, TypeError, r"images\[0\] must be uint8"),
        ([torch.zeros(1, 64, 64, dtype=torch.uint8)], None, ValueError, r"images\[0\]"),
        ([random_image(64, 64, 0)], [Instances.empty((64, 60))], ValueError, r"targets\[0\]"),
        ([random_image(64, 64, 0)], [], ValueError, "one per image"),
    ],
)
def test_rejects_bad_inputs(images, targets, error, match):
    model = tiny_model().train(targets is not None)
    with pytest.raises(error, match=match):
        model(images, targets)


def test_rejects_labels_out_of_range_and_missing_masks():
    model = tiny_model(num_classes=2).train()
    target = two_objects_and_a_crowd()  # has label 2
    with pytest.raises(ValueError, match=r"targets\[0\].labels must lie in \[0, 2\)"):
        model([random_image(64, 64, 0)], [target])
    no_masks = Instances((64, 64), target.boxes[:1], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"targets\[0\].masks is None"):
        model([random_image(64, 64, 0)], [no_masks])
    with pytest.raises(ValueError, match="training needs targets"):
        model([random_image(64, 64, 0)])


# ----------------------------------------------------------------------------- learning


def test_overfits_four_synthetic_images(tmp_path):
    """From random init, a small R18 model memorises 4 images: mask AP >= 0.9 on them."""
    images, targets = four_synthetic_images(tmp_path)
    torch.manual_seed(0)
    model = mask_rcnn_r18_fpn(
        6,
        width=16,
        fpn_channels=64,
        box_conv_dim=32,
        box_fc_dim=256,
        mask_conv_dim=64,
        min_size=None,
        anchor_sizes=(16, 32, 64, 128, 256),
        rpn_pre_nms_topk_train=500,
        rpn_post_nms_topk_train=250,
        rpn_pre_nms_topk_test=250,
        rpn_post_nms_topk_test=100,
        box_batch_size_per_image=64,
    ).train()
    warmup = 30
    fit(model, images, targets, steps=150, lr=2e-3, factor=lambda s: min(1.0, (s + 1) / warmup))
    model.eval()
    predictions = model(images)
    metrics = evaluate(targets, predictions, iou_types=("segm", "bbox")).metrics
    assert metrics["segm"]["AP"] >= 0.9, metrics
    assert metrics["bbox"]["AP"] >= 0.75, metrics


# ----------------------------------------------------------------------------- conversion


def torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's checkpoint: random tensors with its names and shapes."""
    keys = json.loads((FIXTURES / "torchvision_maskrcnn_r50_fpn_keys.json").read_text())["keys"]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        value = torch.randn(shape, generator=generator)
        state[key] = value.abs() + 0.5 if key.endswith("running_var") else value
    return state


@pytest.fixture(scope="module")
def torchvision_model():
    return mask_rcnn_r50_fpn_torchvision(90)


def test_converted_torchvision_weights_load_strictly(torchvision_model):
    state = torchvision_state()
    converted = convert_torchvision_maskrcnn(state)
    torchvision_model.load_state_dict(converted, strict=True)
    ours = torchvision_model.state_dict()
    cls = state["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(ours["roi_heads.box_predictor.cls_score.weight"][:90], cls[1:])
    assert torch.equal(ours["roi_heads.box_predictor.cls_score.weight"][90], cls[0])
    assert torch.equal(
        ours["roi_heads.box_predictor.box_deltas.bias"],
        state["roi_heads.box_predictor.bbox_pred.bias"][4:],
    )
    assert torch.equal(
        ours["roi_heads.mask_head.logits.weight"],
        state["roi_heads.mask_predictor.mask_fcn_logits.weight"][1:],
    )
    pairs = {
        "backbone.body.layer3.2.conv2.weight": "backbone.body.layer3.2.conv2.weight",
        "backbone.body.layer1.0.downsample.1.running_var": (
            "backbone.body.layer1.0.downsample.1.running_var"
        ),
        "backbone.fpn.inner_blocks.2.0.weight": "backbone.fpn.lateral_convs.2.0.weight",
        "backbone.fpn.layer_blocks.0.0.bias": "backbone.fpn.output_convs.0.0.bias",
        "rpn.head.conv.0.0.weight": "rpn.head.conv.weight",
        "rpn.head.bbox_pred.weight": "rpn.head.box_deltas.weight",
        "roi_heads.box_head.fc6.weight": "roi_heads.box_head.fc6.weight",
        "roi_heads.mask_head.3.0.weight": "roi_heads.mask_head.convs.3.0.weight",
        "roi_heads.mask_predictor.conv5_mask.weight": "roi_heads.mask_head.deconv.weight",
    }
    for theirs, mine in pairs.items():
        assert torch.equal(ours[mine], state[theirs]), mine


def test_legacy_torchvision_names_convert_the_same():
    state = torchvision_state()
    legacy = {}
    for key, value in state.items():
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            key = key.replace(f"fpn.inner_blocks.{i}.0.", f"fpn.inner_blocks.{i}.")
            key = key.replace(f"fpn.layer_blocks.{i}.0.", f"fpn.layer_blocks.{i}.")
            key = key.replace(
                f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}."
            )
        legacy[key] = value
    new, old = convert_torchvision_maskrcnn(state), convert_torchvision_maskrcnn(legacy)
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)


def test_conversion_rejects_foreign_keys():
    state = {f"module.{key}": value for key, value in torchvision_state().items()}
    with pytest.raises(ValueError, match="module"):
        convert_torchvision_maskrcnn(state)


def test_convert_checkpoint_writes_safetensors_and_metadata(tmp_path):
    src = tmp_path / "maskrcnn.pth"
    torch.save({"model": torchvision_state()}, src)
    out = convert_checkpoint(src, tmp_path / "converted" / "maskrcnn")
    assert out.name == "maskrcnn.safetensors" and out.is_file()
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["model"] == "mask_rcnn_r50_fpn_torchvision"
    assert metadata["num_classes"] == 90 and metadata["source"] == str(src)
    assert metadata["classes"][0] == "person" and metadata["classes"][89] == "toothbrush"
    assert metadata["category_ids"] == list(range(1, 91))
    with safe_open(str(out), framework="pt") as reader:
        assert json.loads(reader.metadata()["instaseg"]) == metadata
    model = build_model("mask_rcnn_r50_fpn_torchvision", 90, weights=str(out))
    assert torch.equal(
        model.state_dict()["rpn.head.objectness.bias"],
        torchvision_state()["rpn.head.cls_logits.bias"],
    )


# ----------------------------------------------------------------------------- zoo


def test_build_model_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean mask_rcnn_r50_fpn"):
        build_model("mask_rcnn_r5O_fpn", 3)
    with pytest.raises(TypeError, match="did you mean box_fc_dim"):
        mask_rcnn_r18_fpn(3, box_fc_dims=64)


@pytest.mark.parametrize("name", sorted(n for n in MODELS if n.startswith("mask_rcnn")))
def test_every_builder_constructs(name):
    model = build_model(name, 4, width=8, fpn_channels=16)
    assert model.num_classes == 4
    assert model.roi_heads.box_predictor.cls_score.out_features == 5


def test_weights_round_trip_through_files(tmp_path):
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    for path in ("model.pt", "model.safetensors"):
        loaded = mask_rcnn_r18_fpn(3, weights=str(tmp_path / path), **TINY)
        assert torch.equal(loaded.rpn.head.conv.weight, model.rpn.head.conv.weight)
    with pytest.raises(FileNotFoundError):
        mask_rcnn_r18_fpn(3, weights=str(tmp_path / "missing.pt"))


def test_model_info_counts_parameters_and_flops():
    model = tiny_model(score_threshold=1.0)
    info = model_info(model, image_size=64)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["gflops"] > 0
    assert model.training  # restored


# ----------------------------------------------------------------------------- inference rewrites


def test_optimized_model_matches_the_original():
    torch.manual_seed(0)
    model = build_model(
        "mask_rcnn_r50_fpn_torchvision",
        3,
        width=8,
        fpn_channels=32,
        min_size=None,
        box_fc_dim=64,
        mask_conv_dim=32,
        score_threshold=0.0,
        rpn_post_nms_topk_test=100,
        detections_per_image=20,
    ).eval()
    for module in model.modules():  # non-trivial statistics, so that folding matters
        if hasattr(module, "running_var"):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    images = [random_image(64, 64, 11)]
    want, got = model(images)[0], optimize_for_inference(model)(images)[0]
    assert not any(hasattr(m, "running_var") for m in optimize_for_inference(model).modules())
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(got.boxes, want.boxes, rtol=1e-3, atol=1e-2)


@pytest.mark.skipif(not torch._nnpack_available(), reason="torch without NNPACK")
def test_winograd_conv_matches_direct_convolution(monkeypatch):
    monkeypatch.setattr(WinogradConv2d, "min_macs", 0)
    conv = WinogradConv2d(16, 24, 3, padding=1)
    x = torch.randn(2, 16, 20, 18)
    with torch.no_grad():
        torch.testing.assert_close(
            conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-3, atol=1e-3
        )
        channels_last = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(conv(channels_last), conv(x))
        assert conv._nnpack_pays(x) == torch._nnpack_available()
        # torch.compile cannot trace the NNPACK op: while compiling, the ordinary conv runs
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not conv._nnpack_pays(x)
