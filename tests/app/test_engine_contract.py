"""The fake engine the API tests use keeps the real engine's contract (app/engine/results.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from app.engine.engine import Engine
from app.engine.results import ClassScore, EngineProtocol, Prediction
from tests.app.fakes import FakeEngine
from tests.app.tiny import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), ("coop", "vpt"))


def _real(tiny, variant: str) -> Engine:
    return Engine.load(str(tiny["config"]), str(tiny["weights"]), tiny[variant], "cpu", max_samples=8)


def _answer(engine, variant_samples: int) -> Prediction:
    engine.set_classes(["red", "green", "blue"])
    image = engine.preprocess(Image.new("RGB", (40, 40), (200, 30, 30)))
    return engine.predict(torch.stack([image]), [variant_samples])[0]


@pytest.mark.parametrize("variant", ["coop", "vpt"])
def test_fake_and_real_answer_with_the_same_types_and_sample_counts(tiny, variant):
    real, fake = _real(tiny, variant), FakeEngine(variant, max_samples=8)
    assert isinstance(real, EngineProtocol) and isinstance(fake, EngineProtocol)
    a, b = _answer(real, 5), _answer(fake, 5)
    assert type(a) is type(b) is Prediction and all(type(c) is ClassScore for c in a.classes + b.classes)
    assert a.samples == b.samples == (5 if variant == "vpt" else 1)  # deterministic variants average one prompt
    for pred in (a, b):
        probs = [c.probability for c in pred.classes]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
        assert pred.entropy >= pred.expected_entropy - 1e-9 and pred.calibrated is False
        assert {f.name for f in dataclasses.fields(pred)} == {f.name for f in dataclasses.fields(Prediction)}
