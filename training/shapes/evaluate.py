"""Frozen-feature measurements used to calibrate the world: zero-shot, class means, linear probe.

Images go in as uint8 arrays and are normalised exactly as open_clip's preprocess does for a
32 px PNG (resize and crop are identities at the native size), so numbers measured here in
memory equal those measured on the exported files.
"""

from __future__ import annotations

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from training.shapes.world import SHIFTED, WorldConfig, labelled_sample

DEFAULT_TEMPLATE = "a photo of a {}."

_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W] (open_clip's OpenAI mean/std)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - _MEAN) / _STD


def encode_text_ids(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """model.encode_text, cut to the longest caption in the batch (exact: causal mask, EOT pooling)."""
    eot = ids.argmax(dim=-1)
    length = int(eot.max()) + 1
    x = model.token_embedding(ids[:, :length]) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot] @ model.text_projection
    return nn.functional.normalize(x, dim=-1)


@torch.no_grad()
def encode_images(model: nn.Module, images: np.ndarray, device: str = "cpu", batch: int = 512) -> torch.Tensor:
    feats = [model.encode_image(to_tensor(images[i : i + batch]).to(device)) for i in range(0, len(images), batch)]
    return nn.functional.normalize(torch.cat(feats).float(), dim=-1).cpu()


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer, texts: list[str], device: str = "cpu") -> torch.Tensor:
    return encode_text_ids(model, tokenizer(texts).to(device)).float().cpu()


def render_labelled(
    cfg: WorldConfig, seed: int, stream: str, per_class: int, n_classes: int, shift_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """per_class images of every class: (uint8 images, labels, is_shifted)."""
    images, labels, shifted = [], [], []
    for label in range(n_classes):
        for k in range(per_class):
            img, domain = labelled_sample(cfg, seed, stream, label * per_class + k, label, shift_fraction)
            images.append(img)
            labels.append(label)
            shifted.append(domain == SHIFTED)
    return np.stack(images), np.array(labels), np.array(shifted)


def zero_shot_accuracy(
    model: nn.Module,
    tokenizer,
    feats: torch.Tensor,
    labels: np.ndarray,
    names: list[str],
    template: str = DEFAULT_TEMPLATE,
    device: str = "cpu",
) -> float:
    text = encode_texts(model, tokenizer, [template.format(n) for n in names], device)
    return accuracy(feats @ text.T, labels)


def accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(dim=-1).numpy() == labels).mean())


def nearest_mean_accuracy(
    train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray
) -> float:
    """Classify by cosine to each class's mean training feature (a cheap few-shot ceiling)."""
    n = int(train_labels.max()) + 1
    means = torch.stack([train[torch.from_numpy(train_labels == c)].mean(0) for c in range(n)])
    return accuracy(test @ nn.functional.normalize(means, dim=-1).T, test_labels)


def linear_probe_accuracy(
    train: torch.Tensor,
    train_labels: np.ndarray,
    test: torch.Tensor,
    test_labels: np.ndarray,
    steps: int = 300,
    weight_decay: float = 1e-4,
) -> float:
    """Multinomial logistic regression on frozen features (the other few-shot ceiling)."""
    torch.manual_seed(0)
    n = int(train_labels.max()) + 1
    head = nn.Linear(train.shape[1], n)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=weight_decay)
    y = torch.from_numpy(train_labels)
    x = train * 10.0
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return accuracy(head(test * 10.0), test_labels)
