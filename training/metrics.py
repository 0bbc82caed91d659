"""Evaluation metrics: accuracy, NLL, Brier, ECE and misclassification AUROC."""

from __future__ import annotations

import torch

from training.uncertainty import Predictive


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(dim=-1) == labels).float().mean())


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float(-(probs.gather(1, labels[:, None]).squeeze(1).clamp_min(1e-12)).log().mean())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return float((probs - onehot).pow(2).sum(dim=1).mean())


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.float().mean() * (conf[inside].mean() - correct[inside].mean()).abs()
    return float(total)


def auroc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U).
    NaN when one of the two groups is empty."""
    pos, neg = scores[positives.bool()], scores[~positives.bool()]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().sum()
    ties = (pos[:, None] == neg[None, :]).float().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def evaluate_predictive(pred: Predictive, labels: torch.Tensor) -> dict[str, float]:
    """Every figure vpt-eval reports; the AUROCs say how well uncertainty flags wrong answers."""
    wrong = pred.probs.argmax(dim=-1) != labels
    return {
        "n": int(labels.numel()),
        "accuracy": accuracy(pred.probs, labels),
        "nll": nll(pred.probs, labels),
        "brier": brier(pred.probs, labels),
        "ece": ece(pred.probs, labels),
        "auroc_entropy": auroc(pred.entropy, wrong),
        "auroc_mutual_information": auroc(pred.mutual_information, wrong),
    }
