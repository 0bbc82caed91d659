"""app.images on its own: limits read from the header, 16-bit scaling, EXIF orientation, broken files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.images import CorruptImageError, ImageShapeError, ImageTooLargeError, NotAnImageError, decode_image
from tests.app.test_classify import _png_header_only


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("width", [200_000, 10_000_000])
def test_long_strip_is_refused_from_the_header(width):
    # The header-only PNG carries no pixel rows: decoding it would fail as corrupt, so ImageShapeError
    # proves the refusal came from the header alone.
    with pytest.raises(ImageShapeError):
        decode_image(_png_header_only(width, 1), max_pixels=40_000_000, max_aspect_ratio=20)
    with pytest.raises(ImageShapeError):
        decode_image(_png_header_only(1, width), max_pixels=40_000_000, max_aspect_ratio=20)


def test_real_strip_png_is_refused_and_the_limit_is_a_setting():
    strip = _png(np.zeros((1, 200_000), np.uint8))  # a few hundred bytes
    with pytest.raises(ImageShapeError):
        decode_image(strip, max_pixels=40_000_000, max_aspect_ratio=20)
    wide = _png(np.zeros((10, 150), np.uint8))
    assert decode_image(wide, max_pixels=10_000, max_aspect_ratio=15).size == (150, 10)
    with pytest.raises(ImageShapeError):
        decode_image(wide, max_pixels=10_000, max_aspect_ratio=14)
    with pytest.raises(ImageTooLargeError):
        decode_image(wide, max_pixels=1_000, max_aspect_ratio=15)


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    grey = np.asarray(decode_image(_png(ramp), max_pixels=10**6))[..., 0].astype(float)
    expected = ramp / 257.0
    assert np.abs(grey - expected).max() <= 1.0  # clipping would give 255 for all but the first row
    assert 120 < grey.mean() < 135


def test_exif_orientation_is_applied():
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # red on the left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=95)
    upright = decode_image(buf.getvalue(), max_pixels=10**6)
    assert upright.size == (10, 30)
    top = np.asarray(upright)[:5].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60  # the stored left edge is now on top


def test_truncated_header_is_corrupt_not_foreign():
    png = _png(np.zeros((16, 16), np.uint8))
    with pytest.raises(CorruptImageError):
        decode_image(png[:40], max_pixels=10**6)
    with pytest.raises(NotAnImageError):
        decode_image(b"plain text, not an image at all", max_pixels=10**6)
