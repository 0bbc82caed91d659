"""`vpt-serve --demo`: serve the prebuilt shapes model shipped in the package, building nothing.

The backbone is unpacked once under DATA_DIR (prebuilt-<weights sha>/, a second or two; see
training/shapes/prebuilt.py), the posterior is read from the package, demo/classes.sqlite is the
demo's class registry. The example pictures the page offers are rendered from the shapes world
on request (a few pixels, the same on every machine).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.shapes.prebuilt import posterior_path, shipped_backbone


@dataclass(frozen=True)
class DemoModel:
    backbone: Path  # backbone.json (open_clip model config)
    weights: Path  # weights.safetensors
    posterior: Path  # the shipped vpt posterior
    classnames: list[str]  # every class of the world: base (trained) and new (zero-shot)
    registry: Path  # the demo's own class registry


@dataclass(frozen=True)
class Example:
    """One picture the page offers with a click, and what a visitor should learn from its answer."""

    name: str  # URL slug: GET /examples/<name>.png
    title: str
    note: str
    label: str | None  # the world class it shows (None: no class at all)
    index: int = 0  # which picture of that class (the "eval" stream of the world, clean style)


# A fitted (base) class, a class the posterior never saw (new: known by its name only), and no class.
# The pictures are drawn from the world as it renders them; these indices are among the clear ones.
EXAMPLES: tuple[Example, ...] = (
    Example("yellow-heart", "yellow heart", "a class the posterior was fitted on", "yellow heart", 5),
    Example("blue-triangle", "blue triangle", "a class it knows by name only (zero-shot)", "blue triangle", 0),
    Example("black", "all black", "no class at all", None),
)


def prepare_demo(data_dir: Path, say: Callable[[str], None] = print) -> DemoModel:
    """Paths to serve: the shipped backbone (unpacked once under data_dir) and posterior."""
    from training.shapes.world import classnames

    data_dir = Path(data_dir).expanduser()
    config, weights = shipped_backbone(data_dir, say=lambda line: say(f"demo: {line}"))
    return DemoModel(config, weights, posterior_path(), classnames(), data_dir / "demo" / "classes.sqlite")


def example_png(name: str) -> bytes | None:
    """The PNG of example `name` (a clean 32 px picture of the shapes world), None if there is none."""
    from training.shapes.world import WorldConfig, classnames, labelled_sample

    example = next((e for e in EXAMPLES if e.name == name), None)
    if example is None:
        return None
    cfg = WorldConfig()
    if example.label is None:
        pixels = np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8)
    else:
        pixels, _ = labelled_sample(cfg, 0, "eval", example.index, classnames().index(example.label), 0.0)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
