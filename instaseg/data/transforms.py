"""Transforms on (image uint8 [3, H, W], Instances) that keep boxes and masks consistent.

Geometry. A geometric transform maps the image onto a new pixel grid. Images are resampled
bilinearly in float (antialiased when shrinking) and rounded back to uint8. Masks are
resampled by nearest neighbour at pixel centres: output pixel i along an axis shows source
pixel floor((i + 0.5) * source_len / resized_len). We prefer nearest to an area threshold of
0.5 because it keeps the masks of one image disjoint (every instance samples the same source
pixel, where two instances could both reach 0.5), keeps one-pixel-wide parts alive when
enlarging or mildly shrinking, and is an exact gather with no float rounding. Each box edge
lands within half an output pixel of its exactly scaled position whenever the mask's extreme
row or column is sampled (always when enlarging); when shrinking, a part thinner than the
sampling step can fall between samples and vanish. After the transform, boxes are the tight
bounds of the new masks (exactly `masks_to_boxes`); without masks, boxes are scaled and
clipped. An instance whose mask (or box) becomes empty is dropped, together with its label,
score and iscrowd entry.

Geometric transforms take each box as the extent of its mask, which is what InstanceDataset
and every transform here produce; they resample only the pixels inside the box, which is what
keeps images with hundreds of small objects fast.

Randomness. A random transform draws from `generator` when one is passed, otherwise from
torch's default CPU generator. The loader (`instaseg.data.loader`) reseeds that generator for
every sample from (seed, epoch, position), so augmentation does not depend on worker count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from instaseg.structures import Instances

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for grey and for YIQ's Y
_RGB_TO_YIQ = torch.tensor(
    [[*_LUMA], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class Placement:
    """How a source image lands on an output canvas: it is resized to `resized_size`, then the
    canvas shows the resized pixels [offset, offset + output_size) of each axis. An offset
    crops from the top/left; a canvas that reaches past the resized image is padded at the
    bottom/right. Sizes and offsets are (height, width) / (y, x) in pixels."""

    source_size: tuple[int, int]
    resized_size: tuple[int, int]
    output_size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    def visible_size(self) -> tuple[int, int]:
        """(height, width) of the canvas part covered by the resized image; the rest is fill."""
        return tuple(
            max(0, min(out, resized - off))
            for out, resized, off in zip(
                self.output_size, self.resized_size, self.offset, strict=True
            )
        )


def apply_placement(
    image: Tensor,
    instances: Instances,
    placement: Placement,
    *,
    fill: int = 114,
    min_visible_fraction: float = 0.0,
) -> tuple[Tensor, Instances]:
    """Resize, crop and pad an image [3, H, W] and its instances as `placement` says.

    An instance survives when its mask keeps at least one pixel and, when
    min_visible_fraction > 0, at least that fraction of its pixels (of its box area when
    there are no masks); boxes of the result are the tight bounds of the new masks.
    """
    check_sample(image, instances)
    if tuple(image.shape[1:]) != placement.source_size:
        raise ValueError(
            f"image is {tuple(image.shape[1:])} but the placement expects {placement.source_size}"
        )
    image = _place_image(image, placement, fill)
    if instances.masks is not None:
        masks, boxes, keep = _place_masks(
            instances.masks, instances.boxes, placement, min_visible_fraction
        )
    else:
        boxes, keep = _place_boxes(instances.boxes, placement, min_visible_fraction)
        masks = None
    kept = replace(instances, masks=None)[keep]
    return image, replace(kept, image_size=placement.output_size, boxes=boxes, masks=masks)


def check_sample(image: Tensor, instances: Instances) -> None:
    """Raise TypeError/ValueError unless image is uint8 [3, H, W] with (H, W) == image_size."""
    if image.dtype != torch.uint8:
        raise TypeError(
            f"image must be uint8 [3, H, W], got {image.dtype}; transforms take 0-255 uint8"
        )
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape [3, H, W], got {tuple(image.shape)}")
    if tuple(image.shape[1:]) != instances.image_size:
        raise ValueError(
            f"image is {tuple(image.shape[1:])} (H, W) but instances.image_size is "
            f"{instances.image_size}"
        )


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of uint8 [C, H, W] to (height, width), antialiased when shrinking."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[1] or size[1] < image.shape[2]
    resized = F.interpolate(
        image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrinking
    )
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


def _place_image(image: Tensor, placement: Placement, fill: int) -> Tensor:
    resized = resize_image(image, placement.resized_size)
    if placement.offset == (0, 0) and placement.output_size == placement.resized_size:
        return resized
    (oy, ox), (vh, vw) = placement.offset, placement.visible_size()
    canvas = torch.full((image.shape[0], *placement.output_size), fill, dtype=torch.uint8)
    canvas[:, :vh, :vw] = resized[:, oy : oy + vh, ox : ox + vw]
    return canvas


def _source_pixels(source_len: int, resized_len: int, offset: int, length: int) -> np.ndarray:
    """Source pixel sampled by each of `length` output pixels along one axis (nondecreasing)."""
    centres = np.arange(offset, offset + length, dtype=np.float64) + 0.5
    return np.minimum(
        np.floor(centres * (source_len / resized_len)).astype(np.int64), source_len - 1
    )


def _place_masks(
    masks: Tensor, boxes: Tensor, placement: Placement, min_visible_fraction: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Resample masks [N, H, W] inside their boxes -> (masks [M, H', W'], boxes [M, 4], kept
    indices [M])."""
    (vh, vw), (oy, ox) = placement.visible_size(), placement.offset
    rows = _source_pixels(placement.source_size[0], placement.resized_size[0], oy, vh)
    cols = _source_pixels(placement.source_size[1], placement.resized_size[1], ox, vw)
    source = masks.numpy()
    kept, blocks, new_boxes = [], [], []
    for k, (x0, y0, x1, y1) in enumerate(_integer_boxes(boxes, placement.source_size)):
        # output rows/cols whose source pixel lies inside the box (rows, cols are sorted)
        r0, r1 = np.searchsorted(rows, [y0, y1])
        c0, c1 = np.searchsorted(cols, [x0, x1])
        block = source[k][np.ix_(rows[r0:r1], cols[c0:c1])]
        bounds = _tight_bounds(block)
        if bounds is None:
            continue
        if min_visible_fraction > 0:
            area = int(source[k, y0:y1, x0:x1].sum())
            if block.sum() < min_visible_fraction * area * _pixel_ratio(placement):
                continue
        kept.append(k)
        blocks.append((r0, c0, block))
        new_boxes.append((bounds[0] + c0, bounds[1] + r0, bounds[2] + c0, bounds[3] + r0))
    placed = np.zeros((len(kept), *placement.output_size), dtype=bool)
    for j, (r0, c0, block) in enumerate(blocks):
        placed[j, r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block
    boxes_out = torch.tensor(new_boxes, dtype=torch.float32).reshape(-1, 4)
    return torch.from_numpy(placed), boxes_out, torch.tensor(kept, dtype=torch.int64)


def _integer_boxes(boxes: Tensor, image_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """xyxy float boxes -> integer pixel bounds that contain them, clipped to the image."""
    h, w = image_size
    return [
        (
            max(0, math.floor(x0)),
            max(0, math.floor(y0)),
            min(w, math.ceil(x1)),
            min(h, math.ceil(y1)),
        )
        for x0, y0, x1, y1 in boxes.tolist()
    ]


def _tight_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a bool [h, w] block's foreground, edges exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _pixel_ratio(placement: Placement) -> float:
    """Output pixels per source pixel (area scale of the resize)."""
    (h, w), (rh, rw) = placement.source_size, placement.resized_size
    return (rh / h) * (rw / w)


def _place_boxes(
    boxes: Tensor, placement: Placement, min_visible_fraction: float
) -> tuple[Tensor, Tensor]:
    """Scale, shift and clip xyxy boxes [N, 4] -> (boxes [M, 4], kept indices [M])."""
    (h, w), (rh, rw) = placement.source_size, placement.resized_size
    (oy, ox), (vh, vw) = placement.offset, placement.visible_size()
    scale = torch.tensor([rw / w, rh / h, rw / w, rh / h], dtype=torch.float32)
    shift = torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
    moved = boxes.float() * scale - shift
    limit = torch.tensor([vw, vh, vw, vh], dtype=torch.float32)
    clipped = torch.minimum(moved.clamp(min=0), limit)
    area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    full_area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    keep &= area >= min_visible_fraction * full_area
    return clipped[keep], torch.nonzero(keep).flatten()


def _resized_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, int(size[0] * scale + 0.5)), max(1, int(size[1] * scale + 0.5))


def _as_size(value: int | Sequence[int], name: str) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or any(not isinstance(v, int) or v <= 0 for v in size):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return size


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), dtype=torch.float64, generator=generator).item()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


@dataclass
class Compose:
    """Apply transforms in order. A generator, when given, is passed to each of them; without
    one they are called as transform(image, instances), so plain callables work too."""

    transforms: list[Callable[..., tuple[Tensor, Instances]]]

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        for transform in self.transforms:
            if generator is None:
                image, instances = transform(image, instances)
            else:
                image, instances = transform(image, instances, generator=generator)
        return image, instances


@dataclass
class ResizeShortestEdge:
    """Scale so the short side is `short_edge` (one drawn uniformly from a tuple, for
    multi-scale training) unless the long side would then exceed `max_size`."""

    short_edge: int | tuple[int, ...]
    max_size: int

    def __post_init__(self) -> None:
        choices = (self.short_edge,) if isinstance(self.short_edge, int) else tuple(self.short_edge)
        if not choices or any(not isinstance(c, int) or c <= 0 for c in choices):
            raise ValueError(
                f"short_edge must be a positive int or a tuple of them, got {self.short_edge!r}"
            )
        if self.max_size < max(choices):
            raise ValueError(f"max_size ({self.max_size}) must be >= every short_edge {choices}")
        self._choices = choices

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        check_sample(image, instances)
        short = (
            self._choices[0]
            if len(self._choices) == 1
            else self._choices[_randint(0, len(self._choices) - 1, generator)]
        )
        h, w = image.shape[1:]
        scale = min(short / min(h, w), self.max_size / max(h, w))
        size = _resized_size((h, w), scale)
        return apply_placement(image, instances, Placement((h, w), size, size))


@dataclass
class Letterbox:
    """Scale so the long side is `size`, then pad to size x size with `fill`.

    The image sits at the top-left and padding goes to the bottom/right, so a point maps by
    the scale alone and undoing the letterbox is a crop and one division. (This is also what
    LargeScaleJitter does at scale 1, so validation matches training geometry.)
    """

    size: int
    fill: int = 114

    def __post_init__(self) -> None:
        _as_size(self.size, "size")

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        check_sample(image, instances)
        h, w = image.shape[1:]
        resized = _resized_size((h, w), self.size / max(h, w))
        return apply_placement(
            image, instances, Placement((h, w), resized, (self.size, self.size)), fill=self.fill
        )


@dataclass
class RandomHorizontalFlip:
    """Mirror left-right with probability p. Boxes stay exact: x -> W - x."""

    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        check_sample(image, instances)
        if _uniform(0.0, 1.0, generator) >= self.p:
            return image, instances
        return image.flip(-1), hflip_instances(instances)


def hflip_instances(instances: Instances) -> Instances:
    """Mirror instances left-right within their image width."""
    width = instances.image_size[1]
    x0, y0, x1, y1 = instances.boxes.unbind(-1)
    boxes = torch.stack([width - x1, y0, width - x0, y1], dim=-1)
    masks = instances.masks.flip(-1) if instances.masks is not None else None
    return replace(instances, boxes=boxes, masks=masks)


@dataclass
class LargeScaleJitter:
    """Large-scale jitter (Ghiasi et al., 2021): fit the image to `output_size`, scale it by
    a factor drawn uniformly from `scale_range`, then crop a random output_size window where
    the result is larger and pad (bottom/right, with `fill`) where it is smaller."""

    output_size: int | tuple[int, int]
    scale_range: tuple[float, float] = (0.1, 2.0)
    fill: int = 114

    def __post_init__(self) -> None:
        self.output_size = _as_size(self.output_size, "output_size")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(
                f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}"
            )

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        check_sample(image, instances)
        h, w = image.shape[1:]
        out_h, out_w = self.output_size
        scale = _uniform(*self.scale_range, generator) * min(out_h / h, out_w / w)
        resized = _resized_size((h, w), scale)
        offset = (
            _randint(0, max(0, resized[0] - out_h), generator),
            _randint(0, max(0, resized[1] - out_w), generator),
        )
        placement = Placement((h, w), resized, self.output_size, offset)
        return apply_placement(image, instances, placement, fill=self.fill)


@dataclass
class RandomCrop:
    """Crop a random window of `size` (clamped to the image, never padded).

    Instances outside the window are dropped, and so are those keeping less than
    `min_visible_fraction` of their pixels (0 keeps any instance with a visible pixel).
    """

    size: int | tuple[int, int]
    min_visible_fraction: float = 0.0

    def __post_init__(self) -> None:
        self.size = _as_size(self.size, "size")
        if not 0.0 <= self.min_visible_fraction <= 1.0:
            raise ValueError(
                f"min_visible_fraction must be in [0, 1], got {self.min_visible_fraction}"
            )

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        check_sample(image, instances)
        h, w = image.shape[1:]
        crop = (min(self.size[0], h), min(self.size[1], w))
        offset = (_randint(0, h - crop[0], generator), _randint(0, w - crop[1], generator))
        placement = Placement((h, w), (h, w), crop, offset)
        return apply_placement(
            image, instances, placement, min_visible_fraction=self.min_visible_fraction
        )


@dataclass
class ColorJitter:
    """Random brightness, contrast, saturation and hue on a uint8 image; geometry untouched.

    Factors are drawn uniformly from [1 - x, 1 + x] for brightness, contrast and saturation;
    the hue turns by a fraction of a full turn drawn from [-hue, hue]. Hue turns the chroma
    plane of YIQ (a linear stand-in for an HSV hue shift), so brightness, saturation and hue
    fold into one 3 x 3 colour matrix; contrast then blends with the image's mean grey.
    """

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.02

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    def __call__(
        self, image: Tensor, instances: Instances, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        check_sample(image, instances)
        brightness = _uniform(1 - self.brightness, 1 + self.brightness, generator)
        contrast = _uniform(1 - self.contrast, 1 + self.contrast, generator)
        saturation = _uniform(1 - self.saturation, 1 + self.saturation, generator)
        turn = _uniform(-self.hue, self.hue, generator)
        matrix = brightness * _hue_matrix(turn) @ _saturation_matrix(saturation)
        pixels = matrix.float() @ image.reshape(3, -1).float()  # [3, H * W]
        mean_grey = (torch.tensor(_LUMA) @ pixels).mean() if pixels.shape[1] else 0.0
        pixels = contrast * pixels + (1 - contrast) * mean_grey
        return pixels.round_().clamp_(0, 255).to(torch.uint8).reshape(image.shape), instances


def _saturation_matrix(factor: float) -> Tensor:
    """Blend each RGB pixel with its grey value: factor 0 is greyscale, 1 the identity."""
    grey = torch.tensor(_LUMA, dtype=torch.float64).expand(3, 3)
    return factor * torch.eye(3, dtype=torch.float64) + (1 - factor) * grey


def _hue_matrix(turn: float) -> Tensor:
    """RGB -> RGB rotation of the YIQ chroma plane by `turn` of a full circle."""
    cos, sin = math.cos(2 * math.pi * turn), math.sin(2 * math.pi * turn)
    rotate = torch.tensor([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=torch.float64)
    return _YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ


# the default scale jitter of training (`train_transforms`), suited to short schedules
TRAIN_SCALE_RANGE = (0.5, 1.5)


def train_transforms(
    image_size: int, *, scale_range: tuple[float, float] = TRAIN_SCALE_RANGE
) -> Compose:
    """Training preset: scale jitter onto an image_size square, flip, colour jitter.

    The default scale range suits short schedules; pass (0.1, 2.0) for the paper's LSJ on
    long ones.
    """
    return Compose(
        [
            LargeScaleJitter(image_size, scale_range=scale_range),
            RandomHorizontalFlip(0.5),
            ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02),
        ]
    )


def val_transforms(image_size: int) -> Compose:
    """Validation preset: letterbox onto an image_size square (training geometry at scale 1)."""
    return Compose([Letterbox(image_size)])
