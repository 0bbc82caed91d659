import pytest
import torch

from training import fit as fit_module
from training.backbone import load_backbone
from training.classifier import PromptClassifier
from training.evaluate import evaluate
from training.fit import FitConfig, fit, lr_at
from training.learners import LearnerConfig
from training.objective import negative_elbo
from training.shapes.pretrain import QUICK_CONFIG

NAMES = ["red", "green", "blue", "yellow"]


def _task(backbone, n_per_class=8, seed=0):
    """Image features clustered around 4 random directions: learnable by moving the prompts."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(NAMES), backbone.identity.embed_dim, generator=g)
    labels = torch.arange(len(NAMES)).repeat_interleave(n_per_class)
    feats = centres[labels] + 0.3 * torch.randn(len(labels), centres.shape[1], generator=g)
    return torch.nn.functional.normalize(feats, dim=-1), labels


def _full_loss(clf, feats, labels, samples):
    with torch.no_grad():
        eps = clf.learner.sample_noise(len(feats), samples, generator=torch.Generator().manual_seed(0))
        return float(negative_elbo(clf(feats, eps), labels)[0])


@pytest.mark.parametrize("variant", ["coop", "cocoop", "vpt", "vpt-cond"])
def test_training_lowers_loss_and_touches_only_prompt_parameters(tiny_backbone, variant):
    torch.manual_seed(0)
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig(variant), NAMES)
    feats, labels = _task(tiny_backbone)
    before_backbone = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    before_learner = {k: v.clone() for k, v in clf.learner.state_dict().items()}
    cfg = FitConfig(epochs=4, lr=0.05, batch_size=4, samples=3, warmup_epochs=0)
    start = _full_loss(clf, feats, labels, 3)
    fit(clf, feats, labels, cfg)
    assert _full_loss(clf, feats, labels, 3) < start - 0.05
    for k, v in tiny_backbone.model.state_dict().items():
        assert torch.equal(v, before_backbone[k]), f"backbone tensor {k} changed"
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    changed = [k for k, v in clf.learner.state_dict().items() if not torch.equal(v, before_learner[k])]
    assert "ctx" in changed


def test_checkpoint_resume_reaches_the_same_state(tmp_path, tiny_backbone, monkeypatch):
    feats, labels = _task(tiny_backbone)
    cfg = FitConfig(epochs=3, lr=0.05, batch_size=4, samples=2, warmup_epochs=1, seed=5)

    def fresh():
        torch.manual_seed(0)
        return PromptClassifier.create(tiny_backbone, LearnerConfig("vpt"), NAMES)

    straight = fresh()
    straight_curve = fit(straight, feats, labels, cfg)["train_loss_curve"]
    ckpt = tmp_path / "run.ckpt"
    real_save = fit_module._save_checkpoint

    def crash_after_second_epoch(path, clf, opt, epoch, gen, curve):
        real_save(path, clf, opt, epoch, gen, curve)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "_save_checkpoint", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(fresh(), feats, labels, cfg, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(fit_module, "_save_checkpoint", real_save)
    resumed = fresh()
    resumed_curve = fit(resumed, feats, labels, cfg, checkpoint=ckpt, resume=True)["train_loss_curve"]
    assert len(straight_curve) == cfg.epochs and resumed_curve == pytest.approx(straight_curve)  # whole run's curve
    for k, v in straight.learner.state_dict().items():
        torch.testing.assert_close(resumed.learner.state_dict()[k], v)


def test_zeroshot_has_nothing_to_fit_and_evaluates(tiny_backbone):
    clf = PromptClassifier.create(tiny_backbone, LearnerConfig("zeroshot"), NAMES)
    feats, labels = _task(tiny_backbone)
    assert fit(clf, feats, labels, FitConfig(epochs=1)) == {}
    figures = evaluate(clf, feats, labels, samples=5)
    assert figures["n"] == len(labels)
    assert 0.0 <= figures["accuracy"] <= 1.0 and figures["nll"] > 0


def test_schedule_warms_up_then_decays():
    cfg = FitConfig(epochs=4, lr=0.002, warmup_epochs=1, warmup_lr=1e-5)
    assert lr_at(cfg, 0) == 1e-5
    assert lr_at(cfg, 1) > lr_at(cfg, 2) > lr_at(cfg, 3) > 0


def test_training_leaves_a_batchnorm_backbone_in_eval_mode():
    """A learner's .train() must not put a ResNet image tower's BatchNorm into batch statistics."""
    torch.manual_seed(0)
    backbone = load_backbone(str(QUICK_CONFIG), "none", "cpu")
    images = torch.randn(3, 3, 32, 32)
    before = backbone.encode_images(images)
    clf = PromptClassifier.create(backbone, LearnerConfig("coop"), NAMES)
    fit(clf, *_task(backbone), FitConfig(epochs=1, batch_size=4, warmup_epochs=0))
    assert not any(m.training for m in backbone.model.modules())
    torch.testing.assert_close(backbone.encode_images(images[:1]), before[:1])


def _dassl_lrs(epochs: int, lr: float, warmup: int, warmup_lr: float) -> list[float]:
    """The lr Dassl's trainer uses in each epoch: torch's CosineAnnealingLR wrapped as Dassl's
    ConstantWarmupScheduler does (recount on), stepped once after every epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(epochs))
    wrapper_epoch, out = 0, []
    for _ in range(epochs):
        out.append(warmup_lr if wrapper_epoch < warmup else cosine.get_last_lr()[0])
        opt.step()  # an epoch of training (no gradients: nothing moves), then the scheduler as Dassl steps it
        if wrapper_epoch >= warmup:
            cosine.step()
        else:
            wrapper_epoch += 1
    return out


@pytest.mark.parametrize(("epochs", "warmup"), [(10, 1), (5, 2), (4, 0)])
def test_schedule_matches_dassl(epochs, warmup):
    cfg = FitConfig(epochs=epochs, lr=0.002, warmup_epochs=warmup, warmup_lr=1e-5)
    ours = [lr_at(cfg, e) for e in range(epochs)]
    assert ours == pytest.approx(_dassl_lrs(epochs, 0.002, warmup, 1e-5), rel=1e-9)


def test_schedule_paper_values():
    cfg = FitConfig(epochs=10, lr=0.002, warmup_epochs=1, warmup_lr=1e-5)
    lrs = [lr_at(cfg, e) for e in range(10)]
    assert lrs[0] == 1e-5 and lrs[1] == pytest.approx(2.0e-3)
    assert lrs[2] == pytest.approx(1.951e-3, abs=1e-6) and lrs[9] == pytest.approx(1.91e-4, abs=1e-6)
