"""`vpt-serve --demo`: build (once, offline) and cache a small shapes-world model to serve.

Under DATA_DIR/demo/: backbone/ (the quick shapes CLIP, `vpt-pretrain-shapes --quick`), dataset/
(the downstream shapes data set in the CoOp layout), vpt.safetensors (a quick unconditional
`vpt` posterior fitted by `vpt-train` on the base half). Each step writes into a temporary
folder and renames it when complete, so an interrupted build resumes at the missing step; a
file lock keeps two servers from building at once.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Small on purpose: the whole first build takes a few minutes on two CPU cores.
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 16, 2, 4
TRAIN_ARGS = (
    "--variant vpt --shots 16 --classes base --epochs 5 --batch-size 32 --samples 5 --lr 0.01 --warmup-epochs 0 "
    "--device cpu"
).split()


class DemoError(RuntimeError):
    """A demo build step failed; the message says which."""


@dataclass(frozen=True)
class DemoModel:
    backbone: Path  # backbone.json (open_clip model config)
    weights: Path  # weights.safetensors
    posterior: Path  # vpt.safetensors
    classnames: list[str]  # every class of the world: base (trained) and new (zero-shot)
    registry: Path  # the demo's own class registry


@contextmanager
def _build_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _step(final: Path, what: str, build: Callable[[Path], None], say: Callable[[str], None]) -> None:
    """Run build(tmp) unless `final` exists, then move tmp into place."""
    if final.exists():
        return
    tmp = final.with_name(final.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
    say(f"demo: {what} ...")
    started = time.monotonic()
    build(tmp)
    tmp.replace(final)
    say(f"demo: {what}: done in {time.monotonic() - started:.0f} s")


def prepare_demo(data_dir: Path, say: Callable[[str], None] = print) -> DemoModel:
    """Build what is missing under data_dir/demo and return the paths to serve."""
    from training.shapes.world import classnames

    root = Path(data_dir).expanduser() / "demo"
    with _build_lock(root):
        _step(root / "backbone", "pretraining the quick shapes backbone (~2-4 min, first run only)", _pretrain, say)
        _step(root / "dataset", "rendering the downstream shapes data set", _export, say)
        backbone = root / "backbone"

        def train(tmp: Path) -> None:
            _train(root / "dataset", backbone, tmp)

        _step(root / "vpt.safetensors", "fitting a quick vpt posterior on the base classes", train, say)
    return DemoModel(
        backbone / "backbone.json",
        backbone / "weights.safetensors",
        root / "vpt.safetensors",
        classnames(),
        root / "classes.sqlite",
    )


def _pretrain(out: Path) -> None:
    from training.shapes.pretrain import main as pretrain_main

    try:
        pretrain_main(["--quick", "--out", str(out)])
    except SystemExit as exc:  # argparse / dial errors
        raise DemoError(f"pretraining the demo backbone failed (exit {exc.code})") from exc
    if not (out / "weights.safetensors").is_file() or not (out / "backbone.json").is_file():
        raise DemoError(f"pretraining wrote no backbone.json + weights.safetensors into {out}")


def _export(out: Path) -> None:
    from training.shapes.export import export_downstream

    export_downstream(out, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=0, n_per_class_val=VAL_PER_CLASS)


def _train(dataset: Path, backbone: Path, out: Path) -> None:
    from training.cli_train import main as train_main

    # vpt-train insists on a .safetensors suffix: train into a sibling, then move.
    target = out.with_name(out.name + ".safetensors")
    code = train_main(
        [
            "--data",
            str(dataset),
            "--backbone",
            str(backbone / "backbone.json"),
            "--weights",
            str(backbone / "weights.safetensors"),
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
