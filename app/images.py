"""Uploaded bytes -> RGB PIL image, with every way that can fail named.

Runs in a worker thread (never on the event loop). The pixel limit is checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing; Pillow's own
DecompressionBombError is caught as well.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

# Decoders we accept; Image.open tries only these (no obscure plug-ins on untrusted bytes).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


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


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode and fully load an upload as RGB, or raise an ImageError subclass."""
    if not data:
        raise EmptyImageError()
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        raise NotAnImageError() from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError() from exc
    except (OSError, ValueError, SyntaxError) as exc:  # a known format whose header is broken
        raise CorruptImageError() from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImageError()
    if width * height > max_pixels:
        raise ImageTooLargeError()
    try:
        image.load()
        rgb = image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError() from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:  # truncated or malformed data
        raise CorruptImageError() from exc
    return rgb
