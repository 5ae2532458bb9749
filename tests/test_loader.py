"""collate, deterministic loading across workers, and the samplers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.loader import build_loader, collate, seeded_global_rngs
from instaseg.data.sampler import (
    RepeatFactorSampler,
    ShuffleSampler,
    derive_seed,
    repeat_factors,
)
from instaseg.data.synth import SHAPE_NAMES, generate_synthetic
from instaseg.data.transforms import train_transforms
from instaseg.ops.boxes import masks_to_boxes
from instaseg.ops.masks import mask_to_rle, mask_to_uncompressed_rle, segmentation_to_mask
from instaseg.structures import Instances


def coco_dataset(json_path: Path, image_root: Path) -> InstanceDataset:
    """A minimal reader for the synthetic json (keeps these tests independent of formats/)."""
    coco = json.loads(json_path.read_text())
    records = {
        image["id"]: ImageRecord(
            image["file_name"], image["height"], image["width"], id=image["id"]
        )
        for image in coco["images"]
    }
    for a in coco["annotations"]:
        annotation = Annotation(
            a["category_id"] - 1, a["segmentation"], bool(a["iscrowd"]), a["id"]
        )
        records[a["image_id"]].annotations.append(annotation)
    return InstanceDataset(list(records.values()), list(SHAPE_NAMES), image_root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> InstanceDataset:
    root = tmp_path_factory.mktemp("loader") / "shapes"
    generate_synthetic(root, num_train=10, num_val=0, seed=3, image_size=(48, 64))
    plain = coco_dataset(root / "annotations" / "train.json", root / "images" / "train")
    return plain.with_transforms(train_transforms(40))


def run_epochs(loader, epochs: int) -> list[list[tuple]]:
    """Every batch of `epochs` passes, as comparable tensors."""
    passes = []
    for _ in range(epochs):
        batches = []
        for images, targets in loader:
            batches.append(
                [
                    (image, t.boxes, t.labels, t.masks, t.iscrowd)
                    for image, t in zip(images, targets, strict=True)
                ]
            )
        passes.append(batches)
    return passes


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


def test_collate_returns_lists():
    batch = [
        (torch.zeros((3, 4, 5), dtype=torch.uint8), Instances.empty((4, 5))),
        (torch.zeros((3, 6, 2), dtype=torch.uint8), Instances.empty((6, 2))),
    ]
    images, targets = collate(batch)
    assert isinstance(images, list) and isinstance(targets, list)
    assert [tuple(i.shape) for i in images] == [(3, 4, 5), (3, 6, 2)]
    assert [t.image_size for t in targets] == [(4, 5), (6, 2)]


def test_two_workers_give_identical_batches_for_the_same_seed(dataset):
    def make(seed: int, workers: int):
        return build_loader(dataset, batch_size=3, shuffle=True, num_workers=workers, seed=seed)

    first = run_epochs(make(11, 2), epochs=2)
    second = run_epochs(make(11, 2), epochs=2)
    assert same(first, second)
    assert not same(first[0], first[1]), "epochs should differ in order and augmentation"
    assert same(run_epochs(make(11, 0), epochs=2), first), "worker count changed the data"
    assert not same(run_epochs(make(12, 0), epochs=1)[0], first[0])
    resumed = make(11, 0)
    resumed.set_epoch(1)
    assert same(run_epochs(resumed, epochs=1)[0], first[1])


def test_batches_cover_the_dataset(dataset):
    loader = build_loader(dataset, batch_size=4, shuffle=False, num_workers=0, seed=0)
    sizes = [len(images) for images, _ in loader]
    assert sizes == [4, 4, 2] and len(loader) == 3
    loader = build_loader(
        dataset, batch_size=4, shuffle=True, num_workers=0, seed=0, drop_last=True
    )
    assert [len(images) for images, _ in loader] == [4, 4]
    for images, targets in loader:
        assert all(tuple(image.shape) == (3, 40, 40) for image in images)
        assert all(t.image_size == (40, 40) for t in targets)


def test_loading_leaves_the_callers_random_state_alone(dataset):
    torch.manual_seed(0)
    np.random.seed(0)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    run_epochs(build_loader(dataset, batch_size=5, shuffle=True, num_workers=0, seed=1), epochs=1)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])


def test_seeded_global_rngs_is_reproducible_and_restores():
    outside = torch.get_rng_state()
    with seeded_global_rngs(123):
        first = torch.rand(3), np.random.rand(3)
    with seeded_global_rngs(123):
        second = torch.rand(3), np.random.rand(3)
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert torch.equal(torch.get_rng_state(), outside)


def test_build_loader_rejects_contradictory_arguments(dataset):
    sampler = ShuffleSampler(len(dataset))
    with pytest.raises(ValueError, match="shuffle=False"):
        build_loader(dataset, batch_size=2, shuffle=True, num_workers=0, seed=0, sampler=sampler)
    with pytest.raises(ValueError, match="num_workers > 0"):
        build_loader(
            dataset, batch_size=2, shuffle=False, num_workers=0, seed=0, persistent_workers=True
        )
    with pytest.raises(ValueError, match="seed"):
        build_loader(dataset, batch_size=2, shuffle=False, num_workers=0, seed=-1)


def test_shuffle_sampler_is_a_permutation_per_epoch():
    sampler = ShuffleSampler(20, seed=4)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(20)) and list(sampler) == epoch0
    sampler.set_epoch(1)
    assert sorted(sampler) == list(range(20)) and list(sampler) != epoch0


def test_derive_seed_mixes_and_rejects_negative_keys():
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)
    assert 0 <= derive_seed(5) < 2**63
    with pytest.raises(ValueError):
        derive_seed(1, -2)


def labelled_records(
    image_labels: list[list[int]], crowd: list[list[int]] | None = None
) -> InstanceDataset:
    """Records whose segmentation is unusable: computing factors must not decode masks."""
    crowd = crowd or [[] for _ in image_labels]
    records = [
        ImageRecord(
            f"{i}.png",
            8,
            8,
            [Annotation(c, {"not": "a mask"}) for c in labels]
            + [Annotation(c, {"not": "a mask"}, iscrowd=True) for c in crowded],
            id=i,
        )
        for i, (labels, crowded) in enumerate(zip(image_labels, crowd, strict=True))
    ]
    return InstanceDataset(records, ["a", "b", "c"], "/nonexistent")


# 10 images: class 0 in 8 of them (f = 0.8), class 1 in 2 (0.2), class 2 in 1 (0.1), one negative
IMAGE_LABELS = [[0], [0], [0], [0], [0], [0], [0, 1], [0, 2], [1], []]
# threshold 0.4: r(0) = max(1, sqrt(0.5)) = 1, r(1) = sqrt(2), r(2) = 2
EXPECTED_FACTORS = [1, 1, 1, 1, 1, 1, math.sqrt(2), 2, math.sqrt(2), 1]


def test_repeat_factors_by_hand():
    factors = repeat_factors(IMAGE_LABELS, threshold=0.4)
    assert factors.dtype == np.float64
    assert np.allclose(factors, EXPECTED_FACTORS)
    assert np.all(repeat_factors(IMAGE_LABELS, threshold=0.01) == 1)
    assert len(repeat_factors([], threshold=0.1)) == 0


def test_repeat_factor_sampler_epochs():
    sampler = RepeatFactorSampler(labelled_records(IMAGE_LABELS), threshold=0.4, seed=9)
    assert sampler.expected_length == pytest.approx(sum(EXPECTED_FACTORS))  # 12.83
    lengths = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler)
        counts = np.bincount(indices, minlength=10)
        assert np.all(counts >= np.floor(EXPECTED_FACTORS)) and np.all(
            counts <= np.ceil(EXPECTED_FACTORS)
        )
        lengths.append(len(indices))
    assert set(lengths) <= {11, 12, 13}  # sums of floors and of ceilings
    assert np.mean(lengths) == pytest.approx(sum(EXPECTED_FACTORS), abs=0.15)
    sampler.set_epoch(3)
    again = RepeatFactorSampler(labelled_records(IMAGE_LABELS), threshold=0.4, seed=9)
    again.set_epoch(3)
    assert list(again) == list(sampler)


def test_repeat_factor_sampler_ignores_crowd_annotations():
    dataset = labelled_records([[0], [0], [0], [0]], crowd=[[1], [], [], []])
    assert np.all(RepeatFactorSampler(dataset, threshold=1.0).factors == 1)


def test_loader_with_repeat_factor_sampler(dataset):
    sampler = RepeatFactorSampler(dataset, threshold=0.5, seed=2)
    loader = build_loader(
        dataset, batch_size=2, shuffle=False, num_workers=0, seed=2, sampler=sampler
    )
    for epoch in range(3):
        expected = math.ceil(len(sampler) / 2)
        assert len(loader) == expected
        assert sum(1 for _ in loader) == expected
        assert loader.epoch == epoch + 1


def dense_reference(dataset, index: int) -> Instances:
    """Decode a record the naive way: every mask at full frame, boxes by scanning it."""
    record = dataset.records[index]
    masks = [
        segmentation_to_mask(a.segmentation, record.height, record.width)
        for a in record.annotations
    ]
    masks = (
        torch.from_numpy(np.stack(masks))
        if masks
        else torch.zeros(0, record.height, record.width, dtype=torch.bool)
    )
    return Instances(
        image_size=(record.height, record.width),
        boxes=masks_to_boxes(masks),
        labels=torch.tensor([a.label for a in record.annotations], dtype=torch.int64),
        masks=masks,
        iscrowd=torch.tensor([a.iscrowd for a in record.annotations], dtype=torch.bool),
    )


def assert_same_instances(a: Instances, b: Instances) -> None:
    assert a.image_size == b.image_size
    for field in ("boxes", "labels", "masks", "iscrowd"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_box_decoding_equals_dense_decoding_on_synthetic_data(dataset):
    for index in range(len(dataset)):
        assert_same_instances(dataset.load_instances(index), dense_reference(dataset, index))


def test_box_decoding_equals_dense_decoding_for_every_segmentation_kind():
    h, w = 9, 12
    wrapped = np.zeros((h, w), dtype=bool)
    wrapped[6:, 3] = True  # a run that continues at the top of the next column
    wrapped[:2, 4] = True
    blob = np.zeros((h, w), dtype=bool)
    blob[2:5, 7:11] = True
    compressed = mask_to_rle(blob)
    annotations = [
        Annotation(0, mask_to_rle(wrapped), id=1),
        Annotation(1, mask_to_uncompressed_rle(blob), iscrowd=True, id=2),
        Annotation(2, {"size": [h, w], "counts": compressed["counts"].encode()}, id=3),
        Annotation(0, [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, 5.0]], id=4),
        Annotation(1, mask_to_rle(np.zeros((h, w), dtype=bool)), id=5),
    ]
    dataset = InstanceDataset(
        [ImageRecord("x.png", h, w, annotations, id=7)], ["a", "b", "c"], "/none"
    )
    decoded = dataset.load_instances(0)
    assert_same_instances(decoded, dense_reference(dataset, 0))
    assert decoded.boxes[0].tolist() == [3.0, 0.0, 5.0, 9.0]
    assert decoded.boxes[4].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_box_decoding_names_the_bad_annotation():
    record = ImageRecord(
        "x.png", 4, 4, [Annotation(0, mask_to_rle(np.zeros((5, 4), bool)), id=42)], id=3
    )
    dataset = InstanceDataset([record], ["a"], "/none", source="data.json")
    with pytest.raises(DataError, match=r"data.json, image id 3, annotation id 42"):
        dataset.load_instances(0)
