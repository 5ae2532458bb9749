"""Transforms keep images, masks, boxes and per-instance fields consistent (property tests)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from instaseg.data.transforms import (
    ColorJitter,
    Compose,
    LargeScaleJitter,
    Letterbox,
    Placement,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    apply_placement,
    train_transforms,
    val_transforms,
)
from instaseg.ops.boxes import masks_to_boxes
from instaseg.structures import Instances

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _rectangle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y0, y1 = sorted(rng.integers(0, h + 1, size=2))
    x0, x1 = sorted(rng.integers(0, w + 1, size=2))
    mask = np.zeros((h, w), dtype=bool)
    mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
    return mask


def _ellipse(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(1, h / 2 + 1), rng.uniform(1, w / 2 + 1)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Scattered random pixels inside a random rectangle (not connected, not convex)."""
    return _rectangle(rng, h, w) & (rng.random((h, w)) < 0.3)


SHAPES = {"rectangle": _rectangle, "ellipse": _ellipse, "blob": _blob}


def make_sample(seed: int, size: tuple[int, int], num: int, kinds: tuple[str, ...]) -> tuple:
    """A random image and Instances whose label is the instance's index (to track identity
    through drops) and whose iscrowd is label % 3 == 0."""
    rng = np.random.default_rng(seed)
    h, w = size
    masks = [SHAPES[kinds[k % len(kinds)]](rng, h, w) for k in range(num)]
    masks = [m for m in masks if m.any()]
    mask_tensor = (
        torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
    )
    labels = torch.arange(len(masks), dtype=torch.int64)
    instances = Instances(
        image_size=(h, w),
        boxes=masks_to_boxes(mask_tensor),
        labels=labels,
        masks=mask_tensor,
        iscrowd=labels % 3 == 0,
    )
    image = torch.from_numpy(rng.integers(0, 256, size=(3, h, w), dtype=np.uint8))
    return image, instances


samples = st.builds(
    make_sample,
    seed=st.integers(0, 2**31),
    size=st.tuples(st.integers(1, 48), st.integers(1, 48)),
    num=st.integers(0, 6),
    kinds=st.sampled_from(
        [("rectangle",), ("ellipse",), ("blob",), ("rectangle", "ellipse", "blob")]
    ),
)

transforms = st.one_of(
    st.builds(ResizeShortestEdge, st.integers(4, 64), st.just(96)),
    st.builds(
        ResizeShortestEdge,
        st.lists(st.integers(4, 64), min_size=1, max_size=3).map(tuple),
        st.just(96),
    ),
    st.builds(Letterbox, st.integers(4, 64)),
    st.builds(RandomHorizontalFlip, st.floats(0, 1)),
    st.builds(
        LargeScaleJitter, st.integers(4, 64), st.tuples(st.floats(0.1, 1.0), st.floats(1.0, 2.5))
    ),
    st.builds(RandomCrop, st.integers(1, 48), st.sampled_from([0.0, 0.3, 1.0])),
    st.builds(ColorJitter, st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.5)),
)


def assert_consistent(image: torch.Tensor, instances: Instances, source: Instances) -> None:
    """The invariants every transform keeps."""
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    assert tuple(image.shape[1:]) == instances.image_size
    assert instances.masks is not None and instances.masks.dtype == torch.bool
    assert tuple(instances.masks.shape) == (len(instances), *instances.image_size)
    assert instances.masks.flatten(1).any(dim=1).all(), "an empty mask survived"
    assert torch.equal(instances.boxes, masks_to_boxes(instances.masks))
    assert instances.boxes.dtype == torch.float32
    # labels are source indices: each survivor appears once, in order, with its own iscrowd
    assert torch.all(instances.labels[1:] > instances.labels[:-1])
    assert torch.equal(instances.iscrowd, source.iscrowd[instances.labels])
    assert int(instances.masks.sum(dim=0).max()) <= max(1, int(source.masks.sum(dim=0).max()))


@SETTINGS
@given(sample=samples, transform=transforms, seed=st.integers(0, 2**31))
def test_every_transform_keeps_boxes_equal_to_mask_bounds(sample, transform, seed):
    image, instances = sample
    out_image, out = transform(image, instances, generator=torch.Generator().manual_seed(seed))
    assert_consistent(out_image, out, instances)


@SETTINGS
@given(sample=samples, chain=st.lists(transforms, max_size=4), seed=st.integers(0, 2**31))
def test_random_compositions_keep_boxes_equal_to_mask_bounds(sample, chain, seed):
    image, instances = sample
    out_image, out = Compose(chain)(image, instances, generator=torch.Generator().manual_seed(seed))
    assert_consistent(out_image, out, instances)


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    size=st.tuples(st.integers(8, 48), st.integers(8, 48)),
    kind=st.sampled_from(["rectangle", "ellipse", "blob"]),
    short_edge=st.integers(4, 96),
)
def test_resize_scales_boxes_within_one_pixel(seed, size, kind, short_edge):
    """Nearest sampling at pixel centres puts each box edge within half an output pixel of the
    exactly scaled edge whenever the mask's extreme row and column are sampled: always when
    enlarging, and for rectangles. When shrinking, a thin extremity of another shape can fall
    between samples, so its box may only shrink."""
    image, instances = make_sample(seed, size, 4, (kind,))
    out_image, out = ResizeShortestEdge(short_edge, max_size=200)(image, instances)
    scale = torch.tensor([out.image_size[1] / size[1], out.image_size[0] / size[0]]).repeat(2)
    expected = instances.boxes[out.labels] * scale
    if kind == "rectangle" or bool(scale.min() >= 1):
        assert torch.all((out.boxes - expected).abs() <= 1.0)
    else:
        assert torch.all(out.boxes[:, :2] >= expected[:, :2] - 1.0)
        assert torch.all(out.boxes[:, 2:] <= expected[:, 2:] + 1.0)
    if kind == "rectangle":  # a rectangle vanishes only when it shrinks below one pixel
        lost = torch.ones(len(instances), dtype=torch.bool)
        lost[out.labels] = False
        scaled_sides = (instances.boxes[:, 2:] - instances.boxes[:, :2]) * scale[:2]
        assert torch.all(scaled_sides[lost].amin(dim=1) < 1.0)


@SETTINGS
@given(sample=samples)
def test_flip_is_an_involution(sample):
    image, instances = sample
    flip = RandomHorizontalFlip(p=1.0)
    once_image, once = flip(image, instances)
    twice_image, twice = flip(once_image, once)
    assert torch.equal(twice_image, image)
    for field in ("boxes", "labels", "masks", "iscrowd"):
        assert torch.equal(getattr(twice, field), getattr(instances, field))
    assert_consistent(once_image, once, instances)


@SETTINGS
@given(sample=samples, size=st.integers(1, 80))
def test_letterbox_is_square_with_content_top_left(sample, size):
    image, instances = sample
    out_image, out = Letterbox(size, fill=7)(image, instances)
    assert out.image_size == (size, size)
    h, w = instances.image_size
    scale = size / max(h, w)
    content_h, content_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    assert max(content_h, content_w) == size
    assert torch.all(out_image[:, content_h:] == 7) and torch.all(out_image[:, :, content_w:] == 7)
    assert not out.masks[:, content_h:].any() and not out.masks[:, :, content_w:].any()


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """Channel 0 holds x, channel 1 holds y: a crop reveals its own offset."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)]).to(torch.uint8)


@SETTINGS
@given(
    sample=samples,
    crop=st.tuples(st.integers(1, 48), st.integers(1, 48)),
    seed=st.integers(0, 2**31),
)
def test_crop_keeps_exactly_the_visible_instances(sample, crop, seed):
    _, instances = sample
    h, w = instances.image_size
    image = coordinate_image(h, w)
    min_fraction = 0.5
    out_image, out = RandomCrop(crop, min_visible_fraction=min_fraction)(
        image, instances, generator=torch.Generator().manual_seed(seed)
    )
    x0, y0 = int(out_image[0, 0, 0]), int(out_image[1, 0, 0])
    ch, cw = out.image_size
    assert (ch, cw) == (min(crop[0], h), min(crop[1], w))
    window = instances.masks[:, y0 : y0 + ch, x0 : x0 + cw]
    visible = window.flatten(1).sum(dim=1)
    expected = (visible > 0) & (visible >= min_fraction * instances.masks.flatten(1).sum(dim=1))
    assert torch.equal(out.labels, torch.nonzero(expected).flatten())
    assert torch.equal(out.masks, window[expected])
    assert_consistent(out_image, out, instances)


@SETTINGS
@given(sample=samples, seed=st.integers(0, 2**31))
def test_color_jitter_keeps_geometry_and_uint8(sample, seed):
    image, instances = sample
    out_image, out = ColorJitter(0.5, 0.5, 0.5, 0.2)(
        image, instances, generator=torch.Generator().manual_seed(seed)
    )
    assert out is instances
    assert out_image.dtype == torch.uint8 and out_image.shape == image.shape


def test_color_jitter_with_zero_strength_is_the_identity():
    image, instances = make_sample(0, (20, 30), 2, ("rectangle",))
    out_image, _ = ColorJitter(0, 0, 0, 0)(image, instances)
    assert torch.equal(out_image, image)


ALL_TRANSFORMS = [
    ResizeShortestEdge((8, 16), max_size=40),
    Letterbox(24),
    RandomHorizontalFlip(1.0),
    LargeScaleJitter(24),
    RandomCrop(10),
    ColorJitter(),
    train_transforms(32),
    val_transforms(32),
]


@pytest.mark.parametrize("transform", ALL_TRANSFORMS, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("with_masks", [True, False])
def test_empty_instances_pass_through(transform, with_masks):
    image = torch.zeros((3, 20, 30), dtype=torch.uint8)
    empty = replace(
        Instances.empty((20, 30), with_masks=with_masks), iscrowd=torch.zeros(0, dtype=torch.bool)
    )
    out_image, out = transform(image, empty, generator=torch.Generator().manual_seed(0))
    assert len(out) == 0 and out.image_size == tuple(out_image.shape[1:])
    assert (out.masks is not None) == with_masks and out.iscrowd is not None


@SETTINGS
@given(sample=samples, transform=transforms, seed=st.integers(0, 2**31))
def test_boxes_without_masks_are_mapped_and_clipped(sample, transform, seed):
    image, instances = sample
    boxes_only = replace(instances, masks=None)
    out_image, out = transform(image, boxes_only, generator=torch.Generator().manual_seed(seed))
    h, w = out.image_size
    assert tuple(out_image.shape[1:]) == (h, w)
    assert torch.all(out.boxes[:, 2:] > out.boxes[:, :2])
    assert (
        torch.all(out.boxes >= 0)
        and torch.all(out.boxes[:, 0::2] <= w)
        and torch.all(out.boxes[:, 1::2] <= h)
    )
    assert torch.equal(out.iscrowd, instances.iscrowd[out.labels])


def test_same_generator_seed_gives_the_same_output():
    image, instances = make_sample(3, (40, 50), 5, ("ellipse",))
    preset = train_transforms(32)
    first = preset(image, instances, generator=torch.Generator().manual_seed(5))
    second = preset(image, instances, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1].masks, second[1].masks)
    torch.manual_seed(5)  # without a generator, transforms draw from torch's default one
    third = preset(image, instances)
    torch.manual_seed(5)
    fourth = preset(image, instances)
    assert torch.equal(third[0], fourth[0]) and torch.equal(third[1].boxes, fourth[1].boxes)


def test_large_scale_jitter_always_returns_the_output_size():
    image, instances = make_sample(1, (30, 70), 6, ("rectangle", "ellipse"))
    jitter = LargeScaleJitter((24, 40), scale_range=(0.1, 2.0))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        out_image, out = jitter(image, instances, generator=generator)
        assert tuple(out_image.shape) == (3, 24, 40) and out.image_size == (24, 40)


def test_apply_placement_by_hand():
    mask = torch.zeros((1, 4, 4), dtype=torch.bool)
    mask[0, 1:3, 2:4] = True  # rows 1-2, cols 2-3
    instances = Instances((4, 4), masks_to_boxes(mask), torch.tensor([0]), masks=mask)
    image = torch.arange(48, dtype=torch.uint8).reshape(3, 4, 4)
    # upscale x2 to 8x8, then show resized pixels [2, 8) x [4, 8) on a 6x6 canvas
    out_image, out = apply_placement(
        image, instances, Placement((4, 4), (8, 8), (6, 6), (2, 4)), fill=0
    )
    expected = torch.zeros((6, 6), dtype=torch.bool)
    expected[0:4, 0:4] = True
    assert torch.equal(out.masks[0], expected)
    assert out.boxes.tolist() == [[0.0, 0.0, 4.0, 4.0]]
    assert torch.all(out_image[:, :, 4:] == 0) and torch.all(out_image[:, 6:] == 0)


def test_resize_keeps_one_image_s_masks_disjoint():
    _, instances = make_sample(0, (40, 40), 1, ("rectangle",))
    left = torch.zeros((40, 40), dtype=torch.bool)
    left[:, :17] = True
    masks = torch.stack([left, ~left])
    pair = Instances((40, 40), masks_to_boxes(masks), torch.tensor([0, 1]), masks=masks)
    for short in (7, 13, 29, 61):
        _, out = ResizeShortestEdge(short, max_size=100)(
            torch.zeros((3, 40, 40), dtype=torch.uint8), pair
        )
        assert torch.all(out.masks.sum(dim=0) == 1)


@pytest.mark.parametrize("transform", ALL_TRANSFORMS, ids=lambda t: type(t).__name__)
def test_float_or_mismatched_images_are_rejected(transform):
    image, instances = make_sample(0, (10, 12), 1, ("rectangle",))
    with pytest.raises(TypeError, match="uint8"):
        transform(image.float() / 255, instances)
    with pytest.raises(ValueError, match="image_size"):
        transform(image[:, :5], instances)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResizeShortestEdge(0, max_size=10),
        lambda: ResizeShortestEdge(20, max_size=10),
        lambda: RandomHorizontalFlip(1.5),
        lambda: LargeScaleJitter(32, scale_range=(2.0, 1.0)),
        lambda: RandomCrop((0, 4)),
        lambda: RandomCrop(4, min_visible_fraction=2.0),
        lambda: ColorJitter(hue=0.7),
        lambda: Letterbox(-1),
    ],
)
def test_bad_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()
