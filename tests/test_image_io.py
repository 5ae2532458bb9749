"""Every image mode becomes RGB uint8 [3, H, W]; unreadable files name themselves."""

import numpy as np
import pytest
from PIL import Image

from instaseg.data.errors import DataError
from instaseg.data.image_io import read_image, read_image_size

H, W = 6, 9


def _gradient(mode_max=255):
    return (np.arange(H * W).reshape(H, W) * mode_max // (H * W - 1)).astype(np.int64)


def test_rgb_passthrough(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype.is_floating_point is False and image.shape == (3, H, W)
    assert (image.permute(1, 2, 0).numpy() == rgb).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _gradient().astype(np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png").numpy()
    assert image.shape == (3, H, W) and (image == gray[None]).all()


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png").numpy()
    assert (image[0] == 200).all() and (image[1:] == 0).all()


def test_palette(tmp_path):
    palette_image = Image.new("P", (W, H))
    palette_image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette_image.putpixel((2, 1), 1)
    palette_image.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png").numpy()
    assert image[:, 1, 2].tolist() == [10, 20, 30] and image[:, 0, 0].tolist() == [0, 0, 0]


def test_16bit_scaled_from_full_range(tmp_path):
    values = _gradient(65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    image = read_image(tmp_path / "d.png").numpy()
    assert image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[0, -1, -1] == 255
    assert (image[0] == np.rint(values.astype(np.float64) * 255 / 65535)).all()


def test_cmyk(tmp_path):
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    image = read_image(tmp_path / "c.jpg").numpy()
    assert image.shape == (3, H, W)
    assert image[0].mean() > 200 and image[1].mean() < 60  # cyan/magenta-free -> red


def test_exif_orientation_applied(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0, 0] = 255  # marks the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=100)
    image = read_image(tmp_path / "r.jpg")
    assert image.shape == (3, W, H)
    assert read_image_size(tmp_path / "r.jpg") == (W, H)
    assert image[:, 0, -1].float().mean() > 150  # top-left moved to top-right


def test_missing_file_named(tmp_path):
    with pytest.raises(DataError, match="nope.png: image file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="nope.png"):
        read_image_size(tmp_path / "nope.png")


def test_corrupt_and_truncated_files_named(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match="junk.png: cannot decode image"):
        read_image(tmp_path / "junk.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.jpg: cannot decode image"):
        read_image(tmp_path / "t.jpg")
