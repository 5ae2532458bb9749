"""The one in-memory dataset every reader produces: image records, annotations, class names.

Annotations stay in their compact source form (polygons or RLE) until an item is requested, so
a dataset of tens of thousands of instances costs megabytes, not gigabytes. Images are read
lazily from disk.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from instaseg.data.errors import DataError, DataWarning, where
from instaseg.data.image_io import read_image
from instaseg.ops.masks import Polygons, decode_segmentation_into
from instaseg.structures import Instances

Transform = Callable[[Tensor, Instances], tuple[Tensor, Instances]]


@dataclass
class Annotation:
    """One object. `segmentation` is COCO polygons in absolute pixels or a COCO RLE dict."""

    label: int  # 0-based contiguous class index
    segmentation: Polygons | dict
    iscrowd: bool = False
    id: int | None = None


@dataclass
class ImageRecord:
    """One image. `file_name` is relative to the dataset's image_root (or absolute)."""

    file_name: str
    height: int
    width: int
    annotations: list[Annotation] = field(default_factory=list)
    id: int | None = None


class InstanceDataset(Dataset):
    """Map-style dataset yielding (uint8 image [3, H, W], Instances with masks and iscrowd).

    class_names[label] names each 0-based label; category_ids[label] is the id the source used
    (COCO category id, YOLO class id), so writers can map labels back. `source` names the file
    or folder the dataset came from, for error messages. With skip_bad, an unreadable image is
    reported with a DataWarning and the next readable one is returned instead.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        class_names: list[str],
        image_root: str | Path,
        *,
        category_ids: list[int] | None = None,
        transforms: Transform | None = None,
        skip_bad: bool = False,
        source: str | Path | None = None,
    ):
        if category_ids is not None and len(category_ids) != len(class_names):
            raise ValueError(
                f"category_ids has {len(category_ids)} entries "
                f"but class_names has {len(class_names)}"
            )
        self.records = records
        self.class_names = list(class_names)
        self.category_ids = (
            list(category_ids) if category_ids is not None else list(range(len(class_names)))
        )
        self.image_root = Path(image_root)
        self.transforms = transforms
        self.skip_bad = skip_bad
        self.source = str(source) if source is not None else str(image_root)
        self._bad_indices: set[int] = set()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Instances]:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            if i in self._bad_indices:
                continue
            try:
                image = self.load_image(i)
            except DataError as error:
                if not self.skip_bad:
                    raise
                self._bad_indices.add(i)
                warnings.warn(f"skipping unreadable image: {error}", DataWarning, stacklevel=2)
                continue
            instances = self.load_instances(i)
            if self.transforms is not None:
                image, instances = self.transforms(image, instances)
            return image, instances
        raise DataError(self.source, "no readable image left in the dataset (every one failed)")

    def image_path(self, index: int) -> Path:
        return self.image_root / self.records[index].file_name

    def load_image(self, index: int) -> Tensor:
        """uint8 [3, H, W]; raises DataError when the file disagrees with the record's size."""
        record = self.records[index]
        path = self.image_path(index)
        image = read_image(path)
        if tuple(image.shape[1:]) != (record.height, record.width):
            raise DataError(
                path,
                f"image is {image.shape[1]}x{image.shape[2]} (HxW) but its annotations say "
                f"{record.height}x{record.width}",
                item=f"image id {record.id}",
            )
        return image

    def load_instances(self, index: int) -> Instances:
        """Decode one record's annotations into Instances (boxes are the masks' tight bounds).

        Masks are written box by box into a zeroed [N, H, W] array, so many small objects in
        a large image (hundreds of nuclei in a DSB2018 frame) cost their area, not N * H * W.
        """
        record = self.records[index]
        h, w = record.height, record.width
        if not record.annotations:
            return replace(Instances.empty((h, w)), iscrowd=torch.zeros(0, dtype=torch.bool))
        masks = np.zeros((len(record.annotations), h, w), dtype=bool)
        boxes = np.zeros((len(record.annotations), 4), dtype=np.float32)
        for k, annotation in enumerate(record.annotations):
            try:
                boxes[k] = decode_segmentation_into(annotation.segmentation, masks[k])
            except ValueError as e:
                item = f"image id {record.id}, annotation id {annotation.id}"
                raise DataError(self.source, f"segmentation: {e}", item=item) from None
        return Instances(
            image_size=(h, w),
            boxes=torch.from_numpy(boxes),
            labels=torch.tensor([a.label for a in record.annotations], dtype=torch.int64),
            masks=torch.from_numpy(masks),
            iscrowd=torch.tensor([a.iscrowd for a in record.annotations], dtype=torch.bool),
        )

    def with_transforms(self, transforms: Transform | None) -> InstanceDataset:
        """A view of the same records with other transforms (e.g. train vs val)."""
        view = InstanceDataset(
            self.records,
            self.class_names,
            self.image_root,
            category_ids=self.category_ids,
            transforms=transforms,
            skip_bad=self.skip_bad,
            source=self.source,
        )
        return view

    def subset(self, indices: list[int]) -> InstanceDataset:
        """A dataset over the records at `indices` (same classes, root and transforms)."""
        view = self.with_transforms(self.transforms)
        view.records = [self.records[i] for i in indices]
        return view

    def num_instances(self) -> int:
        return sum(len(r.annotations) for r in self.records)

    def describe(self, index: int) -> str:
        """`file, image id N` for messages about one record."""
        record = self.records[index]
        return where(str(self.image_path(index)), f"image id {record.id}")
