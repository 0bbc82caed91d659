"""The base-to-new benchmark: train on the base half of the classes, test on base and new.

Every method sees the same few-shot split per seed and the same test images; image features
are computed once per split and shared by all methods (the backbone is frozen).
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
from training.evaluate import predict
from training.features import encode_samples
from training.fit import FitConfig, fit
from training.learners import VARIANTS, LearnerConfig
from training.metrics import evaluate_predictive

log = logging.getLogger(__name__)

METRICS = ("accuracy", "ece", "nll", "brier", "auroc_entropy", "auroc_mutual_information")


@dataclass
class Base2NewConfig:
    methods: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: int = 16
    fit: FitConfig = field(default_factory=FitConfig)
    eval_samples: int = 20
    learner: dict[str, Any] = field(default_factory=dict)  # extra LearnerConfig fields (n_ctx, log_var_init, ...)


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def run_base2new(backbone: Backbone, dataset: Dataset, cfg: Base2NewConfig) -> dict[str, Any]:
    """Per method and seed: base/new figures and HM; plus per-method mean and std over seeds.
    Also keeps (confidence, correct) per method for reliability diagrams."""
    base_names, base_of = class_subset(dataset, "base")
    new_names, new_of = class_subset(dataset, "new")
    test_base = encode_samples(backbone, base_of(dataset.test), desc="base test features")
    test_new = encode_samples(backbone, new_of(dataset.test), desc="new test features")
    runs: list[dict[str, Any]] = []
    reliability: dict[str, dict[str, list[float]]] = {}
    for seed in cfg.seeds:
        shots = few_shot(base_of(dataset.train), cfg.shots, seed)
        train_feats, train_labels = encode_samples(backbone, shots, desc=f"train features (seed {seed})")
        for method in cfg.methods:
            torch.manual_seed(seed)
            clf = PromptClassifier.create(backbone, LearnerConfig(method, **cfg.learner), base_names)
            fit_cfg = FitConfig(**{**cfg.fit.as_dict(), "seed": seed})
            summary = fit(clf, train_feats, train_labels, fit_cfg)
            row: dict[str, Any] = {"method": method, "seed": seed, "train_accuracy": summary.get("train_accuracy")}
            for split, names, (feats, labels) in (("base", base_names, test_base), ("new", new_names, test_new)):
                clf.set_classes(names)
                pred = predict(clf, feats, cfg.eval_samples, seed)
                figures = evaluate_predictive(pred, labels)
                row.update({f"{split}_{k}": v for k, v in figures.items() if k in METRICS})
                rel = reliability.setdefault(method, {"confidence": [], "correct": []})
                rel["confidence"] += pred.probs.max(-1).values.tolist()
                rel["correct"] += (pred.probs.argmax(-1) == labels).float().tolist()
            row["hm_accuracy"] = harmonic_mean(row["base_accuracy"], row["new_accuracy"])
            log.info("%s seed %d: base %.3f new %.3f", method, seed, row["base_accuracy"], row["new_accuracy"])
            print(
                f"{method:>9} seed {seed}: base {100 * row['base_accuracy']:.1f}  new {100 * row['new_accuracy']:.1f}"
                f"  HM {100 * row['hm_accuracy']:.1f}",
                flush=True,
            )
            runs.append(row)
    return {"runs": runs, "summary": summarize_runs(runs, cfg.methods), "reliability": reliability}


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
