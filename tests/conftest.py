"""Shared fixtures: a tiny open_clip backbone built in-process (no network) and small image folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.pg import PgServer, PgUnavailable, open_server
from training.backbone import Backbone, load_backbone

ASSETS = Path(__file__).parent / "assets"
TINY_CONFIG = ASSETS / "tiny-clip.json"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="session")
def tiny_backbone() -> Backbone:
    import torch

    torch.manual_seed(0)
    return load_backbone(str(TINY_CONFIG), "none", "cpu")


def make_image_folder(root: Path, per_class: int = 6, size: int = 32, seed: int = 0) -> Path:
    """root/<colour>/<i>.png: flat colour squares with noise, one class per colour."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "colours")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session (tests/pg.py): `.url`, and `.stop()` / `.start()` / `.stopped()`
    for outage tests when `.restartable`. Without PostgreSQL binaries: skipped, or failed under CI=true."""
    try:
        server = open_server()
    except PgUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL tests cannot run in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of an empty registry database (the registry's tables dropped before the test)."""
    pg_server.reset()
    return pg_server.url
