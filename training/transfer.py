"""Cross-dataset transfer and domain generalisation: fit on one dataset, test on others.

The paper's two transfer tables share one computation: train every method on few shots of all
source classes (ImageNet in the paper), then test it unchanged on each target's test set with
the target's own class names (10 other datasets for cross-dataset; ImageNet-V2/-Sketch/-A/-R for
domain generalisation, where -A and -R carry 200 of ImageNet's classes). On the shapes world:
clean-style images -> infrared images (domain shift), or base classes -> new classes.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from training.backbone import Backbone
from training.base2new import Base2NewConfig, TestSet, fit_method, score, summarize_runs, train_features
from training.data import Dataset, few_shot
from training.features import encode_samples

log = logging.getLogger(__name__)


def run_transfer(
    backbone: Backbone, source: Dataset, targets: dict[str, Dataset], cfg: Base2NewConfig
) -> dict[str, Any]:
    """Per method and seed, the figures on the source test set (if any) and every target's,
    keyed "<dataset>/<metric>", plus "target_accuracy": the mean over targets."""
    if not targets:
        raise ValueError("give at least one target dataset")
    if source.name in targets:
        raise ValueError(f"target name {source.name!r} is the source's; name the targets apart")
    tests: dict[str, TestSet] = {}
    for name, ds in [(source.name, source), *targets.items()]:
        if ds.test:
            tests[name] = (ds.classnames, encode_samples(backbone, ds.test, desc=f"{name} test features"))
        elif name in targets:
            raise ValueError(f"target {name} ({ds.root}) has no test images")
    runs: list[dict[str, Any]] = []
    reliability: dict[str, dict[str, list[float]]] = {}
    for seed in cfg.seeds:
        shots = few_shot(source.train, cfg.shots, seed)
        train = train_features(backbone, shots, cfg.augment, desc=f"{source.name} train features (seed {seed})")
        for method in cfg.methods:
            clf, summary, _ = fit_method(backbone, method, source.classnames, train, cfg, seed)
            row: dict[str, Any] = {"method": method, "seed": seed, "train_accuracy": summary.get("train_accuracy")}
            for name, test in tests.items():
                rel = reliability.setdefault(method, {}) if name in targets else {}
                row.update({f"{name}/{k}": v for k, v in score(clf, test, cfg.eval_samples, seed, rel).items()})
            row["target_accuracy"] = statistics.fmean(row[f"{name}/accuracy"] for name in targets)
            accuracies = "  ".join(f"{name} {100 * row[f'{name}/accuracy']:.1f}" for name in tests)
            log.info("%s seed %d: %s  target mean %.1f", method, seed, accuracies, 100 * row["target_accuracy"])
            runs.append(row)
    return {
        "source": source.name,
        "targets": list(targets),
        "datasets": list(tests),
        "runs": runs,
        "summary": summarize_runs(runs, cfg.methods),
        "reliability": reliability,
    }
