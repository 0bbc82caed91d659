"""Image features for fitting: computed once from the evaluation preprocessing (the backbone is
frozen, so every epoch can reuse them), or, with augmentation, re-encoded from fresh random
crops and flips every time an image is visited, as the official CoOp/CoCoOp/VPT training does."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from training.backbone import Backbone
from training.data import ImageDataset, Sample
from training.progress import bar

# Dassl's "random_resized_crop" + "random_flip" with the CoOp configs' INPUT settings:
# RandomResizedCrop(size, scale=INPUT.RRCROP_SCALE=(0.08, 1.0), default ratio, bicubic), then
# RandomHorizontalFlip(p=0.5), then CLIP's normalisation.
CROP_SCALE = (0.08, 1.0)
FLIP_P = 0.5


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


def augment_transform(preprocess: Any) -> T.Compose:
    """The training transform of the official code, sized and normalised like `preprocess`."""
    steps = getattr(preprocess, "transforms", [])
    crop = next((t for t in steps if isinstance(t, T.CenterCrop)), None)
    norm = next((t for t in steps if isinstance(t, T.Normalize)), None)
    if crop is None or norm is None:
        raise ValueError(f"cannot derive an augmentation from {preprocess}: it has no CenterCrop/Normalize")
    return T.Compose(
        [
            T.RandomResizedCrop(crop.size, scale=CROP_SCALE, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(FLIP_P),
            T.ToTensor(),
            norm,
        ]
    )


class AugmentedFeatures:
    """Stands in for the feature tensor given to `fit`: indexing it decodes, augments and encodes
    those images now. fit visits every image once per epoch, so each epoch sees new crops; the
    cost is one image-tower pass per image per epoch (the cached path pays it once)."""

    def __init__(self, backbone: Backbone, samples: list[Sample]) -> None:
        if not samples:
            raise ValueError("no images to augment")
        self.backbone = backbone
        self.images = ImageDataset(samples, augment_transform(backbone.preprocess))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        batch = torch.stack([self.images[i][0] for i in index.reshape(-1).tolist()])
        return self.backbone.encode_images(batch)
