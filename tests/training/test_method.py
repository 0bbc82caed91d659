"""Pin the method to hand-computed values (DESIGN 1), not to the code itself.

Each test here fails for a specific plausible slip: logits without exp(logit_scale), the IWAE
estimator as default, exp(log_var) used as sigma, a fit that only moves the context.
"""

from __future__ import annotations

import math

import pytest
import torch

from training.classifier import PromptClassifier
from training.fit import FitConfig, fit
from training.learners import LearnerConfig, create_learner, reparameterise
from training.objective import negative_elbo
from training.scoring import Scorer

NAMES = ["red circle", "green square", "blue star"]


def test_scorer_is_exp_logit_scale_times_cosine_over_temperature():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # [G=1, M=1, C=2, D=2]
    logits = Scorer.create(torch.tensor(math.log(10.0))).grouped(image, text)
    torch.testing.assert_close(logits, torch.tensor([[[10.0, 0.0]], [[6.0, 8.0]]]))
    cooled = Scorer.create(torch.tensor(math.log(10.0)), temperature=2.0).grouped(image, text)
    torch.testing.assert_close(cooled, logits / 2)
    with pytest.raises(ValueError, match="temperature"):
        Scorer.create(torch.tensor(0.0), temperature=0.0)


def test_classifier_logits_equal_open_clip_zero_shot(tiny_backbone):
    """The zero-shot classifier equals exp(logit_scale) * cos(image, encode_text(prompt)) computed by open_clip."""
    model = tiny_backbone.model
    assert abs(float(model.logit_scale.exp()) - 1.0) > 0.5  # exp matters for this backbone
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("zeroshot"), NAMES)
    f = torch.nn.functional.normalize(torch.randn(2, tiny_backbone.identity.embed_dim), dim=-1)
    with torch.no_grad():
        text = model.encode_text(tiny_backbone.tokenizer([f"a photo of a {n}." for n in NAMES]))
        expected = model.logit_scale.exp() * f @ torch.nn.functional.normalize(text, dim=-1).T
        got = clf(f).logits[:, 0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_default_estimator_is_the_papers_elbo():
    """The paper's estimator: mean over samples of the cross-entropy (the official code's IWAE is opt-in)."""
    assert FitConfig().estimator == "elbo"
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])  # one image, two samples, two classes
    out = type("Out", (), {"logits": logits, "kl": lambda self, r: None})()
    loss, _ = negative_elbo(out, torch.tensor([0]))
    a, b = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))  # CE of each sample
    assert float(loss) == pytest.approx((a + b) / 2, abs=1e-6)  # iwae would give -log((p1 + p2) / 2) = log 2


def test_reparameterisation_has_the_posterior_statistics(tiny_backbone):
    """At sigma = 0.3 (neither ~0 nor 1, where exp(log_var) and exp(log_var / 2) agree): mean mu, std sigma."""
    sigma = 0.3
    learner = create_learner(LearnerConfig("vpt", log_var_init=math.log(sigma**2)), tiny_backbone)
    with torch.no_grad():
        learner.mu.fill_(0.5)
    eps = learner.sample_noise(1, 20000, generator=torch.Generator().manual_seed(0))[0]
    with torch.no_grad():
        rows = learner.row_contexts(torch.zeros(1, 1), torch.zeros(len(eps), dtype=torch.long), eps)
        r = rows[:, 0] - learner.ctx[0]
    assert float(r.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(r.std()) == pytest.approx(sigma, rel=0.02)
    torch.testing.assert_close(
        reparameterise(torch.zeros(1), torch.tensor([math.log(4.0)]), torch.ones(1)), torch.tensor([2.0])
    )


@pytest.mark.parametrize("variant", ["coop", "cocoop", "vpt", "vpt-cond"])
def test_fit_moves_every_learned_tensor(tiny_backbone, variant):
    torch.manual_seed(0)
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig(variant, log_var_init=-2.0), NAMES)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(len(NAMES)).repeat_interleave(4)
    feats = torch.nn.functional.normalize(
        torch.randn(len(labels), tiny_backbone.identity.embed_dim, generator=g), dim=-1
    )
    before = {k: v.clone() for k, v in clf.learner.state_dict().items()}
    fit(clf, feats, labels, FitConfig(epochs=2, lr=0.05, batch_size=4, samples=2, warmup_epochs=0))
    unchanged = [k for k, v in clf.learner.state_dict().items() if torch.equal(v, before[k])]
    assert unchanged == []


def test_log_var_lr_scale_lets_the_spread_learn(tiny_backbone):
    """At sigma 0.01 the gradient reaching log sigma^2 is tiny; a larger rate for it moves it further."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(len(NAMES)).repeat_interleave(4)
    feats = torch.nn.functional.normalize(torch.randn(len(labels), tiny_backbone.identity.embed_dim, generator=g), -1)
    moved = {}
    for scale in (1.0, 30.0):
        torch.manual_seed(0)
        clf = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt"), NAMES)
        start = clf.learner.log_var.detach().clone()
        fit(
            clf,
            feats,
            labels,
            FitConfig(epochs=2, lr=0.05, batch_size=4, samples=2, warmup_epochs=0, log_var_lr_scale=scale),
        )
        moved[scale] = float((clf.learner.log_var.detach() - start).abs().mean())
    assert moved[30.0] > 10 * moved[1.0] > 0
