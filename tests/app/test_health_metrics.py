"""Liveness, readiness, metrics, and in-process batching / overload behaviour."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from contextlib import asynccontextmanager

import httpx

from app.api import create_app
from tests.app.conftest import image_bytes, make_settings, serve
from tests.app.fakes import FakeEngine
from tests.app.test_classify import NAMES, assert_error, post_image


def test_livez_and_readyz(client):
    assert client.get("/livez").json() == {"status": "alive"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "model": {
            "name": "zeroshot",
            "version": hashlib.sha256(b"fake-vpt").hexdigest()[:12],
            "variant": "vpt",
            "id": "fake-vpt",
            "max_samples": 20,
            "text_pass": "exact",
            "linear_error": None,
            "calibration": None,
            "unknown_measure": "entropy",
            "unknown_threshold": 1.5,
        },
        "classes": 3,
        "models": 1,
        "registry_version": 2,  # a new SQLite registry: seeded (1), then the 3 classes of the test (2)
        "reason": None,
    }


def test_readyz_is_503_until_loaded_and_warmed_up(tmp_path):
    release = threading.Event()
    engine = FakeEngine("coop")

    def load():
        release.wait(10)
        return engine

    with serve(make_settings(tmp_path), load_engine=load, ready=False) as c:
        assert c.get("/livez").status_code == 200
        r = c.get("/readyz")
        assert_error(r, 503, "/readyz")
        assert r.headers["retry-after"]
        assert_error(c.get("/classes"), 503)
        assert_error(post_image(c, image_bytes()), 503)
        release.set()
        for _ in range(500):
            if c.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.01)
        assert c.get("/readyz").json()["model"]["variant"] == "coop"
        assert engine.warmed


def test_failed_load_keeps_readyz_503(tmp_path):
    def load():
        raise RuntimeError("weights exploded")

    with serve(make_settings(tmp_path), load_engine=load, ready=False) as c:
        for _ in range(100):
            r = c.get("/readyz")
            threading.Event().wait(0.01)
        assert r.status_code == 503 and "exploded" not in r.text
        assert c.get("/livez").status_code == 200


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_is_a_plain_route_with_everything(make_client):
    with make_client(classes=NAMES, uncertainty_threshold=0.0) as c:  # every answer is flagged unknown
        for _ in range(3):
            post_image(c, image_bytes(), samples=4)
        post_image(c, b"not an image")
        r = c.get("/metrics", follow_redirects=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    requests = _samples(text, "vpt_http_requests_total")
    assert requests['vpt_http_requests_total{method="POST",route="/classify",status="200"}'] == 3
    assert requests['vpt_http_requests_total{method="POST",route="/classify",status="415"}'] == 1
    assert 'vpt_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/classify",status="200"}' in text
    assert _samples(text, "vpt_batch_size_count")["vpt_batch_size_count"] == 3
    for name in ("vpt_queue_depth", "vpt_queue_wait_seconds_count", "vpt_inference_seconds_count", "vpt_ready"):
        assert name in text
    m = '{model="zeroshot"}'  # the one model of a server without artifact is named zeroshot
    assert _samples(text, "vpt_registered_classes")["vpt_registered_classes" + m] == 3
    assert _samples(text, "vpt_samples_sum")["vpt_samples_sum" + m] == 12
    version = hashlib.sha256(b"fake-vpt").hexdigest()[:12]
    info = f'device="cpu",max_samples="20",model="zeroshot",model_id="fake-vpt",variant="vpt",version="{version}"'
    assert f"vpt_model_info{{{info}}} 1.0" in text
    assert _samples(text, "vpt_models")["vpt_models"] == 1
    assert _samples(text, "vpt_registry_version")["vpt_registry_version"] == 2  # seeded, then the test's 3 classes
    assert _samples(text, "vpt_registry_up")["vpt_registry_up"] == 1
    assert _samples(text, "vpt_prediction_entropy_nats_count")["vpt_prediction_entropy_nats_count" + m] == 3
    assert "vpt_prediction_mutual_information_nats_bucket" in text
    unknown = _samples(text, "vpt_unknown_predictions_total")
    assert unknown['vpt_unknown_predictions_total{measure="entropy",model="zeroshot"}'] == 3
    assert 'vpt_unknown_threshold{measure="entropy",model="zeroshot"} 0.0' in text
    assert _samples(text, "vpt_prediction_set_size_count")["vpt_prediction_set_size_count" + m] == 3
    assert _samples(text, "vpt_calibrated")["vpt_calibrated" + m] == 0


def test_unknown_route_is_404_json_and_counted_as_unmatched(client):
    assert_error(client.get("/nope"), 404)
    assert 'route="unmatched"' in client.get("/metrics").text


@asynccontextmanager
async def running(app):
    async with app.router.lifespan_context(app):
        service = app.state.service
        await service.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/classes", json={"names": NAMES})).status_code == 200
            yield client


async def _classify(client, data: bytes, **params) -> httpx.Response:
    return await client.post("/classify", files={"file": ("x.png", data, "image/png")}, params=params)


def test_concurrent_requests_share_a_forward_pass(tmp_path):
    engine = FakeEngine(delay_s=0.05)
    app = create_app(make_settings(tmp_path, max_batch_size=8, max_queue_delay_ms=20), engine=engine)
    images = [image_bytes((40 * i, 200 - 20 * i, 90), seed=i) for i in range(12)]

    async def main():
        async with running(app) as client:
            together = await asyncio.gather(*(_classify(client, d, samples=1 + i % 5) for i, d in enumerate(images)))
            alone = [await _classify(client, d, samples=1 + i % 5) for i, d in enumerate(images)]
            return together, alone

    together, alone = asyncio.run(main())
    assert all(r.status_code == 200 for r in together)
    assert [r.json() for r in together] == [r.json() for r in alone]
    assert max(engine.batch_sizes) > 1 and max(engine.batch_sizes) <= 8


def test_full_queue_answers_503_with_retry_after(tmp_path):
    engine = FakeEngine(delay_s=0.3)
    app = create_app(make_settings(tmp_path, max_batch_size=1, max_queue=2, max_queue_delay_ms=0), engine=engine)

    async def main():
        async with running(app) as client:
            answers = await asyncio.gather(*(_classify(client, image_bytes()) for _ in range(8)))
            return answers, (await client.get("/metrics")).text

    answers, metrics = asyncio.run(main())
    rejected = _samples(metrics, "vpt_queue_rejected_total")["vpt_queue_rejected_total"]
    assert rejected == sum(r.status_code == 503 for r in answers)
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]


def test_request_timeout_answers_503(tmp_path):
    engine = FakeEngine(delay_s=0.5)
    app = create_app(make_settings(tmp_path, request_timeout_s=0.1), engine=engine)

    async def main():
        async with running(app) as client:
            return await _classify(client, image_bytes())

    r = asyncio.run(main())
    assert_error(r, 503, "retry")


def test_every_request_is_logged_once_with_its_id(client, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="vpt.access"):
        r = client.get("/livez", headers={"X-Request-ID": "abc-123"})
        client.get("/nope")
    assert r.headers["x-request-id"] == "abc-123"
    lines = [rec for rec in caplog.records if rec.name == "vpt.access"]
    assert [(rec.method, rec.path, rec.status) for rec in lines] == [("GET", "/livez", 200), ("GET", "/nope", 404)]
    assert lines[0].request_id == "abc-123" and len(lines[1].request_id) == 32 and lines[0].latency_ms >= 0


def test_readyz_names_the_cause_of_a_failed_start(tmp_path, monkeypatch):
    from app.registry import RegistryError
    from app.registry.sqlite import SqliteRegistry

    def broken(self, model):
        raise RegistryError(f"class registry {self.location}: database disk image is malformed")

    monkeypatch.setattr(SqliteRegistry, "names", broken)
    with serve(make_settings(tmp_path), engine=FakeEngine(), ready=False) as c:
        for _ in range(200):
            r = c.get("/readyz")
            if "malformed" in r.text:
                break
            threading.Event().wait(0.01)
        assert_error(r, 503, "failed to start", "database disk image is malformed", "restart")
        assert "retry-after" not in r.headers  # retrying will not help
        assert_error(c.get("/classes"), 503, "malformed")


class _SlowDecodeEngine(FakeEngine):
    """Decoding (preprocess) takes a while, as a 6000 x 6000 upload does; the model is instant."""

    def __init__(self, decode_s: float) -> None:
        super().__init__()
        self.decode_s = decode_s
        self.decoded = 0

    def preprocess(self, image):
        time.sleep(self.decode_s)
        self.decoded += 1
        return super().preprocess(image)


def test_decoding_is_admitted_only_up_to_a_bound(tmp_path):
    engine = _SlowDecodeEngine(0.3)
    settings = make_settings(tmp_path, decode_threads=1, max_decode_queue=2)
    app = create_app(settings, engine=engine)

    async def main():
        async with running(app) as client:
            return await asyncio.gather(*(_classify(client, image_bytes()) for _ in range(10)))

    answers = asyncio.run(main())
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 3 and codes.count(503) == 7  # 1 decoding + 2 waiting; the rest refused at once
    assert engine.decoded == 3  # refused uploads were never decoded
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"


def test_request_timeout_covers_decoding(tmp_path):
    engine = _SlowDecodeEngine(0.6)
    app = create_app(make_settings(tmp_path, request_timeout_s=0.2), engine=engine)

    async def main():
        async with running(app) as client:
            started = time.monotonic()
            answer = await _classify(client, image_bytes())
            return answer, time.monotonic() - started

    r, seconds = asyncio.run(main())
    assert_error(r, 503, "waited too long")
    assert seconds < 0.5
