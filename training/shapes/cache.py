"""The shapes world (backbone + exported data set), built once and reused from a cache folder.

Used by `vpt-eval base2new` (no --data). The default world's backbone is the one shipped in the
package (training/shapes/prebuilt, unpacked once), so its numbers are the same on every machine;
`pretrain=True` (`vpt-eval base2new --pretrain-world`) and the quick world pretrain here instead.
Each step writes into a `.partial` path and renames it when complete, so an interrupted build
resumes at the missing step; a file lock keeps two processes from building the same world at
once. The folder's name carries a digest of the recipe (backbone, world dials, set sizes), so a
change to any of them builds a new world instead of reusing a stale one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Images per class in the exported downstream data set: 16 shots to train; 64 held out (3,200 base
# images: all of them, the calibration cap being 64 per class) to fit the temperature, the conformal
# scores and the unknown threshold; 100 to test (5,000 base and 5,000 new images). The held-out and
# test sets were 20 per class until issue 18: with 1,000 + 1,000 images, the coverage measured on one
# fixed split varies by ~1.3 points (std) between draws, as wide as the [88, 92] band it is judged by;
# at 3,200 + 5,000 that is ~0.7. vpt-cond's evaluation (images x samples x classes text passes) grows
# with them: ~7 min per seed on 2 cores.
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 16, 64, 100
DATA_DIR_ENV = "VPT_DATA_DIR"


@dataclass(frozen=True)
class World:
    config: Path  # backbone.json (open_clip model config)
    weights: Path  # weights.safetensors
    dataset: Path  # CoOp layout: images/ + split_zhou_Shapes.json


def default_root() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "~/.cache/vpt")).expanduser()


@contextmanager
def build_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_step(final: Path, what: str, build: Callable[[Path], None], say: Callable[[str], None]) -> None:
    """Run build(tmp) unless `final` exists, then move tmp into place."""
    if final.exists():
        return
    tmp = final.with_name(final.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
    say(f"{what} ...")
    started = time.monotonic()
    build(tmp)
    tmp.replace(final)
    say(f"{what}: done in {time.monotonic() - started:.0f} s")


def _pretrain(out: Path, quick: bool) -> None:
    from training.shapes.pretrain import main as pretrain_main

    pretrain_main(["--out", str(out), *(["--quick"] if quick else [])])
    if not (out / "weights.safetensors").is_file() or not (out / "backbone.json").is_file():
        raise RuntimeError(f"pretraining wrote no backbone.json + weights.safetensors into {out}")


def _export(out: Path) -> None:
    from training.shapes.export import export_downstream

    export_downstream(out, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=0, n_per_class_val=VAL_PER_CLASS)


def _export_clean(out: Path) -> None:
    from training.shapes.export import export_downstream
    from training.shapes.world import WorldConfig

    clean = WorldConfig(downstream_shift_fraction=0.0)
    export_downstream(out, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=0, world=clean, n_per_class_val=VAL_PER_CLASS)


def world_dir(root: Path | None, quick: bool, pretrain: bool = False) -> Path:
    """<root>/shapes[-quick|-prebuilt]-<recipe digest>: where this code's world of that kind lives."""
    from training.shapes.pretrain import size_defaults
    from training.shapes.world import WorldConfig

    recipe: dict[str, object] = {
        "world": WorldConfig().to_dict(),
        "per_class": [TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS],
    }
    if quick or pretrain:
        config, steps = size_defaults(quick)
        recipe.update(model=json.loads(config.read_text()), steps=steps)
        kind = "shapes-quick" if quick else "shapes"
    else:
        from training.shapes.prebuilt import manifest

        recipe["backbone"] = manifest()["backbone"]["weights_sha256"]
        kind = "shapes-prebuilt"
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    return (root or default_root()) / f"{kind}-{digest}"


def ensure_world(root: Path | None, quick: bool, say: Callable[[str], None] = print, pretrain: bool = False) -> World:
    """The world under root, built if missing: the shipped backbone, or (quick or pretrain) one pretrained here."""
    folder = world_dir(root, quick, pretrain)
    with build_lock(folder):
        if quick or pretrain:
            size = "quick" if quick else "default (~5-30 min on 2 cores)"
            step = f"shapes world: pretraining the {size} backbone"
            cached_step(folder / "backbone", step, lambda p: _pretrain(p, quick), say)
            config, weights = folder / "backbone" / "backbone.json", folder / "backbone" / "weights.safetensors"
        else:
            from training.shapes.prebuilt import shipped_backbone

            config, weights = shipped_backbone(root or default_root(), say)
        cached_step(folder / "dataset", "shapes world: rendering the downstream data set", _export, say)
    return World(config, weights, folder / "dataset")


def ensure_clean_set(root: Path | None, quick: bool, say: Callable[[str], None] = print) -> Path:
    """The downstream set in the clean style (same classes and sizes as world.dataset, which is
    infrared): the source of the transfer protocols on the shapes world. Rendered once, seconds."""
    root = world_dir(root, quick)
    with build_lock(root):
        cached_step(root / "dataset-clean", "shapes world: rendering the clean-style data set", _export_clean, say)
    return root / "dataset-clean"
