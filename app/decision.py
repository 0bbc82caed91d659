"""From a prediction to what a user acts on: a prediction set at 1 - alpha and an unknown flag.

A calibration (training/calibration.py) is one bundle, temperature + conformal scores + unknown
threshold, valid for the class set it was fitted on. While exactly those classes are registered
(`calibrated: true`) the probabilities are temperature-scaled, the set is split-conformal
(it holds the true class with probability >= 1 - alpha for images like the calibration images)
and the unknown flag fires at the calibrated false-alarm rate. With any other class set (or no
calibration) the engine serves the raw probabilities, the set is the most probable classes
until their mass reaches 1 - alpha (no guarantee), and the unknown flag uses the service's
configured fallback measure and threshold. `vpt-calibrate` refits the bundle for a new class set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.engine.results import Prediction
from training.calibration import Calibration, prediction_sets, unknown_scores
from training.uncertainty import Predictive


@dataclass(frozen=True)
class Decision:
    prediction_set: list[str]  # labels, most probable first
    alpha: float
    calibrated: bool  # the set's guarantee (and the unknown threshold) hold for the registered classes
    unknown: bool
    unknown_score: float
    unknown_measure: str
    unknown_threshold: float


@dataclass(frozen=True)
class Fallback:
    """The unknown rule for posteriors without calibration (the service's settings)."""

    measure: str
    threshold: float


def unknown_rule(calibration: Calibration | None, fallback: Fallback) -> tuple[str, float]:
    """(measure, threshold) of the unknown flag: the calibrated one, else the configured fallback."""
    if calibration is not None and calibration.unknown_threshold != float("inf"):
        return calibration.unknown_score, calibration.unknown_threshold
    return fallback.measure, fallback.threshold


def decide(pred: Prediction, calibration: Calibration | None, alpha: float, fallback: Fallback) -> Decision:
    """The set and the flag for one prediction whose classes are sorted, most probable first."""
    probs = torch.tensor([[c.probability for c in pred.classes]], dtype=torch.float64)
    calibrated = pred.calibrated and calibration is not None
    if calibrated:
        method, threshold = calibration.method, calibration.threshold(alpha)
    else:
        method, threshold = "aps", 1.0 - alpha
    member = prediction_sets(probs, threshold, method)[0].tolist()
    labels = [c.label for c, keep in zip(pred.classes, member) if keep]
    as_predictive = Predictive(
        probs,
        torch.zeros_like(probs),
        torch.tensor([pred.entropy]),
        torch.tensor([pred.expected_entropy]),
        torch.tensor([pred.mutual_information]),
        torch.tensor([pred.energy]),
    )
    measure, limit = unknown_rule(calibration if calibrated else None, fallback)
    score = float(unknown_scores(as_predictive)[measure][0])
    return Decision(labels, alpha, calibrated, score > limit, score, measure, limit)
