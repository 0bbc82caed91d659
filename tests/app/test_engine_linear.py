"""vpt-cond's linearised text pass: close to the exact pass when the posterior is narrow, and guarded."""

from __future__ import annotations

import pytest
import torch

from app.engine.engine import Engine
from training.classifier import PromptClassifier
from training.learners import LearnerConfig

NAMES = ["red", "green", "blue", "dark red sports car", "yellow", "light blue", "purple"]


def cond_learner(backbone, log_var: float, spread: float = 0.002):
    """vpt-cond with MLP weights nudged by `spread` (so mu(f) varies a little) and sigma = exp(log_var / 2)."""
    torch.manual_seed(0)
    clf = PromptClassifier.create(backbone, LearnerConfig("vpt-cond", log_var_init=log_var), NAMES)
    with torch.no_grad():
        for name, p in clf.learner.named_parameters():
            if name != "ctx":
                p.add_(torch.randn_like(p) * spread)
    return clf.learner.eval()


def probs(engine: Engine, images: torch.Tensor, m: int) -> torch.Tensor:
    preds = engine.predict(images, [m] * len(images))
    return torch.tensor([[{c.label: c.probability for c in p.classes}[n] for n in NAMES] for p in preds])


def images(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_narrow_posterior_runs_linear_within_tolerance(tiny_backbone) -> None:
    learner = cond_learner(tiny_backbone, log_var=-18.0)
    exact = Engine(tiny_backbone, learner, max_samples=6)
    linear = Engine(tiny_backbone, learner, max_samples=6, cond_mode="linear")
    assert linear.linear_error is None and exact.active_cond_mode == "exact"
    exact.set_classes(NAMES)
    linear.set_classes(NAMES)
    assert linear.active_cond_mode == "linear"
    assert 0 < linear.linear_error <= 1e-3  # measured, not assumed
    assert exact.linear_error is None
    got, want = probs(linear, images(), 6), probs(exact, images(), 6)
    assert (got - want).abs().max().item() <= 1e-3
    assert not torch.equal(got, want)  # the linear pass really ran


def test_class_changes_reuse_the_linearisation_exactly(tiny_backbone) -> None:
    learner = cond_learner(tiny_backbone, log_var=-18.0)
    grown = Engine(tiny_backbone, learner, max_samples=4, cond_mode="linear")
    grown.set_classes(NAMES[:3])
    grown.add_classes(NAMES[3:] + ["orange"])
    assert grown.remove_class("orange")
    rebuilt = Engine(tiny_backbone, learner, max_samples=4, cond_mode="linear")
    rebuilt.set_classes(NAMES)
    assert grown.active_cond_mode == rebuilt.active_cond_mode == "linear"
    torch.testing.assert_close(probs(grown, images(3), 4), probs(rebuilt, images(3), 4), atol=1e-6, rtol=0)
    assert grown.linear_error == pytest.approx(rebuilt.linear_error, abs=1e-6)


def test_a_wide_sampling_spread_is_expanded_per_sample(tiny_backbone) -> None:
    """sigma = 1 but mu(f), sigma(f) nearly image-independent: each bank row's point r0_m carries the spread
    exactly, only the image's small move is linearised (one point for all samples measured 2.4e-2 at sigma 0.14)."""
    learner = cond_learner(tiny_backbone, log_var=0.0)
    exact = Engine(tiny_backbone, learner, max_samples=6)
    linear = Engine(tiny_backbone, learner, max_samples=6, cond_mode="linear")
    exact.set_classes(NAMES)
    linear.set_classes(NAMES)
    assert linear.active_cond_mode == "linear" and linear.linear_error <= 1e-3
    assert (probs(linear, images(), 6) - probs(exact, images(), 6)).abs().max().item() <= 1e-3


def test_an_image_dependent_posterior_falls_back_to_exact(tiny_backbone) -> None:
    learner = cond_learner(tiny_backbone, log_var=-2.0, spread=0.3)  # mu(f), sigma(f) move a lot with the image
    exact = Engine(tiny_backbone, learner, max_samples=6)
    guarded = Engine(tiny_backbone, learner, max_samples=6, cond_mode="linear")
    exact.set_classes(NAMES)
    guarded.set_classes(NAMES)
    assert guarded.active_cond_mode == "exact"
    assert guarded.linear_error > guarded.linear_tolerance
    assert torch.equal(probs(guarded, images(), 6), probs(exact, images(), 6))


def test_tolerance_decides(tiny_backbone) -> None:
    learner = cond_learner(tiny_backbone, log_var=-2.0)
    loose = Engine(tiny_backbone, learner, max_samples=3, cond_mode="linear", linear_tolerance=1.0)
    loose.set_classes(NAMES)
    assert loose.active_cond_mode == "linear"


def test_unknown_cond_mode_is_refused(tiny_backbone) -> None:
    with pytest.raises(ValueError, match="cond_mode"):
        Engine(tiny_backbone, cond_learner(tiny_backbone, -18.0), cond_mode="fast")


def test_auto_sampling_on_the_linear_pass_uses_each_rows_own_expansion_point(tiny_backbone) -> None:
    """samples=auto draws bank rows in blocks at an offset: row k must use point r0_k, not r0_(k - offset)."""
    from app.engine.engine import AUTO

    learner = cond_learner(tiny_backbone, log_var=0.0)
    engine = Engine(tiny_backbone, learner, max_samples=12, cond_mode="linear", auto_tolerance=1e-9)
    engine.set_classes(NAMES)
    assert engine.active_cond_mode == "linear"
    auto = engine.predict(images(2), [AUTO, AUTO])
    assert [p.samples for p in auto] == [12, 12]  # a tolerance no answer meets: every block drawn
    fixed = engine.predict(images(2), [12, 12])
    for a, f in zip(auto, fixed):
        got, want = {c.label: c.probability for c in a.classes}, {c.label: c.probability for c in f.classes}
        assert max(abs(got[n] - want[n]) for n in NAMES) <= 1e-6
