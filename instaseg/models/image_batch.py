"""From a list of uint8 images to normalised, resized, padded batches, and back.

Frames. An input image of (H0, W0) pixels - its *original frame* - is resized by one factor
so that its short side becomes `min_size` without its long side exceeding `max_size`, to
(h, w) = (round(H0 * s), round(W0 * s)): the *model frame*. Inside the model every box
(anchors, proposals, detections before post-processing) is xyxy in model-frame pixels; the
exact per-axis ratios (h / H0, w / W0) map boxes between the frames, so the model frame's
full extent [0, w] x [0, h] maps onto [0, W0] x [0, H0]. Masks never leave the original
frame: ground-truth masks are cut there, predictions are pasted there.

Padding. Each image is padded at the bottom and right with zeros (after normalisation, so
with the mean colour) to the next multiple of `size_divisibility`. Images that share a padded
size are stacked into one tensor (a *size group*); images of different padded sizes are never
padded to a common size. So an image's features depend on that image alone, never on the
other images of its batch (with per-image norms: GroupNorm, frozen BN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from instaseg.structures import Instances


@dataclass
class ImageBatch:
    """Images ready for the backbone, in size groups.

    tensors: per group, float [B_g, 3, Hp_g, Wp_g], normalised and padded.
    members: per group, the indices of its images in the input list, in tensor order.
    image_sizes: per image, (h, w) of the resized image in the model frame (before padding).
    original_sizes: per image, (H0, W0) of the input image.
    """

    tensors: list[Tensor]
    members: list[list[int]]
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    def to_original(self, index: int) -> tuple[float, float]:
        """(x factor, y factor) that map model-frame coordinates of image `index` to its
        original frame: W0 / w and H0 / h."""
        (h, w), (h0, w0) = self.image_sizes[index], self.original_sizes[index]
        return w0 / w, h0 / h


@dataclass
class TrainTargets:
    """One image's ground truth, boxes in the model frame and masks in the original frame.

    boxes: float [G, 4] xyxy, model frame. labels: int64 [G]. iscrowd: bool [G].
    masks: bool [G, H0, W0], original frame.
    to_original: (x factor, y factor) from the model frame to the original frame.
    """

    boxes: Tensor
    labels: Tensor
    iscrowd: Tensor
    masks: Tensor
    to_original: tuple[float, float]


def check_images(images: Sequence[Tensor]) -> None:
    """Raise TypeError / ValueError naming the first image that is not uint8 [3, H, W]."""
    if isinstance(images, Tensor) or not isinstance(images, (list, tuple)):
        raise TypeError(
            f"images must be a list of uint8 [3, H, W] tensors, got {type(images).__name__}; "
            "for one image pass [image]"
        )
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty list")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"images[{i}] must be a Tensor, got {type(image).__name__}")
        if image.dtype != torch.uint8:
            raise TypeError(
                f"images[{i}] must be uint8 RGB in 0..255, got {image.dtype}; the model "
                "normalises images itself"
            )
        if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
            raise ValueError(
                f"images[{i}] must have shape [3, H, W] with H, W >= 1, got {tuple(image.shape)}"
            )


def check_targets(
    targets: Sequence[Instances], images: Sequence[Tensor], num_classes: int, model: str
) -> None:
    """Raise naming targets[i] and the field unless targets fit the images and the classes
    (labels in [0, num_classes), masks present, boxes finite with area unless crowd); `model`
    names the detector in the message about missing masks."""
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(
            f"targets must be a list of {len(images)} Instances (one per image), got {got}"
        )
    for i, (target, image) in enumerate(zip(targets, images, strict=True)):
        if not isinstance(target, Instances):
            raise TypeError(f"targets[{i}] must be an Instances, got {type(target).__name__}")
        size = (int(image.shape[1]), int(image.shape[2]))
        if target.image_size != size:
            raise ValueError(
                f"targets[{i}].image_size is {target.image_size} but images[{i}] is {size}; "
                "targets must describe the image as passed"
            )
        if target.masks is None:
            raise ValueError(f"targets[{i}].masks is None; {model} trains on instance masks")
        labels = target.labels
        if labels.dtype != torch.int64:
            raise TypeError(f"targets[{i}].labels must be int64, got {labels.dtype}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"targets[{i}].labels must lie in [0, {num_classes}), got values from "
                f"{int(labels.min())} to {int(labels.max())}"
            )
        boxes = target.boxes
        if not boxes.is_floating_point() or not torch.isfinite(boxes).all():
            raise ValueError(f"targets[{i}].boxes must be finite floats, got {boxes.dtype}")
        crowd = target.iscrowd if target.iscrowd is not None else torch.zeros_like(labels).bool()
        empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        empty &= ~crowd.to(boxes.device)
        if empty.any():
            index = int(torch.nonzero(empty)[0])
            raise ValueError(
                f"targets[{i}].boxes[{index}] = {boxes[index].tolist()} has no area; drop "
                "empty instances before training"
            )


def resized_size(size: tuple[int, int], min_size: int | None, max_size: int) -> tuple[int, int]:
    """(h, w) of an image of `size` (H0, W0) after scaling its short side to min_size with
    its long side capped at max_size; `size` itself when min_size is None."""
    if min_size is None:
        return size
    height, width = size
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def batch_images(
    images: Sequence[Tensor],
    pixel_mean: Tensor,
    pixel_std: Tensor,
    min_size: int | None,
    max_size: int,
    size_divisibility: int,
) -> ImageBatch:
    """Normalise, resize and pad uint8 images [3, H0, W0] into size groups (module docstring).

    pixel_mean, pixel_std: float [3] in 0..255 units, on the device the batch should live on.
    """
    device = pixel_mean.device
    padded: list[Tensor] = []
    image_sizes = []
    for image in images:
        size = resized_size((image.shape[1], image.shape[2]), min_size, max_size)
        pixels = image.to(device=device, dtype=pixel_mean.dtype, non_blocking=True)
        pixels = (pixels - pixel_mean[:, None, None]) / pixel_std[:, None, None]
        if size != tuple(image.shape[1:]):
            # antialias: a downscaled image should average the pixels it drops
            pixels = F.interpolate(
                pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        pad_h = math.ceil(size[0] / size_divisibility) * size_divisibility - size[0]
        pad_w = math.ceil(size[1] / size_divisibility) * size_divisibility - size[1]
        padded.append(F.pad(pixels, (0, pad_w, 0, pad_h)))
        image_sizes.append(size)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, tensor in enumerate(padded):
        groups.setdefault(tuple(tensor.shape[1:]), []).append(index)
    members = list(groups.values())
    return ImageBatch(
        tensors=[torch.stack([padded[i] for i in group]) for group in members],
        members=members,
        image_sizes=image_sizes,
        original_sizes=[(int(image.shape[1]), int(image.shape[2])) for image in images],
    )


def train_targets(targets: Sequence[Instances], batch: ImageBatch) -> list[TrainTargets]:
    """Ground truth for the loss: boxes scaled into the model frame, the rest as given
    (iscrowd None means no crowd regions). Targets must have been checked already."""
    device = batch.tensors[0].device
    converted = []
    for index, target in enumerate(targets):
        x_factor, y_factor = batch.to_original(index)
        scale = torch.tensor([x_factor, y_factor, x_factor, y_factor], device=device)
        iscrowd = target.iscrowd
        if iscrowd is None:
            iscrowd = torch.zeros(len(target), dtype=torch.bool)
        converted.append(
            TrainTargets(
                boxes=target.boxes.to(device=device, dtype=torch.float32) / scale,
                labels=target.labels.to(device),
                iscrowd=iscrowd.to(device),
                masks=target.masks.to(device),
                to_original=(x_factor, y_factor),
            )
        )
    return converted


def boxes_to_original(boxes: Tensor, batch: ImageBatch, index: int) -> Tensor:
    """Model-frame xyxy boxes [N, 4] of image `index` -> its original frame, clipped to it."""
    x_factor, y_factor = batch.to_original(index)
    scale = boxes.new_tensor([x_factor, y_factor, x_factor, y_factor])
    height, width = batch.original_sizes[index]
    limit = boxes.new_tensor([width, height, width, height])
    return torch.minimum((boxes * scale).clamp(min=0), limit)
