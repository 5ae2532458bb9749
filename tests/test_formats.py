"""Format readers on tiny hand-made fixtures, the COCO writer, round trips, config and dispatch."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from format_fixtures import (
    coco_dict,
    make_coco,
    make_labelmap,
    make_masks_folder,
    make_via,
    make_yolo,
    rect_mask,
    save_image,
    write_json,
)
from PIL import Image
from pycocotools.coco import COCO

from instaseg.data import DataWarning, InstanceDataset
from instaseg.data.config import load_data_config, resolve_dataset
from instaseg.data.formats import (
    FORMATS,
    READERS,
    read_coco,
    read_dataset,
    read_labelmap,
    read_masks_folder,
    read_via,
    read_yolo,
    write_coco,
)
from instaseg.data.formats.labelmap import label_map_to_rles
from instaseg.data.formats.masks_folder import cropped_mask_to_rle
from instaseg.ops.masks import mask_to_rle, rle_to_mask
from instaseg.structures import Instances


def _masks(dataset: InstanceDataset, index: int) -> np.ndarray:
    return dataset.load_instances(index).masks.numpy()


def _assert_same_instances(a: InstanceDataset, b: InstanceDataset) -> None:
    assert len(a) == len(b)
    assert a.class_names == b.class_names and a.category_ids == b.category_ids
    for i in range(len(a)):
        first, second = a.load_instances(i), b.load_instances(i)
        assert first.image_size == second.image_size
        assert torch.equal(first.masks, second.masks)
        assert torch.equal(first.labels, second.labels)
        assert torch.equal(first.iscrowd, second.iscrowd)
        assert torch.equal(first.boxes, second.boxes)


# ---- COCO -----------------------------------------------------------------------------------


def test_read_coco_maps_category_gaps_and_keeps_crowd_and_negatives(tmp_path):
    dataset = read_coco(make_coco(tmp_path))
    assert len(dataset) == 3 and dataset.num_instances() == 3
    assert dataset.category_ids == [3, 7, 10]
    assert dataset.class_names == ["car", "dog", "kite"]
    first = dataset.load_instances(0)
    assert first.labels.tolist() == [1, 0]  # category 7 -> label 1, category 3 -> label 0
    assert np.array_equal(first.masks[0].numpy(), rect_mask(10, 12, 5, 1, 11, 4))
    assert np.array_equal(first.masks[1].numpy(), rect_mask(10, 12, 1, 2, 4, 8))
    assert first.boxes.tolist() == [[5, 1, 11, 4], [1, 2, 4, 8]]
    crowd = dataset.load_instances(1)
    assert crowd.iscrowd.tolist() == [True] and crowd.labels.tolist() == [2]
    assert np.array_equal(crowd.masks[0].numpy(), rect_mask(8, 9, 0, 0, 9, 3))
    assert len(dataset.load_instances(2)) == 0  # the negative is kept
    image, instances = dataset[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 9) and len(instances) == 1
    assert dataset.records[1].file_name == "sub/b.png" and dataset.records[1].id == 5


def test_read_coco_image_root_and_names_check(tmp_path):
    json_path = make_coco(tmp_path / "images", images=True)
    moved = tmp_path / "ann" / "train.json"
    moved.parent.mkdir()
    json_path.rename(moved)
    dataset = read_coco(moved, tmp_path / "images", names=["car", "dog", "kite"])
    assert dataset[0][0].shape == (3, 10, 12)


def test_coco_round_trip_is_exact_and_pycocotools_reads_it(tmp_path):
    original = read_coco(make_coco(tmp_path))
    out = tmp_path / "out" / "written.json"
    written = write_coco(original, out)
    again = read_coco(out, tmp_path)
    _assert_same_instances(original, again)
    coco = COCO(str(out))
    assert sorted(coco.getCatIds()) == [3, 7, 10]
    assert [img["id"] for img in written["images"]] == [1, 5, 9]
    for ann in written["annotations"]:
        mask = coco.annToMask(ann).astype(bool)
        assert ann["area"] == mask.sum()
        rows, cols = np.nonzero(mask)
        assert ann["bbox"] == [
            cols.min(),
            rows.min(),
            cols.max() + 1 - cols.min(),
            rows.max() + 1 - rows.min(),
        ]
    polygon = next(a for a in written["annotations"] if a["id"] == 11)
    assert isinstance(polygon["segmentation"], list)  # polygons stay polygons
    crowd = next(a for a in written["annotations"] if a["id"] == 13)
    assert crowd["iscrowd"] == 1 and isinstance(crowd["segmentation"]["counts"], str)


def test_write_coco_never_overwrites_without_asking(tmp_path):
    dataset = read_coco(make_coco(tmp_path))
    out = tmp_path / "out.json"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_coco(dataset, out)
    assert out.read_text() == "precious"
    write_coco(dataset, out, overwrite=True, file_name_prefix="imgs")
    assert json.loads(out.read_text())["images"][1]["file_name"] == "imgs/sub/b.png"


def test_instances_to_coco_json_reads_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((4, 12, 15)) < 0.3)
    instances = Instances(
        image_size=(12, 15),
        boxes=torch.zeros(4, 4),
        labels=torch.tensor([0, 2, 1, 2]),
        masks=masks,
        iscrowd=torch.tensor([False, False, True, False]),
    )
    annotations = instances.to_coco(image_id=4, category_ids=[2, 5, 11])
    for k, ann in enumerate(annotations, start=1):
        ann["id"] = k
    data = {
        "images": [{"id": 4, "file_name": "x.png", "height": 12, "width": 15}],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in ((2, "a"), (5, "b"), (11, "c"))],
    }
    dataset = read_coco(write_json(tmp_path / "inst.json", data))
    loaded = dataset.load_instances(0)
    assert torch.equal(loaded.masks, masks)
    assert loaded.labels.tolist() == [0, 2, 1, 2] and loaded.iscrowd.tolist() == [
        False,
        False,
        True,
        False,
    ]


# ---- YOLO -----------------------------------------------------------------------------------


def test_read_yolo_folder_with_gapped_class_ids(tmp_path):
    dataset = read_yolo(make_yolo(tmp_path), "train", names={2: "boat", 9: "cat"})
    assert [r.file_name for r in dataset.records] == ["a.png", "b.png", "c.png"]
    assert dataset.category_ids == [2, 9] and dataset.class_names == ["boat", "cat"]
    first = dataset.load_instances(0)
    assert first.labels.tolist() == [1, 0]
    assert np.array_equal(first.masks[0].numpy(), rect_mask(10, 20, 2, 1, 10, 5))
    assert np.array_equal(first.masks[1].numpy(), rect_mask(10, 20, 12, 0, 20, 10))
    assert len(dataset.load_instances(1)) == 0 and len(dataset.load_instances(2)) == 0


def test_read_yolo_ultralytics_yaml_with_git_symlink_file(tmp_path):
    """The COCO128 layout: the yaml's folder has `images`, a text file holding ../images."""
    make_yolo(tmp_path / "data", "train2017")
    sub = tmp_path / "data" / "seg"
    sub.mkdir()
    (tmp_path / "data" / "labels").rename(sub / "labels")
    (sub / "images").write_text("../images")
    yaml_text = "path: .\ntrain: images/train2017\nnames:\n  2: boat\n  9: cat\n"
    (sub / "config.yaml").write_text(yaml_text + "skip_if_label_file_missing: true\n")
    dataset = read_yolo(sub / "config.yaml", "train")
    assert [r.file_name for r in dataset.records] == ["a.png", "c.png"]  # b has no label file
    assert dataset.num_instances() == 2 and dataset[0][0].shape == (3, 10, 20)
    kept = read_yolo(sub / "config.yaml", "train", missing_labels="negative")
    assert len(kept) == 3


def test_read_yolo_uses_exif_oriented_size(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: displayed as 20 high, 10 wide
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "r.jpg", exif=exif)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "r.txt").write_text("0 0 0 1 0 1 0.5 0 0.5\n")
    dataset = read_yolo(tmp_path, None, names=["thing"])
    assert (dataset.records[0].height, dataset.records[0].width) == (20, 10)
    assert np.array_equal(_masks(dataset, 0)[0], rect_mask(20, 10, 0, 0, 10, 10))


# ---- masks folder ---------------------------------------------------------------------------


def test_read_masks_folder_as_drawn(tmp_path):
    expected = make_masks_folder(tmp_path)
    with pytest.warns(DataWarning, match=r"empty mask dropped.*zz_empty\.png"):
        dataset = read_masks_folder(tmp_path, workers=2)
    assert dataset.class_names == ["nucleus"] and dataset.category_ids == [1]
    assert [r.file_name for r in dataset.records] == [
        "s1/images/s1.png",
        "s2/images/s2.png",
        "s3/images/s3.png",
    ]
    for index, sample in enumerate(["s1", "s2"]):
        assert np.array_equal(_masks(dataset, index), np.stack(expected[sample]))
    assert len(dataset.load_instances(2)) == 0  # no masks/ folder: a negative
    assert all(
        isinstance(a.segmentation["counts"], str) for r in dataset.records for a in r.annotations
    )
    assert dataset[0][0].shape == (3, 8, 10)


def test_masks_folder_reads_colour_masks_and_names(tmp_path):
    save_image(tmp_path / "x" / "images" / "x.png", 4, 5)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as foreground
    rgba[1, 2, 0] = 7
    (tmp_path / "x" / "masks").mkdir()
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "x" / "masks" / "m.png")
    dataset = read_masks_folder(tmp_path, names=["cell"])
    assert dataset.class_names == ["cell"]
    assert np.array_equal(_masks(dataset, 0)[0], rect_mask(4, 5, 2, 1, 3, 2))


def test_cropped_mask_to_rle_matches_full_encoding():
    rng = np.random.default_rng(1)
    for _ in range(200):
        height, width = rng.integers(1, 25, 2)
        top, left = rng.integers(0, height), rng.integers(0, width)
        bottom = height if rng.random() < 0.3 else rng.integers(top + 1, height + 1)
        right = rng.integers(left + 1, width + 1)
        mask = np.zeros((height, width), bool)
        mask[top:bottom, left:right] = rng.random((bottom - top, right - left)) < 0.5
        rle = cropped_mask_to_rle(mask[top:bottom, left:right], top, left, height, width)
        assert rle == mask_to_rle(mask)


# ---- label maps -----------------------------------------------------------------------------


def test_read_labelmap_8_and_16_bit(tmp_path):
    maps = make_labelmap(tmp_path)
    with pytest.warns(DataWarning, match=r"without a label map.*d\.jpg"):
        dataset = read_labelmap(tmp_path)
    assert [r.file_name for r in dataset.records] == ["a.png", "b.png", "c.png"]
    assert dataset.class_names == ["object"]
    for index, stem in enumerate(["a", "b"]):
        values = sorted(set(np.unique(maps[stem]).tolist()) - {0})
        assert [a.id for a in dataset.records[index].annotations] == values
        assert np.array_equal(_masks(dataset, index), np.stack([maps[stem] == v for v in values]))
    assert len(dataset.load_instances(2)) == 0


def test_read_labelmap_with_class_maps(tmp_path):
    maps = make_labelmap(tmp_path)
    for unlabelled in ("labels/c.png", "images/c.png", "images/d.jpg"):
        (tmp_path / unlabelled).unlink()
    (tmp_path / "classes").mkdir()
    classes_a = np.where(maps["a"] == 1, 2, np.where(maps["a"] == 4, 1, 0)).astype(np.uint8)
    classes_b = (maps["b"] > 0).astype(np.uint8) * 2
    Image.fromarray(classes_a).save(tmp_path / "classes" / "a.png")
    Image.fromarray(classes_b).save(tmp_path / "classes" / "b.png")
    dataset = read_labelmap(tmp_path, classes="classes", names=["tumour", "stroma"])
    assert dataset.category_ids == [1, 2]
    assert dataset.load_instances(0).labels.tolist() == [1, 0]
    assert dataset.load_instances(1).labels.tolist() == [1, 1]


def test_label_map_to_rles_matches_per_value_masks():
    rng = np.random.default_rng(2)
    for _ in range(100):
        label_map = rng.integers(0, 5, tuple(rng.integers(1, 20, 2)))
        rles = label_map_to_rles(label_map)
        assert sorted(rles) == sorted(set(np.unique(label_map).tolist()) - {0})
        for value, rle in rles.items():
            assert rle == mask_to_rle(label_map == value)


# ---- VIA ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_read_via_shapes_and_classes(tmp_path, version):
    json_path = make_via(tmp_path, version)
    dataset = read_via(json_path, class_attribute="kind")
    assert dataset.class_names == ["round", "square"] and len(dataset) == 3
    first = dataset.load_instances(0)
    assert first.labels.tolist() == [0, 1]
    assert np.array_equal(first.masks[0].numpy(), rect_mask(10, 14, 1, 1, 6, 4))
    assert np.array_equal(first.masks[1].numpy(), rect_mask(10, 14, 8, 2, 12, 8))
    circle, ellipse = dataset.load_instances(1).masks.numpy()
    assert abs(circle.sum() - math.pi * 36) < 4 and circle[10, 10] and not circle[10, 16]
    assert (
        abs(ellipse.sum() - math.pi * 18) < 4 and ellipse[4:16, 24:26].all() and not ellipse[10, 29]
    )
    assert len(dataset.load_instances(2)) == 0


def test_read_via_one_class_and_project_file(tmp_path):
    make_via(tmp_path, 2)
    entries = json.loads((tmp_path / "via_region_data.json").read_text())
    project = write_json(
        tmp_path / "project.json", {"_via_settings": {}, "_via_img_metadata": entries}
    )
    dataset = read_via(project, names=["balloon"])
    assert dataset.class_names == ["balloon"] and dataset.num_instances() == 4
    assert set(dataset.load_instances(1).labels.tolist()) == {0}


def test_via_rotated_ellipse_is_symmetric():
    from instaseg.data.formats.via import ellipse_polygon

    points = np.asarray(ellipse_polygon(0.0, 0.0, 10.0, 2.0, math.pi / 2)).reshape(-1, 2)
    assert np.abs(points[:, 0]).max() == pytest.approx(2.0, abs=0.1)  # rotated: x holds ry
    assert np.abs(points[:, 1]).max() == pytest.approx(10.0, abs=0.1)
    radii = np.hypot(points[:, 0] / 2.0, points[:, 1] / 10.0)
    assert np.allclose(radii, 1.0)  # every vertex lies on the ellipse


# ---- dispatch, config, round trip from other formats ----------------------------------------


def test_read_dataset_dispatches_every_format(tmp_path):
    assert set(READERS) == set(FORMATS)
    sources = {
        "coco": (make_coco(tmp_path / "coco"), {}),
        "yolo": (
            make_yolo(tmp_path / "yolo"),
            {"names": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]},
        ),
        "via": (make_via(tmp_path / "via"), {}),
        "labelmap": (tmp_path / "lm", {}),
        "masks": (tmp_path / "masks", {}),
    }
    make_labelmap(tmp_path / "lm")
    make_masks_folder(tmp_path / "masks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        counts = {
            fmt: read_dataset(fmt, src, **kw).num_instances() for fmt, (src, kw) in sources.items()
        }
    assert counts == {"coco": 3, "yolo": 2, "via": 4, "labelmap": 4, "masks": 3}
    with pytest.raises(ValueError, match="did you mean 'coco'"):
        read_dataset("cocoo", tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_converting_every_format_to_coco_round_trips(tmp_path, fmt):
    builders = {
        "coco": lambda: read_coco(make_coco(tmp_path)),
        "yolo": lambda: read_yolo(make_yolo(tmp_path), "train", names={2: "boat", 9: "cat"}),
        "masks": lambda: (make_masks_folder(tmp_path), read_masks_folder(tmp_path))[1],
        "labelmap": lambda: (make_labelmap(tmp_path), read_labelmap(tmp_path))[1],
        "via": lambda: read_via(make_via(tmp_path), class_attribute="kind"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        dataset = builders[fmt]()
    out = tmp_path / "converted" / "coco.json"
    write_coco(dataset, out)
    COCO(str(out))
    _assert_same_instances(dataset, read_coco(out, dataset.image_root))


def _write_yaml(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_data_config_for_each_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_coco(tmp_path / "coco" / "train")
    make_yolo(tmp_path / "yolo")
    make_via(tmp_path / "via")
    make_labelmap(tmp_path / "lm" / "val")
    make_masks_folder(tmp_path / "masks" / "stage1")
    configs = {
        "coco": "format: coco\ntrain: {json: coco/train/annotations.json, images: coco/train}\n",
        "yolo": "format: yolo\nnames: {2: boat, 9: cat}\ntrain: {images: yolo/images/train}\n",
        "via": "format: via\nclass_attribute: kind\ntest: {json: via/via_region_data.json}\n",
        "labelmap": "format: labelmap\nval: {images: lm/val/images, labels: lm/val/labels}\n",
        "masks": "format: masks\nnames: [nucleus]\nworkers: 2\ntrain: {root: masks/stage1}\n",
    }
    expected = {"coco": 3, "yolo": 2, "via": 4, "labelmap": 4, "masks": 3}
    for fmt, text in configs.items():  # paths are relative to the yaml's folder + root
        _write_yaml(tmp_path / "configs" / f"{fmt}.yaml", "root: ..\n" + text)
        config = load_data_config(f"configs/{fmt}.yaml")  # relative to the cwd
        assert config.format == fmt
        (split,) = config.splits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            assert config.dataset(split).num_instances() == expected[fmt], fmt


def test_resolve_dataset_accepts_yaml_folder_and_json(tmp_path):
    json_path = make_coco(tmp_path / "train")
    _write_yaml(tmp_path / "data.yaml", "format: coco\ntrain: {json: train/annotations.json}\n")
    assert len(resolve_dataset(tmp_path)) == 3
    assert len(resolve_dataset(tmp_path / "data.yaml", "train")) == 3
    assert len(resolve_dataset(json_path)) == 3


def test_coco_dict_fixture_is_valid_for_pycocotools(tmp_path):
    COCO(str(write_json(tmp_path / "c.json", coco_dict())))
    decoded = rle_to_mask(coco_dict()["annotations"][2]["segmentation"])
    assert decoded.shape == (8, 9)
