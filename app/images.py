"""Uploaded bytes -> RGB PIL image, with every way that can fail named.

Runs in a worker thread (never on the event loop). The pixel count and the aspect ratio are
checked from the header, before any pixel is decoded: a decompression bomb costs nothing, and
neither does a 1 x 200,000 strip (resizing its short side up to the model's input would
allocate short-side^2 x long-side pixels). Pillow's own DecompressionBombError is caught as well.
After decoding, EXIF orientation is applied and 16-bit samples are scaled (not clipped) to 8 bits.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# Decoders we accept; Image.open tries only these (no obscure plug-ins on untrusted bytes).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# The first bytes of each accepted format: a file that starts like one of these but does not
# open is a broken image (400), not some other kind of file (415).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey (Pillow reads some as 32-bit "I")


class ImageError(Exception):
    """The upload cannot be used as an image; subclasses say why."""


class EmptyImageError(ImageError):
    pass


class NotAnImageError(ImageError):
    pass


class CorruptImageError(ImageError):
    pass


class ImageTooLargeError(ImageError):
    pass


class ImageShapeError(ImageError):
    """The long side is more than the allowed multiple of the short side."""


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def check_size(width: int, height: int, max_pixels: int, max_aspect_ratio: float) -> None:
    """Refuse sizes whose decoding or resizing would cost more than the limits allow (header only)."""
    if width <= 0 or height <= 0:
        raise CorruptImageError()
    if width * height > max_pixels:
        raise ImageTooLargeError()
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise ImageShapeError()


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grey scaled to 0..255 (Pillow's convert would clip every value above 255 to white)."""
    if image.mode not in _WIDE_MODES:
        return image
    values = np.asarray(image, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos are stored sideways); broken EXIF leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # EXIF is metadata: a malformed block must not fail the image
        log.info("ignoring unreadable EXIF orientation: %s", exc)
        return image


def decode_image(data: bytes, max_pixels: int, max_aspect_ratio: float = float("inf")) -> Image.Image:
    """Decode and fully load an upload as upright RGB, or raise an ImageError subclass."""
    if not data:
        raise EmptyImageError()
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        if _looks_like_image(data):  # e.g. a PNG cut off inside its header
            raise CorruptImageError() from exc
        raise NotAnImageError() from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError() from exc
    except (OSError, ValueError, SyntaxError) as exc:  # a known format whose header is broken
        raise CorruptImageError() from exc
    check_size(*image.size, max_pixels, max_aspect_ratio)
    try:
        image.load()
        rgb = _to_8_bit(_upright(image)).convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError() from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:  # truncated or malformed data
        raise CorruptImageError() from exc
    return rgb
