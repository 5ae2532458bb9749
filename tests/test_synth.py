"""The synthetic dataset: deterministic, COCO-valid, masks equal to what was drawn."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from instaseg.data.config import load_data_config
from instaseg.data.synth import SHAPE_NAMES, generate_synthetic, render_scene, scene_rng
from instaseg.ops.masks import mask_to_box, rle_to_mask

NUM_TRAIN, NUM_VAL = 24, 6


def file_hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "shapes"
    generate_synthetic(out, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=7)
    return out


def load_split(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def test_layout_and_yaml(dataset_dir):
    names = ", ".join(SHAPE_NAMES)
    assert (dataset_dir / "data.yaml").read_text() == (
        "format: coco\n"
        "train: {json: annotations/train.json, images: images/train}\n"
        "val: {json: annotations/val.json, images: images/val}\n"
        f"names: [{names}]\n"
    )
    assert len(list((dataset_dir / "images" / "train").glob("*.png"))) == NUM_TRAIN
    assert len(list((dataset_dir / "images" / "val").glob("*.png"))) == NUM_VAL


def test_same_seed_gives_the_same_bytes(tmp_path, dataset_dir):
    again = generate_synthetic(tmp_path / "again", num_train=NUM_TRAIN, num_val=NUM_VAL, seed=7)
    assert file_hashes(again.parent) == file_hashes(dataset_dir)


def test_another_seed_gives_other_data(tmp_path):
    first = generate_synthetic(tmp_path / "a", num_train=3, num_val=1, seed=1).parent
    second = generate_synthetic(tmp_path / "b", num_train=3, num_val=1, seed=2).parent
    first_hashes, second_hashes = file_hashes(first), file_hashes(second)
    assert first_hashes.keys() == second_hashes.keys()
    differing = [name for name in first_hashes if first_hashes[name] != second_hashes[name]]
    assert set(differing) == set(first_hashes) - {"data.yaml"}


@pytest.mark.parametrize("split, count", [("train", NUM_TRAIN), ("val", NUM_VAL)])
def test_counts_ids_and_categories(dataset_dir, split, count):
    coco = load_split(dataset_dir, split)
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(SHAPE_NAMES) + 1))
    assert [c["name"] for c in coco["categories"]] == list(SHAPE_NAMES)
    assert len(coco["images"]) == count
    assert sorted(p.name for p in (dataset_dir / "images" / split).iterdir()) == sorted(
        image["file_name"] for image in coco["images"]
    )
    ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ids)) == len(ids)
    assert {a["image_id"] for a in coco["annotations"]} <= {image["id"] for image in coco["images"]}


def test_json_masks_are_the_drawn_visible_parts(dataset_dir):
    coco = load_split(dataset_dir, "train")
    for image in coco["images"]:
        index = int(Path(image["file_name"]).stem)
        scene = render_scene(scene_rng(7, "train", index), (256, 256))
        pixels = np.asarray(Image.open(dataset_dir / "images" / "train" / image["file_name"]))
        assert np.array_equal(pixels, scene.image)
        annotations = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(annotations) == len(scene.labels)
        if not annotations:
            continue
        masks = np.stack([rle_to_mask(a["segmentation"]) for a in annotations])
        assert masks.sum(axis=0).max() <= 1, "instances of one image overlap"
        for annotation, mask, drawn, label in zip(
            annotations, masks, scene.masks, scene.labels, strict=True
        ):
            assert np.array_equal(mask, drawn)
            assert annotation["category_id"] == label + 1
            assert annotation["area"] == int(mask.sum()) >= 16
            x0, y0, x1, y1 = mask_to_box(mask)
            assert annotation["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert annotation["iscrowd"] == 0


def test_small_medium_and_large_objects_all_occur(dataset_dir):
    areas = np.array([a["area"] for a in load_split(dataset_dir, "train")["annotations"]])
    assert (areas < 32**2).sum() >= 5
    assert ((areas >= 32**2) & (areas < 96**2)).sum() >= 5
    assert (areas >= 96**2).sum() >= 1


def test_every_class_occurs(dataset_dir):
    labels = {a["category_id"] for a in load_split(dataset_dir, "train")["annotations"]}
    assert labels == set(range(1, len(SHAPE_NAMES) + 1))


def test_negative_images_occur(tmp_path):
    root = generate_synthetic(
        tmp_path / "neg", num_train=12, num_val=0, negative_fraction=0.5
    ).parent
    coco = load_split(root, "train")
    with_objects = {a["image_id"] for a in coco["annotations"]}
    assert 0 < len(with_objects) < len(coco["images"])


def test_pycocotools_loads_the_json(dataset_dir):
    coco = COCO(str(dataset_dir / "annotations" / "train.json"))
    assert len(coco.getImgIds()) == NUM_TRAIN
    annotation = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.annToMask(annotation).sum() == annotation["area"]


def test_data_yaml_loads_with_the_data_config(dataset_dir):
    config = load_data_config(dataset_dir / "data.yaml")
    train, val = config.dataset("train"), config.dataset("val")
    assert (len(train), len(val)) == (NUM_TRAIN, NUM_VAL)
    assert train.class_names == list(SHAPE_NAMES)
    image, instances = train[0]
    assert tuple(image.shape) == (3, 256, 256) and instances.masks is not None


def test_refuses_a_non_empty_out_dir_unless_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_synthetic(out, num_train=1, num_val=1)
    generate_synthetic(out, num_train=3, num_val=1, overwrite=True)
    generate_synthetic(out, num_train=2, num_val=1, overwrite=True)
    assert len(list((out / "images" / "train").iterdir())) == 2, "stale images left behind"
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train": -1},
        {"image_size": (16, 256)},
        {"negative_fraction": 1.5},
        {"seed": -3},
        {"max_objects": 0},
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    arguments = {"num_train": 1, "num_val": 1, **kwargs}
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path / "bad", **arguments)
