"""From a prediction to what a user acts on: a prediction set at 1 - alpha and an unknown flag.

With a calibrated posterior (training/calibration.py) the set is split-conformal, guaranteed to
hold the true class with probability >= 1 - alpha for images like the calibration images, but
only while the registered classes are the calibrated ones (`calibrated` says whether they are);
for another class set the calibrated threshold is still used, without the guarantee. Without
any calibration the set is the most probable classes until their mass reaches 1 - alpha.
The unknown flag uses the calibrated score and threshold (a fixed false-alarm rate on known
images); an uncalibrated posterior falls back to the service's configured measure and threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from app.engine.results import Prediction
from training.calibration import Calibration, is_calibrated_for, prediction_sets, unknown_scores
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


def decide(
    pred: Prediction, calibration: Calibration | None, classes: Sequence[str], alpha: float, fallback: Fallback
) -> Decision:
    """The set and the flag for one prediction whose classes are sorted, most probable first."""
    probs = torch.tensor([[c.probability for c in pred.classes]], dtype=torch.float64)
    calibrated = is_calibrated_for(calibration, list(classes))
    if calibration is not None and calibration.scores:  # for other classes too: the best estimate, no guarantee
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
    if calibration is not None and calibration.unknown_threshold != float("inf"):
        measure, limit = calibration.unknown_score, calibration.unknown_threshold
    else:
        measure, limit = fallback.measure, fallback.threshold
    score = float(unknown_scores(as_predictive)[measure][0])
    return Decision(labels, alpha, calibrated, score > limit, score, measure, limit)
