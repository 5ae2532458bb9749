"""YOLACT / YOLACT++: train and eval contracts of every zoo variant, the prototype-mask
geometry, OHEM, NMS choice, mask re-scoring, learning (overfit) and the engine path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from overfit import fit, four_synthetic_images

from instaseg.api import Model, load_model
from instaseg.data.synth import generate_synthetic
from instaseg.engine import load_weights
from instaseg.eval import evaluate
from instaseg.models.backbones import resnet_fpn
from instaseg.models.deform_conv import ModulatedDeformConv2d
from instaseg.models.image_batch import TrainTargets, resized_size, train_targets
from instaseg.models.matching import IGNORED, NEGATIVE, POSITIVE
from instaseg.models.optimize import optimize_for_inference
from instaseg.models.yolact import YOLACT, YolactOutput
from instaseg.models.yolact_heads import (
    Protonet,
    box_crop_weights,
    paste_prototype_masks,
    prototype_targets,
)
from instaseg.models.zoo import MODELS, build_model, model_info, yolact_r50
from instaseg.ops import masks_to_boxes
from instaseg.structures import Instances

# narrow layers: the behaviour tests need the code paths, not the capacity
SMALL = {
    "fpn_channels": 16,
    "head_channels": 16,
    "protonet_channels": 16,
    "num_prototypes": 8,
    "min_size": None,
    "anchor_sizes": (16, 32, 64, 128, 256),
}
TINY = {
    "yolact_r50": {"width": 8, **SMALL},
    "yolact_plus_r50": {"width": 8, **SMALL},
    "yolact_nano": {"width": 0.25, **SMALL},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # these small convolutions gain little from a second thread, and on a busy shared CPU
    # two threads per process can run many times slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(name: str = "yolact_r50", num_classes: int = 3, **overrides) -> YOLACT:
    torch.manual_seed(0)
    return build_model(name, num_classes, **{**TINY[name], **overrides})


def random_image(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def two_objects_and_a_crowd() -> Instances:
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 8:30, 6:28] = True
    masks[1, 36:60, 30:62] = True
    masks[2, 2:20, 40:62] = True  # a crowd region
    return Instances(
        image_size=(64, 64),
        boxes=masks_to_boxes(masks),
        labels=torch.tensor([0, 2, 1]),
        masks=masks,
        iscrowd=torch.tensor([False, False, True]),
    )


# ----------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", sorted(TINY))
def test_train_step_and_eval_pass(name):
    model = tiny_model(name, score_threshold=0.0, detections_per_image=20).train()
    images = [random_image(64, 64, 0), random_image(64, 64, 1)]
    losses = model(images, [two_objects_and_a_crowd(), Instances.empty((64, 64))])
    expected = {"loss_classifier", "loss_box", "loss_mask", "loss_semantic"}
    if name == "yolact_plus_r50":
        expected.add("loss_mask_iou")
    assert set(losses) == expected
    assert all(loss.ndim == 0 and torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    parameters = dict(model.named_parameters())
    for key in (
        "head.class_logits.weight",
        "head.coefficients.weight",
        "protonet.prototypes.weight",
    ):
        grad = parameters[key].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, key
    model.eval()
    images = [random_image(64, 64, 2), random_image(50, 70, 3)]
    for image, result in zip(images, model(images), strict=True):
        height, width = image.shape[1:]
        assert result.image_size == (height, width) and 0 < len(result) <= 20
        assert result.masks.shape == (len(result), height, width)
        assert result.masks.dtype == torch.bool and result.scores.dtype == torch.float32
        assert (result.boxes >= 0).all()
        assert (result.boxes[:, 2] <= width).all() and (result.boxes[:, 3] <= height).all()
        assert (result.scores[:-1] >= result.scores[1:]).all()
        assert result.labels.min() >= 0 and result.labels.max() < 3


def test_image_without_instances_has_zero_box_and_mask_losses():
    model = tiny_model("yolact_plus_r50").train()
    losses = model([random_image(64, 64, 4)], [Instances.empty((64, 64))])
    assert all(torch.isfinite(loss) for loss in losses.values())
    for name in ("loss_box", "loss_mask", "loss_mask_iou"):
        assert losses[name].item() == 0.0
    # OHEM still picks hard negatives, and the semantic map should be empty
    assert losses["loss_classifier"] > 0 and losses["loss_semantic"] > 0
    sum(losses.values()).backward()  # the zero losses stay tied to the graph
    assert model.mask_iou_head.net[0].weight.grad is not None


def test_network_output_shapes():
    model = tiny_model("yolact_plus_r50").eval()
    batch = model.preprocess([random_image(64, 96, 5)])
    (output,) = model.infer(batch)
    # 9 anchors per location on P3..P7 of the 64 x 96 padded image
    locations = sum(math.ceil(64 / s) * math.ceil(96 / s) for s in (8, 16, 32, 64, 128))
    assert output.class_logits.shape == (9 * locations, 4)  # 3 classes + background
    assert output.box_deltas.shape == (9 * locations, 4)
    assert output.coefficients.shape == (9 * locations, 8)
    assert output.anchors.shape == (9 * locations, 4)
    assert output.prototypes.shape == (16, 24, 8)  # stride 4, channels last
    assert output.coefficients.abs().max() < 1 and output.prototypes.min() >= 0
    # the first location's anchors are centred on its cell: (4, 4) at stride 8
    centres = (output.anchors[:9, :2] + output.anchors[:9, 2:]) / 2
    assert torch.equal(centres, torch.full((9, 2), 4.0))
    assert output.semantic_logits is None


def test_batch_gives_the_same_results_as_single_images():
    model = tiny_model(score_threshold=0.0, detections_per_image=10).eval()
    images = [random_image(64, 64, 6), random_image(60, 62, 7), random_image(70, 50, 8)]
    for image, together in zip(images, model(images), strict=True):
        (alone,) = model([image])
        assert len(alone) == len(together) > 0
        torch.testing.assert_close(together.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(together.scores, alone.scores, rtol=1e-4, atol=1e-5)
        assert (together.masks != alone.masks).float().mean() < 1e-3


# ----------------------------------------------------------------------------- geometry


def test_pixel_shuffle_protonet_is_a_transposed_conv_after_the_p3_convs():
    """The sub-pixel layout: P3 cell (r, c) gives prototype j at stride-4 cell (2r + dy,
    2c + dx) from channel 4 j + 2 dy + dx, i.e. a 2 x 2 stride-2 transposed conv."""
    torch.manual_seed(0)
    protonet = Protonet(6, 3, channels=8, norm=None, upsampling="pixel_shuffle").eval()
    feature = torch.randn(2, 6, 5, 7)
    prototypes = protonet(feature)
    assert prototypes.shape == (2, 3, 10, 14) and prototypes.min() >= 0
    hidden = protonet.refine(protonet.convs(feature))  # every conv at P3's resolution
    conv = protonet.prototypes  # weight [4k, C, 1, 1] -> transposed conv weight [C, k, 2, 2]
    with torch.no_grad():
        conv.bias.normal_()  # one bias per prototype and sub-cell
    weight = conv.weight[:, :, 0, 0].T.reshape(8, 3, 2, 2)
    bias = conv.bias.view(1, 3, 2, 2).repeat(1, 1, 5, 7)  # tiled over the P3 cells
    expected = F.relu(F.conv_transpose2d(hidden, weight, stride=2) + bias)
    torch.testing.assert_close(protonet(feature), expected)
    # the channel layout by hand: channel 4 j + 2 dy + dx lands on sub-cell (dy, dx)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.arange(12.0))
    grid = protonet(feature)[0, :, :2, :2]  # the first P3 cell's 2 x 2 sub-cells
    torch.testing.assert_close(grid, torch.arange(12.0).view(3, 2, 2))
    with pytest.raises(ValueError, match="upsampling must be one of"):
        Protonet(6, 3, channels=8, upsampling="nearest")


def test_box_crop_weights_cover_the_box():
    # box x 2..6, y 2..10 at stride 4: cells x 0.5..1.5, y 0.5..2.5
    weights = box_crop_weights(torch.tensor([[2.0, 2.0, 6.0, 10.0]]), (4, 4), 4.0)
    rows, cols = torch.tensor([0.5, 1.0, 0.5, 0.0]), torch.tensor([0.5, 0.5, 0.0, 0.0])
    torch.testing.assert_close(weights[0], rows[:, None] * cols[None, :])
    assert weights.sum() == 4 * 8 / 16  # the box's area in cells


def test_prototype_targets_average_each_cell():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :6] = True
    expected = torch.tensor([[1.0, 0.5], [0.0, 0.0]])
    torch.testing.assert_close(prototype_targets(masks, (8, 8), (2, 2), 4)[0], expected)
    # an original 4 x 4 image shown at 8 x 8 in the model, padded to a 3 x 3 grid
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    grid = prototype_targets(full, (8, 8), (3, 3), 4)[0]
    torch.testing.assert_close(grid, torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 0]]))
    assert prototype_targets(masks[:0], (8, 8), (2, 2), 4).shape == (0, 2, 2)


def test_paste_sets_exactly_the_pixel_centres_inside_the_box():
    certain = (torch.full((4, 4, 1), 10.0), torch.ones(1, 1))  # prototypes, coefficients
    # model frame = original frame scaled by 2: the box covers original x 1.4..5.6, y 2..6
    box = torch.tensor([[0.7, 1.0, 2.8, 3.0]])
    masks = paste_prototype_masks(*certain, box, (2.0, 2.0), (8, 8), 4.0)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 1:6] = True  # centres 2.5..5.5 and 1.5..5.5
    assert torch.equal(masks[0], expected)
    # a left-right ramp of logits, symmetric about the middle: the right half is set
    ramp = torch.linspace(-3, 3, 4).expand(4, 4)[:, :, None]
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    masks = paste_prototype_masks(ramp, torch.ones(1, 1), box, (1.0, 1.0), (16, 16), 4.0)
    assert masks[0, :, :8].sum() == 0 and masks[0, :, 8:].all()


def test_paste_equals_sampling_the_whole_mask():
    """Per-box windows give what sampling full prototype-resolution masks at every pixel
    centre gives, inside each box."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(12, 10, 4, generator=generator)  # a 48 x 40 padded model frame
    coefficients = torch.randn(6, 4, generator=generator)
    corners = torch.rand(6, 2, generator=generator) * 30
    boxes = torch.cat([corners, corners + torch.rand(6, 2, generator=generator) * 20 + 1], 1)
    boxes = boxes.clamp(max=torch.tensor([38.0, 45.0, 38.0, 45.0]))  # a 45 x 38 image
    factors, size = (1.3, 0.7), (32, 49)  # original 32 x 49
    got = paste_prototype_masks(prototypes, coefficients, boxes, factors, size, 4.0)
    probs = torch.sigmoid(prototypes @ coefficients.T).permute(2, 0, 1)  # [6, 12, 10]
    xs = (torch.arange(49) + 0.5) / factors[0] / 40 * 2 - 1
    ys = (torch.arange(32) + 0.5) / factors[1] / 48 * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(6, -1, -1, -1)
    sampled = F.grid_sample(probs[:, None], grid, padding_mode="border", align_corners=False)
    original = boxes * torch.tensor([1.3, 0.7, 1.3, 0.7])
    centre_x, centre_y = torch.arange(49) + 0.5, torch.arange(32) + 0.5
    inside_x = (centre_x >= original[:, :1]) & (centre_x < original[:, 2:3])  # [6, 49]
    inside_y = (centre_y >= original[:, 1:2]) & (centre_y < original[:, 3:])  # [6, 32]
    expected = (sampled[:, 0] >= 0.5) & inside_y[:, :, None] & inside_x[:, None, :]
    assert expected.any() and torch.equal(got, expected)


def hand_made_output(model: YOLACT, boxes: list[list[float]], scores: list[float]) -> YolactOutput:
    """Anchors equal to `boxes` (zero deltas), class-0 probabilities `scores`, and masks that
    are certain everywhere (positive prototypes and coefficients)."""
    num = len(boxes)
    probs = torch.tensor([[s, 0.0, 0.0, 1 - s] for s in scores])
    return YolactOutput(
        class_logits=probs.clamp(min=1e-9).log(),
        box_deltas=torch.zeros(num, 4),
        coefficients=torch.ones(num, 8),
        anchors=torch.tensor(boxes),
        prototypes=torch.full((16, 16, 8), 5.0),
    )


def test_model_frame_boxes_and_masks_map_back_to_the_original_frame():
    model = tiny_model(min_size=96, max_size=200).eval()
    image = random_image(64, 80, 9)
    batch = model.preprocess([image])
    assert resized_size((64, 80), 96, 200) == (96, 120) == batch.image_sizes[0]
    output = hand_made_output(model, [[0.0, 0.0, 120.0, 96.0]], [0.9])
    (result,) = model.postprocess([output], batch)
    torch.testing.assert_close(result.boxes, torch.tensor([[0.0, 0.0, 80.0, 64.0]]))
    assert result.labels.tolist() == [0] and result.masks.all()
    torch.testing.assert_close(result.scores, torch.tensor([0.9]))


def test_nms_method_is_selectable():
    # a overlaps b, b overlaps c, a does not touch c: Fast NMS also drops c
    boxes = [[0.0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]]
    kept = {}
    for method in ("fast", "standard"):
        model = tiny_model(nms_method=method, nms_threshold=0.3).eval()
        batch = model.preprocess([random_image(64, 64, 10)])
        (result,) = model.postprocess([hand_made_output(model, boxes, [0.9, 0.8, 0.7])], batch)
        kept[method] = result.scores.tolist()
    assert kept["fast"] == pytest.approx([0.9])
    assert kept["standard"] == pytest.approx([0.9, 0.7])
    with pytest.raises(ValueError, match="nms_method must be one of"):
        tiny_model(nms_method="soft")


def test_atss_assigner_gives_every_object_several_positives():
    target = two_objects_and_a_crowd()
    counts = {}
    for assigner in ("iou", "atss"):
        model = tiny_model(assigner=assigner).train()
        batch = model.preprocess([random_image(64, 64, 0)])
        (output,) = model._network(batch, with_semantic=False)
        assert sum(output.anchors_per_level) == len(output.anchors)
        (gt,) = train_targets([target], batch)
        labels, matched = model._match(output, gt)
        positives = matched[labels == POSITIVE]
        assert set(positives.tolist()) == {0, 1}  # both real objects, never the crowd
        counts[assigner] = [int((positives == g).sum()) for g in (0, 1)]
    assert min(counts["atss"]) >= 2 and sum(counts["atss"]) > sum(counts["iou"])
    losses = tiny_model(assigner="atss").train()([random_image(64, 64, 0)], [target])
    assert all(torch.isfinite(loss) for loss in losses.values())
    with pytest.raises(ValueError, match="assigner must be one of"):
        tiny_model(assigner="simota")


def test_bn_head_has_per_level_statistics_that_fold_away():
    # with the separable protonet refinement: its depthwise and pointwise norms fold too
    model = tiny_model("yolact_nano", head_norm="bn", head_convs=2, separable_refine=True)
    model.train()
    images = [random_image(64, 64, 0), random_image(64, 64, 1)]
    model(images, [two_objects_and_a_crowd(), Instances.empty((64, 64))])  # updates the stats
    norms = model.head.convs[0].norms
    assert len(norms) == len(model.strides) == 5
    assert not torch.equal(norms[0].running_mean, norms[1].running_mean)
    model.eval()
    want = model.infer(model.preprocess(images))
    optimized = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in optimized.modules())
    got = optimized.infer(optimized.preprocess(images))
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b.class_logits, a.class_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.coefficients, a.coefficients, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.prototypes, a.prototypes, rtol=1e-4, atol=1e-4)
    assert "head.convs.0.norms.4.running_var" in model.state_dict()  # the original is intact
    depthwise = model.protonet.refine[0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels


def test_only_the_best_anchors_go_to_nms():
    boxes = [[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 20, 10, 30]]  # disjoint
    scores = [0.7, 0.9, 0.6, 0.8]
    for limit, expected in ((2, [0.9, 0.8]), (3, [0.9, 0.8, 0.7]), (1000, [0.9, 0.8, 0.7, 0.6])):
        model = tiny_model(anchors_before_nms=limit, nms_method="standard").eval()
        batch = model.preprocess([random_image(64, 64, 10)])
        (result,) = model.postprocess([hand_made_output(model, boxes, scores)], batch)
        assert result.scores.tolist() == pytest.approx(expected), limit
    with pytest.raises(ValueError, match="anchors_before_nms must be a positive int"):
        tiny_model(anchors_before_nms=0)


class ConstantIoU(torch.nn.Module):
    """A stand-in mask-IoU head: the same predicted IoU per class for every mask."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        assert masks.ndim == 4 and masks.shape[1] == 1
        return self.values.expand(len(masks), -1)


def test_rescoring_multiplies_scores_by_the_predicted_mask_iou():
    images = [random_image(64, 64, 11)]
    plain = tiny_model("yolact_plus_r50", mask_rescoring=False, score_threshold=0.0).eval()
    rescored = tiny_model("yolact_plus_r50", score_threshold=0.0).eval()
    rescored.load_state_dict(plain.state_dict(), strict=False)  # all but the IoU head
    table = [0.2, 0.9, 1.5]  # the last is clamped to 1
    rescored.mask_iou_head = ConstantIoU(table)
    (before,), (after,) = plain(images), rescored(images)
    expected = sorted(
        (score * min(table[label], 1.0), label)
        for score, label in zip(before.scores.tolist(), before.labels.tolist(), strict=True)
    )[::-1]
    got = list(zip(after.scores.tolist(), after.labels.tolist(), strict=True))
    assert [label for _, label in got] == [label for _, label in expected]
    assert [score for score, _ in got] == pytest.approx([score for score, _ in expected])


def test_mask_iou_loss_trains_only_its_head():
    silent = {f"loss_{name}_weight": 0.0 for name in ("classifier", "box", "mask", "semantic")}
    model = tiny_model("yolact_plus_r50", mask_iou_min_area=1.0, **silent).train()
    losses = model([random_image(64, 64, 12)], [two_objects_and_a_crowd()])
    assert losses["loss_mask_iou"] > 0
    sum(losses.values()).backward()
    head_grad = model.mask_iou_head.net[0].weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    proto_grad = model.protonet.prototypes.weight.grad
    assert proto_grad is None or proto_grad.abs().sum() == 0  # the masks are detached


# ----------------------------------------------------------------------------- OHEM


def test_ohem_picks_three_hardest_negatives_per_positive():
    model = tiny_model(num_classes=2)
    # anchors: one positive (object 0, class 1), six negatives, one ignored
    labels = torch.tensor([POSITIVE] + [NEGATIVE] * 6 + [IGNORED])
    background = torch.tensor([0.0, 5.0, -1.0, 3.0, -2.0, 1.0, 0.5, 9.0])
    logits = torch.stack([torch.zeros(8), torch.zeros(8), background], dim=1)  # C = 2
    target = TrainTargets(
        boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
        labels=torch.tensor([1]),
        iscrowd=torch.tensor([False]),
        masks=torch.zeros(1, 8, 8, dtype=torch.bool),
        to_original=(1.0, 1.0),
    )
    loss = model._classifier_loss(logits, labels, torch.zeros(8, dtype=torch.long), target)
    # hardest negatives: lowest background logits -1, -2, 0.5 (anchors 2, 4, 6)
    chosen, classes = [0, 2, 4, 6], [1, 2, 2, 2]
    expected = sum(
        -F.log_softmax(logits[i], dim=0)[c] for i, c in zip(chosen, classes, strict=True)
    )
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("images", "targets", "error", "match"),
    [
        (random_image(64, 64, 0), None, TypeError, "list of uint8"),
        ([random_image(64, 64, 0).float()], None, TypeError, r"images\[0\] must be uint8"),
        ([random_image(64, 64, 0)], [Instances.empty((64, 60))], ValueError, r"targets\[0\]"),
        ([random_image(64, 64, 0)], [], ValueError, "one per image"),
    ],
)
def test_rejects_bad_inputs(images, targets, error, match):
    model = tiny_model().train(targets is not None)
    with pytest.raises(error, match=match):
        model(images, targets)


def test_rejects_bad_targets_and_options():
    model = tiny_model(num_classes=2).train()
    target = two_objects_and_a_crowd()  # has label 2
    with pytest.raises(ValueError, match=r"targets\[0\].labels must lie in \[0, 2\)"):
        model([random_image(64, 64, 0)], [target])
    no_masks = Instances((64, 64), target.boxes[:1], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"targets\[0\].masks is None"):
        model([random_image(64, 64, 0)], [no_masks])
    with pytest.raises(ValueError, match="training needs targets"):
        model([random_image(64, 64, 0)])
    with pytest.raises(ValueError, match="anchor_sizes needs one size per pyramid level"):
        tiny_model(anchor_sizes=(16, 32))
    with pytest.raises(ValueError, match="protonet_upsampling must be one of"):
        tiny_model(protonet_upsampling="deconv")
    with pytest.raises(TypeError, match="did you mean num_prototypes"):
        yolact_r50(3, num_prototype=8)


# ----------------------------------------------------------------------------- zoo


def test_zoo_variants():
    assert {"yolact_r50", "yolact_r101", "yolact_plus_r50", "yolact_nano"} <= set(MODELS)
    plus = tiny_model("yolact_plus_r50")
    assert plus.mask_iou_head is not None and plus.head.num_anchors == 9
    deformable = [m for m in plus.backbone.body.modules() if isinstance(m, ModulatedDeformConv2d)]
    assert len(deformable) == 2 + 2 + 1  # blocks 0, 3 of C3 (4 blocks) and C4 (6), 0 of C5
    plain = tiny_model("yolact_r50")
    assert plain.mask_iou_head is None and plain.head.num_anchors == 3
    assert not any(isinstance(m, ModulatedDeformConv2d) for m in plain.modules())
    # default anchors: 3 strides at 550, scaled with the input size
    nano = build_model("yolact_nano", 3, width=0.25)
    assert nano.anchor_generator.sizes[0] == (24 * 640 / 550,)
    info = model_info(tiny_model(score_threshold=1.0), image_size=64)
    assert info["params"] > 0 and info["gflops"] > 0


# ----------------------------------------------------------------------------- learning


def overfit(model, images, targets, steps: int = 100, warmup: int = 30) -> dict:
    """Train on the images alone (AdamW 4e-3, linear warmup, then cosine from 1 down to
    0.1), then the segm and bbox metrics of the model's predictions on them."""

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * step / steps))

    fit(model, images, targets, steps=steps, lr=4e-3, factor=factor)
    model.eval()
    return evaluate(targets, model(images), iou_types=("segm", "bbox")).metrics


def test_overfits_four_synthetic_images(tmp_path):
    """From random init, a small YOLACT memorises 4 images: mask AP >= 0.9 on them. The
    images are shown to the network at twice their size, so that the stride-4 prototypes
    resolve the smallest objects (8 px)."""
    images, targets = four_synthetic_images(tmp_path)
    torch.manual_seed(0)
    backbone = resnet_fpn(
        18, width=8, out_channels=32, returned_layers=("c3", "c4", "c5"), extra_levels="p6p7"
    )
    model = YOLACT(
        backbone,
        6,
        min_size=256,
        max_size=256,
        anchor_sizes=(32, 64, 128, 256, 512),
        head_channels=32,
        protonet_channels=32,
    ).train()
    metrics = overfit(model, images, targets)
    assert metrics["segm"]["AP"] >= 0.9, metrics
    assert metrics["bbox"]["AP"] >= 0.9, metrics


def test_nano_overfits_four_synthetic_images(tmp_path):
    """yolact_nano with its zoo defaults (light backbone, BN with per-level statistics in the
    head, ATSS, greedy NMS) memorises 4 images: its forward, losses and BN inference
    statistics are consistent."""
    images, targets = four_synthetic_images(tmp_path)
    torch.manual_seed(0)
    model = build_model("yolact_nano", 6, min_size=256, max_size=256).train()
    metrics = overfit(model, images, targets)
    assert metrics["segm"]["AP"] >= 0.9, metrics


# ----------------------------------------------------------------------------- engine


def test_trains_and_reloads_through_the_api(tmp_path):
    data = generate_synthetic(
        tmp_path / "data", num_train=4, num_val=2, seed=3, image_size=(64, 64)
    )
    options = {key: value for key, value in TINY["yolact_nano"].items() if key != "min_size"}
    model = Model("yolact_nano", model_kwargs=options)
    summary = model.train(data, epochs=1, imgsz=64, batch=2, workers=0, out=tmp_path / "run")
    assert summary["epochs"] == 1 and summary["steps"] == 2
    _, metadata = load_weights(tmp_path / "run" / "best.safetensors")
    assert metadata["model"] == "yolact_nano" and metadata["model_kwargs"]["max_size"] == 64
    loaded = load_model(tmp_path / "run" / "best.safetensors")
    image = random_image(50, 70, 13)
    (a,), (b,) = model.predict(image, conf=0.0), loaded.predict(image, conf=0.0)
    assert a.image_size == (50, 70) and torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.scores, b.scores)
