"""Real datasets from ../shared/data, converted to COCO json and checked with pycocotools.

Skipped when the folder is absent. The DSB2018 test dominates the runtime: it decodes all
24,150 mask PNGs twice, once in the reader and once here to count their pixels.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
import pytest
from PIL import Image
from pycocotools.coco import COCO

from instaseg.data.formats import read_masks_folder, read_via, read_yolo, write_coco

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}"),
]


def _png_pixel_count(path: Path) -> int:
    """Non-zero pixels of a single-channel mask PNG."""
    with Image.open(path) as image:
        assert image.mode == "L", path
        return sum(image.histogram()[1:])


def test_dsb2018_masks_folder_to_coco(tmp_path):
    root = DATA / "dsb2018" / "stage1_train"
    dataset = read_masks_folder(root)
    assert len(dataset) == 566 and dataset.num_instances() == 24_150
    out = tmp_path / "dsb2018.json"
    write_coco(dataset, out)
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 566 and len(coco.getAnnIds()) == 24_150
    mask_files = sorted(root.glob("*/masks/*.png"), key=lambda p: (p.parts[-3], p.name))
    with ThreadPoolExecutor(max_workers=4) as pool:
        expected = list(pool.map(_png_pixel_count, mask_files, chunksize=64))
    annotations = [coco.anns[i] for i in sorted(coco.anns)]  # ids follow file order
    for ann, count, mask_file in zip(annotations, expected, mask_files, strict=True):
        image = coco.imgs[ann["image_id"]]
        assert image["file_name"].split("/")[0] == mask_file.parts[-3]
        decoded_area = int(coco_mask.area(coco.annToRLE(ann)))
        assert decoded_area == ann["area"] == count, mask_file
    for ann, mask_file in list(zip(annotations, mask_files, strict=True))[::500]:
        with Image.open(mask_file) as image:
            assert np.array_equal(coco.annToMask(ann).astype(bool), np.asarray(image) > 0)


@pytest.mark.parametrize(
    ("split", "num_images", "num_instances"), [("train", 61, 255), ("val", 13, 50)]
)
def test_balloon_via_to_coco(tmp_path, split, num_images, num_instances):
    dataset = read_via(DATA / "balloon" / split / "via_region_data.json", names=["balloon"])
    assert len(dataset) == num_images and dataset.num_instances() == num_instances
    out = tmp_path / f"balloon_{split}.json"
    write_coco(dataset, out)
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == num_images and len(coco.getAnnIds()) == num_instances
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["balloon"]
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert (
            ann["area"] > 0
            and x >= 0
            and y >= 0
            and x + w <= image["width"]
            and y + h <= image["height"]
        )


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco128_yolo_seg_to_coco(tmp_path, split):
    config = DATA / "coco128" / "instance_segmentation" / "config.yaml"
    label_dir = DATA / "coco128" / "instance_segmentation" / "labels" / f"{split}2017"
    label_files = sorted(label_dir.glob("*.txt"))
    num_lines = sum(1 for f in label_files for line in f.read_text().splitlines() if line.strip())
    dataset = read_yolo(config, split)
    # the yaml says skip_if_label_file_missing: images without a label file are unlabelled
    assert len(dataset) == len(label_files) == 100
    assert dataset.num_instances() == num_lines
    assert dataset.category_ids[:3] == [1, 2, 3] and dataset.category_ids[-1] == 90
    out = tmp_path / f"coco128_{split}.json"
    write_coco(dataset, out)
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == len(label_files) and len(coco.getAnnIds()) == num_lines
    used = {ann["category_id"] for ann in coco.anns.values()}
    first_tokens = {
        int(line.split()[0])
        for f in label_files
        for line in f.read_text().splitlines()
        if line.strip()
    }
    assert used == first_tokens  # YOLO class ids come back as COCO category ids
    assert len(read_yolo(config, split, missing_labels="negative")) == 128
