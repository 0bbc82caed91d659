"""app.client against a real `vpt-serve --demo` subprocess (tests/servers.py): the sync and async clients,
the single-model API and the multi-model one (issue 13: /models, ?model=, per-model classes, reload)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from app.client import AsyncClient, Client, InvalidRequest, NotFound, Unauthorized
from tests.servers import CLASSES, MAX_SAMPLES, Server, run_server

TOKEN = "client e2e token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("client-server"), token=TOKEN) as srv:
        yield srv


@pytest.fixture
def vpt(server: Server) -> Iterator[Client]:
    with Client(server.url, token=TOKEN, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def red_circle() -> Image.Image:
    """A clean shapes-world picture of a red circle (one of the registered classes)."""
    from training.shapes.world import WorldConfig, classnames, labelled_sample

    pixels, _ = labelled_sample(WorldConfig(), 0, "eval", 3, classnames().index("red circle"), 0.0)
    return Image.fromarray(np.asarray(pixels, dtype=np.uint8))


def test_classify_on_the_demo(vpt: Client, red_circle: Image.Image, tmp_path):
    assert vpt.live() and vpt.ready()
    answer = vpt.classify(red_circle, top_k=2, samples=4, alpha=0.2)
    assert answer.top.label == "red circle" and not answer.unknown
    assert len(answer.classes) == 2 and answer.samples == 4 and answer.coverage == pytest.approx(0.8)
    assert answer.prediction_set and answer.prediction_set[0] == "red circle"
    assert answer.model.variant == "vpt" and answer.model.max_samples == MAX_SAMPLES

    path = tmp_path / "red-circle.png"
    red_circle.save(path)
    from_path = vpt.classify(path)  # the same pixels sent as a file: the same answer
    assert sorted(c.label for c in from_path.classes) == sorted(CLASSES)
    assert from_path.top.label == "red circle"
    with pytest.raises(InvalidRequest, match="not an image") as caught:
        vpt.classify(b"this is not an image")
    assert caught.value.status == 415


def test_classes_on_the_demo(vpt: Client, server: Server):
    odd = "teal ring/with?odd & chars"
    added = vpt.add_classes(["golden star", odd])
    assert added.added == ("golden star", odd)
    assert vpt.classes().classes == (*CLASSES, "golden star", odd)
    assert vpt.add_classes(["Golden  Star"]).added == ()  # the same class: nothing new
    removed = vpt.remove_class(odd)
    assert removed.removed == odd and odd not in removed.classes
    with pytest.raises(NotFound):
        vpt.remove_class(odd)
    with Client(server.url) as anonymous, pytest.raises(Unauthorized) as caught:
        anonymous.add_classes(["pink heart"])
    assert caught.value.status == 401 and "pink heart" not in vpt.classes().classes
    vpt.remove_class("golden star")
    assert vpt.classes().classes == tuple(CLASSES)


def test_the_async_client_answers_like_the_sync_client(vpt: Client, server: Server, red_circle: Image.Image):
    expected = vpt.classify(red_circle, samples=8)

    async def main():
        async with AsyncClient(server.url, timeout=60) as client:
            assert await client.ready()
            return await asyncio.gather(*(client.classify(red_circle, samples=8) for _ in range(4)))

    for answer in asyncio.run(main()):  # concurrent: batched together, same seeded samples
        assert [c.label for c in answer.classes] == [c.label for c in expected.classes]
        assert [c.probability for c in answer.classes] == pytest.approx([c.probability for c in expected.classes])
        assert answer.prediction_set == expected.prediction_set


# --- the multi-model API (issue 13) ----------------------------------------------------------------


def test_models_on_the_demo(vpt: Client, red_circle: Image.Image):
    models = vpt.models()
    assert models.default in models.names
    info = vpt.model(models.default)
    assert info.name == models.default and info.state == "ready" and info.error is None
    assert len(info.version) == 12 and info.classes == len(CLASSES) and info.loaded_at is not None
    with pytest.raises(NotFound, match="served models"):
        vpt.model("no-such-model")

    answer = vpt.classify(red_circle, model=models.default, top_k=1)
    assert (answer.model.name, answer.model.version) == (models.default, info.version)
    assert vpt.classify(red_circle, top_k=1).model.name == models.default  # no model: the default one
    many = vpt.classify_many(red_circle, [models.default, models.default], top_k=1)
    assert list(many) == [models.default] and many[models.default].top.label == answer.top.label
    with pytest.raises(NotFound, match="served models: .*" + models.default):
        vpt.classify(red_circle, model="no-such-model")


def test_classes_of_a_named_model_are_the_default_classes(vpt: Client):
    default = vpt.models().default
    assert vpt.classes(model=default) == vpt.classes()
    assert vpt.add_classes(["teal ring"], model=default).added == ("teal ring",)
    assert "teal ring" in vpt.classes().classes
    assert vpt.model(default).classes == len(CLASSES) + 1
    assert vpt.remove_class("teal ring", model=default).removed == "teal ring"
    assert vpt.classes().classes == tuple(CLASSES)
    with pytest.raises(NotFound):
        vpt.classes(model="no-such-model")


def test_reload_of_an_unchanged_artifact_keeps_its_version(vpt: Client, server: Server):
    default = vpt.models().default
    before = vpt.model(default).version
    reloaded = vpt.reload(default)
    assert (reloaded.name, reloaded.version, reloaded.previous_version) == (default, before, before)
    assert reloaded.changed is False
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.reload(default)
