"""Fixtures for the service: settings in a temp dir, a client around a fake engine, image bytes."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api import create_app
from app.config import Settings
from tests.app.fakes import FakeEngine


def image_bytes(rgb=(200, 30, 30), size=(16, 16), fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.normal(0, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {"data_dir": tmp_path / "data", "registry": tmp_path / "classes.sqlite", "device": "cpu"}
    return Settings(**{**values, **overrides})


def wait_ready(client: TestClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError("service did not become ready")


@contextmanager
def serve(settings: Settings, engine=None, ready: bool = True, **kwargs) -> Iterator[TestClient]:
    """A TestClient around create_app; like a real server, unexpected errors answer 500 instead of raising."""
    app = create_app(settings, engine=engine, **kwargs)
    with TestClient(app, raise_server_exceptions=False) as client:
        if ready:
            wait_ready(client)
        yield client


@pytest.fixture
def make_client(tmp_path: Path):
    """make_client(engine=None, classes=[...], **settings) -> context manager yielding a ready TestClient."""

    def factory(engine=None, classes: list[str] | None = None, **overrides):
        settings = make_settings(tmp_path, **overrides)
        engine = engine or FakeEngine()

        @contextmanager
        def run():
            with serve(settings, engine) as client:
                if classes:
                    token = settings.token.get_secret_value() if settings.token else None
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    assert client.post("/classes", json={"names": classes}, headers=headers).status_code == 200
                yield client

        return run()

    return factory


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client(classes=["red star", "blue circle", "green square"]) as c:
        yield c
