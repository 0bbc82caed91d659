"""`vpt-serve --demo`: build (once, offline) and cache a small shapes-world model to serve.

Under DATA_DIR: shapes-quick-<recipe digest>/ holds the quick shapes CLIP and the downstream data set in the
CoOp layout (shared with `vpt-eval base2new --quick`; see training/shapes/cache.py) plus
demo-vpt-<weights sha>.safetensors, a quick unconditional `vpt` posterior fitted by `vpt-train`
on the base half; demo/classes.sqlite is the demo's class registry. Steps resume after an
interruption; a file lock keeps two servers from building at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.backbone import file_sha256
from training.shapes.cache import build_lock, cached_step, ensure_world

log = logging.getLogger(__name__)

TRAIN_ARGS = (
    "--variant",
    "vpt",
    "--shots",
    "16",
    "--classes",
    "base",
    "--epochs",
    "5",
    "--batch-size",
    "32",
    "--samples",
    "5",
    "--lr",
    "0.01",
    "--warmup-epochs",
    "0",
    "--device",
    "cpu",
)


class DemoError(RuntimeError):
    """A demo build step failed; the message says which."""


@dataclass(frozen=True)
class DemoModel:
    backbone: Path  # backbone.json (open_clip model config)
    weights: Path  # weights.safetensors
    posterior: Path  # vpt.safetensors
    classnames: list[str]  # every class of the world: base (trained) and new (zero-shot)
    registry: Path  # the demo's own class registry


def prepare_demo(data_dir: Path, say: Callable[[str], None] = print) -> DemoModel:
    """Build what is missing under data_dir and return the paths to serve."""
    from training.shapes.world import classnames

    data_dir = Path(data_dir).expanduser()
    world = ensure_world(data_dir, quick=True, say=lambda line: say(f"demo: {line}"))
    # Named after the weights it was fitted on: a rebuilt backbone never meets a stale posterior.
    world_root = world.dataset.parent
    posterior = world_root / f"demo-vpt-{file_sha256(world.weights)[:12]}.safetensors"
    with build_lock(world_root):
        cached_step(
            posterior,
            "demo: fitting a quick vpt posterior on the base classes",
            lambda tmp: _train(world.dataset, world.config, world.weights, tmp),
            say,
        )
    registry = data_dir / "demo" / "classes.sqlite"
    return DemoModel(world.config, world.weights, posterior, classnames(), registry)


def _train(dataset: Path, config: Path, weights: Path, out: Path) -> None:
    from training.cli_train import main as train_main

    # vpt-train insists on a .safetensors suffix: train into a sibling, then move.
    target = out.with_name(out.name + ".safetensors")
    code = train_main(
        [
            "--data",
            str(dataset),
            "--backbone",
            str(config),
            "--weights",
            str(weights),
            "--out",
            str(target),
            *TRAIN_ARGS,
        ]
    )
    if code != 0 or not target.is_file():
        raise DemoError(f"vpt-train failed for the demo posterior (exit {code})")
    target.replace(out)
    for extra in target.parent.glob(target.stem + ".*"):  # split file, checkpoint
        if extra.name != out.name:
            extra.unlink(missing_ok=True)
