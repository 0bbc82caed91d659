"""POST /classify on the fake engine: the answer's shape and every bad-input answer."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from app.engine.errors import EngineError
from tests.app.conftest import image_bytes
from tests.app.fakes import FakeEngine

NAMES = ["red star", "blue circle", "green square"]


def post_image(client, data: bytes, name="img.png", content_type="image/png", field="file", **params):
    return client.post("/classify", files={field: (name, data, content_type)}, params=params)


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for word in words:
        assert word in detail, detail


def test_answer_has_probabilities_uncertainty_and_model(client):
    r = post_image(client, image_bytes((220, 30, 30)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert {c["label"] for c in body["classes"]} == set(NAMES)
    probs = [c["probability"] for c in body["classes"]]
    assert probs == sorted(probs, reverse=True)
    assert abs(sum(probs) - 1) < 1e-5
    for c in body["classes"]:
        assert c["variance"] >= 0 and abs(c["std"] ** 2 - c["variance"]) < 1e-9
    assert body["samples"] == 20
    model = body["model"]
    assert {k: model[k] for k in ("variant", "id", "max_samples", "calibration")} == {
        "variant": "vpt",
        "id": "fake-vpt",
        "max_samples": 20,
        "calibration": None,
    }
    assert abs(body["entropy"] - body["expected_entropy"] - body["mutual_information"]) < 1e-6
    # uncalibrated: the naive set (most probable classes until their mass reaches 1 - alpha), no guarantee
    assert body["calibrated"] is False and body["coverage"] == pytest.approx(0.9)
    labels = [c["label"] for c in body["classes"]]
    assert body["prediction_set"] == labels[: len(body["prediction_set"])]
    mass = sum(c["probability"] for c in body["classes"][: len(body["prediction_set"])])
    assert mass >= 0.9 - 1e-6 and mass - body["classes"][len(body["prediction_set"]) - 1]["probability"] < 0.9
    assert body["unknown_measure"] == model["unknown_measure"] == "entropy"
    assert body["unknown"] == (body["unknown_score"] > model["unknown_threshold"])
    assert body["unknown_score"] == pytest.approx(body["entropy"])


@pytest.mark.parametrize("alpha", ["0", "1", "-0.1", "1.5", "nan", "abc"])
def test_alpha_outside_the_open_unit_interval_is_422(client, alpha):
    r = client.post("/classify", params={"alpha": alpha}, files={"file": ("x.png", image_bytes(), "image/png")})
    assert_error(r, 422, "alpha")


def test_smaller_alpha_never_shrinks_the_set(client):
    sizes = [len(post_image(client, image_bytes(), alpha=a).json()["prediction_set"]) for a in (0.5, 0.2, 0.05, 0.01)]
    assert sizes == sorted(sizes) and sizes[0] >= 1


def test_top_k_and_samples(client):
    r = post_image(client, image_bytes(), top_k=2, samples=5)
    assert r.status_code == 200
    assert len(r.json()["classes"]) == 2 and r.json()["samples"] == 5
    assert len(post_image(client, image_bytes(), top_k=50).json()["classes"]) == 3


def test_same_image_same_answer(client):
    data = image_bytes((30, 30, 220))
    assert post_image(client, data).json() == post_image(client, data).json()


def test_formats(client):
    for fmt in ("JPEG", "WEBP", "GIF", "BMP"):
        r = post_image(client, image_bytes(fmt=fmt), name=f"x.{fmt.lower()}", content_type="application/octet-stream")
        assert r.status_code == 200, (fmt, r.text)


def test_zeroshot_has_zero_variance(make_client):
    with make_client(engine=FakeEngine("zeroshot"), classes=NAMES) as c:
        body = post_image(c, image_bytes()).json()
    assert body["model"]["variant"] == "zeroshot"
    assert all(s["variance"] == 0 for s in body["classes"])
    assert abs(body["mutual_information"]) < 1e-6


def test_bad_samples_and_top_k(client):
    assert_error(post_image(client, image_bytes(), samples=21), 422, "samples", "20")
    assert_error(post_image(client, image_bytes(), samples=0), 422, "samples")
    assert_error(post_image(client, image_bytes(), top_k=0), 422, "top_k")
    assert_error(post_image(client, image_bytes(), samples="many"), 422, "samples")


def test_not_an_image_is_415(client):
    assert_error(post_image(client, b"hello, I am text", name="a.txt", content_type="text/plain"), 415, "JPEG")
    assert_error(post_image(client, b"%PDF-1.4\n1 0 obj\n", name="a.pdf"), 415)


def test_corrupt_and_truncated_are_400(client):
    good = image_bytes(size=(64, 64))
    assert_error(post_image(client, good[: len(good) // 2]), 400, "corrupt or truncated")
    jpeg = image_bytes(size=(64, 64), fmt="JPEG")
    assert_error(post_image(client, jpeg[:200]), 400)
    broken_header = good[:8] + b"\x00" * 40
    assert post_image(client, broken_header).status_code in (400, 415)


def test_empty_file_is_400(client):
    assert_error(post_image(client, b""), 400, "empty")


def test_too_many_bytes_is_413(make_client):
    with make_client(classes=NAMES, max_image_bytes=2000) as c:
        big = image_bytes(size=(128, 128))
        assert len(big) > 2000
        assert_error(post_image(c, big), 413, "2000 bytes")
        # far over the bound: refused from Content-Length before the body is read
        assert_error(post_image(c, b"\0" * 200_000), 413)
        assert post_image(c, image_bytes(size=(8, 8))).status_code == 200


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_413(client):
    assert_error(post_image(client, _png_header_only(100_000, 100_000)), 413, "pixels")
    assert_error(post_image(client, _png_header_only(20_000, 20_000)), 413)  # 400 MP > Pillow's own bomb limit


def test_pixel_limit_setting(make_client):
    with make_client(classes=NAMES, max_image_pixels=100) as c:
        assert_error(post_image(c, image_bytes(size=(16, 16))), 413, "100 pixels")


def test_wrong_field_name_is_422(client):
    assert_error(post_image(client, image_bytes(), field="image"), 422, "'file'")
    r = client.post("/classify", json={"file": "abc"})
    assert_error(r, 422, "file")


def test_no_classes_is_409(make_client):
    with make_client() as c:
        assert_error(post_image(c, image_bytes()), 409, "POST /classes")


class _FailingEngine(FakeEngine):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def predict_features(self, feats, samples):
        raise self.exc


def test_engine_failure_gives_fixed_message_not_exception_text(make_client):
    for exc in (EngineError("secret internal detail"), RuntimeError("secret internal detail")):
        with make_client(engine=_FailingEngine(exc), classes=NAMES) as c:
            r = post_image(c, image_bytes())
            assert r.status_code == 500
            assert r.headers["connection"] == "close"  # a pipelined follow-up must not be sent on this connection
            assert "secret" not in r.text and "log" in r.json()["detail"]
            assert c.get("/livez").status_code == 200  # the batcher survives


def test_decoding_and_inference_run_off_the_event_loop(make_client):
    engine = FakeEngine()
    with make_client(engine=engine, classes=NAMES) as c:
        assert post_image(c, image_bytes()).status_code == 200
    assert all(name.startswith("vpt-decode") for name in engine.preprocess_threads)
    assert engine.predict_threads and all(name.startswith("vpt-model") for name in engine.predict_threads)


def test_rgba_and_greyscale_are_converted(client):
    for mode in ("RGBA", "L", "P"):
        buf = io.BytesIO()
        Image.new(mode, (10, 10)).save(buf, format="PNG")
        assert post_image(client, buf.getvalue()).status_code == 200


def test_streamed_body_over_the_limit_is_413(make_client):
    """No Content-Length (chunked upload): the bound is enforced while the body streams in."""
    with make_client(classes=NAMES, max_image_bytes=1000) as c:
        boundary = "xyz"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()

        def body():
            yield head
            for _ in range(100):
                yield b"\0" * 4096
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/classify", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_error(r, 413, "too large")


def test_elongated_images_are_422_naming_the_limit(client):
    for width in (200_000, 10_000_000):
        assert_error(post_image(client, _png_header_only(width, 1)), 422, "20 times")


def test_truncated_png_header_is_400(client):
    assert_error(post_image(client, image_bytes(size=(64, 64))[:40]), 400, "corrupt or truncated")


def test_two_file_parts_are_refused(client):
    files = [("file", ("a.png", image_bytes(), "image/png")), ("file", ("b.png", image_bytes(seed=1), "image/png"))]
    assert_error(client.post("/classify", files=files), 422, "more than one 'file'")
