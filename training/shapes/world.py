"""The shapes world: classes (colour x shape), scenes, and the two image distributions.

Why it looks like this (DESIGN.md section 3): prompt tuning can only be measured where the
hand-written prompt "a photo of a {c}." is wrong in a way a shared learned context can fix.
So the world has a second style, "infrared" (hue shifted, scanlines, grain). Pretraining sees
it in a share of images whose captions mostly do not name the class; only some say
"an infrared photo of a red star". The downstream data set is infrared (the share is a
dial): the default template (no "infrared") misreads the shifted colours, a learned context
can supply the missing phrase.

Every sample is a pure function of (config, seed, stream, index): same seed, same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from training.shapes.captions import caption_for
from training.shapes.render import SHAPES, Placement, compose, hsv_to_rgb, shape_mask

# Evenly spaced hues (36 degrees apart), so a hue shift moves every colour the same way.
COLOURS: dict[str, float] = {
    "red": 0.0,
    "orange": 36.0,
    "yellow": 72.0,
    "lime": 108.0,
    "green": 144.0,
    "teal": 180.0,
    "azure": 216.0,
    "blue": 252.0,
    "purple": 288.0,
    "pink": 324.0,
}
SHAPE_NAMES: list[str] = list(SHAPES)

CLEAN, SHIFTED = "clean", "infrared"
STREAMS = {"pretrain": 1, "train": 2, "val": 3, "test": 4, "eval": 5}


@dataclass(frozen=True)
class WorldConfig:
    """The dials. Pretraining dials change the backbone; downstream dials only the data set."""

    image_size: int = 32
    max_rotation: float = 20.0  # degrees either way; full turns made shapes harder to learn
    hue_jitter: float = 7.0  # degrees; < half the colour spacing, so colours stay separable
    shift_hue: float = 18.0  # the infrared domain's hue shift (half a colour step: ambiguous)
    shift_scanlines: float = 0.25
    shift_noise: float = 0.06
    clean_noise: float = 0.015
    pretrain_shift_fraction: float = 0.3  # share of pretraining images in the infrared style
    named_shift_fraction: float = 0.25  # share of infrared captions that name the class
    shape_only_fraction: float = 0.35  # share of unnamed infrared captions that name the shape only
    omit_fraction: float = 0.1  # share of clean captions that leave colour or shape out
    downstream_shift_fraction: float = 1.0  # share of downstream images in the infrared style

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Scene:
    """Everything a caption may talk about, plus what the renderer needs."""

    colour: str
    shape: str
    domain: str
    place: Placement
    size_word: str  # "small", "large" or ""
    position_word: str  # "left", "right", "top", "bottom" or "center"
    background_word: str  # "dark" or "light"
    params: dict[str, float] = field(default_factory=dict)

    @property
    def classname(self) -> str:
        return f"{self.colour} {self.shape}"


def classnames() -> list[str]:
    """All classes, colour-major: labels 0..99, so the base half is the first five colours."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPE_NAMES]


def label_of(scene: Scene) -> int:
    return list(COLOURS).index(scene.colour) * len(SHAPE_NAMES) + SHAPE_NAMES.index(scene.shape)


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """An independent generator per (seed, stream, index): samples need no shared state."""
    return np.random.default_rng([seed, STREAMS[stream], index])


def sample_scene(cfg: WorldConfig, rng: np.random.Generator, domain: str, label: int | None = None) -> Scene:
    """Draw a scene; `label` fixes the class (data-set export), otherwise uniform over classes."""
    n_shapes = len(SHAPE_NAMES)
    if label is None:
        label = int(rng.integers(len(COLOURS) * n_shapes))
    colour, shape = list(COLOURS)[label // n_shapes], SHAPE_NAMES[label % n_shapes]
    size = cfg.image_size
    radius = float(rng.uniform(0.22, 0.40)) * size
    margin = radius * 0.7
    cx, cy = (float(v) for v in rng.uniform(margin, size - margin, 2))
    place = Placement(cx, cy, radius, float(np.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))))
    size_word = "small" if radius < 0.27 * size else "large" if radius > 0.35 * size else ""
    dx, dy = cx / size - 0.5, cy / size - 0.5
    if max(abs(dx), abs(dy)) < 0.12:
        position_word = "center"
    elif abs(dx) >= abs(dy):
        position_word = "left" if dx < 0 else "right"
    else:
        position_word = "top" if dy < 0 else "bottom"
    dark = bool(rng.random() < 0.5)
    params = {
        "hue": COLOURS[colour] + float(rng.uniform(-cfg.hue_jitter, cfg.hue_jitter)),
        "sat": float(rng.uniform(0.6, 1.0)),
        "val": float(rng.uniform(0.75, 1.0)) if dark else float(rng.uniform(0.6, 0.9)),
        "bg_hue": float(rng.uniform(0, 360)),
        "bg_sat": float(rng.uniform(0.0, 0.25)),
        "bg_val": float(rng.uniform(0.05, 0.3)) if dark else float(rng.uniform(0.75, 0.97)),
    }
    return Scene(colour, shape, domain, place, size_word, position_word, "dark" if dark else "light", params)


def render_scene(cfg: WorldConfig, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Pixels of a scene (uint8 HxWx3); the infrared style shifts every hue and adds its cue."""
    p, size = scene.params, cfg.image_size
    shifted = scene.domain == SHIFTED
    hue_shift = cfg.shift_hue if shifted else 0.0
    fg = hsv_to_rgb(p["hue"] + hue_shift, p["sat"], p["val"])
    bg = hsv_to_rgb(p["bg_hue"] + hue_shift, p["bg_sat"], p["bg_val"])
    sigma = cfg.shift_noise if shifted else cfg.clean_noise
    noise = rng.normal(0.0, sigma, (size, size, 1)).astype(np.float32)
    mask = shape_mask(scene.shape, scene.place, size)
    return compose(mask, fg, bg, noise, cfg.shift_scanlines if shifted else 0.0)


def pretrain_sample(cfg: WorldConfig, seed: int, index: int) -> tuple[np.ndarray, str]:
    """One (image, caption) pair of the pretraining distribution, over all classes."""
    rng = rng_for(seed, "pretrain", index)
    domain = SHIFTED if rng.random() < cfg.pretrain_shift_fraction else CLEAN
    scene = sample_scene(cfg, rng, domain)
    return render_scene(cfg, scene, rng), caption_for(scene, cfg, rng, shifted=domain == SHIFTED)


def labelled_sample(
    cfg: WorldConfig, seed: int, stream: str, index: int, label: int, shift_fraction: float
) -> tuple[np.ndarray, str]:
    """One image of class `label`, infrared with probability `shift_fraction`; returns (pixels, domain)."""
    rng = rng_for(seed, stream, index)
    domain = SHIFTED if rng.random() < shift_fraction else CLEAN
    return render_scene(cfg, sample_scene(cfg, rng, domain, label), rng), domain


def downstream_sample(cfg: WorldConfig, seed: int, stream: str, index: int, label: int) -> tuple[np.ndarray, str]:
    """One image of class `label` from the downstream distribution (the clean/infrared mix)."""
    return labelled_sample(cfg, seed, stream, index, label, cfg.downstream_shift_fraction)
