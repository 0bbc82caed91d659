"""One training pipeline as a library call: few-shot split -> fit -> calibrate -> evaluate -> artifact.

`vpt-train`, the demo build and the benchmarks all call `train_posterior`, so a default lives in
one place (LearnerConfig, FitConfig, CalibrationConfig) and an error reaches the caller whole.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from training.artifact import Posterior, save_posterior
from training.backbone import Backbone
from training.calibration import (
    CONFORMAL_METHODS,
    DEFAULT_FALSE_ALARM,
    DEFAULT_METHOD,
    DEFAULT_UNKNOWN_SCORE,
    UNKNOWN_SCORES,
    Calibration,
    calibrate_logits,
)
from training.classifier import PromptClassifier
from training.data import Dataset, Sample, class_subset, few_shot, load_split, save_split
from training.evaluate import evaluate, evaluate_raw_and_calibrated, predict_logits
from training.features import AugmentedFeatures, encode_samples
from training.fit import FitConfig, fit
from training.learners import LearnerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationConfig:
    enabled: bool = True  # fit T, conformal scores and the unknown threshold on held-out images
    method: str = DEFAULT_METHOD  # conformal score: aps or lac
    unknown_score: str = DEFAULT_UNKNOWN_SCORE
    false_alarm: float = DEFAULT_FALSE_ALARM  # target share of known images flagged unknown
    samples: int = 20  # M on the held-out images
    max_per_class: int = 64  # held-out images per class used (bounds the cost on big datasets)

    def __post_init__(self) -> None:
        if self.method not in CONFORMAL_METHODS:
            raise ValueError(f"unknown conformal method {self.method!r}; use one of {', '.join(CONFORMAL_METHODS)}")
        if not 0 < self.false_alarm < 1:
            raise ValueError(f"false-alarm rate must be in (0, 1), got {self.false_alarm}")


# --flags of CalibrationConfig (training/cli_common.add_config_args), for vpt-train and vpt-calibrate alike.
CALIBRATION_HELP = {
    "method": "conformal score of the prediction sets: lac (smallest sets) or aps (adaptive)",
    "unknown_score": "the score the served unknown flag thresholds",
    "false_alarm": "share of known-class held-out images the unknown flag may fire on",
    "samples": "M, Monte Carlo samples per image for calibration and the test figures",
    "max_per_class": "held-out images per class used for calibration",
}
CALIBRATION_CHOICES = {"method": CONFORMAL_METHODS, "unknown_score": UNKNOWN_SCORES}


@dataclass(frozen=True)
class DataConfig:
    classes: str = "base"  # base (first half of the labels), new or all
    shots: int = 16  # images per class (<= 0: all)
    split: Path | None = None  # reuse a few-shot split file written by an earlier run
    augment: bool = False  # random resized crop + flip, re-encoded every epoch (training/features.py)


def held_out(dataset: Dataset, restrict, shots: list[Sample], max_per_class: int, seed: int) -> list[Sample]:
    """Labelled images for calibration: the val split when there is one, else the training images the
    few-shot sampler did not pick. Never the test split."""
    pool = restrict(dataset.val)
    source = "val split"
    if not pool:
        picked = {s.path for s in shots}
        pool = [s for s in restrict(dataset.train) if s.path not in picked]
        source = "unpicked training images"
    chosen = _cap_per_class(pool, max_per_class, seed)
    log.info("calibration on %d held-out images (%s)", len(chosen), source)
    return chosen


def _cap_per_class(samples: list[Sample], cap: int, seed: int) -> list[Sample]:
    """At most `cap` samples per class, drawn reproducibly (all of them for smaller classes)."""
    by_label: dict[int, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_label.setdefault(s.label, []).append(s)
    rng = random.Random(seed + 1000)
    return [
        s
        for label in sorted(by_label)
        for s in (by_label[label] if len(by_label[label]) <= cap else rng.sample(by_label[label], cap))
    ]


def calibrate(
    clf: PromptClassifier, feats: torch.Tensor, labels: torch.Tensor, cfg: CalibrationConfig, seed: int
) -> Calibration:
    """Calibration of clf's classes from held-out features (logits taken at temperature 1)."""
    clf.temperature = 1.0
    logits = predict_logits(clf, feats, cfg.samples, seed)
    cal = calibrate_logits(logits, labels, clf.classnames, cfg.method, cfg.unknown_score, cfg.false_alarm)
    clf.temperature = cal.temperature
    return cal


PROBE_IMAGES = 4  # held-out image features stored in the artifact (training/artifact.py PROBES_KEY)


def probe_subset(features: torch.Tensor, seed: int, count: int = PROBE_IMAGES) -> torch.Tensor:
    """A seeded handful of held-out image features: what the serving engine measures approximations on."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    return features[order[:count].to(features.device)]


def fit_posterior(
    clf: PromptClassifier,
    fit_cfg: FitConfig,
    train: tuple[torch.Tensor | AugmentedFeatures, torch.Tensor],
    held: tuple[torch.Tensor, torch.Tensor] | None,
    calibration: CalibrationConfig = CalibrationConfig(),
    checkpoint: Path | None = None,
    resume: bool = False,
) -> tuple[dict[str, Any], Calibration | None]:
    """The core every trainer shares: fit a fresh classifier on train features, then calibrate on
    held-out features (when enabled and given). The classifier comes back at the fitted temperature."""
    summary = fit(clf, *train, fit_cfg, checkpoint=checkpoint, resume=resume)
    cal = None
    if calibration.enabled and held is not None and len(held[1]):
        cal = calibrate(clf, *held, calibration, fit_cfg.seed)
    elif calibration.enabled:
        log.warning("no held-out images for calibration: the posterior stays uncalibrated")
    return summary, cal


def train_posterior(
    backbone: Backbone,
    dataset: Dataset,
    learner: LearnerConfig,
    fit_cfg: FitConfig,
    out: Path,
    data: DataConfig = DataConfig(),
    calibration: CalibrationConfig = CalibrationConfig(),
    resume: bool = False,
    sources: dict[str, str] | None = None,
) -> Posterior:
    """Fit, calibrate, evaluate and write the artifact at `out` (with the split file beside it)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"the artifact path must end in .safetensors: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    classnames, restrict = class_subset(dataset, data.classes)
    if data.split is not None:
        shots = restrict(load_split(data.split, dataset.root)["train"])
    else:
        shots = few_shot(restrict(dataset.train), data.shots, fit_cfg.seed)
        save_split(out.with_name(out.stem + ".split.json"), dataset.root, {"train": shots, "val": [], "test": []})
    if not shots:
        raise ValueError(f"no training images for the {data.classes} classes of {dataset.name}")
    log.info("training %s on %d images of %d %s classes", learner.variant, len(shots), len(classnames), data.classes)
    clf = PromptClassifier.create(backbone, learner, classnames)  # refuses a bad config before any encoding
    train = encode_samples(backbone, shots, desc="train features")
    fitted_on = (AugmentedFeatures(backbone, shots), train[1]) if data.augment else train
    held = None
    if calibration.enabled:
        pool = held_out(dataset, restrict, shots, calibration.max_per_class, fit_cfg.seed)
        held = encode_samples(backbone, pool, desc="held-out features") if pool else None
    checkpoint = out.with_suffix(".ckpt")
    summary, cal = fit_posterior(clf, fit_cfg, fitted_on, held, calibration, checkpoint, resume)
    metrics: dict[str, Any] = {"train": {**summary, **evaluate(clf, *train, fit_cfg.samples, fit_cfg.seed)}}
    if cal is not None:
        metrics["calibration"] = {"n": len(cal.scores), "temperature": cal.temperature}
    test = restrict(dataset.test)
    if test:
        tf, tl = encode_samples(backbone, test, desc="test features")
        if cal is None:
            metrics["test"] = evaluate(clf, tf, tl, calibration.samples, fit_cfg.seed)
        else:
            metrics["test_uncalibrated"], metrics["test"] = evaluate_raw_and_calibrated(
                clf, tf, tl, calibration.samples, fit_cfg.seed, cal
            )
    training = {
        **fit_cfg.as_dict(),
        "dataset": dataset.name,
        "classes": data.classes,
        "shots": data.shots,
        "augment": data.augment,
        "n_train": len(shots),
        "calibration": asdict(calibration),
        **(sources or {}),
    }
    probes = probe_subset(held[0], fit_cfg.seed) if held is not None else None
    save_posterior(out, clf.learner, backbone.identity, classnames, training, metrics, cal, probes)
    checkpoint.unlink(missing_ok=True)
    return Posterior(clf.learner, classnames, {"variant": learner.variant, "metrics": metrics}, cal)
