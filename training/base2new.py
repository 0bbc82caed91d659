"""The base-to-new benchmark: train on the base half of the classes, test on base and new.

Every method sees the same few-shot split per seed and the same test images; image features
are computed once per split and shared by all methods (the backbone is frozen). Each method is
calibrated on the base training images the few-shot sampler did not pick (never the test split).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from training.backbone import Backbone
from training.classifier import PromptClassifier
from training.data import Dataset, class_subset, few_shot
from training.features import encode_samples
from training.fit import FitConfig
from training.learners import VARIANTS, LearnerConfig
from training.pipeline import CalibrationConfig, fit_posterior, held_out
from training.uncertainty_eval import Features, measure, offworld_images

log = logging.getLogger(__name__)


@dataclass
class Base2NewConfig:
    methods: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: int = 16
    fit: FitConfig = field(default_factory=FitConfig)
    eval_samples: int = 20
    learner: dict[str, Any] = field(default_factory=dict)  # extra LearnerConfig fields (n_ctx, log_var_init, ...)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def run_base2new(backbone: Backbone, dataset: Dataset, cfg: Base2NewConfig) -> dict[str, Any]:
    """Per method and seed: base/new figures and HM, the calibrated uncertainty figures
    (training/uncertainty_eval.py); plus per-method mean and std over seeds, and the curves of
    the first seed for the plots."""
    base_names, base_of = class_subset(dataset, "base")
    new_names, new_of = class_subset(dataset, "new")
    feats = Features(
        encode_samples(backbone, base_of(dataset.test), desc="base test features"),
        encode_samples(backbone, new_of(dataset.test), desc="new test features"),
        backbone.encode_images(torch.stack([backbone.preprocess(im) for im in offworld_images()])),
    )
    runs: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    for seed in cfg.seeds:
        shots = few_shot(base_of(dataset.train), cfg.shots, seed)
        train = encode_samples(backbone, shots, desc=f"train features (seed {seed})")
        pool = held_out(dataset, base_of, shots, cfg.calibration.max_per_class, seed)
        held = encode_samples(backbone, pool, desc=f"held-out features (seed {seed})") if pool else None
        for method in cfg.methods:
            torch.manual_seed(seed)
            fit_cfg = FitConfig(**{**cfg.fit.as_dict(), "seed": seed})
            clf = PromptClassifier.create(backbone, LearnerConfig(method, **cfg.learner), base_names)
            summary, cal = fit_posterior(clf, fit_cfg, train, held, cfg.calibration)
            row, method_curves = measure(clf, cal, base_names, new_names, feats, cfg.eval_samples, seed)
            row = {"method": method, "seed": seed, "train_accuracy": summary.get("train_accuracy"), **row}
            row["hm_accuracy"] = harmonic_mean(row["base_accuracy"], row["new_accuracy"])
            curves.setdefault(method, method_curves)
            log.info(
                "%s seed %d: base %.1f new %.1f HM %.1f, base ECE %.1f -> %.1f",
                method,
                seed,
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
