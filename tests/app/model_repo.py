"""For the multi-model tests: repositories of real tiny artifacts (copied, altered, damaged on disk), a
repository of fake engines, and the app driven by concurrent asyncio clients."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
from fastapi import FastAPI
from safetensors import safe_open
from safetensors.torch import save_file

from app.config import Settings
from app.models import ServedModel, identity_version, now_iso
from tests.app.fakes import FakeEngine

T = TypeVar("T")


def version_of(path: Path) -> str:
    """What the server must call this file's version: the first 12 hex digits of its sha256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def rewrite(source: Path, target: Path, **fields: str) -> Path:
    """A copy of the artifact `source` at `target` with metadata fields replaced (same tensors): e.g. another
    backbone identity (a mismatch), or another created_at (same model, new content, new version)."""
    with safe_open(str(source), framework="pt") as fh:
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}
        meta = dict(fh.metadata() or {})
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata={**meta, **fields})
    return target


def place(source: Path, target: Path, **fields: str) -> Path:
    """Put an artifact at `target` the way a deployment should: written beside it, then renamed over it."""
    beside = target.with_name(target.name + ".part")
    if fields:
        rewrite(source, beside, **fields)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, beside)
    os.replace(beside, target)
    return target


def repo_settings(tmp_path: Path, tiny: dict[str, Path], **overrides) -> Settings:
    """Settings of a server over the tiny backbone (file watcher off unless asked)."""
    values = {
        "backbone": str(tiny["config"]),
        "weights": str(tiny["weights"]),
        "device": "cpu",
        "data_dir": tmp_path / "data",
        "registry": tmp_path / "classes.sqlite",
        "max_samples": 4,
        "samples": 4,
        "models_poll_s": 0,
    }
    return Settings(**{**values, **overrides})


class FakeRepository:
    """A Repository (app/models.py) of fake engines by name, served as given (no files: nothing to reload)."""

    def __init__(self, engines: dict[str, FakeEngine], default: str) -> None:
        self.engines, self.default = engines, default

    def files(self) -> dict[str, Path]:
        return {}

    def load(self, name: str, path: Path | None) -> ServedModel:
        return ServedModel(name, self.engines[name], identity_version(name), loaded_at=now_iso())

    def load_all(self) -> tuple[list[ServedModel], list[str]]:
        return [self.load(name, None) for name in self.engines], []


def run_app(app: FastAPI, body: Callable[[httpx.AsyncClient], Awaitable[T]], timeout_s: float = 60.0) -> T:
    """Start the app (its lifespan), wait until ready, run `body` with an in-process async client, stop."""

    async def main() -> T:
        async with app.router.lifespan_context(app):
            assert await app.state.service.wait_ready() == "ready", app.state.service.failure
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://vpt") as client:
                return await asyncio.wait_for(body(client), timeout_s)

    return asyncio.run(main())


def wait_until(check: Callable[[], object], timeout_s: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")
