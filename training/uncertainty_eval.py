"""What a calibrated posterior's uncertainty is worth, measured as a user meets it (DESIGN 4).

For one fitted method: accuracy/ECE/NLL on base and new classes before and after the temperature;
prediction-set coverage and size on base test images against top-k at the same coverage; how well
each score separates known images (base test images, base classes registered) from unknown ones
(new-class test images, and off-world inputs) while only the base classes are registered; the
served flag's false-alarm and detection rates; the learned spread of the posterior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from training.calibration import (
    COMBINED,
    Calibration,
    decision_figures,
    prediction_sets,
    served_unknown_score,
    unknown_scores,
)
from training.classifier import PromptClassifier
from training.evaluate import predict_logits
from training.learners import sigma_of
from training.metrics import auroc, evaluate_predictive
from training.uncertainty import Predictive, summarize

ALPHAS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
DETECTION_SCORES = ("max_probability", "entropy", "mutual_information", "energy", COMBINED, "set_size")


@dataclass
class Features:
    base: tuple[torch.Tensor, torch.Tensor]  # base-class test images, labels in base order
    new: tuple[torch.Tensor, torch.Tensor]  # new-class test images, labels in new order
    offworld: torch.Tensor | None = None  # inputs of no class (blank, noise, ...)


def _scores(pred: Predictive, cal: Calibration | None, alpha: float) -> dict[str, torch.Tensor]:
    scores = unknown_scores(pred)
    if cal is not None:
        scores["set_size"] = prediction_sets(pred.probs, cal.threshold(alpha), cal.method).sum(dim=1).double()
        scores[COMBINED] = served_unknown_score(pred, cal, COMBINED)
    return scores


def topk_size_for(pred: Predictive, labels: torch.Tensor, coverage: float) -> int:
    """Smallest k whose top-k sets reach `coverage` on these images."""
    rank = (pred.probs > pred.probs.gather(1, labels[:, None])).sum(dim=1)  # 0 = top-1
    for k in range(1, pred.probs.shape[1] + 1):
        if float((rank < k).float().mean()) >= coverage:
            return k
    return pred.probs.shape[1]


def sigma_stats(clf: PromptClassifier, image_features: torch.Tensor) -> dict[str, float]:
    """Learned sigma = exp(log_var / 2): mean, min and max over dimensions (and images for vpt-cond)."""
    with torch.no_grad():
        post = clf.learner.posterior(image_features)
    if post is None:
        return {}
    sigma = sigma_of(post[1].detach())
    return {
        "sigma_mean": float(sigma.mean()),
        "sigma_min": float(sigma.min()),
        "sigma_max": float(sigma.max()),
        "sigma_init": float(sigma_of(torch.tensor(clf.learner.cfg.log_var_init))),
    }


def measure(
    clf: PromptClassifier,
    cal: Calibration | None,
    base_names: list[str],
    new_names: list[str],
    feats: Features,
    samples: int,
    seed: int,
    alpha: float = 0.1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(row of figures, curves for the plots) for one fitted method; clf comes back on the base classes."""
    temperature = cal.temperature if cal is not None else 1.0
    clf.temperature = 1.0
    row: dict[str, Any] = {"temperature": temperature}
    preds: dict[str, Predictive] = {}
    # Served probabilities: the temperature applies to every class set (the engine scales all logits);
    # raw: what the posterior gives without it.
    for split, names, (f, y) in (("new", new_names, feats.new), ("base", base_names, feats.base)):
        clf.set_classes(names)
        logits = predict_logits(clf, f, samples, seed)
        preds[f"{split}_raw"], preds[split] = summarize(logits), summarize(logits / temperature)
        raw, served = evaluate_predictive(preds[f"{split}_raw"], y), evaluate_predictive(preds[split], y)
        row.update({f"{split}_{k}": v for k, v in served.items() if k != "n"})
        row.update({f"{split}_{k}_raw": raw[k] for k in ("accuracy", "ece", "nll")})
    known, base_y = preds["base"], feats.base[1]
    # unknown images scored against the base classes only (clf is on the base classes now)
    unknown = summarize(predict_logits(clf, feats.new[0], samples, seed) / temperature)
    curves: dict[str, Any] = {"roc": {}, "coverage": {}, "reliability": {}}
    scores_known, scores_new = _scores(known, cal, alpha), _scores(unknown, cal, alpha)
    is_unknown = torch.cat([torch.zeros(len(base_y)), torch.ones(len(feats.new[1]))])
    for name in scores_known:
        both = torch.cat([scores_known[name].double(), scores_new[name].double()])
        row[f"auroc_unknown_{name}"] = auroc(both, is_unknown)
        curves["roc"][name] = _roc(both, is_unknown)
    if feats.offworld is not None:
        off_logits = predict_logits(clf, feats.offworld, samples, seed) / temperature
        off = _scores(summarize(off_logits), cal, alpha)
        is_off = torch.cat([torch.zeros(len(base_y)), torch.ones(len(feats.offworld))])
        for name in off:
            row[f"auroc_offworld_{name}"] = auroc(torch.cat([scores_known[name].double(), off[name].double()]), is_off)
        if cal is not None:
            flagged = served_unknown_score(summarize(off_logits), cal, cal.unknown_score) > cal.unknown_threshold
            row["offworld_flagged"] = float(flagged.float().mean())
    row["mi_known"] = float(known.mutual_information.mean())
    row["mi_unknown"] = float(unknown.mutual_information.mean())
    if cal is not None:
        row.update({f"base_{k}": v for k, v in decision_figures(known, base_y, cal, alpha).items()})
        row["false_alarm"] = row.pop("base_unknown_rate")
        row["unknown_detected"] = float(
            (served_unknown_score(unknown, cal, cal.unknown_score) > cal.unknown_threshold).float().mean()
        )
        row["topk_size_same_coverage"] = topk_size_for(known, base_y, row["base_set_coverage"])
        curves["coverage"] = {
            str(a): decision_figures(known, base_y, cal, a) | {"topk": topk_size_for(known, base_y, 1 - a)}
            for a in ALPHAS
        }
    curves["reliability"] = {
        "raw": _confidence(preds["base_raw"], base_y),
        "calibrated": _confidence(known, base_y),
    }
    row.update(sigma_stats(clf, feats.base[0]))
    return row, curves


def offworld_images(size: int = 64, seed: int = 0) -> list:
    """Inputs of no class: blank images (black, white, grey, a few flat colours) and pixel noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    flats = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (40, 40, 40), (200, 180, 160), (90, 60, 30)]
    images = [Image.new("RGB", (size, size), c) for c in flats]
    images += [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(10)]
    images += [Image.fromarray(rng.integers(0, 256, (size, size, 1), dtype=np.uint8).repeat(3, 2)) for _ in range(6)]
    return images


def _roc(scores: torch.Tensor, positives: torch.Tensor, points: int = 50) -> dict[str, list[float]]:
    """(false-positive rate, true-positive rate) at `points` thresholds, for the ROC plots."""
    qs = torch.quantile(scores, torch.linspace(0, 1, points, dtype=scores.dtype))
    pos, neg = scores[positives.bool()], scores[~positives.bool()]
    return {
        "fpr": [float((neg > q).float().mean()) for q in qs],
        "tpr": [float((pos > q).float().mean()) for q in qs],
    }


def _confidence(pred: Predictive, labels: torch.Tensor) -> dict[str, list[float]]:
    return {
        "confidence": pred.probs.max(dim=-1).values.tolist(),
        "correct": (pred.probs.argmax(dim=-1) == labels).float().tolist(),
    }
