"""samples=AUTO: blocks of bank rows until the top class's Monte Carlo standard error settles."""

from __future__ import annotations

import pytest
import torch

from app.engine.engine import AUTO, AUTO_BLOCK, Engine, top_class_error
from tests.app.test_engine import NAMES, images, make_classifier


def top(pred) -> tuple[str, float]:
    best = pred.classes[0]
    return best.label, best.probability


@pytest.mark.parametrize("variant", ["vpt", "vpt-cond"])
def test_auto_stops_early_and_is_the_fixed_answer_for_its_count(tiny_backbone, variant) -> None:
    engine = Engine(tiny_backbone, make_classifier(tiny_backbone, variant).learner, max_samples=40, auto_tolerance=0.05)
    engine.set_classes(NAMES)
    imgs = images(4)
    auto = engine.predict(imgs, [AUTO] * 4)
    used = [p.samples for p in auto]
    assert all(u % AUTO_BLOCK == 0 and 2 <= u <= 40 for u in used)
    assert min(used) < 40  # a loose tolerance settles before the bank runs out
    fixed = engine.predict(imgs, used)  # the same bank prefix: the same answer
    for a, f in zip(auto, fixed):
        assert a.classes[0].label == f.classes[0].label
        assert a.classes[0].probability == pytest.approx(f.classes[0].probability, abs=1e-6)
    full = engine.predict(imgs, [40] * 4)
    for a, f in zip(auto, full):  # within a few standard errors of the full-M answer
        by = {c.label: c.probability for c in f.classes}
        label, p = top(a)
        assert abs(p - by[label]) <= 3 * 0.05


def test_tight_tolerance_uses_every_sample_and_mixes_with_fixed_counts(tiny_backbone) -> None:
    engine = Engine(
        tiny_backbone, make_classifier(tiny_backbone, "vpt-cond").learner, max_samples=10, auto_tolerance=1e-9
    )
    engine.set_classes(NAMES)
    imgs = images(3)
    preds = engine.predict(imgs, [AUTO, 3, AUTO])
    assert [p.samples for p in preds] == [10, 3, 10]  # 4 + 4 + 2: the last block is cut to max_samples
    alone = engine.predict(imgs[1:2], [3])[0]
    assert preds[1].classes[0].probability == pytest.approx(alone.classes[0].probability, abs=1e-6)


def test_top_class_error() -> None:
    assert top_class_error(torch.zeros(1, 3)) == float("inf")
    assert top_class_error(torch.zeros(5, 3)) == 0.0
    spread = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    p = torch.softmax(spread, -1)[:, 0]
    assert top_class_error(spread) == pytest.approx((p.std() / 3**0.5).item())


def test_deterministic_variants_answer_auto_with_one_sample(tiny_backbone) -> None:
    engine = Engine(tiny_backbone, make_classifier(tiny_backbone, "coop").learner, max_samples=5)
    engine.set_classes(NAMES)
    assert engine.predict(images(1), [AUTO])[0].samples == 1
