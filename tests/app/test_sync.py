"""Convergence inside the service (app/sync.py, Service.sync) and what a replica does without its registry.

In-process and quick: two services sharing one SQLite file converge by the slow poll as replicas on
PostgreSQL do by NOTIFY (tests/app/test_replicas.py runs real replicas on a real database).
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable

import pytest

from app import cli
from app.config import Settings
from app.registry import RegistryUnavailableError, open_registry
from app.sync import plan
from tests.app.conftest import image_bytes, make_settings, serve
from tests.app.fakes import FakeEngine
from tests.app.test_classify import assert_error, post_image

IMAGE = image_bytes()


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once the socket is closed


def test_plan_adds_what_is_missing_and_removes_what_is_extra_by_identity():
    missing, extra = plan(["Red Star", "blue circle"], ["red star", "green square", "GREEN SQUARE", "pink heart"])
    assert missing == ["green square", "pink heart"]  # target order, first form, never "red star" again
    assert extra == ["blue circle"]
    assert plan(["a", "b"], ["b", "a"]) == ([], [])


def test_a_service_follows_another_ones_writes_encoding_only_the_change(tmp_path):
    shared = tmp_path / "shared.sqlite"
    a_engine, b_engine = FakeEngine(), FakeEngine()
    options = {"registry": shared, "registry_poll_s": 0.05, "classes": ["red star", "blue circle"]}
    with (
        serve(make_settings(tmp_path / "a", **options), a_engine) as a,
        serve(make_settings(tmp_path / "b", **options), b_engine) as b,
    ):
        encoded_before = list(b_engine.encoded)
        assert a.post("/classes", json={"names": ["Green Square"]}).status_code == 200
        assert eventually(lambda: "Green Square" in b.get("/classes").json()["classes"])
        assert b_engine.encoded[len(encoded_before) :] == ["Green Square"]  # nothing else re-encoded
        reg = open_registry(shared, legacy_model="unused")
        try:
            answer = post_image(b, IMAGE).json()
            assert answer["registry_version"] == reg.version()
            assert {c["label"] for c in answer["classes"]} == {"red star", "blue circle", "Green Square"}
            assert a.delete("/classes/red star").status_code == 200
            assert eventually(lambda: b.get("/classes").json()["classes"] == ["blue circle", "Green Square"])
            assert post_image(b, IMAGE).json()["registry_version"] == reg.version()
        finally:
            reg.close()


def test_a_registry_restored_to_an_older_version_is_followed_too(tmp_path):
    """A database restored from a backup goes back in versions: the replica follows it, not only forward."""
    shared = tmp_path / "shared.sqlite"
    settings = make_settings(tmp_path, registry=shared, registry_poll_s=0.05, classes=["red star", "blue circle"])
    with serve(settings, FakeEngine()) as client:
        assert post_image(client, IMAGE).json()["registry_version"] == 1
        assert client.post("/classes", json={"names": ["green square"]}).status_code == 200
        with sqlite3.connect(shared) as db:  # the backup: before green square, and red star gone too
            db.execute("DELETE FROM classes WHERE name IN ('green square', 'red star')")
            db.execute("UPDATE registry_version SET version = 0")
        assert eventually(lambda: client.get("/classes").json()["classes"] == ["blue circle"])
        assert post_image(client, IMAGE).json()["registry_version"] == 0


def test_every_answer_names_the_registry_version_of_its_classes(make_client):
    with make_client(classes=["red star"]) as client:
        first = post_image(client, IMAGE).json()["registry_version"]
        assert client.post("/classes", json={"names": ["blue circle"]}).status_code == 200
        answer = post_image(client, IMAGE).json()
        assert answer["registry_version"] > first and len(answer["classes"]) == 2
        assert client.post("/classes", json={"names": ["BLUE CIRCLE"]}).json()["added"] == []
        assert post_image(client, IMAGE).json()["registry_version"] == answer["registry_version"]  # no change
        assert client.get("/readyz").json()["registry_version"] == answer["registry_version"]


def test_an_unreachable_registry_refuses_changes_with_503_and_keeps_classifying(make_client, monkeypatch):
    with make_client(classes=["red star"]) as client:
        registry = client.app.state.service.registry

        def down(*args, **kwargs):
            raise RegistryUnavailableError("the class registry postgresql://db/vpt is unreachable (refused)")

        monkeypatch.setattr(registry, "add", down)
        monkeypatch.setattr(registry, "remove", down)
        for response in (
            client.post("/classes", json={"names": ["blue circle"]}),
            client.delete("/classes/red star"),
        ):
            assert_error(response, 503, "registry", "unreachable", "retry")
            assert response.headers["Retry-After"] == "5"
        assert client.get("/classes").json()["classes"] == ["red star"]
        assert post_image(client, IMAGE).status_code == 200


def test_the_registry_limit_checked_in_its_transaction_is_409(tmp_path):
    """Another replica's write, not seen here yet, leaves no room: the registry refuses, with its message."""
    shared = tmp_path / "shared.sqlite"
    settings = make_settings(tmp_path, registry=shared, registry_poll_s=60, max_classes=3, classes=["a", "b"])
    with serve(settings, FakeEngine()) as client:
        other = open_registry(shared, legacy_model="unused")
        other.add("zeroshot", ["written elsewhere"])
        other.close()
        assert_error(client.post("/classes", json={"names": ["c"]}), 409, "exceed", "limit of 3")
        assert client.get("/classes").json()["classes"] == ["a", "b"]


def test_start_up_waits_for_the_database_and_comes_up_by_itself(tmp_path, pg_server, pg_url):
    if not pg_server.restartable:
        pytest.skip("an external database (VPT_TEST_DATABASE_URL) is not stopped by the tests")
    settings = make_settings(tmp_path, registry=pg_url, registry_poll_s=0.2, classes=["red star"])
    pg_server.stop()
    running = False
    try:
        with serve(settings, FakeEngine(), ready=False) as client:
            assert eventually(lambda: "waiting for the class registry" in client.get("/readyz").text)
            r = client.get("/readyz")
            assert_error(r, 503, "unreachable", "retries by itself")
            assert r.headers["Retry-After"]
            pg_server.start()
            running = True
            assert eventually(lambda: client.get("/readyz").status_code == 200, 30)
            assert client.get("/readyz").json()["status"] == "ready"
            assert client.get("/classes").json()["classes"] == ["red star"]
    finally:
        if not running:
            pg_server.start()


def test_the_cli_starts_on_an_unreachable_database_but_not_on_a_malformed_url(caplog):
    url = f"postgresql://vpt:secret@127.0.0.1:{closed_port()}/vpt"
    with caplog.at_level("WARNING", logger="app.cli"):
        cli.check_registry(Settings(registry=url), "m")  # no exception: the replica starts and waits
    assert "starting anyway" in caplog.text and "secret" not in caplog.text
    from app.registry import RegistryError

    with pytest.raises(RegistryError, match="malformed"):
        cli.check_registry(Settings(registry="postgresql://vpt@127.0.0.1:99999/vpt"), "m")
