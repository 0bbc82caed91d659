"""The serving engine against a plain reference: PromptClassifier + summarize over the same noise."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from app.engine.engine import Engine, Prediction
from app.engine.errors import InvalidClassNameError, InvalidSamplesError, NoClassesError
from tests.conftest import TINY_CONFIG
from training.artifact import save_posterior
from training.classifier import PromptClassifier
from training.learners import VARIANTS, LearnerConfig
from training.uncertainty import summarize

# Names of different prompt lengths, so several length groups and cut lengths are exercised.
NAMES = ["red", "green", "blue", "dark red sports car", "yellow", "light blue", "purple"]


def make_classifier(backbone, variant: str, names=NAMES, seed: int = 0) -> PromptClassifier:
    """A learner with non-trivial weights: large enough sigma and MLP outputs for samples to differ."""
    torch.manual_seed(seed)
    clf = PromptClassifier.create(backbone, LearnerConfig(variant, log_var_init=-2.0), names)
    with torch.no_grad():
        for p in clf.learner.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return clf.eval()


def make_engine(backbone, clf: PromptClassifier, **kw) -> Engine:
    learner = None if clf.learner.cfg.variant == "zeroshot" else clf.learner
    return Engine(backbone, learner, max_samples=kw.pop("max_samples", 6), **kw)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def reference(clf: PromptClassifier, engine: Engine, imgs: torch.Tensor, samples: list[int]):
    """Straightforward: image i, its first m_i bank residuals, all classes at once, then summarize."""
    out = []
    with torch.no_grad():
        feats = clf.backbone.encode_images(imgs)
        for i, m in enumerate(samples):
            eps = None
            if engine.noise is not None:
                eps = engine.noise[None, :m]  # G = 1: one image here, so shared and per-image agree
            out.append(summarize(clf(feats[i : i + 1], eps).logits))
    return out


def assert_matches(pred: Prediction, ref, names: list[str], samples: int, atol: float = 1e-6) -> None:
    by_label = {c.label: c for c in pred.classes}
    assert sorted(by_label) == sorted(names)
    got = torch.tensor([[by_label[n].probability, by_label[n].variance, by_label[n].std] for n in names])
    torch.testing.assert_close(got[:, 0], ref.probs[0], atol=atol, rtol=0)
    torch.testing.assert_close(got[:, 1], ref.variance[0], atol=atol, rtol=0)
    torch.testing.assert_close(got[:, 2], ref.variance[0].sqrt(), atol=10 * atol, rtol=0)
    for field in ("entropy", "expected_entropy", "mutual_information"):
        assert getattr(pred, field) == pytest.approx(getattr(ref, field)[0].item(), abs=10 * atol)
    assert pred.samples == samples
    probs = [c.probability for c in pred.classes]
    assert probs == sorted(probs, reverse=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("samples", "chunk"), [([6], 4096), ([6, 2, 5], 7), ([1, 6, 3, 6], 3)])
def test_engine_equals_reference(tiny_backbone, variant, samples, chunk):
    clf = make_classifier(tiny_backbone, variant)
    engine = make_engine(tiny_backbone, clf, chunk=chunk)
    engine.set_classes(NAMES)
    imgs = images(len(samples))
    preds = engine.predict(imgs, samples)
    stochastic = clf.learner.cfg.stochastic
    for i, (pred, ref) in enumerate(zip(preds, reference(clf, engine, imgs, samples))):
        assert_matches(pred, ref, NAMES, samples[i] if stochastic else 1)
        if not stochastic:
            assert all(c.variance == 0.0 for c in pred.classes) and pred.mutual_information == 0.0


@pytest.mark.parametrize("variant", ["vpt", "vpt-cond", "coop"])
def test_add_then_remove_equals_a_rebuild(tiny_backbone, variant):
    clf = make_classifier(tiny_backbone, variant)
    grown = make_engine(tiny_backbone, clf, chunk=5)
    grown.set_classes(NAMES[:2])
    assert grown.add_classes([NAMES[2], " dark  red sports car ", NAMES[0], NAMES[4]]) == NAMES[2:5]
    assert grown.add_classes([NAMES[3]]) == []  # idempotent
    assert grown.remove_class(NAMES[1]) and not grown.remove_class(NAMES[1])
    assert grown.add_classes(NAMES[5:]) == NAMES[5:]
    final = [NAMES[0], *NAMES[2:]]
    assert grown.classnames == final
    rebuilt = make_engine(tiny_backbone, clf, chunk=5)  # a rebuild with the same settings
    rebuilt.set_classes(final)
    a, b = grown._classes, rebuilt._classes
    if a.text is not None:
        assert torch.equal(a.text, b.text)
    assert len(a.groups) == len(b.groups)
    for ga, gb in zip(a.groups, b.groups):
        assert torch.equal(ga.index, gb.index) and ga.tokens.names == gb.tokens.names
        for name in ("prefix", "suffix", "eot"):
            assert torch.equal(getattr(ga.tokens, name), getattr(gb.tokens, name))
    imgs = images(2)
    for p, q in zip(grown.predict(imgs, [6, 3]), rebuilt.predict(imgs, [6, 3])):
        assert [c.label for c in p.classes] == [c.label for c in q.classes]
        assert [c.probability for c in p.classes] == pytest.approx([c.probability for c in q.classes], abs=1e-6)


@pytest.mark.parametrize("variant", ["vpt", "vpt-cond"])
def test_answers_are_deterministic_and_batch_independent(tiny_backbone, variant):
    clf = make_classifier(tiny_backbone, variant)
    engine = make_engine(tiny_backbone, clf)
    engine.set_classes(NAMES)
    imgs = images(4)
    alone = engine.predict(imgs[2:3], [5])[0]
    in_batch = engine.predict(imgs, [6, 1, 5, 2])[2]
    again = make_engine(tiny_backbone, clf)  # same seed -> same bank
    again.set_classes(NAMES)
    repeated = again.predict(imgs[2:3], [5])[0]
    for other in (in_batch, repeated):
        assert [c.label for c in other.classes] == [c.label for c in alone.classes]
        assert [c.probability for c in other.classes] == pytest.approx([c.probability for c in alone.classes], abs=1e-6)
        assert other.mutual_information == pytest.approx(alone.mutual_information, abs=1e-6)
    assert alone.mutual_information > 0  # the samples really differ


@pytest.mark.parametrize("variant", ["vpt", "vpt-cond"])
def test_fewer_samples_use_a_prefix_of_the_bank(tiny_backbone, variant):
    clf = make_classifier(tiny_backbone, variant)
    engine = make_engine(tiny_backbone, clf, max_samples=6)
    engine.set_classes(NAMES)
    imgs = images(1)
    few, full = engine.predict(imgs, [2])[0], engine.predict(imgs, [6])[0]
    with torch.no_grad():
        f = tiny_backbone.encode_images(imgs)
        logits = clf(f, engine.noise[None]).logits  # all six bank residuals
    assert_matches(few, summarize(logits[:, :2]), NAMES, 2)
    assert_matches(full, summarize(logits), NAMES, 6)
    other_seed = make_engine(tiny_backbone, clf, seed=1)
    assert not torch.equal(other_seed.noise, engine.noise)


def test_no_classes_and_bad_requests_are_refused(tiny_backbone):
    engine = make_engine(tiny_backbone, make_classifier(tiny_backbone, "vpt"))
    with pytest.raises(NoClassesError):
        engine.predict(images(1), [1])
    engine.set_classes(["red"])
    with pytest.raises(InvalidSamplesError, match="1..6"):
        engine.predict(images(1), [7])
    with pytest.raises(InvalidSamplesError):
        engine.predict(images(2), [1])
    assert engine.remove_class("red") and engine.classnames == []
    with pytest.raises(NoClassesError):
        engine.predict(images(1), [1])


@pytest.mark.parametrize("variant", ["zeroshot", "vpt-cond"])
def test_invalid_class_names_are_refused_and_change_nothing(tiny_backbone, variant):
    engine = make_engine(tiny_backbone, make_classifier(tiny_backbone, variant))
    assert engine.normalize_name("  tabby \t cat\n") == "tabby cat"
    for empty in ("", "   \n\t"):
        with pytest.raises(InvalidClassNameError, match="empty"):
            engine.normalize_name(empty)
    long = "very " * 30 + "long name"
    with pytest.raises(InvalidClassNameError, match="too long") as err:
        engine.normalize_name(long)
    assert "very very" in str(err.value) and "24 tokens" in str(err.value)
    with pytest.raises(InvalidClassNameError, match="too long"):
        engine.normalize_name("x" * 100_000)
    engine.set_classes(["red"])
    with pytest.raises(InvalidClassNameError):
        engine.add_classes(["green", long])
    with pytest.raises(InvalidClassNameError):
        engine.set_classes(["green", ""])
    assert engine.classnames == ["red"]


def test_class_changes_while_predicting_stay_consistent(tiny_backbone):
    engine = make_engine(tiny_backbone, make_classifier(tiny_backbone, "vpt-cond"), max_samples=3)
    engine.set_classes(NAMES[:3])
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(15):
                engine.add_classes(NAMES[3:])
                for name in NAMES[3:]:
                    engine.remove_class(name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=churn)
    worker.start()
    # The class sets a prediction may see: base, all added, then the extras removed one by one.
    allowed = [{*NAMES[:3], *NAMES[3 + k :]} for k in range(5)]
    while worker.is_alive():
        for pred in engine.predict(images(2), [3, 2]):
            assert {c.label for c in pred.classes} in allowed
            assert sum(c.probability for c in pred.classes) == pytest.approx(1.0, abs=1e-5)
    worker.join()
    assert not errors
    assert engine.classnames == NAMES[:3]


def test_load_from_artifact_and_zeroshot(tmp_path, tiny_backbone):
    clf = make_classifier(tiny_backbone, "vpt-cond", names=["red", "green"])
    path = save_posterior(
        tmp_path / "posterior.safetensors", clf.learner, tiny_backbone.identity, ["red", "green"], {}, {}
    )
    engine = Engine.load(str(TINY_CONFIG), "none", path, "cpu", max_samples=4, seed=3)
    assert engine.variant == "vpt-cond" and engine.max_samples == 4
    assert engine.model_id == "vpt-cond posterior.safetensors on tiny-clip (none)"
    assert engine.trained_classnames == ["red", "green"] and engine.classnames == []
    zeroshot = Engine.load(str(TINY_CONFIG), "none", None, "cpu")
    assert zeroshot.variant == "zeroshot" and zeroshot.model_id == "zeroshot on tiny-clip (none)"
    zeroshot.warmup()  # works without classes, registers none
    assert zeroshot.classnames == []
    for mode in ("RGBA", "L", "P", "RGB"):
        x = engine.preprocess(Image.new(mode, (50, 40)))
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
