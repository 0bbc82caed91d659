"""HTTP details: HEAD and OPTIONS, auth before the body, strict query integers, the OpenAPI schema, nosniff."""

from __future__ import annotations

import pytest

from tests.app.conftest import image_bytes
from tests.app.test_classify import NAMES, assert_error, post_image


@pytest.mark.parametrize("path", ["/", "/livez", "/readyz", "/classes", "/ui/config"])
def test_head_is_answered_like_get_without_a_body(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


def test_options_and_405_list_every_method_of_the_path(client):
    r = client.options("/classes")
    assert r.status_code == 204
    assert r.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, POST"
    assert client.options("/classes/a").headers["allow"] == "DELETE, OPTIONS"
    assert client.options("/classify").headers["allow"] == "OPTIONS, POST"
    r = client.put("/classes")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, POST"
    assert client.options("/no/such/path").status_code == 404


def test_authentication_comes_before_the_body(make_client):
    with make_client(token="s3cret") as c:
        for body in (b"{not json", b"\xff\xfe\x00garbage", b'{"names": "not a list"}'):
            r = c.post("/classes", content=body, headers={"content-type": "application/json"})
            assert_error(r, 401, "Authorization: Bearer")
        wrong = {"content-type": "application/json", "authorization": "Bearer x"}
        assert_error(c.post("/classes", content=b"{bad", headers=wrong), 403)
        ok = {"content-type": "application/json", "authorization": "Bearer s3cret"}
        assert_error(c.post("/classes", content=b"\xff\xfe", headers=ok), 422, "not valid JSON")
        assert_error(c.delete("/classes", params={"name": "\u202ex"}), 401)


@pytest.mark.parametrize("query", [{"samples": "5_0"}, {"top_k": "1.0"}, {"samples": "+5"}, {"top_k": " 2"}])
def test_query_integers_are_plain_digits(client, query):
    (name,) = query
    assert_error(post_image(client, image_bytes(), **query), 422, name, "digits")


def test_plain_digits_still_work(client):
    r = post_image(client, image_bytes(), samples="5", top_k="2")
    assert r.status_code == 200 and r.json()["samples"] == 5 and len(r.json()["classes"]) == 2


def test_openapi_states_the_limits_and_the_security_scheme(make_client):
    with make_client(classes=NAMES, max_samples=12, max_names_per_call=7, token="t") as c:
        schema = c.get("/openapi.json").json()
    names = schema["components"]["schemas"]["NamesIn"]["properties"]["names"]
    assert names["minItems"] == 1 and names["maxItems"] == 7
    params = {p["name"]: p["schema"] for p in schema["paths"]["/classify"]["post"]["parameters"]}
    integer = next(b for b in params["samples"]["anyOf"] if b.get("type") == "integer")
    assert integer == {"type": "integer", "minimum": 1, "maximum": 12}
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    for method, path in (("post", "/classes"), ("delete", "/classes")):
        assert schema["paths"][path][method]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/classify"]["post"]


def test_every_answer_says_nosniff(client):
    for r in (client.get("/classes"), client.get("/livez"), post_image(client, b"text"), client.get("/nope")):
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url


def test_host_allow_list(make_client):
    with make_client(allowed_hosts="localhost,127.0.0.1,testserver") as c:
        assert c.get("/livez", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/classes", headers={"host": "127.0.0.1"}).status_code == 200
        assert c.get("/classes", headers={"host": "rebound.attacker.example"}).status_code == 400
    with make_client() as c:  # the default answers any Host (a token, or a loopback bind, guards it)
        assert c.get("/livez", headers={"host": "anything.example"}).status_code == 200
