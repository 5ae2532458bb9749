"""Overlay drawing: masks, boxes and class names on an image, for people to look at."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from torch import Tensor

from instaseg.structures import Instances


def class_colors(num_classes: int) -> np.ndarray:
    """Distinct RGB colours [num_classes, 3] uint8: hues spaced by the golden ratio."""
    hues = (np.arange(max(num_classes, 1)) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.85, 0.95) for h in hues]
    return (np.array(rgb) * 255).round().astype(np.uint8)


def instance_colors(instances: Instances, num_classes: int, by: str = "class") -> np.ndarray:
    """Colours [N, 3] uint8 by class (default) or one per instance (`by="instance"`, for
    class-agnostic data such as cells, where neighbours of one class must still differ)."""
    if by == "instance":
        return class_colors(max(len(instances), 1))[: len(instances)]
    if by != "class":
        raise ValueError(f"by must be 'class' or 'instance', got {by!r}")
    return class_colors(num_classes)[instances.labels.cpu().numpy() % max(num_classes, 1)]


def draw_instances(
    image: Tensor,
    instances: Instances,
    class_names: list[str],
    *,
    alpha: float = 0.45,
    color_by: str = "class",
    show_boxes: bool = True,
    show_labels: bool = True,
) -> np.ndarray:
    """Draw instances on a uint8 [3, H, W] image -> uint8 [H, W, 3] RGB.

    Masks are filled with `alpha` and outlined; boxes and "name score" labels are drawn on top.
    Crowd regions are hatched in grey so they are not mistaken for ordinary instances.
    """
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be uint8 [3, H, W], got {image.dtype} {tuple(image.shape)}")
    if tuple(image.shape[1:]) != instances.image_size:
        raise ValueError(
            f"image is {tuple(image.shape[1:])} but instances are for {instances.image_size}"
        )
    canvas = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)
    colors = instance_colors(instances, len(class_names), by=color_by)
    crowd = (
        instances.iscrowd.cpu().numpy()
        if instances.iscrowd is not None
        else np.zeros(len(instances), bool)
    )
    if instances.masks is not None:
        for mask, color, is_crowd in zip(instances.masks.cpu().numpy(), colors, crowd, strict=True):
            fill = np.array([160, 160, 160]) if is_crowd else color
            canvas[mask] = (1 - alpha) * canvas[mask] + alpha * fill
            edge = mask & ~ndimage.binary_erosion(mask)
            canvas[edge] = fill
    result = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    _draw_boxes_and_labels(result, instances, class_names, colors, show_boxes, show_labels)
    return np.asarray(result)


def _draw_boxes_and_labels(image, instances, class_names, colors, show_boxes, show_labels) -> None:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    scores = instances.scores.tolist() if instances.scores is not None else [None] * len(instances)
    for box, label, score, color in zip(
        instances.boxes.tolist(), instances.labels.tolist(), scores, colors, strict=True
    ):
        color = tuple(int(c) for c in color)
        x0, y0, x1, y1 = box
        if show_boxes:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=1)
        if show_labels:
            name = class_names[label] if 0 <= label < len(class_names) else str(label)
            text = name if score is None else f"{name} {score:.2f}"
            left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
            top_y = max(0, y0 - (bottom - top) - 2)
            draw.rectangle(
                [x0, top_y, x0 + (right - left) + 2, top_y + (bottom - top) + 2], fill=color
            )
            draw.text((x0 + 1, top_y), text, fill=(0, 0, 0), font=font)


def save_overlay(
    path: str | Path, image: Tensor, instances: Instances, class_names: list[str], **kwargs
) -> Path:
    """Draw and write a PNG; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_instances(image, instances, class_names, **kwargs)).save(path)
    return path
