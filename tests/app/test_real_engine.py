"""The service on the real engine with the tiny open_clip config: every variant end to end."""

from __future__ import annotations

import pytest

from app.engine.engine import Engine
from tests.app.conftest import image_bytes, make_settings, serve
from tests.app.test_classify import post_image
from tests.app.tiny import TRAINED, write_tiny_model

VARIANTS = ("zeroshot", "coop", "cocoop", "vpt", "vpt-cond")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), VARIANTS)


def load(tiny, variant: str, max_samples: int = 8) -> Engine:
    posterior = tiny.get(variant)
    return Engine.load(str(tiny["config"]), str(tiny["weights"]), posterior, "cpu", max_samples=max_samples)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_serves(tmp_path, tiny, variant):
    with serve(make_settings(tmp_path, samples=4, max_samples=8), load(tiny, variant)) as c:
        ready = c.get("/readyz").json()
        assert ready["model"]["variant"] == variant
        expected = TRAINED if variant != "zeroshot" else []  # the artifact's classes seed a new registry
        assert c.get("/classes").json()["classes"] == expected
        c.post("/classes", json={"names": ["purple", "  light   orange "]})
        body = post_image(c, image_bytes((200, 30, 30)), samples=4).json()
    labels = [s["label"] for s in body["classes"]]
    assert sorted(labels) == sorted({*expected, "purple", "light orange"})
    assert body["model"]["variant"] == variant and variant in body["model"]["id"]
    assert body["calibrated"] is False and body["model"]["calibration"] is None  # an artifact without calibration
    assert body["prediction_set"] and body["unknown_measure"] == "entropy"  # the configured fallback rule
    assert abs(sum(s["probability"] for s in body["classes"]) - 1) < 1e-4
    if variant in ("vpt", "vpt-cond"):
        assert body["samples"] == 4
        assert max(s["variance"] for s in body["classes"]) > 0
    else:
        assert body["samples"] == 1
        assert all(s["variance"] == 0 for s in body["classes"]) and abs(body["mutual_information"]) < 1e-6


def test_vpt_answers_are_deterministic(tmp_path, tiny):
    data = image_bytes((30, 200, 30), size=(40, 40))
    settings = make_settings(tmp_path, max_samples=8)
    with serve(settings, load(tiny, "vpt")) as c:
        first = post_image(c, data, samples=8).json()
        assert post_image(c, data, samples=8).json() == first
    with serve(settings, load(tiny, "vpt")) as c:  # a new process-like start: same seed, same bank
        assert post_image(c, data, samples=8).json() == first


def test_too_long_name_is_422(tmp_path, tiny):
    with serve(make_settings(tmp_path), load(tiny, "coop")) as c:
        r = c.post("/classes", json={"names": ["ok", "word " * 40]})
        assert r.status_code == 422 and "names[1]" in r.json()["detail"]
        assert "ok" not in c.get("/classes").json()["classes"]


def test_calibration_reaches_the_answers_and_lapses_when_classes_change(tmp_path, tiny):
    """A calibrated artifact: its temperature scales the logits, its sets are 'calibrated' until a class is added."""
    import torch

    from training.artifact import load_posterior, save_posterior
    from training.backbone import load_backbone
    from training.calibration import calibrate_logits

    backbone = load_backbone(str(tiny["config"]), str(tiny["weights"]), "cpu")
    post = load_posterior(tiny["vpt"], backbone)
    g = torch.Generator().manual_seed(0)
    cal = calibrate_logits(
        torch.randn(200, 4, len(TRAINED), generator=g), torch.randint(0, 4, (200,), generator=g), TRAINED
    )
    cal.temperature = 3.0
    path = save_posterior(tmp_path / "cal.safetensors", post.learner, backbone.identity, TRAINED, {}, {}, cal)
    data = image_bytes((200, 30, 30))
    with serve(make_settings(tmp_path / "a", max_samples=8), load(tiny, "vpt")) as c:
        plain = post_image(c, data, samples=8).json()
    engine = Engine.load(str(tiny["config"]), str(tiny["weights"]), path, "cpu", max_samples=8)
    with serve(make_settings(tmp_path / "b", max_samples=8), engine) as c:
        ready = c.get("/readyz").json()["model"]
        assert ready["calibration"]["temperature"] == 3.0 and ready["calibration"]["matches_registered_classes"]
        body = post_image(c, data, samples=8, alpha=0.2).json()
        assert body["calibrated"] is True and abs(body["coverage"] - 0.8) < 1e-9
        assert body["unknown_measure"] == cal.unknown_score
        assert body["unknown"] == (body["unknown_score"] > cal.unknown_threshold)
        c.post("/classes", json={"names": ["purple"]})
        after = post_image(c, data, samples=8).json()
        assert after["calibrated"] is False and after["prediction_set"]
    # T = 3 flattens the distribution: the top probability drops, the entropy rises
    assert body["classes"][0]["probability"] < plain["classes"][0]["probability"]
    assert body["entropy"] > plain["entropy"]


def test_cond_mode_setting_reaches_the_engine_and_the_answers(tmp_path, tiny):
    """The tiny artifact's sigma (e^-0.5) is far too wide to linearise: the guard measures that and runs exact."""
    from app.cli import load_repository
    from app.config import Settings

    settings = Settings(
        backbone=str(tiny["config"]), weights=str(tiny["weights"]), posterior=tiny["vpt-cond"], device="cpu",
        max_samples=4, samples=4, cond_mode="linear", data_dir=tmp_path,
    )  # fmt: skip
    engine = load_repository(settings).load_all()[0][0].engine
    assert engine.cond_mode == "linear"
    with serve(make_settings(tmp_path, samples=4, max_samples=4), engine) as c:
        model = c.get("/readyz").json()["model"]
        body = post_image(c, image_bytes((200, 30, 30)), samples=4).json()
        metrics = c.get("/metrics").text
    labels = f'{{model="{body["model"]["name"]}"}}'
    assert f"vpt_linear_error{labels} {body['model']['linear_error']}" in metrics
    assert f"vpt_linear_active{labels} 0.0" in metrics
    assert model["text_pass"] == body["model"]["text_pass"] == "exact"
    assert body["model"]["linear_error"] > settings.linear_tolerance


@pytest.mark.parametrize("variant", ["vpt", "vpt-cond", "coop"])
def test_samples_auto_over_http(tmp_path, tiny, variant):
    with serve(make_settings(tmp_path, samples=4, max_samples=8), load(tiny, variant)) as c:
        body = post_image(c, image_bytes((200, 30, 30)), samples="auto").json()
        refused = post_image(c, image_bytes((200, 30, 30)), samples="autox")
    assert body["samples"] in ((4, 8) if variant != "coop" else (1,))
    assert refused.status_code == 422
