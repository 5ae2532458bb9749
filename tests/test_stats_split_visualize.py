import numpy as np
import pytest
import torch

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.split import split_dataset, split_indices
from instaseg.data.stats import dataset_stats, format_stats
from instaseg.ops.masks import mask_to_rle
from instaseg.structures import Instances
from instaseg.visualize import class_colors, draw_instances


def square(size, h=200, w=200):
    mask = np.zeros((h, w), bool)
    mask[:size, :size] = True
    return mask_to_rle(mask)


def make_dataset():
    records = [
        ImageRecord(
            "a.png",
            200,
            200,
            [Annotation(0, square(10)), Annotation(1, square(40)), Annotation(1, square(100))],
            id=1,
        ),
        ImageRecord("b.png", 100, 150, [], id=2),
        ImageRecord(
            "c.png", 200, 200, [Annotation(0, [[0, 0, 50, 0, 50, 50, 0, 50]], iscrowd=True)], id=3
        ),
    ]
    return InstanceDataset(records, ["cat", "dog"], "/nonexistent", category_ids=[3, 17])


def test_stats_hand_counts():
    stats = dataset_stats(make_dataset())
    assert (stats.num_images, stats.num_instances, stats.num_negatives, stats.num_crowd) == (
        3,
        4,
        1,
        1,
    )
    cat, dog = stats.classes
    # areas: 100 (small), 1600 (medium), 10000 (large), polygon 2500 (medium)
    assert (cat.instances, cat.images, cat.small, cat.medium, cat.large, cat.crowd) == (
        2,
        2,
        1,
        1,
        0,
        1,
    )
    assert (dog.instances, dog.images, dog.small, dog.medium, dog.large) == (2, 1, 0, 1, 1)
    assert stats.size_counts == {"small": 1, "medium": 2, "large": 1}
    assert stats.instances_per_image["0"] == 1 and stats.instances_per_image["1"] == 1
    assert stats.instances_per_image["2-5"] == 1
    assert stats.image_sizes == ((100, 150), (200, 200))
    text = format_stats(stats)
    assert "dog" in text and "17" in text and "(1 without annotations)" in text


def test_split_is_deterministic_disjoint_and_order_free():
    names = [f"img_{i:03d}.png" for i in range(50)]
    train, val = split_indices(names, 0.2, seed=3)
    assert len(val) == 10 and sorted(train + val) == list(range(50))
    assert split_indices(names, 0.2, seed=3) == (train, val)
    assert split_indices(names, 0.2, seed=4) != (train, val)
    reversed_names = names[::-1]
    _, val_rev = split_indices(reversed_names, 0.2, seed=3)
    assert {reversed_names[i] for i in val_rev} == {names[i] for i in val}


def test_split_dataset_and_bad_fraction():
    train, val = split_dataset(make_dataset(), 0.34, seed=0)
    assert len(train) + len(val) == 3 and len(val) == 1
    assert {r.file_name for r in train.records}.isdisjoint({r.file_name for r in val.records})
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(["a"], 1.5)


def test_class_colors_distinct():
    colors = class_colors(20)
    assert len({tuple(c) for c in colors}) == 20


def test_draw_instances_colours_mask_pixels_only():
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 5:15, 10:20] = True
    instances = Instances(
        (20, 30), torch.tensor([[10.0, 5, 20, 15]]), torch.tensor([0]), masks=masks
    )
    out = draw_instances(image, instances, ["thing"], show_boxes=False, show_labels=False)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[10, 15].sum() > 0 and out[0, 0].sum() == 0
    with pytest.raises(ValueError, match="image is"):
        draw_instances(torch.zeros(3, 5, 5, dtype=torch.uint8), instances, ["thing"])
