"""Monte Carlo prediction over precomputed image features, and the evaluation figures."""

from __future__ import annotations

import torch

from training.backbone import autocast
from training.calibration import Calibration, decision_figures, is_calibrated_for
from training.classifier import PromptClassifier
from training.metrics import evaluate_predictive
from training.uncertainty import Predictive, summarize


@torch.inference_mode()
def predict_logits(
    clf: PromptClassifier, features: torch.Tensor, samples: int, seed: int = 0, batch_size: int = 32
) -> torch.Tensor:
    """Logits [N, M, C] of M sampled prompts per image (at the classifier's temperature); seeded."""
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
    return torch.cat(logits)


def predict(
    clf: PromptClassifier, features: torch.Tensor, samples: int, seed: int = 0, batch_size: int = 32
) -> Predictive:
    """Average M sampled prompts per image; seeded so an evaluation can be repeated exactly."""
    return summarize(predict_logits(clf, features, samples, seed, batch_size))


def evaluate(
    clf: PromptClassifier,
    features: torch.Tensor,
    labels: torch.Tensor,
    samples: int,
    seed: int = 0,
    calibration: Calibration | None = None,
    alpha: float = 0.1,
) -> dict[str, float]:
    """The figures of evaluate_predictive at the classifier's temperature; with a calibration for these
    classes also the prediction sets' coverage and size at alpha and the share of these (known) images
    flagged unknown."""
    return _figures(predict(clf, features, samples, seed), labels.to(features.device), clf, calibration, alpha)


def evaluate_raw_and_calibrated(
    clf: PromptClassifier,
    features: torch.Tensor,
    labels: torch.Tensor,
    samples: int,
    seed: int,
    calibration: Calibration,
    alpha: float = 0.1,
) -> tuple[dict[str, float], dict[str, float]]:
    """(figures without the temperature, figures with it) from one prediction pass: the calibrated
    logits are the raw ones divided by T, so the costly text passes (vpt-cond) run once."""
    temperature, clf.temperature = clf.temperature, 1.0
    try:
        logits = predict_logits(clf, features, samples, seed)
    finally:
        clf.temperature = temperature
    labels = labels.to(features.device)
    raw = _figures(summarize(logits), labels, clf, None, alpha)
    return raw, _figures(summarize(logits / calibration.temperature), labels, clf, calibration, alpha)


def _figures(
    pred: Predictive, labels: torch.Tensor, clf: PromptClassifier, calibration: Calibration | None, alpha: float
) -> dict[str, float]:
    figures = evaluate_predictive(pred, labels)
    if calibration is not None and is_calibrated_for(calibration, clf.classnames):
        figures.update(decision_figures(pred, labels, calibration, alpha))
    return figures
