"""Robust image reading: whatever the file holds, the caller gets RGB uint8 [3, H, W].

Handled: grayscale (L, LA, 1), palette (P, with or without transparency), RGBA (alpha
dropped), CMYK, YCbCr, LAB, 16-bit and 32-bit integer images (scaled linearly from the full
integer range: value * 255 / 65535), and EXIF orientation (applied, so pixels match what a
viewer shows). A missing, corrupt or truncated file raises DataError naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from instaseg.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as RGB uint8 [3, H, W]."""
    return torch.from_numpy(read_image_array(path)).permute(2, 0, 1).contiguous()


def read_image_array(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3] (numpy, for tools that want HWC)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                return _to_rgb_uint8(image, path)
    except DataError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
    ) as e:
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from None


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header alone (no pixel decode)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"cannot read image header ({type(e).__name__}: {e})") from None
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return height, width


def _to_rgb_uint8(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(scaled[:, :, None], 3, axis=2)
    if mode == "F":
        raise DataError(path, "32-bit float images are not supported; save it as 8- or 16-bit")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")  # drops alpha; converts L, LA, 1, P, CMYK, YCbCr, LAB
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch refuses read-only memory
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(path, f"decoded to an unexpected shape {array.shape}")
    return array
