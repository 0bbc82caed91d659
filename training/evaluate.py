"""Monte Carlo prediction over precomputed image features, and the evaluation figures."""

from __future__ import annotations

import torch

from training.backbone import autocast
from training.classifier import PromptClassifier
from training.metrics import evaluate_predictive
from training.uncertainty import Predictive, summarize


@torch.inference_mode()
def predict(
    clf: PromptClassifier, features: torch.Tensor, samples: int, seed: int = 0, batch_size: int = 32
) -> Predictive:
    """Average M sampled prompts per image; seeded so an evaluation can be repeated exactly."""
    clf.eval()
    gen = torch.Generator(device=features.device).manual_seed(seed)
    samples = samples if clf.learner.cfg.stochastic else 1
    device = clf.backbone.device
    logits = []
    for start in range(0, len(features), batch_size):
        f = features[start : start + batch_size]
        eps = clf.learner.sample_noise(len(f), samples, generator=gen, device=device)
        with autocast(device):
            logits.append(clf(f, eps).logits.float())
    return summarize(torch.cat(logits))


def evaluate(
    clf: PromptClassifier, features: torch.Tensor, labels: torch.Tensor, samples: int, seed: int = 0
) -> dict[str, float]:
    return evaluate_predictive(predict(clf, features, samples, seed), labels.to(features.device))
