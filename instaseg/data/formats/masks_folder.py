"""One binary PNG per instance, in the Data Science Bowl 2018 layout:

    <root>/<id>/images/<id>.png      the image (any suffix in IMAGE_SUFFIXES)
    <root>/<id>/masks/*.png          one mask per instance; any non-zero pixel is foreground

Class-agnostic: every instance gets label 0 (`names[0]`, default "nucleus"; category id 1).
Masks are stored as compressed RLE, so 24,150 DSB2018 nuclei take a few megabytes. Mask PNGs
are decoded on a thread pool (Pillow's PNG decoder releases the GIL) and only each mask's
bounding box is copied out of the decoder.

Validation (see `instaseg.data.formats` for the shared policy): DataError for a sample folder
without `images/` (or with several candidate images), a mask whose size differs from its image
(naming the mask file), or an unreadable mask. An empty mask PNG is dropped with a DataWarning.
A sample without `masks/` is a negative (git cannot store an empty folder); when no sample has
masks at all, a DataWarning asks whether this is an unlabelled split. Folders starting with '.'
and loose files at the root are ignored.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
from PIL import Image, UnidentifiedImageError

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError, DataWarning
from instaseg.data.formats._common import Issues, image_size_or_skip, require_folder
from instaseg.data.image_io import IMAGE_SUFFIXES


def read_masks_folder(
    root: str | Path,
    *,
    names: list[str] | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> InstanceDataset:
    """Read `<root>/<id>/{images,masks}` samples; file_name is `<id>/images/<file>`.
    names: the one class name (default ["nucleus"]). workers: threads decoding masks
    (default: up to 8, bounded by the CPU count)."""
    root = require_folder(Path(root), "dataset root")
    if names is not None and len(names) != 1:
        raise DataError(root, f"a masks folder has one class, got names {list(names)}")
    class_names = list(names) if names is not None else ["nucleus"]
    issues = Issues(root)
    samples = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    records, mask_lists = [], []
    for sample in samples:
        image_path = _sample_image(sample)
        size = image_size_or_skip(image_path, skip_bad, issues)
        if size is None:
            continue
        file_name = image_path.relative_to(root).as_posix()
        records.append(
            ImageRecord(file_name=file_name, height=size[0], width=size[1], id=len(records) + 1)
        )
        mask_dir = sample / "masks"
        mask_lists.append(_mask_files(mask_dir) if mask_dir.is_dir() else None)
    if records and all(masks is None for masks in mask_lists):
        warnings.warn(
            f"{root}: no sample has a masks/ folder, so every image is a negative; is this an "
            "unlabelled (test) split?",
            DataWarning,
            stacklevel=2,
        )
    _attach_masks(records, mask_lists, workers, issues)
    issues.warn()
    return InstanceDataset(
        records, class_names, root, category_ids=[1], skip_bad=skip_bad, source=root
    )


def _mask_files(mask_dir: Path) -> list[Path]:
    """Image files directly in `mask_dir` (hidden files skipped), sorted by name."""
    return sorted(
        p
        for p in mask_dir.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _sample_image(sample: Path) -> Path:
    """The one image in `<sample>/images/`, preferring `<sample name>.<ext>`."""
    image_dir = sample / "images"
    if not image_dir.is_dir():
        raise DataError(sample, "missing images/ folder (expected <id>/images/<id>.png)")
    candidates = [p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    named = [p for p in candidates if p.stem == sample.name]
    if len(named) == 1:
        return named[0]
    if len(candidates) == 1:
        return candidates[0]
    found = [p.name for p in candidates]
    raise DataError(
        image_dir, f"expected one image (ideally {sample.name}.png), found {found or 'none'}"
    )


def _attach_masks(
    records: list[ImageRecord],
    mask_lists: list[list[Path] | None],
    workers: int | None,
    issues: Issues,
) -> None:
    """Decode every mask PNG (in parallel) and append the non-empty ones as RLE annotations,
    numbered 1.. across the dataset in file order."""
    jobs = [
        (path, (record.height, record.width))
        for record, paths in zip(records, mask_lists, strict=True)
        for path in paths or []
    ]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rles = list(pool.map(lambda job: _mask_rle(*job), jobs))
    rle_iter = iter(rles)
    annotation_id = 0
    for record, paths in zip(records, mask_lists, strict=True):
        for path in paths or []:
            rle = next(rle_iter)
            if rle is None:
                issues.add("empty mask dropped", str(path))
                continue
            annotation_id += 1
            record.annotations.append(Annotation(label=0, segmentation=rle, id=annotation_id))


def _mask_rle(path: Path, image_size: tuple[int, int]) -> dict | None:
    """Compressed RLE (str counts) of a mask PNG's non-zero pixels; None when it has none.
    Colour masks count a pixel as foreground when any colour channel is non-zero (alpha and
    palette index are ignored). Only the mask's bounding box is copied out of the decoder,
    since a nucleus covers a tiny part of its image."""
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
            if size != tuple(image_size):
                raise DataError(
                    path,
                    f"mask is {size[0]}x{size[1]} (HxW) but its image is "
                    f"{image_size[0]}x{image_size[1]}",
                )
            if image.mode not in ("1", "L"):
                image = _to_grayscale_foreground(image)
            bbox = image.getbbox()  # (left, top, right, bottom) of non-zero pixels, None if empty
            if bbox is None:
                return None
            crop = np.asarray(image.crop(bbox)) != 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"cannot decode mask ({type(e).__name__}: {e})") from None
    return cropped_mask_to_rle(crop, bbox[1], bbox[0], *image_size)


def _to_grayscale_foreground(image: Image.Image) -> Image.Image:
    """An 'L' image that is 255 where any colour channel (alpha excluded) is non-zero."""
    if image.mode == "P":
        image = image.convert("RGB")
    array = np.asarray(image)
    if image.mode in ("LA", "La", "RGBA", "RGBa"):
        array = array[..., :-1]
    foreground = array.any(axis=2) if array.ndim == 3 else array != 0
    return Image.fromarray(foreground.astype(np.uint8) * 255, mode="L")


def cropped_mask_to_rle(crop: np.ndarray, top: int, left: int, height: int, width: int) -> dict:
    """Compressed RLE (str counts) of a [height, width] mask that is `crop` (bool [h, w]) at
    row `top`, column `left` and zero elsewhere, without building the full mask."""
    h, w = crop.shape
    padded = np.zeros((w, h + 2), dtype=np.int8)  # one row per crop column, zero at both ends
    padded[:, 1:-1] = crop.T
    edges = np.diff(padded, axis=1)  # [w, h + 1]: +1 where a run starts, -1 one past its end
    start_cols, start_rows = np.nonzero(edges == 1)
    end_cols, end_rows = np.nonzero(edges == -1)
    starts = (left + start_cols) * height + top + start_rows  # column-major pixel indices
    ends = (left + end_cols) * height + top + end_rows
    if starts.size:
        separate = ends[:-1] != starts[1:]  # a run reaching the bottom may go on in the next column
        starts = starts[np.concatenate([[True], separate])]
        ends = ends[np.concatenate([separate, [True]])]
    bounds = np.concatenate([[0], np.stack([starts, ends], axis=1).ravel(), [height * width]])
    counts = np.diff(bounds).tolist()
    if len(counts) > 1 and counts[-1] == 0:
        counts.pop()  # a run reaching the last pixel leaves no trailing zeros; COCO omits them
    height, width = int(height), int(width)
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
