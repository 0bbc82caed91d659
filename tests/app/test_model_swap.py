"""Hot swap of a model version (issue 13): under concurrent load, failed reloads, the file watcher.

Real tiny artifacts: the old version is a vpt posterior, the new one a coop posterior (another variant,
so an answer shows which engine computed it, not only which version it was labelled with).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.api import create_app
from app.cli import load_repository
from tests.app.conftest import image_bytes, serve
from tests.app.model_repo import place, repo_settings, rewrite, run_app, version_of, wait_until
from tests.app.test_classify import assert_error, post_image
from tests.app.tiny import TRAINED, write_tiny_model

CLIENTS = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    paths = write_tiny_model(folder, ("vpt", "coop"))
    paths["next"] = rewrite(paths["coop"], folder / "next.safetensors", created_at="2030-01-01T00:00:00+00:00")
    return paths


@pytest.fixture
def models(tmp_path, tiny) -> Path:
    d = tmp_path / "models"
    place(tiny["vpt"], d / "m.safetensors")
    return d


def test_a_swap_under_concurrent_clients_fails_no_request_and_mixes_no_versions(tmp_path, tiny, models):
    settings = repo_settings(tmp_path, tiny, models_dir=models, token="t")
    auth = {"Authorization": "Bearer t"}
    old, new = version_of(tiny["vpt"]), version_of(tiny["next"])
    variant = {old: "vpt", new: "coop"}
    records: list[tuple[float, int, dict]] = []  # (started, status, body)

    async def body(client):
        assert (await client.post("/models/m/classes", json={"names": ["purple"]}, headers=auth)).status_code == 200
        stop = asyncio.Event()

        async def worker(i: int) -> None:
            data = image_bytes((8 * i, 255 - 8 * i, 120), seed=i)
            while not stop.is_set():
                started = time.monotonic()
                r = await client.post("/classify", files={"file": ("i.png", data, "image/png")}, params={"model": "m"})
                records.append((started, r.status_code, r.json()))

        async def answered(n: int) -> None:
            while len(records) < n:
                await asyncio.sleep(0.005)

        workers = [asyncio.create_task(worker(i)) for i in range(CLIENTS)]
        await answered(2 * CLIENTS)
        place(tiny["next"], models / "m.safetensors")
        reload = await client.post("/models/m/reload", headers=auth)
        reloaded_at = time.monotonic()
        await answered(len(records) + 2 * CLIENTS)
        stop.set()
        await asyncio.gather(*workers)
        after = [(await client.get(path)).json() for path in ("/models/m", "/models/m/classes")]
        return reload, reloaded_at, after, (await client.get("/metrics")).text

    app = create_app(settings, repository=load_repository(settings))
    reload, reloaded_at, (info, classes), metrics = run_app(app, body)
    assert reload.status_code == 200, reload.text
    assert reload.json() == {"name": "m", "version": new, "previous_version": old, "changed": True}
    assert [status for _, status, _ in records if status != 200] == []
    versions = [answer["model"]["version"] for _, _, answer in records]
    assert set(versions) <= {old, new} and old in versions and new in versions
    for _, _, answer in records:  # each answer computed by the engine of the version it names
        assert answer["model"]["variant"] == variant[answer["model"]["version"]]
        assert answer["samples"] == (4 if answer["model"]["variant"] == "vpt" else 1)
        assert "purple" in {c["label"] for c in answer["classes"]}  # registered before the swap, kept after it
    late = [answer["model"]["version"] for started, _, answer in records if started > reloaded_at]
    assert len(late) >= CLIENTS and set(late) == {new}
    assert (info["version"], info["variant"], info["error"]) == (new, "coop", None)
    assert classes["classes"] == [*TRAINED, "purple"]
    assert 'vpt_model_reloads_total{model="m",outcome="swapped"} 1.0' in metrics
    assert f'version="{new}"' in metrics and f'version="{old}"' not in metrics


def test_a_failed_reload_keeps_the_old_version_serving_and_says_why(tmp_path, tiny, models):
    settings = repo_settings(tmp_path, tiny, models_dir=models, token="t")
    auth = {"Authorization": "Bearer t"}
    old, new = version_of(tiny["vpt"]), version_of(tiny["next"])
    data = image_bytes()
    with serve(settings, repository=load_repository(settings)) as c:
        assert_error(c.post("/models/m/reload"), 401, "Bearer")
        (models / "m.safetensors").write_bytes(b"garbage, not a safetensors file")
        failed = c.post("/models/m/reload", headers=auth)
        assert_error(failed, 422, "m.safetensors", old, "keeps serving")
        answer = post_image(c, data, model="m")
        assert answer.status_code == 200 and answer.json()["model"]["version"] == old
        info = c.get("/models/m").json()
        assert info["version"] == old and info["error"] == failed.json()["detail"]
        metrics = c.get("/metrics").text
        assert 'vpt_model_reloads_total{model="m",outcome="failed"} 1.0' in metrics
        assert 'outcome="swapped"' not in metrics

        place(tiny["vpt"], models / "m.safetensors")  # the serving version's content again
        same = c.post("/models/m/reload", headers=auth)
        assert same.json() == {"name": "m", "version": old, "previous_version": old, "changed": False}
        assert c.get("/models/m").json()["error"] is None

        place(tiny["next"], models / "m.safetensors")
        swapped = c.post("/models/m/reload", headers=auth).json()
        assert swapped == {"name": "m", "version": new, "previous_version": old, "changed": True}
        assert post_image(c, data, model="m").json()["model"]["version"] == new
        again = c.post("/models/m/reload", headers=auth).json()
        assert again == {"name": "m", "version": new, "previous_version": new, "changed": False}
        metrics = c.get("/metrics").text
    assert 'vpt_model_reloads_total{model="m",outcome="swapped"} 1.0' in metrics
    assert 'vpt_model_reloads_total{model="m",outcome="failed"} 1.0' in metrics


def test_the_watcher_swaps_changed_files_and_adds_new_ones(tmp_path, tiny, models):
    place(tiny["vpt"], models / "f" / "v1.safetensors")
    place(tiny["vpt"], models / "fixed.safetensors", embed_dim="999")  # refused at start, replaced later
    settings = repo_settings(tmp_path, tiny, models_dir=models, models_poll_s=0.1)
    old, new = version_of(tiny["vpt"]), version_of(tiny["next"])

    def version(c, name: str) -> str | None:
        found = [m for m in c.get("/models").json()["models"] if m["name"] == name]
        return found[0]["version"] if found else None

    with serve(settings, repository=load_repository(settings)) as c:
        assert c.post("/models/m/classes", json={"names": ["purple"]}).status_code == 200
        place(tiny["next"], models / "m.safetensors")
        wait_until(lambda: version(c, "m") == new, what="the swap of m")
        assert c.get("/models/m/classes").json()["classes"] == [*TRAINED, "purple"]

        place(tiny["next"], models / "f" / "v2.safetensors")  # a new version beside the old one
        wait_until(lambda: version(c, "f") == new, what="the swap of f to v2")
        assert c.get("/models/f").json()["path"] == str(models / "f" / "v2.safetensors")

        place(tiny["vpt"], models / "n.safetensors")
        wait_until(lambda: version(c, "n") == old, what="the new model n")
        info = c.get("/models/n").json()
        assert info["classes"] == info["trained_classes"] == len(TRAINED) and info["error"] is None
        assert post_image(c, image_bytes(), model="n").json()["model"]["name"] == "n"

        assert [r for r in c.get("/models").json()["refused"] if "fixed" in r]
        place(tiny["vpt"], models / "fixed.safetensors")  # the refused file, now fitting the backbone
        wait_until(lambda: version(c, "fixed") == old, what="the fixed model")
        assert c.get("/models").json()["refused"] == []

        (models / "n.safetensors").write_bytes(b"garbage")  # a broken file: reported, the old version serves on
        wait_until(lambda: c.get("/models/n").json()["error"], what="the failed reload of n")
        assert post_image(c, image_bytes(), model="n").json()["model"]["version"] == old
        metrics = c.get("/metrics").text
    assert "vpt_models 4.0" in metrics
    assert 'vpt_model_reloads_total{model="n",outcome="failed"} 1.0' in metrics


def test_a_model_given_in_code_has_nothing_to_reload(make_client):
    with make_client(classes=["red star"]) as c:
        name = c.get("/models").json()["default"]
        assert_error(c.post(f"/models/{name}/reload"), 422, name, "not loaded from an artifact file")
        assert post_image(c, image_bytes()).status_code == 200


def test_a_file_replaced_between_loading_and_serving_is_picked_up(tmp_path, tiny, models):
    """vpt-serve loads every model before it binds; the watcher starts from the versions as loaded."""
    settings = repo_settings(tmp_path, tiny, models_dir=models, models_poll_s=0.1)
    repository = load_repository(settings)
    repository.preload()
    place(tiny["next"], models / "m.safetensors")  # after loading, before the server (and its watcher) starts
    with serve(settings, repository=repository) as c:
        wait_until(lambda: c.get("/models/m").json()["version"] == version_of(tiny["next"]), what="the swap of m")
