"""The model repository (issue 13): which artifacts serve, which are refused and why, the default model,
classes per model, unknown names, several models from one image encode, and metric labels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app import cli
from app.api import create_app
from app.cli import load_repository
from app.models import ArtifactRepository
from tests.app.conftest import image_bytes, make_settings, serve
from tests.app.fakes import FakeEngine
from tests.app.model_repo import (
    FakeRepository,
    metadata_of,
    place,
    repo_settings,
    run_app,
    version_of,
    wait_until,
)
from tests.app.test_classify import assert_error, post_image
from tests.app.tiny import TRAINED, write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), ("vpt", "coop"))


@pytest.fixture
def mixed(tmp_path, tiny) -> Path:
    """Two good models (a flat file, and a folder of versions whose newest is v10, not v2), a file fitted
    on another backbone, a truncated file, a file whose stem is not a model name, and a stray text file."""
    d = tmp_path / "models"
    place(tiny["vpt"], d / "a.safetensors")
    place(tiny["vpt"], d / "b" / "v1.safetensors", created_at="2024-01-01T00:00:00+00:00")
    place(tiny["vpt"], d / "b" / "v2.safetensors", created_at="2024-01-02T00:00:00+00:00")
    place(tiny["coop"], d / "b" / "v10.safetensors", created_at="2024-01-10T00:00:00+00:00")
    place(tiny["vpt"], d / "mismatch.safetensors", embed_dim="999")
    data = tiny["vpt"].read_bytes()
    (d / "corrupt.safetensors").write_bytes(data[: len(data) // 2])
    place(tiny["vpt"], d / "bad name!.safetensors")
    (d / "README.txt").write_text("not a model")
    return d


def only(messages: list[str], word: str) -> str:
    found = [m for m in messages if word in m]
    assert len(found) == 1, (word, messages)
    return found[0]


def test_good_artifacts_serve_and_the_others_are_refused_naming_file_and_field(tmp_path, tiny, mixed):
    settings = repo_settings(tmp_path, tiny, models_dir=mixed)
    with serve(settings, repository=load_repository(settings)) as c:
        body = c.get("/models").json()
        b = c.get("/models/b").json()
        answer = post_image(c, image_bytes(), model="b").json()
        plain = post_image(c, image_bytes()).json()
        metrics = c.get("/metrics").text
    assert "vpt_models 2.0" in metrics and not any(w in metrics for w in ("mismatch", "corrupt", "bad name"))
    assert body["default"] == "a"  # no VPT_DEFAULT_MODEL, no --posterior: the first name
    models = {m["name"]: m for m in body["models"]}
    assert list(models) == ["a", "b"]
    for name, path, variant in (("a", mixed / "a.safetensors", "vpt"), ("b", mixed / "b" / "v10.safetensors", "coop")):
        m = models[name]
        assert (m["version"], m["path"], m["variant"]) == (version_of(path), str(path), variant), m
        assert len(m["sha256"]) == 64 and m["sha256"].startswith(m["version"])
        assert m["created_at"] == metadata_of(path)["created_at"] and m["loaded_at"]
        assert m["classes"] == m["trained_classes"] == len(TRAINED) and m["calibrated"] is False
        assert (m["state"], m["error"], m["calibration"]) == ("ready", None, None)
    assert models["b"]["created_at"] == "2024-01-10T00:00:00+00:00"
    assert b == models["b"]
    assert (answer["model"]["name"], answer["model"]["version"], answer["model"]["variant"]) == (
        "b",
        models["b"]["version"],
        "coop",
    )
    assert (plain["model"]["name"], plain["model"]["version"]) == ("a", models["a"]["version"])
    refused = body["refused"]
    assert len(refused) == 3, refused
    mismatch = only(refused, "mismatch.safetensors")
    assert "embed_dim" in mismatch and "999" in mismatch
    only(refused, "corrupt.safetensors")
    assert "not a model name" in only(refused, "bad name!")


def test_the_default_model_rule(tmp_path, tiny, monkeypatch):
    """VPT_DEFAULT_MODEL, else the --posterior file's stem, else the first name: decided from names alone."""

    def no_backbone():
        raise AssertionError("choosing the default must not load the backbone")

    d = tmp_path / "models"
    for name in ("b", "a", "c"):
        place(tiny["vpt"], d / f"{name}.safetensors")
    cases = [
        ({}, "a"),
        ({"default_model": "c"}, "c"),
        ({"posterior": tiny["coop"]}, "coop"),
        ({"posterior": tiny["coop"], "default_model": "b"}, "b"),
    ]
    for overrides, expected in cases:
        assert ArtifactRepository(repo_settings(tmp_path, tiny, models_dir=d, **overrides), no_backbone).default == (
            expected
        ), overrides
    monkeypatch.setenv("VPT_DEFAULT_MODEL", "b")
    assert ArtifactRepository(repo_settings(tmp_path, tiny, models_dir=d), no_backbone).default == "b"


def serve_main(tmp_path: Path, tiny, *argv: str) -> int:
    base = ["--backbone", str(tiny["config"]), "--weights", str(tiny["weights"]), "--device", "cpu"]
    return cli.main([*base, "--data-dir", str(tmp_path / "data"), *argv])


@pytest.mark.parametrize(
    "default, words",
    [
        ("mismatch", ["default model 'mismatch'", "mismatch.safetensors", "embed_dim"]),
        ("corrupt", ["default model 'corrupt'", "corrupt.safetensors"]),
        ("nope", ["default model 'nope'", "no artifact has that name"]),
    ],
)
def test_a_default_model_that_cannot_load_stops_the_start_in_one_line(tmp_path, tiny, mixed, capsys, default, words):
    assert serve_main(tmp_path, tiny, "--models-dir", str(mixed), "--default-model", default) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and not any("Traceback" in line for line in err), err
    for word in words:
        assert word in err[-1], err[-1]


@pytest.mark.parametrize("kind, words", [("empty", ["no .safetensors"]), ("missing", ["not a directory"])])
def test_a_models_dir_without_models_stops_the_start(tmp_path, tiny, capsys, kind, words):
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no artifacts here")
    assert serve_main(tmp_path, tiny, "--models-dir", str(folder)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and str(folder) in err[-1], err
    for word in words:
        assert word in err[-1], err[-1]


def test_a_default_model_that_cannot_load_keeps_an_embedded_server_unready_with_the_cause(tmp_path, tiny, mixed):
    """create_app with a repository (no vpt-serve to check first): /readyz says why, requests get 503."""
    settings = repo_settings(tmp_path, tiny, models_dir=mixed, default_model="mismatch")
    with serve(settings, repository=load_repository(settings), ready=False) as c:
        wait_until(lambda: "embed_dim" in c.get("/readyz").text, what="/readyz naming the cause")
        ready = c.get("/readyz")
        models = c.get("/models")
    assert_error(ready, 503, "default model 'mismatch'", "mismatch.safetensors")
    assert_error(models, 503, "mismatch")


def test_a_posterior_alone_is_a_repository_of_one(tmp_path, tiny):
    settings = repo_settings(tmp_path, tiny, posterior=tiny["coop"])
    with serve(settings, repository=load_repository(settings)) as c:
        body = c.get("/models").json()
        answer = post_image(c, image_bytes()).json()
    assert body["default"] == "coop" and [m["name"] for m in body["models"]] == ["coop"] and body["refused"] == []
    assert body["models"][0]["version"] == version_of(tiny["coop"]) == answer["model"]["version"]
    assert answer["model"]["name"] == "coop"


@pytest.fixture
def two(tmp_path, tiny) -> Path:
    d = tmp_path / "models"
    place(tiny["vpt"], d / "a.safetensors")
    place(tiny["coop"], d / "b.safetensors")
    return d


def labels(answer: dict) -> set[str]:
    return {c["label"] for c in answer["classes"]}


def test_classes_are_per_model_and_persist_per_model(tmp_path, tiny, two):
    settings = repo_settings(tmp_path, tiny, models_dir=two, default_model="b")
    data = image_bytes((200, 30, 200))
    with serve(settings, repository=load_repository(settings)) as c:
        assert c.post("/models/a/classes", json={"names": ["purple"]}).json()["added"] == ["purple"]
        assert c.post("/classes", json={"names": ["teal"]}).json()["added"] == ["teal"]  # the default model: b
        a_classes = c.get("/models/a/classes").json()["classes"]
        b_classes = c.get("/models/b/classes").json()["classes"]
        assert c.get("/classes").json()["classes"] == b_classes
        assert a_classes == [*TRAINED, "purple"] and b_classes == [*TRAINED, "teal"]
        assert labels(post_image(c, data, model="a").json()) == set(a_classes)
        assert labels(post_image(c, data, model="b").json()) == set(b_classes)
        assert labels(post_image(c, data).json()) == set(b_classes)
        counts = {m["name"]: m["classes"] for m in c.get("/models").json()["models"]}
        assert counts == {"a": len(a_classes), "b": len(b_classes)}
    with serve(settings, repository=load_repository(settings)) as c:  # a restart on the same registry file
        assert c.get("/models/a/classes").json()["classes"] == a_classes
        assert c.get("/models/b/classes").json()["classes"] == b_classes
        assert c.delete("/models/a/classes/purple").json()["removed"] == "purple"
        assert c.delete("/models/b/classes", params={"name": "TEAL"}).json()["removed"] == "teal"
        assert_error(c.delete("/models/a/classes/teal"), 404, "teal")  # b's class is not a's
    with serve(settings, repository=load_repository(settings)) as c:
        assert c.get("/models/a/classes").json()["classes"] == TRAINED
        assert c.get("/models/b/classes").json()["classes"] == TRAINED


def test_an_unknown_model_is_a_404_listing_the_served_ones_and_adds_no_metric_series(tmp_path, tiny, two):
    settings = repo_settings(tmp_path, tiny, models_dir=two)
    with serve(settings, repository=load_repository(settings)) as c:
        responses = [
            post_image(c, image_bytes(), model="ghost"),
            post_image(c, image_bytes(), model=["a", "ghost"]),
            c.get("/models/ghost"),
            c.get("/models/ghost/classes"),
            c.post("/models/ghost/classes", json={"names": ["red"]}),
            c.delete("/models/ghost/classes/red"),
            c.delete("/models/ghost/classes", params={"name": "red"}),
            c.post("/models/ghost/reload"),
        ]
        assert post_image(c, image_bytes(), model="b").status_code == 200
        metrics = c.get("/metrics").text
    for r in responses:
        assert_error(r, 404, "'ghost'", "served models: a, b")
    assert "ghost" not in metrics
    assert 'vpt_registered_classes{model="a"}' in metrics and 'vpt_samples_count{model="b"} 1.0' in metrics
    assert "vpt_models 2.0" in metrics


# several models over one backbone pass (fake engines: their batches are recorded) ---------------


def fake_pair(tmp_path, **overrides):
    a, b = FakeEngine(), FakeEngine()
    app = create_app(make_settings(tmp_path, **overrides), repository=FakeRepository({"a": a, "b": b}, "a"))
    return app, a, b


A_CLASSES, B_CLASSES = ["red star", "blue circle"], ["green square", "yellow moon", "grey cloud"]


async def register(client, model: str, names: list[str]) -> None:
    r = await client.post(f"/models/{model}/classes", json={"names": names})
    assert r.status_code == 200, r.text


async def classify(client, data: bytes, *models: str):
    return await client.post("/classify", files={"file": ("i.png", data, "image/png")}, params={"model": list(models)})


def test_several_models_answer_in_the_order_asked_from_one_image_encode(tmp_path):
    app, a, b = fake_pair(tmp_path)
    data = image_bytes((30, 200, 30))

    async def body(client):
        await register(client, "a", A_CLASSES)
        await register(client, "b", B_CLASSES)
        solo = {m: (await classify(client, data, m)).json() for m in ("a", "b")}
        a.batch_sizes.clear(), b.batch_sizes.clear()
        both = (await classify(client, data, "a", "b")).json()
        passes = a.batch_sizes + b.batch_sizes
        reverse = (await classify(client, data, "b", "a")).json()
        return solo, both, passes, reverse

    solo, both, passes, reverse = run_app(app, body)
    assert passes == [1]  # one backbone pass for one image, whatever the number of models
    assert both == {"answers": [solo["a"], solo["b"]]} and reverse == {"answers": [solo["b"], solo["a"]]}
    assert [labels(x) for x in both["answers"]] == [set(A_CLASSES), set(B_CLASSES)]
    assert [x["model"]["name"] for x in both["answers"]] == ["a", "b"]


def test_a_batch_of_requests_for_several_models_answers_each_from_its_own_model(tmp_path):
    app, a, b = fake_pair(tmp_path, max_batch_size=16, max_queue_delay_ms=100)
    images = [image_bytes((20 * i, 200 - 15 * i, 40 + 10 * i), seed=i) for i in range(12)]
    asked = [("a",), ("b",), ("a", "b")] * 4

    async def body(client):
        await register(client, "a", A_CLASSES)
        await register(client, "b", B_CLASSES)
        a.batch_sizes.clear(), b.batch_sizes.clear()
        together = await asyncio.gather(*(classify(client, data, *m) for data, m in zip(images, asked)))
        passes = a.batch_sizes + b.batch_sizes
        alone = [await classify(client, data, *m) for data, m in zip(images, asked)]
        return [r.json() for r in together], passes, [r.json() for r in alone]

    together, passes, alone = run_app(app, body)
    assert sum(passes) == len(images) and max(passes) > 1, passes  # batched: one row per image, not per model
    assert together == alone  # each row answered by its own model(s), as if it had been alone
    for answer, models in zip(together, asked):
        answers = answer["answers"] if len(models) > 1 else [answer]
        assert [x["model"]["name"] for x in answers] == list(models)
        for x, m in zip(answers, models):
            assert labels(x) == set(A_CLASSES if m == "a" else B_CLASSES)
