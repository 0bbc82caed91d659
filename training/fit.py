"""Fit the prompt posterior on precomputed image features (DESIGN 1, the paper's settings).

SGD with momentum, one constant warm-up epoch at a tiny rate, cosine decay after; a checkpoint
after every epoch (written atomically) so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from training.backbone import autocast
from training.classifier import PromptClassifier
from training.objective import negative_elbo
from training.progress import bar, milestone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 10
    lr: float = 0.002
    batch_size: int = 1
    samples: int = 20  # L, Monte Carlo samples per image in the loss
    beta: float = 0.001
    estimator: str = "elbo"
    kl_reduction: str = "mean"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    seed: int = 1
    # Learning-rate multiplier of the posterior's log-variance: its gradient is scaled by sigma, so at
    # the context's rate it barely moves (docs/results/uncertainty.md, the spread sweep).
    log_var_lr_scale: float = 100.0

    def as_dict(self) -> dict:
        return asdict(self)


def lr_at(cfg: FitConfig, epoch: int) -> float:
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max=epochs), WARMUP_RECOUNT on:
    the warm-up epochs run at warmup_lr, then the cosine starts from its own step 0, so epoch e
    uses cos(pi * (e - warmup) / epochs) (10 epochs: 1e-5, 2.0e-3, 1.951e-3, ..., 1.91e-4)."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    step = epoch - cfg.warmup_epochs
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * step / max(cfg.epochs, 1)))


def _save_checkpoint(
    path: Path, clf: PromptClassifier, opt: torch.optim.Optimizer, epoch: int, gen, curve: list[float]
) -> None:
    state = {
        "epoch": epoch,
        "learner": clf.learner.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": gen.get_state(),
        "loss_curve": curve,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def fit(
    clf: PromptClassifier,
    features: torch.Tensor,
    labels: torch.Tensor,
    cfg: FitConfig,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the learner in place; returns the last epoch's mean loss parts and training accuracy, and
    `train_loss_curve` (every epoch's mean loss, so a report can show whether training flattened)."""
    device = clf.backbone.device
    named = [(n, p) for n, p in clf.learner.named_parameters() if p.requires_grad]
    if not named:
        log.info("variant %s has nothing to learn; skipping training", clf.learner.cfg.variant)
        return {}
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    # The gradient reaching log sigma^2 is scaled by sigma (~0.01 at the default init), so the spread
    # barely moves at the context's rate; log_var_lr_scale lets it learn at its own rate.
    spread = [p for n, p in named if n.startswith("log_var")]
    groups = [{"params": [p for n, p in named if not n.startswith("log_var")], "lr_scale": 1.0}]
    if spread:
        groups.append({"params": spread, "lr_scale": cfg.log_var_lr_scale})
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start, curve = 0, []
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        clf.learner.load_state_dict(state["learner"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        start, curve = int(state["epoch"]) + 1, list(state.get("loss_curve", []))
        log.info("resumed from %s at epoch %d", checkpoint, start + 1)
    samples = cfg.samples if clf.learner.cfg.stochastic else 1
    summary: dict[str, Any] = {}
    for epoch in range(start, cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch) * group["lr_scale"]
        clf.train()
        order = torch.randperm(len(features), generator=gen).to(device)
        totals = {"loss": 0.0, "correct": 0.0, "seen": 0}
        steps = bar(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
        for step in steps:
            idx = order[step : step + cfg.batch_size]
            f, y = features[idx], labels[idx]
            eps = clf.learner.sample_noise(len(idx), samples, generator=gen, device=torch.device("cpu"))
            eps = None if eps is None else eps.to(device)
            with autocast(device):
                out = clf(f, eps)
            loss, parts = negative_elbo(out, y, cfg.beta, cfg.estimator, cfg.kl_reduction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            probs = torch.softmax(out.logits.detach().float(), -1).mean(1)
            totals["loss"] += float(loss.detach()) * len(idx)
            totals["correct"] += float((probs.argmax(-1) == y).sum())
            totals["seen"] += len(idx)
            if hasattr(steps, "set_postfix"):
                steps.set_postfix(
                    loss=f"{totals['loss'] / totals['seen']:.4f}", acc=f"{totals['correct'] / totals['seen']:.3f}"
                )
        curve.append(totals["loss"] / totals["seen"])
        summary = {
            "epoch": epoch + 1,
            "train_loss": curve[-1],
            "train_accuracy": totals["correct"] / totals["seen"],
            **{f"last_{k}": v for k, v in parts.items()},
        }
        log.info("epoch %d: %s", epoch + 1, summary)
        milestone(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {summary['train_loss']:.4f}, "
            f"train accuracy {summary['train_accuracy']:.3f}, lr {lr_at(cfg, epoch):.2e}"
        )
        if checkpoint is not None:
            _save_checkpoint(checkpoint, clf, opt, epoch, gen, curve)
    return {**summary, "train_loss_curve": curve}
