import pytest
import torch

from training.classifier import PromptClassifier
from training.learners import LearnerConfig, kl_standard_normal
from training.objective import negative_elbo

NAMES = ["red", "green", "blue", "yellow", "purple"]


def _features(backbone, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, backbone.identity.embed_dim, generator=g), dim=-1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_kl_matches_torch_distributions(reduction):
    mu, log_var = torch.randn(3, 16), torch.randn(3, 16)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros(16), torch.ones(16))
    expected = torch.distributions.kl_divergence(q, p)
    expected = expected.mean(-1) if reduction == "mean" else expected.sum(-1)
    torch.testing.assert_close(kl_standard_normal(mu, log_var, reduction), expected)


def test_vpt_with_vanishing_sigma_predicts_like_coop(tiny_backbone):
    vpt = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt", log_var_init=-60.0), NAMES)
    coop = PromptClassifier.create(tiny_backbone, LearnerConfig("coop"), NAMES)
    with torch.no_grad():
        shared = torch.randn_like(coop.learner.ctx) * 0.02
        vpt.learner.ctx.copy_(shared)
        coop.learner.ctx.copy_(shared)
    f = _features(tiny_backbone, 4)
    eps = vpt.learner.sample_noise(4, 7)
    assert eps.shape == (1, 7, tiny_backbone.identity.text_width)
    with torch.no_grad():
        sampled = vpt(f, eps).logits
        plain = coop(f).logits
    assert sampled.shape == (4, 7, len(NAMES))
    torch.testing.assert_close(sampled, plain.expand_as(sampled), atol=1e-5, rtol=0)


def test_vpt_samples_differ_when_sigma_is_large(tiny_backbone):
    vpt = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt", log_var_init=0.0), NAMES)
    f = _features(tiny_backbone, 2)
    with torch.no_grad():
        logits = vpt(f, vpt.learner.sample_noise(2, 5)).logits
    assert logits.std(dim=1).mean() > 1e-3


def test_vpt_cond_batch_equals_one_image_at_a_time(tiny_backbone):
    torch.manual_seed(3)
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt-cond", log_var_init=-2.0), NAMES)
    with torch.no_grad():  # give the MLPs non-trivial output so images really differ
        for net in (clf.learner.mu_net, clf.learner.log_var_net):
            torch.nn.init.normal_(net[-1].weight, std=0.5)
    f = _features(tiny_backbone, 3)
    eps = clf.learner.sample_noise(3, 6)
    assert eps.shape == (3, 6, tiny_backbone.identity.text_width)
    with torch.no_grad():
        batched = clf(f, eps).logits
        single = torch.cat([clf(f[i : i + 1], eps[i : i + 1]).logits for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 1e-4  # per-image residuals, not broadcast


def test_cocoop_is_per_image_and_deterministic(tiny_backbone):
    torch.manual_seed(0)
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("cocoop"), NAMES)
    f = _features(tiny_backbone, 3)
    with torch.no_grad():
        a, b = clf(f).logits, clf(f).logits
        single = torch.cat([clf(f[i : i + 1]).logits for i in range(3)])
    assert a.shape == (3, 1, len(NAMES))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("estimator", ["elbo", "iwae"])
def test_negative_elbo_matches_hand_computation(tiny_backbone, estimator):
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("vpt-cond", log_var_init=-1.0), NAMES)
    f, y = _features(tiny_backbone, 2), torch.tensor([1, 3])
    out = clf(f, clf.learner.sample_noise(2, 4))
    loss, parts = negative_elbo(out, y, beta=0.5, estimator=estimator)
    logp = torch.log_softmax(out.logits, -1)[torch.arange(2), :, y]  # [B, M]
    nll = -logp.mean(1) if estimator == "elbo" else -(torch.logsumexp(logp, 1) - torch.log(torch.tensor(4.0)))
    expected = nll.mean() + 0.5 * kl_standard_normal(out.mu, out.log_var).mean()
    torch.testing.assert_close(loss, expected)
    assert parts["kl"] > 0


def test_unknown_variant_and_bad_ctx_init_are_refused(tiny_backbone):
    with pytest.raises(ValueError, match="unknown variant"):
        LearnerConfig("maple")
    with pytest.raises(ValueError, match="n-ctx"):
        PromptClassifier.create(tiny_backbone, LearnerConfig("coop", n_ctx=2, ctx_init="a photo of a"), NAMES)
