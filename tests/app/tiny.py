"""A tiny real model for service tests: seeded weights in a file, posterior artifacts per variant."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from training.artifact import save_posterior
from training.backbone import load_backbone
from training.classifier import PromptClassifier
from training.learners import LearnerConfig

TINY_CONFIG = Path(__file__).resolve().parents[1] / "assets" / "tiny-clip.json"
TRAINED = ["red", "green", "blue", "yellow"]


def write_tiny_model(folder: Path, variants: tuple[str, ...] = ("vpt",)) -> dict[str, Path]:
    """folder/weights.safetensors (seeded, so every process builds the same model) and one artifact per variant."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    backbone = load_backbone(str(TINY_CONFIG), "none", "cpu")
    weights = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(weights))
    backbone = load_backbone(str(TINY_CONFIG), str(weights), "cpu")
    paths = {"config": TINY_CONFIG, "weights": weights}
    for variant in variants:
        if variant == "zeroshot":
            continue
        torch.manual_seed(1)
        clf = PromptClassifier.create(backbone, LearnerConfig(variant, log_var_init=-1.0), TRAINED)
        with torch.no_grad():
            for p in clf.learner.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        paths[variant] = save_posterior(
            folder / f"{variant}.safetensors", clf.learner, backbone.identity, TRAINED, {}, {}
        )
    return paths
