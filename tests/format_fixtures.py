"""Tiny hand-made datasets in every supported layout, for the format and malformed-input tests.

Shapes are axis-aligned rectangles with integer edges, so the expected masks are exact:
the polygon [x0, y0, x1, y0, x1, y1, x0, y1] covers rows y0..y1-1 and columns x0..x1-1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.ops.masks import mask_to_rle, mask_to_uncompressed_rle


def save_image(path: Path, height: int, width: int, mode: str = "RGB", seed: int = 0) -> Path:
    """A random image of (height, width) in `mode`, saved by suffix (PNG, JPEG, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(2) if channels == 1 else pixels, mode=mode).save(path)
    return path


def save_mask(path: Path, mask: np.ndarray, value: int = 255) -> Path:
    """A bool mask [H, W] as an 8-bit PNG holding `value` on foreground."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * value, mode="L").save(path)
    return path


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def rect_polygon(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rect_mask(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def coco_dict() -> dict:
    """Three images (the third a negative), category ids with gaps (3, 7, 10), a polygon,
    a compressed RLE, and an uncompressed crowd RLE."""
    rle_mask = rect_mask(10, 12, 1, 2, 4, 8)
    crowd_mask = rect_mask(8, 9, 0, 0, 9, 3)
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 10, "width": 12},
            {"id": 5, "file_name": "sub/b.png", "height": 8, "width": 9},
            {"id": 9, "file_name": "c.png", "height": 6, "width": 6},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": [rect_polygon(5, 1, 11, 4)], "bbox": [5, 1, 6, 3], "area": 18},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentation": mask_to_rle(rle_mask)},
            {"id": 13, "image_id": 5, "category_id": 10, "iscrowd": 1,
             "segmentation": mask_to_uncompressed_rle(crowd_mask)},
        ],
        "categories": [
            {"id": 10, "name": "kite"},
            {"id": 3, "name": "car"},
            {"id": 7, "name": "dog"},
        ],
    }  # fmt: skip


def make_coco(root: Path, data: dict | None = None, images: bool = True) -> Path:
    """Write `data` (default coco_dict()) to root/annotations.json with its images beside it."""
    data = coco_dict() if data is None else data
    if images:
        for entry in data["images"]:
            save_image(root / entry["file_name"], entry["height"], entry["width"])
    return write_json(root / "annotations.json", data)


def make_yolo(root: Path, split: str = "train") -> Path:
    """images/<split>/{a,b,c}.png + labels/<split>/{a,c}.txt; b has no label file (negative or
    skipped), c an empty one (negative). Class ids 2 and 9 (a gap)."""
    save_image(root / "images" / split / "a.png", 10, 20)
    save_image(root / "images" / split / "b.png", 6, 6, seed=1)
    save_image(root / "images" / split / "c.png", 5, 7, seed=2)
    labels = root / "labels" / split
    labels.mkdir(parents=True)
    # rectangle x 2..10, y 1..5 and x 12..20, y 0..10 in a 20 x 10 image, normalised
    (labels / "a.txt").write_text("9 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n2 0.6 0 1 0 1 1 0.6 1\n")
    (labels / "c.txt").write_text("")
    return root


def make_masks_folder(root: Path) -> dict[str, list[np.ndarray]]:
    """Two samples with masks (one mask empty) and one without masks/; returns the non-empty
    masks per sample id, in file order."""
    masks = {
        "s1": [rect_mask(8, 10, 0, 0, 3, 2), rect_mask(8, 10, 5, 4, 10, 8)],
        "s2": [rect_mask(6, 5, 1, 1, 4, 5)],
    }
    save_image(root / "s1" / "images" / "s1.png", 8, 10, mode="RGBA")
    save_image(root / "s2" / "images" / "s2.png", 6, 5)
    save_image(root / "s3" / "images" / "s3.png", 4, 4)
    for sample, sample_masks in masks.items():
        for k, mask in enumerate(sample_masks):
            save_mask(root / sample / "masks" / f"m{k}.png", mask)
    save_mask(root / "s2" / "masks" / "zz_empty.png", np.zeros((6, 5), dtype=bool))
    return masks


def via_dict(version: int = 1) -> dict:
    """One image with a polygon and a rect, one with a circle and an ellipse, one negative.
    VIA 1 stores regions as a dict keyed by index, VIA 2 as a list."""
    regions_a = [
        {
            "shape_attributes": {
                "name": "polygon",
                "all_points_x": [1, 6, 6, 1],
                "all_points_y": [1, 1, 4, 4],
            },
            "region_attributes": {"kind": "round"},
        },
        {
            "shape_attributes": {"name": "rect", "x": 8, "y": 2, "width": 4, "height": 6},
            "region_attributes": {"kind": "square"},
        },
    ]
    regions_b = [
        {"shape_attributes": {"name": "circle", "cx": 10, "cy": 10, "r": 6},
         "region_attributes": {"kind": "round"}},
        {"shape_attributes": {"name": "ellipse", "cx": 25, "cy": 10, "rx": 3, "ry": 6, "theta": 0},
         "region_attributes": {"kind": {"round": True, "square": False}}},
    ]  # fmt: skip
    entries = {}
    for name, size, regions in (
        ("a.jpg", 123, regions_a),
        ("b.png", 456, regions_b),
        ("c.png", 7, []),
    ):
        stored = {str(k): r for k, r in enumerate(regions)} if version == 1 else regions
        entries[f"{name}{size}"] = {
            "filename": name, "size": size, "regions": stored, "file_attributes": {},
        }  # fmt: skip
    return entries


def make_via(root: Path, version: int = 1) -> Path:
    save_image(root / "a.jpg", 10, 14)
    save_image(root / "b.png", 20, 32)
    save_image(root / "c.png", 5, 5)
    return write_json(root / "via_region_data.json", via_dict(version))


def make_labelmap(root: Path) -> dict[str, np.ndarray]:
    """images/{a,b,c,d}.png; labels a (8-bit, values 1 and 4), b (16-bit, values 300 and 1000),
    c (all zero: a negative); d has no label map. Returns the label maps by stem."""
    maps = {
        "a": np.zeros((6, 8), np.uint8),
        "b": np.zeros((5, 9), np.uint16),
        "c": np.zeros((4, 4), np.uint8),
    }
    maps["a"][1:3, 1:4] = 1
    maps["a"][4:6, 0:8] = 4
    maps["b"][0:5, 0:2] = 300
    maps["b"][2:4, 5:9] = 1000
    for stem, label_map in maps.items():
        save_image(root / "images" / f"{stem}.png", *label_map.shape)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_map).save(root / "labels" / f"{stem}.png")
    save_image(root / "images" / "d.jpg", 4, 4)
    return maps
