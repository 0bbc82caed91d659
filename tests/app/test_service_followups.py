"""Service paths where models and the registry move at once: swaps under queued requests, a model file
that appears while the registry is unreachable, and what a refused registry URL says."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.metrics import Metrics
from app.models import ServedModel, artifact_files, file_signature, identity_version, now_iso
from app.registry import RegistryError, RegistryUnavailableError, open_registry
from app.registry.postgres import check_url
from app.service import Service
from tests.app.fakes import FakeEngine


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class _FolderRepository:
    """Every *.safetensors of a folder is a model of fake engines; each load is a new version."""

    def __init__(self, folder: Path, delay_s: float = 0.0) -> None:
        self.folder, self.delay_s, self.default = folder, delay_s, "a"

    def files(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.folder.glob("*.safetensors"))}

    def load(self, name: str, path: Path | None) -> ServedModel:
        sha = uuid.uuid4().hex
        engine = FakeEngine(delay_s=self.delay_s)
        return ServedModel(name, engine, sha[:12], sha, path, loaded_at=now_iso(), signature=file_signature(path))

    def load_all(self) -> tuple[list[ServedModel], list[str]]:
        return [self.load("a", self.folder / "a.safetensors")], []


def test_requests_finishing_on_a_replaced_version_name_the_registry_version_they_were_scored_at(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"a")
    settings = Settings(
        data_dir=tmp_path, registry=tmp_path / "r.sqlite", models_poll_s=0, max_batch_size=1, max_queue=500,
        classes=["x"], samples=1,
    )  # fmt: skip

    async def run() -> tuple[list[dict], int]:
        service = Service(
            settings, Metrics(), open_registry(settings.registry_path, "a"), _FolderRepository(tmp_path, 0.02)
        )
        await service.start()
        assert await service.wait_ready() == "ready"
        try:
            queued = [asyncio.create_task(service.classify(_png())) for _ in range(40)]
            await asyncio.sleep(0.2)  # a queue of requests that picked up the first version
            await service.reload("a")
            await service.add_classes(["y"])  # written and synced: only the serving version gets y
            answers = [a[0] for a in await asyncio.gather(*queued)]
            return answers, service.registry_version
        finally:
            await service.stop()

    answers, newest = asyncio.run(run())
    for answer in answers:
        labels = {c["label"] for c in answer["classes"]}
        assert ("y" in labels) == (answer["registry_version"] == newest), answer["registry_version"]
    assert any(a["registry_version"] != newest for a in answers)  # some finished on the replaced version


class _Flaky:
    """A registry that can be made unreachable."""

    def __init__(self, inner) -> None:
        self.inner, self.down = inner, False

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if not callable(attr) or name in ("close", "listen", "version"):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise RegistryUnavailableError("the class registry is unreachable; retry shortly")
            return attr(*args, **kwargs)

        return call


def test_a_model_file_that_appears_while_the_registry_is_down_is_served_once_it_is_back(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"a")
    settings = Settings(
        data_dir=tmp_path, registry=tmp_path / "r.sqlite", models_poll_s=0.05, registry_poll_s=0.2, classes=["x"]
    )

    async def run() -> tuple[list[str], list[str], list[str], list[str]]:
        registry = _Flaky(open_registry(settings.registry_path, "a"))
        service = Service(settings, Metrics(), registry, _FolderRepository(tmp_path))
        await service.start()
        assert await service.wait_ready() == "ready"
        try:
            registry.down = True
            (tmp_path / "b.safetensors").write_bytes(b"b")
            await asyncio.sleep(0.4)
            during = (service.model_names(), list(service.refused))
            registry.down = False
            for _ in range(100):
                if "b" in service.model_names():
                    break
                await asyncio.sleep(0.05)
            return *during, service.model_names(), list(service.refused)
        finally:
            await service.stop()

    models_during, refused_during, models_after, refused_after = asyncio.run(run())
    assert models_during == ["a"] and any("'b'" in r and "unreachable" in r for r in refused_during)
    assert models_after == ["a", "b"] and refused_after == []


def test_a_posterior_inside_the_models_folder_is_one_model(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"a")
    files, problems = artifact_files(tmp_path, tmp_path / "a.safetensors")
    assert files == {"a": tmp_path / "a.safetensors"} and problems == []
    assert identity_version("x") == identity_version("x") != identity_version("y")


def test_a_malformed_database_url_is_refused_without_quoting_its_password():
    with pytest.raises(RegistryError) as refused:
        check_url("postgresql://vpt:s3cr%zzet@db/vpt")
    assert "s3cr" not in str(refused.value) and "percent-encoded" in str(refused.value)
