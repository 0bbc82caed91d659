"""From a prediction to what a user acts on: a prediction set at 1 - alpha and an unknown flag.

A calibration (training/calibration.py) brings a temperature (applied by the engine to every
class), the split-conformal scores of held-out images and the unknown rule. The set's guarantee
(it holds the true class with probability >= 1 - alpha for images like the calibration images)
and the unknown flag's false-alarm rate hold while the registered classes are exactly the
calibrated ones: `calibrated: true`. With another class set the same threshold and rule are
used as the best estimate, without the guarantee (`calibrated: false`); `vpt-calibrate` refits
them for the new set. Without any calibration the set is the most probable classes until their
mass reaches 1 - alpha, and the unknown flag uses the service's configured fallback rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.engine.results import Prediction
from training.calibration import Calibration, prediction_sets, served_unknown_score
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
    if calibration is not None and calibration.scores:
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
    measure, limit = unknown_rule(calibration, fallback)
    score = float(served_unknown_score(as_predictive, calibration, measure)[0])
    return Decision(labels, alpha, calibrated, score > limit, score, measure, limit)
