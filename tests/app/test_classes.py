"""The class registry endpoints: register, list, delete, validation, auth, persistence."""

from __future__ import annotations

import json
import sqlite3

from tests.app.conftest import image_bytes, make_settings, serve
from tests.app.fakes import MAX_NAME_CHARS, FakeEngine
from tests.app.test_classify import assert_error, post_image


def test_register_list_delete(client):
    assert client.get("/classes").json() == {"classes": ["red star", "blue circle", "green square"]}
    r = client.post("/classes", json={"names": ["pink heart"]})
    assert r.status_code == 200
    assert r.json() == {"added": ["pink heart"], "classes": ["red star", "blue circle", "green square", "pink heart"]}
    r = client.delete("/classes/blue circle")
    assert r.status_code == 200 and r.json()["removed"] == "blue circle"
    assert "blue circle" not in client.get("/classes").json()["classes"]
    assert_error(client.delete("/classes/blue circle"), 404, "not registered")


def test_register_is_idempotent_and_encodes_only_new_names(make_client):
    engine = FakeEngine()
    with make_client(engine=engine) as c:
        first = c.post("/classes", json={"names": ["red star", "blue circle"]}).json()
        encoded = list(engine.encoded)
        again = c.post("/classes", json={"names": ["blue circle", "red star"]}).json()
        assert first["added"] == ["red star", "blue circle"] and again["added"] == []
        assert again["classes"] == first["classes"]
        assert engine.encoded == encoded  # nothing re-encoded
        c.post("/classes", json={"names": ["red star", "teal cross"]})
        assert engine.encoded == [*encoded, "teal cross"]


def test_names_are_normalised(client):
    r = client.post("/classes", json={"names": ["  purple \t  heart ", "purple heart"]})
    assert r.json()["added"] == ["purple heart"]
    assert client.delete("/classes/purple%20%20heart").status_code == 200


def test_name_validation_is_422_with_message(make_client):
    with make_client(max_names_per_call=3) as c:
        assert_error(c.post("/classes", json={"names": []}), 422, "at least 1 item")
        assert_error(c.post("/classes", json={"names": ["ok", "   "]}), 422, "names[1]", "empty")
        assert_error(c.post("/classes", json={"names": ["x" * (MAX_NAME_CHARS + 1)]}), 422, "names[0]", "too long")
        assert_error(c.post("/classes", json={"names": ["a", "b", "c", "d"]}), 422, "at most 3")
        assert_error(c.post("/classes", json={"names": "red star"}), 422, "names")
        assert_error(c.post("/classes", json={"names": [1, 2]}), 422, "names")
        assert_error(c.post("/classes", json={"name": ["red star"]}), 422, "names")
        assert_error(c.post("/classes", content=b"{not json", headers={"content-type": "application/json"}), 422)
        assert c.get("/classes").json()["classes"] == []  # nothing half-registered


def test_class_count_limit(make_client):
    with make_client(classes=["a", "b"], max_classes=3) as c:
        assert_error(c.post("/classes", json={"names": ["c", "d"]}), 409, "limit of 3")
        assert c.post("/classes", json={"names": ["c"]}).status_code == 200


def test_mutations_need_the_token_when_configured(make_client):
    with make_client(token="s3cret") as c:
        body = {"names": ["red star"]}
        r = c.post("/classes", json=body)
        assert_error(r, 401, "Authorization: Bearer")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(c.post("/classes", json=body, headers={"Authorization": "Bearer wrong"}), 403)
        assert_error(c.post("/classes", json=body, headers={"Authorization": "Basic s3cret"}), 401)
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/classes", json=body, headers=ok).status_code == 200
        assert c.get("/classes").status_code == 200  # reading needs no token
        assert_error(c.delete("/classes/red star"), 401)
        assert_error(c.delete("/classes/red star", headers={"Authorization": "Bearer nope"}), 403)
        assert c.delete("/classes/red star", headers=ok).status_code == 200


def test_no_token_configured_means_open(client):
    headers = {"Authorization": "Bearer anything"}
    assert client.post("/classes", json={"names": ["x"]}, headers=headers).status_code == 200


def test_classes_survive_a_restart_and_are_stored_in_wal_mode(tmp_path):
    settings = make_settings(tmp_path)
    with serve(settings, FakeEngine()) as c:
        c.post("/classes", json={"names": ["red star", "blue circle", "green square"]})
        c.delete("/classes/blue circle")
    engine = FakeEngine()
    with serve(settings, engine) as c:
        assert c.get("/classes").json()["classes"] == ["red star", "green square"]
    assert engine.classnames == ["red star", "green square"]
    mode = sqlite3.connect(settings.registry_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_initial_classes_seed_only_a_new_registry(tmp_path):
    settings = make_settings(tmp_path, classes=["red star", "blue circle"])
    with serve(settings, FakeEngine()) as c:
        assert c.get("/classes").json()["classes"] == ["red star", "blue circle"]
        c.delete("/classes/red star")
        c.delete("/classes/blue circle")
    with serve(settings, FakeEngine()) as c:  # deleted on purpose: not re-seeded
        assert c.get("/classes").json()["classes"] == []


def test_classify_follows_registry_changes(client):
    client.post("/classes", json={"names": ["orange cross"]})
    labels = {c["label"] for c in post_image(client, image_bytes()).json()["classes"]}
    assert "orange cross" in labels
    client.delete("/classes/orange cross")
    labels = {c["label"] for c in post_image(client, image_bytes()).json()["classes"]}
    assert "orange cross" not in labels


def test_case_and_unicode_variants_are_one_class(client):
    variants = ["Pink Heart", "pink heart", "PINK HEART", "\uff50\uff49\uff4e\uff4b heart"]
    r = client.post("/classes", json={"names": variants})
    assert r.status_code == 200 and r.json()["added"] == ["Pink Heart"]
    assert client.post("/classes", json={"names": ["cafe\u0301", "Caf\u00e9"]}).json()["added"] == ["caf\u00e9"]
    assert client.post("/classes", json={"names": ["pink HEART"]}).json()["added"] == []
    r = client.delete("/classes", params={"name": "PINK heart"})
    assert r.status_code == 200 and r.json()["removed"] == "Pink Heart"


def test_hostile_characters_are_422_never_500(client):
    for bad in ("x\ud800y", "nul\x00", "\u202etxt.exe", "zero\u200bwidth"):
        body = json.dumps({"names": [bad]})  # ASCII JSON: a lone surrogate travels as the escape \ud800
        r = client.post("/classes", content=body, headers={"content-type": "application/json"})
        assert_error(r, 422, "names[0]", "U+")
    assert client.get("/classes").json()["classes"] == ["red star", "blue circle", "green square"]


def test_every_name_that_can_be_added_can_be_deleted(client):
    odd = ["a/b", "what?", "50% off", "x#y", "a&name=b", "/leading", "trailing/", ".."]
    assert client.post("/classes", json={"names": odd}).json()["added"] == odd
    for name in odd:
        r = client.delete("/classes", params={"name": name})
        assert r.status_code == 200 and r.json()["removed"] == name, (name, r.text)
    assert client.get("/classes").json()["classes"] == ["red star", "blue circle", "green square"]
    client.post("/classes", json={"names": ["a/b"]})
    assert client.delete("/classes/a%2Fb").json()["removed"] == "a/b"  # the path form takes '/' too
    assert_error(client.delete("/classes", params={"name": "never added"}), 404, "not registered")
    assert_error(client.delete("/classes", params={"name": "\u202ex"}), 422, "U+202E")
    assert_error(client.delete("/classes"), 422, "name")
