"""`Instances`: the per-image container that every dataset, transform, model and metric shares."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

_PER_INSTANCE_FIELDS = ("boxes", "labels", "scores", "masks", "iscrowd")


@dataclass
class Instances:
    """Objects in one image.

    image_size: (height, width) of the image the fields describe.
    boxes: float32 [N, 4], xyxy, absolute pixels; a full-image box is [0, 0, W, H].
    labels: int64 [N], 0 .. num_classes - 1 (no background slot).
    scores: float32 [N], predictions only.
    masks: bool [N, H, W] with (H, W) == image_size.
    iscrowd: bool [N], ground truth only; crowd regions are ignored by matching and never
        trained as positives.
    """

    image_size: tuple[int, int]
    boxes: Tensor
    labels: Tensor
    scores: Tensor | None = None
    masks: Tensor | None = None
    iscrowd: Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {self.image_size}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.boxes.ndim != 2 or self.boxes.shape[-1] != 4:
            raise ValueError(f"boxes must have shape [N, 4], got {tuple(self.boxes.shape)}")
        n = self.boxes.shape[0]
        for name in ("labels", "scores", "iscrowd"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n,):
                raise ValueError(
                    f"{name} must have shape [{n}] to match boxes, got {tuple(value.shape)}"
                )
        if self.masks is not None:
            expected = (n, *self.image_size)
            if tuple(self.masks.shape) != expected:
                raise ValueError(
                    f"masks must have shape [N, H, W] = {list(expected)}, "
                    f"got {list(self.masks.shape)}"
                )
            if self.masks.dtype != torch.bool:
                raise TypeError(
                    f"masks must be bool, got {self.masks.dtype}; soft masks are mask_probs"
                )

    @staticmethod
    def empty(
        image_size: tuple[int, int], with_masks: bool = True, device: Any = None
    ) -> Instances:
        """Zero instances in an image of `image_size` (height, width)."""
        h, w = image_size
        return Instances(
            image_size=(h, w),
            boxes=torch.zeros((0, 4), dtype=torch.float32, device=device),
            labels=torch.zeros((0,), dtype=torch.int64, device=device),
            masks=torch.zeros((0, h, w), dtype=torch.bool, device=device) if with_masks else None,
        )

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> Instances:
        """Integer, slice, bool-mask or index-list selection; an int keeps a length-1 Instances."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"Instances index {index} out of range for length {len(self)}")
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, Tensor) and index.dtype == torch.bool and index.shape != (len(self),):
            raise IndexError(f"bool index must have shape [{len(self)}], got {tuple(index.shape)}")
        return replace(self, **{f: _select(getattr(self, f), index) for f in _PER_INSTANCE_FIELDS})

    def to(self, device: Any) -> Instances:
        return replace(self, **{f: _move(getattr(self, f), device) for f in _PER_INSTANCE_FIELDS})

    @staticmethod
    def cat(items: list[Instances]) -> Instances:
        """Concatenate instances of the same image; optional fields must be set on all or none."""
        if not items:
            raise ValueError("Instances.cat needs at least one Instances")
        size = items[0].image_size
        if any(it.image_size != size for it in items):
            raise ValueError(
                f"Instances.cat needs one image_size, got {[it.image_size for it in items]}"
            )
        joined = {}
        for f in _PER_INSTANCE_FIELDS:
            values = [getattr(it, f) for it in items]
            present = [v is not None for v in values]
            if any(present) and not all(present):
                raise ValueError(
                    f"Instances.cat: field '{f}' is set on some items and None on others"
                )
            joined[f] = torch.cat(values) if all(present) else None
        return Instances(image_size=size, **joined)

    def to_coco(self, image_id: int, category_ids: list[int] | None = None) -> list[dict]:
        """COCO result dicts: bbox xywh, compressed-RLE `segmentation` (counts as str), `score`
        when scores are set, `iscrowd` when iscrowd is set. `category_ids[label]` maps 0-based
        labels back to the dataset's ids; identity when None."""
        from instaseg.ops.masks import masks_to_rles

        boxes = self.boxes.detach().float().cpu()
        labels = self.labels.cpu().tolist()
        rles = masks_to_rles(self.masks.cpu().numpy()) if self.masks is not None else None
        results = []
        for i, label in enumerate(labels):
            if category_ids is not None and not 0 <= label < len(category_ids):
                raise ValueError(
                    f"label {label} has no entry in category_ids (length {len(category_ids)})"
                )
            x0, y0, x1, y1 = boxes[i].tolist()
            entry = {
                "image_id": int(image_id),
                "category_id": int(category_ids[label] if category_ids is not None else label),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
            if rles is not None:
                entry["segmentation"] = rles[i]
                entry["area"] = float(self.masks[i].sum())
            else:
                entry["area"] = (x1 - x0) * (y1 - y0)
            if self.scores is not None:
                entry["score"] = float(self.scores[i])
            if self.iscrowd is not None:
                entry["iscrowd"] = int(self.iscrowd[i])
            results.append(entry)
        return results

    def __repr__(self) -> str:
        present = [
            f.name
            for f in fields(self)
            if f.name in _PER_INSTANCE_FIELDS and getattr(self, f.name) is not None
        ]
        return (
            f"Instances(num_instances={len(self)}, image_size={self.image_size}, fields={present})"
        )


def _select(value: Tensor | None, index: Any) -> Tensor | None:
    if value is None:
        return None
    if isinstance(index, list):
        index = torch.as_tensor(index, dtype=torch.long, device=value.device)
    return value[index]


def _move(value: Tensor | None, device: Any) -> Tensor | None:
    return None if value is None else value.to(device)
