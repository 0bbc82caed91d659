"""Few-shot curves: the base-to-new protocol at 1, 2, 4, 8 and 16 shots per class.

Each run gets (about) the same number of optimiser steps whatever the shot count, so a 1-shot
run is trained as far as a 16-shot one instead of for 16x fewer steps: epochs are chosen as
round(steps / steps per epoch), at least one past the warm-up. The test sets are encoded once
and shared by every shot count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from training.backbone import Backbone
from training.base2new import Base2NewConfig, encode_base_new, run_base2new, summarize_runs
from training.data import Dataset, class_subset, few_shot

log = logging.getLogger(__name__)

SHOTS = (1, 2, 4, 8, 16)


def epochs_for(steps: int, n_images: int, batch_size: int, warmup_epochs: int) -> int:
    """Whole epochs giving about `steps` optimiser steps on n_images (and some after the warm-up)."""
    per_epoch = max(1, math.ceil(n_images / batch_size))
    return max(warmup_epochs + 1, round(steps / per_epoch))


def run_fewshot(
    backbone: Backbone, dataset: Dataset, cfg: Base2NewConfig, shots: tuple[int, ...], steps: int
) -> dict[str, Any]:
    """{"per_shots": {k: {"epochs", "steps", "runs", "summary"}}, ...} for every shot count k."""
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    tests = encode_base_new(backbone, dataset)
    _, base_of = class_subset(dataset, "base")
    per_shots: dict[str, Any] = {}
    for k in shots:
        n_images = len(few_shot(base_of(dataset.train), k, cfg.seeds[0]))
        epochs = epochs_for(steps, n_images, cfg.fit.batch_size, cfg.fit.warmup_epochs)
        run_cfg = dataclasses.replace(cfg, shots=k, fit=dataclasses.replace(cfg.fit, epochs=epochs))
        log.info("%d shots: %d images, %d epochs", k, n_images, epochs)
        result = run_base2new(backbone, dataset, run_cfg, tests)
        per_shots[str(k)] = {
            "epochs": epochs,
            "steps": epochs * math.ceil(n_images / cfg.fit.batch_size),
            "runs": result["runs"],
            "summary": result["summary"],
        }
    return {"shots": list(shots), "target_steps": steps, "per_shots": per_shots}


def check_mergeable(old: dict[str, Any], target_steps: int, config: dict[str, Any]) -> None:
    """Refuse adding runs to results run with other settings (their figures would not be comparable);
    checked before any training, so a refusal costs nothing."""
    if old.get("target_steps") != target_steps:
        raise ValueError(
            f"the results there were run at --steps {old.get('target_steps')}, these would be at {target_steps}; "
            "pass the same --steps or another --out"
        )
    old_cfg = old.get("config", {})
    differ = sorted(
        k for k in old_cfg.keys() | config.keys() if k not in ("shots", "seeds") and old_cfg.get(k) != config.get(k)
    )
    if differ:
        raise ValueError(f"the results there were run with other settings ({', '.join(differ)}); use another --out")


def merge_fewshot(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` results with `new` runs added (a run of the same method, seed and shot count replaced) and
    the summaries recomputed, so one sweep can be built up over several invocations (a method, a shot
    count or a seed at a time) instead of one long run that must not be interrupted."""
    check_mergeable(old, new["target_steps"], new["config"])
    per_shots = dict(old["per_shots"])
    for k, entry in new["per_shots"].items():
        redone = {(r["method"], r["seed"]) for r in entry["runs"]}
        kept = [r for r in per_shots.get(k, {}).get("runs", []) if (r["method"], r["seed"]) not in redone]
        runs = kept + entry["runs"]
        methods = tuple(dict.fromkeys(r["method"] for r in runs))
        per_shots[k] = {**entry, "runs": runs, "summary": summarize_runs(runs, methods)}
    shots = sorted(int(k) for k in per_shots)
    seeds = sorted({r["seed"] for entry in per_shots.values() for r in entry["runs"]})
    return {
        **new,
        "shots": shots,
        "per_shots": {str(k): per_shots[str(k)] for k in shots},
        "config": {**new["config"], "seeds": seeds},
    }
