"""The base-to-new benchmark: train on the base half of the classes, test on base and new.

Every method sees the same few-shot split per seed and the same test images; image features
are computed once per split and shared by all methods (the backbone is frozen). Each method is
calibrated on held-out base images (the val split, else unpicked training images; never the
test split) and its uncertainty measured as served (training/uncertainty_eval.py). The helpers
here (train_features, fit_method, score, summarize_runs) are what the few-shot, cross-dataset
and domain-generalisation protocols are built from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from training.backbone import Backbone
from training.calibration import Calibration
from training.classifier import PromptClassifier
from training.data import Dataset, Sample, class_subset, few_shot
from training.evaluate import predict
from training.features import AugmentedFeatures, encode_samples
from training.fit import FitConfig
from training.learners import VARIANTS, LearnerConfig
from training.metrics import evaluate_predictive
from training.pipeline import CalibrationConfig, fit_posterior, held_out
from training.uncertainty_eval import Features, measure, offworld_images

log = logging.getLogger(__name__)

METRICS = ("accuracy", "ece", "nll", "brier", "auroc_entropy", "auroc_mutual_information")


@dataclass
class Base2NewConfig:
    """The settings every protocol shares (base2new, few-shot, cross-dataset, domain-gen)."""

    methods: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: int = 16
    fit: FitConfig = field(default_factory=FitConfig)
    eval_samples: int = 20
    learner: dict[str, Any] = field(default_factory=dict)  # extra LearnerConfig fields (n_ctx, log_var_init, ...)
    augment: bool = False  # re-encode random crops + flips every epoch (training/features.py)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


TestSet = tuple[list[str], tuple[torch.Tensor, torch.Tensor]]  # class names, (features, labels)


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def train_features(
    backbone: Backbone, samples: list[Sample], augment: bool, desc: str
) -> tuple[torch.Tensor | AugmentedFeatures, torch.Tensor]:
    """What fit() trains on: cached features, or images re-encoded with augmentation each epoch."""
    if not augment:
        return encode_samples(backbone, samples, desc=desc)
    return AugmentedFeatures(backbone, samples), torch.tensor([s.label for s in samples], device=backbone.device)


def fit_method(
    backbone: Backbone,
    method: str,
    classnames: list[str],
    train: tuple[torch.Tensor | AugmentedFeatures, torch.Tensor],
    cfg: Base2NewConfig,
    seed: int,
    held: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[PromptClassifier, dict[str, Any], Calibration | None]:
    """One method fitted on one seed's shots (seeded so every protocol's runs are repeatable), then
    calibrated on `held` when given: the classifier comes back at its fitted temperature."""
    torch.manual_seed(seed)
    clf = PromptClassifier.create(backbone, LearnerConfig(method, **cfg.learner), classnames)
    fit_cfg = FitConfig(**{**cfg.fit.as_dict(), "seed": seed})
    # calibrated with the evaluation's M, so held-out and test predictions are the same estimator
    calibration = dataclasses.replace(cfg.calibration, samples=cfg.eval_samples, enabled=held is not None)
    summary, cal = fit_posterior(clf, fit_cfg, train, held, calibration)
    return clf, summary, cal


def score(
    clf: PromptClassifier, test: TestSet, eval_samples: int, seed: int, reliability: dict[str, list[float]]
) -> dict[str, float]:
    """The METRICS of `clf` on one test set (classes switched to the set's); appends
    (confidence, correct) per image to `reliability`."""
    names, (feats, labels) = test
    clf.set_classes(names)
    pred = predict(clf, feats, eval_samples, seed)
    reliability.setdefault("confidence", []).extend(pred.probs.max(-1).values.tolist())
    reliability.setdefault("correct", []).extend((pred.probs.argmax(-1) == labels).float().tolist())
    return {k: v for k, v in evaluate_predictive(pred, labels).items() if k in METRICS}


def encode_base_new(backbone: Backbone, dataset: Dataset) -> dict[str, TestSet]:
    """The base and new test sets, encoded once (few-shot reuses them for every shot count)."""
    out = {}
    for which in ("base", "new"):
        names, restrict = class_subset(dataset, which)
        out[which] = (names, encode_samples(backbone, restrict(dataset.test), desc=f"{which} test features"))
    return out


def run_base2new(
    backbone: Backbone, dataset: Dataset, cfg: Base2NewConfig, tests: dict[str, TestSet] | None = None
) -> dict[str, Any]:
    """Per method and seed: base/new figures and HM and the calibrated uncertainty figures; plus
    per-method mean and std over seeds, and the curves of the first seed for the plots."""
    tests = tests or encode_base_new(backbone, dataset)
    (base_names, base_test), (new_names, new_test) = tests["base"], tests["new"]
    offworld = torch.stack([backbone.preprocess(im) for im in offworld_images()])
    feats = Features(base_test, new_test, backbone.encode_images(offworld))
    _, base_of = class_subset(dataset, "base")
    runs: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    for seed in cfg.seeds:
        shots = few_shot(base_of(dataset.train), cfg.shots, seed)
        train = train_features(backbone, shots, cfg.augment, desc=f"train features (seed {seed})")
        pool = held_out(dataset, base_of, shots, cfg.calibration.max_per_class, seed)
        held = encode_samples(backbone, pool, desc=f"held-out features (seed {seed})") if pool else None
        for method in cfg.methods:
            clf, summary, cal = fit_method(backbone, method, base_names, train, cfg, seed, held)
            row, method_curves = measure(clf, cal, base_names, new_names, feats, cfg.eval_samples, seed)
            row = {
                "method": method,
                "seed": seed,
                "shots": cfg.shots,
                "train_accuracy": summary.get("train_accuracy"),
                "train_loss_curve": summary.get("train_loss_curve"),
                **row,
            }
            row["hm_accuracy"] = harmonic_mean(row["base_accuracy"], row["new_accuracy"])
            curves.setdefault(method, method_curves)
            log.info(
                "%s seed %d shots %d: base %.1f new %.1f HM %.1f, base ECE %.1f -> %.1f",
                method,
                seed,
                cfg.shots,
                100 * row["base_accuracy"],
                100 * row["new_accuracy"],
                100 * row["hm_accuracy"],
                100 * row["base_ece_raw"],
                100 * row["base_ece"],
            )
            runs.append(row)
    return {"runs": runs, "summary": summarize_runs(runs, cfg.methods), "curves": curves}


def summarize_runs(runs: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean and (sample) std over seeds of every numeric figure, per method."""
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        rows = [r for r in runs if r["method"] == method]
        keys = [k for k, v in rows[0].items() if isinstance(v, float)] if rows else []
        stats: dict[str, float] = {}
        for key in keys:
            values = [r[key] for r in rows if r[key] is not None and not math.isnan(r[key])]
            if not values:
                continue
            stats[f"{key}_mean"] = statistics.fmean(values)
            stats[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[method] = stats
    return out
