"""Frozen image features, computed once: the backbone never changes, so every epoch reuses them."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from training.backbone import Backbone
from training.data import ImageDataset, Sample
from training.progress import bar


def encode_samples(
    backbone: Backbone, samples: list[Sample], batch_size: int = 64, desc: str = "image features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, D] on the backbone's device, labels [N]) for `samples`, in order."""
    if not samples:
        raise ValueError(f"no images to encode for {desc}")
    loader = DataLoader(ImageDataset(samples, backbone.preprocess), batch_size=batch_size, shuffle=False)
    feats, labels = [], []
    for images, y in bar(loader, desc=desc, unit="batch", leave=False):
        feats.append(backbone.encode_images(images))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels).to(backbone.device)
