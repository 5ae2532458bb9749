"""Dataset statistics computed from annotations alone (no image is decoded)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as coco_mask

from instaseg.data.dataset import Annotation, InstanceDataset
from instaseg.ops.masks import to_compressed_rle

# COCO's area ranges: small < 32^2 <= medium < 96^2 <= large
SMALL_AREA = 32**2
LARGE_AREA = 96**2
# instances-per-image histogram bins: [low, high] inclusive
HISTOGRAM_BINS = ((0, 0), (1, 1), (2, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


@dataclass
class ClassStats:
    name: str
    category_id: int
    instances: int = 0
    images: int = 0
    crowd: int = 0
    small: int = 0
    medium: int = 0
    large: int = 0


@dataclass
class DatasetStats:
    num_images: int
    num_instances: int
    num_negatives: int  # images without any annotation
    num_crowd: int
    image_sizes: tuple[tuple[int, int], tuple[int, int]]  # (min (h, w), max (h, w))
    classes: list[ClassStats] = field(default_factory=list)
    instances_per_image: dict[str, int] = field(default_factory=dict)

    @property
    def size_counts(self) -> dict[str, int]:
        return {k: sum(getattr(c, k) for c in self.classes) for k in ("small", "medium", "large")}

    def to_dict(self) -> dict:
        return {
            "images": self.num_images,
            "instances": self.num_instances,
            "negatives": self.num_negatives,
            "crowd": self.num_crowd,
            "image_size_min": list(self.image_sizes[0]),
            "image_size_max": list(self.image_sizes[1]),
            "sizes": self.size_counts,
            "instances_per_image": self.instances_per_image,
            "classes": [vars(c) for c in self.classes],
        }


def annotation_area(annotation: Annotation, height: int, width: int) -> int:
    """Pixel count of an annotation's mask, from its RLE or polygons, without decoding."""
    segmentation = annotation.segmentation
    if isinstance(segmentation, dict):
        return int(coco_mask.area(to_compressed_rle(segmentation)))
    rles = coco_mask.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
    return int(coco_mask.area(coco_mask.merge(rles)))


def dataset_stats(dataset: InstanceDataset) -> DatasetStats:
    """Counts per class and size range, negatives, crowd, and the instances-per-image histogram."""
    classes = [
        ClassStats(n, c) for n, c in zip(dataset.class_names, dataset.category_ids, strict=True)
    ]
    per_image = []
    crowd = 0
    for record in dataset.records:
        per_image.append(len(record.annotations))
        for label in {a.label for a in record.annotations}:
            classes[label].images += 1
        for annotation in record.annotations:
            stats = classes[annotation.label]
            stats.instances += 1
            if annotation.iscrowd:
                stats.crowd += 1
                crowd += 1
            area = annotation_area(annotation, record.height, record.width)
            size = "small" if area < SMALL_AREA else "medium" if area < LARGE_AREA else "large"
            setattr(stats, size, getattr(stats, size) + 1)
    sizes = np.array([(r.height, r.width) for r in dataset.records] or [(0, 0)])
    return DatasetStats(
        num_images=len(dataset.records),
        num_instances=sum(per_image),
        num_negatives=sum(1 for n in per_image if n == 0),
        num_crowd=crowd,
        image_sizes=(tuple(sizes.min(0).tolist()), tuple(sizes.max(0).tolist())),
        classes=classes,
        instances_per_image=_histogram(per_image),
    )


def _histogram(counts: list[int]) -> dict[str, int]:
    histogram = {}
    for low, high in HISTOGRAM_BINS:
        name = f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"
        histogram[name] = sum(1 for n in counts if n >= low and (high is None or n <= high))
    return histogram


def format_stats(stats: DatasetStats, title: str = "") -> str:
    """A plain-text report: totals, a per-class table, and the instances-per-image histogram."""
    (min_h, min_w), (max_h, max_w) = stats.image_sizes
    sizes = stats.size_counts
    lines = [title] if title else []
    lines += [
        f"images     {stats.num_images:>8}   ({stats.num_negatives} without annotations)",
        f"instances  {stats.num_instances:>8}   ({stats.num_crowd} crowd)",
        f"sizes      small {sizes['small']}  medium {sizes['medium']}  large {sizes['large']}"
        f"   (COCO areas: < 32², < 96², ≥ 96²)",
        f"image HxW  {min_h}x{min_w} .. {max_h}x{max_w}",
        "",
        f"{'class':<20} {'id':>5} {'instances':>10} {'images':>8} "
        f"{'small':>7} {'medium':>7} {'large':>7}",
    ]
    for c in sorted(stats.classes, key=lambda c: -c.instances):
        lines.append(
            f"{c.name[:20]:<20} {c.category_id:>5} {c.instances:>10} {c.images:>8} "
            f"{c.small:>7} {c.medium:>7} {c.large:>7}"
        )
    lines += ["", "instances per image"]
    peak = max(stats.instances_per_image.values() or [1]) or 1
    for name, count in stats.instances_per_image.items():
        lines.append(f"  {name:>7} {count:>7}  {'#' * round(40 * count / peak)}")
    return "\n".join(lines)
