"""Draw one shape into a small RGB array: geometry, anti-aliased mask, colours, style.

Pure functions of their arguments (no hidden randomness), so a seeded caller gets
identical pixels every time. Rendering works in HSV so a domain's hue shift is applied to
the colours themselves, before any pixels exist.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2  # masks are drawn at 2x and box-averaged down: cheap anti-aliasing


def _regular(n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17, -y / 17 + 0.1))
    return pts


_CIRCLE = _regular(40)
# Each shape: (outer polygon, optional hole polygon), in unit coordinates (radius ~1).
SHAPES: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]] | None]] = {
    "circle": (_CIRCLE, None),
    "square": ([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], None),
    "triangle": (_regular(3, -math.pi / 2), None),
    "star": (_star(), None),
    "cross": (
        [
            (-0.3, -1),
            (0.3, -1),
            (0.3, -0.3),
            (1, -0.3),
            (1, 0.3),
            (0.3, 0.3),
            (0.3, 1),
            (-0.3, 1),
            (-0.3, 0.3),
            (-1, 0.3),
            (-1, -0.3),
            (-0.3, -0.3),
        ],
        None,
    ),
    "ring": (_CIRCLE, [(0.55 * x, 0.55 * y) for x, y in _CIRCLE]),
    "crescent": (_CIRCLE, [(0.75 * x + 0.45, 0.75 * y - 0.1) for x, y in _CIRCLE]),
    "heart": (_heart(), None),
    "arrow": ([(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)], None),
    "bar": ([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)], None),
}


@dataclass(frozen=True)
class Placement:
    """Where and how large the shape is, in pixels of the final image."""

    cx: float
    cy: float
    radius: float
    angle: float  # radians


def shape_mask(shape: str, place: Placement, size: int) -> np.ndarray:
    """Coverage in [0, 1] of `shape` on a size x size grid (float32)."""
    outer, hole = SHAPES[shape]
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cos, sin = math.cos(place.angle), math.sin(place.angle)

    def to_px(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
        s = place.radius * SUPERSAMPLE
        return [
            (place.cx * SUPERSAMPLE + s * (x * cos - y * sin), place.cy * SUPERSAMPLE + s * (x * sin + y * cos))
            for x, y in poly
        ]

    draw.polygon(to_px(outer), fill=255)
    if hole is not None:
        draw.polygon(to_px(hole), fill=0)
    arr = np.asarray(canvas, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE)
    return arr.mean(axis=(1, 3)) / 255.0


def hsv_to_rgb(h_deg: float, s: float, v: float) -> np.ndarray:
    """One colour as float32 RGB in [0, 1]; hue in degrees, wrapped."""
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v), dtype=np.float32)


def compose(
    mask: np.ndarray,
    fg: np.ndarray,
    bg: np.ndarray,
    noise: np.ndarray | None = None,
    scanlines: float = 0.0,
) -> np.ndarray:
    """Blend a flat shape colour over a flat background, then add style; returns uint8 HxWx3.

    `scanlines` darkens every other row by that fraction (the shifted domain's visible cue);
    `noise` is added pixelwise (already scaled, in [0, 1] units).
    """
    img = mask[..., None] * fg + (1.0 - mask[..., None]) * bg
    if scanlines > 0:
        img[1::2] *= 1.0 - scanlines
    if noise is not None:
        img = img + noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
