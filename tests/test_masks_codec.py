"""Mask codecs: hand cases, empty inputs, and hypothesis round trips against pycocotools."""

import numpy as np
import pycocotools.mask as coco_mask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from instaseg.ops.masks import (
    mask_to_box,
    mask_to_polygons,
    mask_to_rle,
    mask_to_uncompressed_rle,
    masks_to_rles,
    polygons_to_mask,
    rle_area,
    rle_to_mask,
    segmentation_to_mask,
    to_compressed_rle,
    validate_rle,
)

small_masks = st.integers(1, 16).flatmap(
    lambda h: st.integers(1, 16).flatmap(lambda w: arrays(np.bool_, (h, w)))
)


def test_square_polygon_covers_pixel_centres_inside():
    # A square from (1, 1) to (4, 3) covers columns 1..3 and rows 1..2.
    mask = polygons_to_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 5, 6)
    expected = np.zeros((5, 6), bool)
    expected[1:3, 1:4] = True
    assert (mask == expected).all()


def test_multi_part_polygons_are_unioned():
    mask = polygons_to_mask([[0, 0, 2, 0, 2, 2, 0, 2], [3, 3, 5, 3, 5, 5, 3, 5]], 6, 6)
    assert mask.sum() == 8 and mask[0, 0] and mask[4, 4] and not mask[2, 2]


def test_mask_with_hole_to_polygons_keeps_hole():
    mask = np.ones((7, 7), bool)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = False, False, False, False
    mask[3, 3] = False
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1  # one component, hole joined by a keyhole bridge
    assert (polygons_to_mask(polygons, 7, 7) == mask).all()


def test_diagonal_pixels_are_separate_parts():
    mask = np.array([[1, 0], [0, 1]], bool)
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert (polygons_to_mask(polygons, 2, 2) == mask).all()


def test_empty_mask():
    empty = np.zeros((4, 5), bool)
    assert mask_to_polygons(empty) == []
    assert mask_to_box(empty) is None
    rle = mask_to_rle(empty)
    assert rle_area(rle) == 0 and not rle_to_mask(rle).any()
    assert masks_to_rles(np.zeros((0, 4, 5), bool)) == []
    assert mask_to_uncompressed_rle(empty)["counts"] == [20]


def test_uncompressed_rle_hand_case():
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0, 1, 1, 1
    assert mask_to_uncompressed_rle(mask) == {"size": [2, 2], "counts": [1, 3]}
    first_on = np.array([[1, 0], [0, 0]], bool)
    assert mask_to_uncompressed_rle(first_on)["counts"] == [0, 1, 3]


def test_mask_to_box_pixel_edges():
    mask = np.zeros((5, 6), bool)
    mask[2, 3] = True
    assert mask_to_box(mask) == (3.0, 2.0, 4.0, 3.0)


def test_rle_size_mismatch_is_rejected():
    rle = mask_to_rle(np.ones((4, 4), bool))
    with pytest.raises(
        ValueError, match=r"RLE size \[4, 4\] does not match the image size \[4, 5\]"
    ):
        segmentation_to_mask(rle, 4, 5)
    with pytest.raises(ValueError, match="sum to"):
        validate_rle({"size": [2, 2], "counts": [1, 2]}, 2, 2)


@pytest.mark.parametrize(
    "polygons, message",
    [
        ([[0, 0, 1, 1]], "2 points; at least 3"),
        ([[0, 0, 1, 1, 2]], "odd number of coordinates"),
        ([], "non-empty list"),
        ([[0, 0, 1, "a", 2, 2]], "not a finite number"),
    ],
)
def test_bad_polygons(polygons, message):
    with pytest.raises(ValueError, match=message):
        polygons_to_mask(polygons, 4, 4)


@settings(max_examples=150, deadline=None)
@given(small_masks)
def test_round_trips(mask):
    h, w = mask.shape
    assert (rle_to_mask(mask_to_rle(mask)) == mask).all()
    uncompressed = mask_to_uncompressed_rle(mask)
    assert sum(uncompressed["counts"]) == h * w
    assert (rle_to_mask(uncompressed) == mask).all()
    # our uncompressed encoding compresses to exactly pycocotools' own encoding
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert to_compressed_rle(uncompressed)["counts"] == reference["counts"]
    assert rle_area(mask_to_rle(mask)) == mask.sum()
    if mask.any():
        assert (polygons_to_mask(mask_to_polygons(mask), h, w) == mask).all()
        x0, y0, x1, y1 = mask_to_box(mask)
        assert list(coco_mask.toBbox(reference)) == [x0, y0, x1 - x0, y1 - y0]
