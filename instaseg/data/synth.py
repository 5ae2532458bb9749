"""Synthetic shapes: the embedded default dataset for the demo and the tests.

An image has a textured, noisy background and up to `max_objects` shapes of six classes
(`SHAPE_NAMES`) with random colours, textures and rotations. Sizes are log-uniform from 10 px
to 90 % of the short side (circumscribed diameter), so at 256 x 256 about half the objects are
COCO-small (< 32^2 px), a third medium and a tenth large. The class
is the shape alone; colour carries no information. Later shapes occlude earlier ones and masks
are the visible parts, so the masks of one image never overlap. A shape is placed only where
every earlier one keeps at least a quarter of its pixels (and 16 pixels), which means every
painted pixel belongs to an annotation. Some images are negatives (no shapes at all).

Output is deterministic: image `index` of a split is drawn from `scene_rng(seed, split, index)`
alone, so the same arguments give the same bytes and any one image can be re-rendered.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.ops.masks import mask_to_box, mask_to_rle

logger = logging.getLogger(__name__)

SHAPE_NAMES = ("circle", "square", "triangle", "ellipse", "star", "ring")
SPLITS = ("train", "val")

_MIN_OBJECT_SIZE = 10.0  # px, diameter of the smallest shape's circumscribed circle
_MAX_OBJECT_FRACTION = 0.9  # of the image's short side
_MIN_VISIBLE_PIXELS = 16
_MIN_VISIBLE_FRACTION = 0.25
_PLACEMENT_TRIES = 8
_MIN_COLOUR_DISTANCE = 80.0  # RGB euclidean distance between a shape and what it covers

_DATA_YAML = """\
format: coco
train: {{json: annotations/train.json, images: images/train}}
val: {{json: annotations/val.json, images: images/val}}
names: [{names}]
"""


@dataclass
class Scene:
    """One rendered image. image: uint8 [H, W, 3] RGB; masks: bool [N, H, W], visible parts,
    pairwise disjoint, in paint order; labels: int64 [N], indices into SHAPE_NAMES."""

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray


def generate_synthetic(
    out_dir: str | Path,
    *,
    num_train: int,
    num_val: int,
    seed: int = 0,
    image_size: tuple[int, int] = (256, 256),
    max_objects: int = 8,
    negative_fraction: float = 0.05,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic COCO dataset under out_dir and return the path of its data.yaml.

    Layout: images/{train,val}/NNNNNN.png, annotations/{train,val}.json (COCO instances,
    compressed-RLE masks, category ids 1..K) and data.yaml naming both. image_size is
    (height, width). A non-empty out_dir is refused unless overwrite=True, which replaces
    only the files this function writes.
    """
    _check_arguments(num_train, num_val, seed, image_size, max_objects, negative_fraction)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    for split, count in zip(SPLITS, (num_train, num_val), strict=True):
        coco = _write_split(out_dir, split, count, seed, image_size, max_objects, negative_fraction)
        path = out_dir / "annotations" / f"{split}.json"
        path.write_text(json.dumps(coco, separators=(",", ":")))
    yaml_path = out_dir / "data.yaml"
    yaml_path.write_text(_DATA_YAML.format(names=", ".join(SHAPE_NAMES)))
    logger.info("wrote %d train and %d val synthetic images to %s", num_train, num_val, out_dir)
    return yaml_path


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator behind image `index` of `split` ("train" or "val")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.default_rng([seed, SPLITS.index(split), index])


def render_scene(
    rng: np.random.Generator,
    image_size: tuple[int, int],
    *,
    max_objects: int = 8,
    negative_fraction: float = 0.05,
) -> Scene:
    """Draw one image of (height, width) with its visible instance masks."""
    height, width = image_size
    canvas = _background(rng, height, width)
    layers = _Layers(np.full((height, width), -1, dtype=np.int32))
    num_objects = 0 if rng.random() < negative_fraction else int(rng.integers(1, max_objects + 1))
    for _ in range(num_objects):
        label = int(rng.integers(len(SHAPE_NAMES)))
        largest = _MAX_OBJECT_FRACTION * min(image_size)
        size = math.exp(rng.uniform(math.log(_MIN_OBJECT_SIZE), math.log(largest)))  # log-uniform
        for _ in range(_PLACEMENT_TRIES):
            centre = rng.uniform((0.0, 0.0), (height, width))
            region, mask = _rasterise(rng, label, centre, size, image_size)
            if layers.can_add(region, mask):
                _paint(rng, canvas, region, mask)
                layers.add(label, region, mask)
                break
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(2.0, 8.0)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = layers.owner[None] == np.arange(len(layers.labels))[:, None, None]
    return Scene(image=image, masks=masks, labels=np.array(layers.labels, dtype=np.int64))


@dataclass
class _Layers:
    """Which shape owns each pixel (-1: background) and how much of each is still visible."""

    owner: np.ndarray  # int32 [H, W]
    labels: list[int] = field(default_factory=list)
    visible: list[int] = field(default_factory=list)
    full_area: list[int] = field(default_factory=list)

    def can_add(self, region: tuple[slice, slice], mask: np.ndarray) -> bool:
        """True when a shape covering `mask` in `region` leaves every earlier one visible enough."""
        area = int(mask.sum())
        if area < _MIN_VISIBLE_PIXELS:
            return False
        remaining = np.asarray(self.visible) - self._covered(region, mask)
        needed = np.maximum(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * np.asarray(self.full_area))
        return bool(np.all(remaining >= needed))

    def add(self, label: int, region: tuple[slice, slice], mask: np.ndarray) -> None:
        area = int(mask.sum())
        covered = self._covered(region, mask).tolist()
        self.visible = [v - c for v, c in zip(self.visible, covered, strict=True)] + [area]
        self.full_area.append(area)
        self.owner[region][mask] = len(self.labels)
        self.labels.append(label)

    def _covered(self, region: tuple[slice, slice], mask: np.ndarray) -> np.ndarray:
        """Pixels of each earlier shape that `mask` would cover, int64 [num_shapes]."""
        below = self.owner[region][mask]
        return np.bincount(below[below >= 0], minlength=len(self.labels))


def _rasterise(
    rng: np.random.Generator,
    label: int,
    centre: np.ndarray,
    size: float,
    image_size: tuple[int, int],
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Bool mask of one shape over its bounding region (clipped to the image); a pixel is in
    the shape when its centre is. centre is (y, x); size is the circumscribed diameter."""
    radius = size / 2
    cy, cx = float(centre[0]), float(centre[1])
    rows = slice(max(0, math.floor(cy - radius)), min(image_size[0], math.ceil(cy + radius) + 1))
    cols = slice(max(0, math.floor(cx - radius)), min(image_size[1], math.ceil(cx + radius) + 1))
    dy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] + 0.5 - cx
    angle = rng.uniform(0, 2 * math.pi)
    u = dx * math.cos(angle) + dy * math.sin(angle)  # shape frame, [h, w]
    v = dy * math.cos(angle) - dx * math.sin(angle)
    return (rows, cols), _SHAPES[label](rng, u, v, radius)


def _circle(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    return u**2 + v**2 <= radius**2


def _square(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    half_side = radius / math.sqrt(2)
    return np.maximum(np.abs(u), np.abs(v)) <= half_side


def _triangle(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    angles = np.deg2rad(90 + 120 * np.arange(3) + rng.uniform(-12, 12, size=3))
    return _inside_polygon(u, v, radius * np.cos(angles), radius * np.sin(angles))


def _ellipse(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    minor = radius * rng.uniform(0.35, 0.6)
    return (u / radius) ** 2 + (v / minor) ** 2 <= 1


def _star(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    angles = np.pi / 2 + np.pi / 5 * np.arange(10)
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.4, 0.55))
    return _inside_polygon(u, v, radii * np.cos(angles), radii * np.sin(angles))


def _ring(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    inner = radius * rng.uniform(0.45, 0.65)
    distance_sq = u**2 + v**2
    return (distance_sq <= radius**2) & (distance_sq >= inner**2)


_SHAPES: tuple[Callable[..., np.ndarray], ...] = (
    _circle,
    _square,
    _triangle,
    _ellipse,
    _star,
    _ring,
)


def _inside_polygon(u: np.ndarray, v: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd rule: points (u, v) inside the closed polygon with vertices (xs[k], ys[k])."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for k in range(len(xs)):
        xa, ya, xb, yb = xs[k - 1], ys[k - 1], xs[k], ys[k]
        if ya == yb:
            continue  # a horizontal edge crosses no horizontal ray
        crosses = (ya > v) != (yb > v)
        x_at_v = xa + (v - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (u < x_at_v)
    return inside


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float32 [H, W, 3]: a two-colour linear gradient plus low-frequency colour blotches."""
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    along = _ramp(height, width, rng.uniform(0, 2 * math.pi))
    t = along / max(float(along.max()), 1.0)
    blotches = _smooth_noise(rng, height, width, cells=int(rng.integers(2, 8)), channels=3)
    return start + t[..., None] * (end - start) + np.float32(rng.uniform(10, 40)) * blotches


def _ramp(height: int, width: int, angle: float) -> np.ndarray:
    """Float32 [H, W]: pixel distance along the direction `angle`, 0 at the nearest corner."""
    along = np.arange(height, dtype=np.float32)[:, None] * np.float32(math.sin(angle)) + np.arange(
        width, dtype=np.float32
    )[None, :] * np.float32(math.cos(angle))
    return along - along.min()


def _smooth_noise(
    rng: np.random.Generator, height: int, width: int, *, cells: int, channels: int
) -> np.ndarray:
    """Float32 [H, W, channels] in [-1, 1]: a random (cells + 1)^2 grid, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1, channels)).astype(np.float32)
    top, dy = _knots(height, cells)
    rows = grid[top] * (1 - dy[:, None, None]) + grid[top + 1] * dy[:, None, None]
    left, dx = _knots(width, cells)
    return rows[:, left] * (1 - dx[:, None]) + rows[:, left + 1] * dx[:, None]


def _knots(length: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For `length` pixel centres spread over `cells` grid cells: the knot on their left
    (int64 [length]) and the fraction of the way to the next knot (float32 [length])."""
    t = (np.arange(length, dtype=np.float32) + 0.5) * np.float32(cells / length)
    left = np.minimum(t.astype(np.int64), cells - 1)
    return left, t - left


def _paint(
    rng: np.random.Generator, canvas: np.ndarray, region: tuple[slice, slice], mask: np.ndarray
) -> None:
    """Paint one shape with a random colour, shading and texture into canvas [H, W, 3]."""
    local = canvas[region]
    colour = _pick_colour(rng, local[mask].mean(axis=0))
    local[mask] = colour * _texture(rng, mask.shape)[mask][:, None]


def _pick_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A random RGB colour at least _MIN_COLOUR_DISTANCE from `behind` (float [3])."""
    for _ in range(10):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - behind) >= _MIN_COLOUR_DISTANCE:
            return colour
    return np.where(behind < 128, 230.0, 25.0)


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Float32 [h, w] brightness multiplier around 1: shading times flat, stripes or spots."""
    height, width = shape
    along = _ramp(height, width, rng.uniform(0, 2 * math.pi))
    shading = 1 + rng.uniform(-0.3, 0.3) * (along - along.mean()) / max(height, width, 1)
    kind = rng.integers(3)
    if kind == 1:
        across = _ramp(height, width, rng.uniform(0, 2 * math.pi))
        phase = 2 * math.pi * across / rng.uniform(4, 16) + rng.uniform(0, 2 * math.pi)
        shading *= 1 + rng.uniform(0.1, 0.25) * np.sin(phase)
    elif kind == 2:
        spots = _smooth_noise(rng, height, width, cells=int(rng.integers(3, 9)), channels=1)
        shading *= 1 + rng.uniform(0.1, 0.3) * spots[..., 0]
    return shading


def _write_split(
    out_dir: Path,
    split: str,
    count: int,
    seed: int,
    image_size: tuple[int, int],
    max_objects: int,
    negative_fraction: float,
) -> dict:
    """Render `count` images into images/<split>/ and return the split's COCO dict."""
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        rng = scene_rng(seed, split, index)
        scene = render_scene(
            rng, image_size, max_objects=max_objects, negative_fraction=negative_fraction
        )
        file_name = f"{index:06d}.png"
        Image.fromarray(scene.image).save(image_dir / file_name, compress_level=1)
        image_id = index + 1
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": image_size[0],
                "width": image_size[1],
            }
        )
        for mask, label in zip(scene.masks, scene.labels, strict=True):
            annotations.append(_coco_annotation(len(annotations) + 1, image_id, mask, int(label)))
    categories = [
        {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPE_NAMES)
    ]
    info = {"description": f"instaseg synthetic shapes, seed {seed}", "version": "1"}
    return {
        "info": info,
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }


def _coco_annotation(annotation_id: int, image_id: int, mask: np.ndarray, label: int) -> dict:
    x0, y0, x1, y1 = mask_to_box(mask)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": label + 1,
        "segmentation": mask_to_rle(mask),
        "area": int(mask.sum()),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "iscrowd": 0,
    }


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"out_dir {out_dir} is not empty; pass overwrite=True to replace the "
                "synthetic dataset in it"
            )
        for split in SPLITS:
            shutil.rmtree(out_dir / "images" / split, ignore_errors=True)
            (out_dir / "annotations" / f"{split}.json").unlink(missing_ok=True)
        (out_dir / "data.yaml").unlink(missing_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)


def _check_arguments(
    num_train: int,
    num_val: int,
    seed: int,
    image_size: tuple[int, int],
    max_objects: int,
    negative_fraction: float,
) -> None:
    for name, value in (("num_train", num_train), ("num_val", num_val), ("seed", seed)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if not isinstance(max_objects, int) or max_objects < 1:
        raise ValueError(f"max_objects must be a positive int, got {max_objects!r}")
    if len(image_size) != 2 or any(not isinstance(v, int) or v < 32 for v in image_size):
        raise ValueError(f"image_size must be (height, width) with both >= 32, got {image_size!r}")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
