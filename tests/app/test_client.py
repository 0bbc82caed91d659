"""app.client without a server: request shapes and answer parsing over httpx.MockTransport, and the typed
results against the service's own response schemas (in-process app, fake engine)."""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import io
import json
from collections.abc import Callable
from email.parser import BytesParser

import httpx
import numpy as np
import pytest
from PIL import Image

from app.api import create_app
from app.api.schemas import CalibrationOut, ClassifyOut, ClassScoreOut, ModelOut
from app.client import (
    AsyncClient,
    Calibration,
    Classification,
    ClassScore,
    Client,
    InvalidRequest,
    ModelRef,
    NotFound,
    Unauthorized,
    Unavailable,
    VPTError,
)
from tests.app.conftest import image_bytes, make_settings
from tests.app.fakes import FakeEngine

MODEL = {
    "variant": "vpt",
    "id": "vpt a.safetensors on backbone (sha256:5d13763c8fca)",
    "max_samples": 20,
    "text_pass": "exact",
    "linear_error": None,
    "calibration": {
        "temperature": 0.67,
        "method": "lac",
        "held_out_images": 2000,
        "classes": 2,
        "matches_registered_classes": True,
        "false_alarm": 0.05,
    },
    "unknown_measure": "energy+entropy",
    "unknown_threshold": 0.97,
}
ANSWER = {
    "classes": [
        {"label": "red circle", "probability": 0.9, "variance": 0.01, "std": 0.1},
        {"label": "blue star", "probability": 0.1, "variance": 0.01, "std": 0.1},
    ],
    "entropy": 0.33,
    "expected_entropy": 0.3,
    "mutual_information": 0.03,
    "energy": -20.0,
    "prediction_set": ["red circle"],
    "coverage": 0.9,
    "calibrated": True,
    "unknown": False,
    "unknown_score": 0.2,
    "unknown_measure": "energy+entropy",
    "samples": 20,
    "model": MODEL,
}
MODEL_INFO = {
    "name": "parts",
    "version": "0123456789ab",
    "variant": "vpt",
    "sha256": "0123456789ab" + "0" * 52,
    "path": "/models/parts.safetensors",
    "created_at": "2026-05-01T10:00:00Z",
    "loaded_at": "2026-05-02T11:30:00.250000+00:00",
    "classes": 12,
    "trained_classes": 10,
    "calibrated": False,
    "calibration": None,
    "state": "ready",
    "error": None,
}


def answer_of(name: str, version: str = "abc") -> dict:
    return {**ANSWER, "model": {**MODEL, "name": name, "version": version}}


class Recorder:
    """A MockTransport handler that records every request and answers from a function of it."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda request: httpx.Response(200, json=ANSWER))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.reply(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def client_with(reply=None, **kwargs) -> tuple[Client, Recorder]:
    recorder = Recorder(reply)
    return Client("http://vpt.test/", transport=httpx.MockTransport(recorder), **kwargs), recorder


def answering(status: int, body: dict | str, headers: dict | None = None):
    if isinstance(body, dict):
        return lambda request: httpx.Response(status, json=body, headers=headers)
    return lambda request: httpx.Response(status, text=body, headers=headers)


def file_part(request: httpx.Request) -> tuple[str, bytes]:
    """(filename, bytes) of the multipart field 'file', read with the stdlib's email parser."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=email.policy.default).parsebytes(head + request.content)
    parts = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
    assert len(parts) == 1, [p.get_all("content-disposition") for p in message.iter_parts()]
    return parts[0].get_filename(), parts[0].get_payload(decode=True)


# --- request shapes ----------------------------------------------------------------------------


def test_classify_posts_the_image_as_field_file_with_the_query_parameters():
    client, seen = client_with()
    png = image_bytes()
    answer = client.classify(png, top_k=3, samples="auto", alpha=0.1)
    assert (seen.last.method, seen.last.url.path) == ("POST", "/classify")
    assert list(seen.last.url.params.multi_items()) == [("top_k", "3"), ("samples", "auto"), ("alpha", "0.1")]
    assert file_part(seen.last)[1] == png
    assert answer.top.label == "red circle" and answer.prediction_set == ("red circle",)


def test_classify_without_options_sends_no_query_and_a_model_when_named():
    client, seen = client_with()
    client.classify(b"img")
    assert seen.last.url.query == b""
    client.classify(b"img", model="parts", samples=5)
    assert list(seen.last.url.params.multi_items()) == [("model", "parts"), ("samples", "5")]


def test_classify_reads_a_path_a_pil_image_and_a_binary_file(tmp_path):
    client, seen = client_with()
    png = image_bytes(seed=3)
    path = tmp_path / "heart.png"
    path.write_bytes(png)
    client.classify(path)
    assert file_part(seen.last) == ("heart.png", png)
    client.classify(str(path))
    assert file_part(seen.last) == ("heart.png", png)
    with open(path, "rb") as f:
        client.classify(f)
    assert file_part(seen.last) == ("heart.png", png)
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    client.classify(picture)
    sent = Image.open(io.BytesIO(file_part(seen.last)[1]))
    assert sent.format == "PNG" and np.array_equal(np.asarray(sent), np.asarray(picture))
    with pytest.raises(TypeError, match="image must be"):
        client.classify(12)  # type: ignore[arg-type]


def test_classify_many_repeats_model_and_keys_the_answers_by_model_name():
    client, seen = client_with(answering(200, {"answers": [answer_of("a", "v1"), answer_of("b", "v2")]}))
    answers = client.classify_many(b"img", ["a", "b"], top_k=1)
    assert list(seen.last.url.params.multi_items()) == [("model", "a"), ("model", "b"), ("top_k", "1")]
    assert {name: a.model.version for name, a in answers.items()} == {"a": "v1", "b": "v2"}
    with pytest.raises(ValueError, match="at least one model"):
        client.classify_many(b"img", [])


def test_classify_many_of_one_model_reads_a_single_answer():
    client, _ = client_with(answering(200, answer_of("a")))
    assert list(client.classify_many(b"img", ["a"])) == ["a"]


def test_classify_many_refuses_answers_that_name_no_model():
    client, _ = client_with()  # a server before the multi-model API ignores `model` and names none
    with pytest.raises(VPTError, match="predates the multi-model API"):
        client.classify_many(b"img", ["a", "b"])


@pytest.mark.parametrize(
    ("model", "path"), [(None, "/classes"), ("parts", "/models/parts/classes"), ("a b/c", "/models/a%20b%2Fc/classes")]
)
def test_classes_calls_go_to_the_default_or_the_named_model(model, path):
    client, seen = client_with(answering(200, {"classes": ["x", "odd/name?"], "added": ["odd/name?"]}))
    assert client.classes(model).classes == ("x", "odd/name?")
    assert (seen.last.method, seen.last.url.raw_path) == ("GET", path.encode())

    added = client.add_classes(["x", "odd/name?"], model=model)
    assert (seen.last.method, seen.last.url.raw_path) == ("POST", path.encode())
    assert json.loads(seen.last.content) == {"names": ["x", "odd/name?"]}
    assert added.added == ("odd/name?",)

    client.remove_class("odd/name?", model=model)  # the query form: '/' and '?' survive
    assert (seen.last.method, seen.last.url.path) == ("DELETE", path.replace("%20", " ").replace("%2F", "/"))
    assert seen.last.url.raw_path.decode().split("?")[0] == path
    assert list(seen.last.url.params.multi_items()) == [("name", "odd/name?")]


def test_add_classes_refuses_a_bare_string():
    client, seen = client_with()
    with pytest.raises(TypeError, match="list of class names"):
        client.add_classes("red circle")  # would register r, e, d, ...
    assert seen.requests == []


def test_the_token_goes_in_a_bearer_header_and_base_url_may_end_with_a_slash():
    client, seen = client_with(answering(200, {"classes": []}), token="s3cret")
    client.classes()
    assert seen.last.headers["authorization"] == "Bearer s3cret"
    assert str(seen.last.url) == "http://vpt.test/classes"
    anonymous, seen = client_with(answering(200, {"classes": []}))
    anonymous.classes()
    assert "authorization" not in seen.last.headers


def test_models_model_and_reload():
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(200, json={"default": "parts", "models": [MODEL_INFO, {**MODEL_INFO, "name": "z"}]})
        if request.url.path.endswith("/reload"):
            return httpx.Response(200, json={"name": "parts", "version": "b", "previous_version": "a", "changed": True})
        return httpx.Response(200, json={**MODEL_INFO, "a_field_from_the_future": [1]})

    client, seen = client_with(reply)
    models = client.models()
    assert models.default == "parts" and models.names == ["parts", "z"]
    info = client.model("parts")
    assert seen.last.url.path == "/models/parts"
    assert info.created_at is not None and info.created_at.isoformat() == "2026-05-01T10:00:00+00:00"
    assert info.loaded_at is not None and info.loaded_at.microsecond == 250000
    assert (info.classes, info.trained_classes, info.calibration, info.error) == (12, 10, None, None)
    reloaded = client.reload("parts")
    assert (seen.last.method, seen.last.url.path) == ("POST", "/models/parts/reload")
    assert (reloaded.version, reloaded.previous_version, reloaded.changed) == ("b", "a", True)


# --- answers -------------------------------------------------------------------------------------


def test_an_answer_becomes_frozen_typed_objects_and_extra_fields_are_ignored():
    client, _ = client_with(answering(200, {**answer_of("parts", "0123456789ab"), "registry_version": 7, "new": 1}))
    answer = client.classify(b"img")
    assert answer.classes[1] == ClassScore("blue star", 0.1, 0.01, 0.1)
    assert answer.model.calibration == Calibration(0.67, "lac", 2000, 2, True, 0.05)
    assert (answer.model.name, answer.model.version, answer.registry_version) == ("parts", "0123456789ab", 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.unknown = True  # type: ignore[misc]


def test_an_answer_from_a_server_before_the_multi_model_api_has_no_name_version_or_registry_version():
    answer = Classification.from_json(ANSWER)
    assert (answer.model.name, answer.model.version, answer.registry_version) == (None, None, None)


def test_an_answer_that_is_not_json_or_lacks_fields_is_a_vpt_error():
    client, _ = client_with(answering(200, "<html>proxy</html>"))
    with pytest.raises(VPTError, match="not what this client reads"):
        client.classify(b"img")
    client, _ = client_with(answering(200, {"classes": []}))
    with pytest.raises(VPTError, match="not what this client reads"):
        client.classify(b"img")


@pytest.mark.parametrize(
    ("schema", "dataclass"),
    [(ClassifyOut, Classification), (ModelOut, ModelRef), (ClassScoreOut, ClassScore), (CalibrationOut, Calibration)],
)
def test_the_client_reads_every_field_the_server_documents(schema, dataclass):
    """A field added to a response schema must be added to the client's result too."""
    assert set(schema.model_fields) <= {f.name for f in dataclasses.fields(dataclass)}


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, InvalidRequest), (401, Unauthorized), (403, Unauthorized), (404, NotFound), (409, InvalidRequest),
     (413, InvalidRequest), (415, InvalidRequest), (422, InvalidRequest), (503, Unavailable)],
)  # fmt: skip
def test_error_answers_raise_by_kind_with_the_servers_detail(status, kind):
    client, _ = client_with(answering(status, {"detail": f"detail {status}"}))
    with pytest.raises(kind) as caught:
        client.classify(b"img")
    assert (caught.value.status, str(caught.value)) == (status, f"detail {status}")


def test_a_server_fault_is_a_plain_vpt_error_and_a_non_json_body_is_the_detail():
    client, _ = client_with(answering(500, "Internal Server Error"))
    with pytest.raises(VPTError) as caught:
        client.classes()
    assert type(caught.value) is VPTError and caught.value.status == 500
    assert str(caught.value) == "Internal Server Error"


def test_unavailable_carries_retry_after():
    client, _ = client_with(answering(503, {"detail": "busy"}, {"Retry-After": "2"}))
    with pytest.raises(Unavailable) as caught:
        client.classify(b"img")
    assert caught.value.retry_after == 2.0
    client, _ = client_with(answering(502, "bad gateway"))
    with pytest.raises(Unavailable) as caught:
        client.classify(b"img")
    assert (caught.value.status, caught.value.retry_after) == (502, None)


def test_an_unreachable_server_is_unavailable_without_status_and_not_ready():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = client_with(refuse)
    with pytest.raises(Unavailable, match="cannot reach the server") as caught:
        client.classify(b"img")
    assert caught.value.status is None and isinstance(caught.value.__cause__, httpx.ConnectError)
    assert client.ready() is False and client.live() is False


def test_ready_and_live_answer_true_only_on_200():
    client, _ = client_with(lambda request: httpx.Response(200 if request.url.path == "/livez" else 503))
    assert client.live() is True
    assert client.ready() is False


# --- AsyncClient ---------------------------------------------------------------------------------


def test_the_async_client_sends_the_same_requests_and_raises_the_same_errors():
    recorder = Recorder(
        lambda request: (
            httpx.Response(404, json={"detail": "model 'x' is not served; served models: a"})
            if request.url.params.get("model") == "x"
            else httpx.Response(200, json={"answers": [answer_of("a"), answer_of("b")]})
        )
    )

    async def main():
        async with AsyncClient("http://vpt.test", token="t", transport=httpx.MockTransport(recorder)) as client:
            many = await client.classify_many(b"img", ["a", "b"])
            with pytest.raises(NotFound, match="served models: a"):
                await client.classify(b"img", model="x")
            return many

    many = asyncio.run(main())
    assert sorted(many) == ["a", "b"]
    first, second = recorder.requests
    assert list(first.url.params.multi_items()) == [("model", "a"), ("model", "b")]
    assert first.headers["authorization"] == "Bearer t" and file_part(first)[1] == b"img"
    assert list(second.url.params.multi_items()) == [("model", "x")]


def test_the_async_client_against_the_app_in_process(tmp_path):
    """The real routes and schemas (fake engine) over ASGITransport: answers parse, errors map."""
    app = create_app(make_settings(tmp_path, token="t0ken"), engine=FakeEngine())

    async def main():
        async with app.router.lifespan_context(app):
            await app.state.service.wait_ready()
            transport = httpx.ASGITransport(app=app)
            async with AsyncClient("http://app", token="t0ken", transport=transport) as client:
                assert await client.live() and await client.ready()
                added = await client.add_classes(["red star", "blue/circle"])
                answers = await asyncio.gather(*(client.classify(image_bytes(seed=i), top_k=1) for i in range(3)))
                removed = await client.remove_class("blue/circle")
                with pytest.raises(NotFound):
                    await client.remove_class("blue/circle")
                with pytest.raises(InvalidRequest, match="not an image"):
                    await client.classify(b"plain text")
            async with AsyncClient("http://app", transport=transport) as anonymous:
                with pytest.raises(Unauthorized):
                    await anonymous.add_classes(["green square"])
                metrics = await anonymous.metrics()
            return added, answers, removed, metrics

    added, answers, removed, metrics = asyncio.run(main())
    assert added.added == ("red star", "blue/circle")
    assert all(len(a.classes) == 1 and a.model.id == "fake-vpt" for a in answers)
    assert removed.removed == "blue/circle" and removed.classes == ("red star",)
    assert "vpt_http_requests_total" in metrics
