"""Load a frozen open_clip backbone from a model name or a JSON config, offline.

The identity recorded here (model name, weights tag or file digest, widths) is what a
posterior artifact is checked against: a posterior is only valid for the exact backbone
it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from training.scoring import Scorer

log = logging.getLogger(__name__)

WEIGHTS_NONE = "none"


class BackboneError(ValueError):
    """The backbone cannot be built as asked (unknown model, missing weights, wrong tower)."""


@dataclass(frozen=True)
class BackboneIdentity:
    """What a posterior must agree with to be used on this backbone."""

    model: str
    weights: str  # a pretrained tag, "sha256:<hex>" of a weights file, or "none"
    text_width: int
    embed_dim: int
    context_length: int

    def as_metadata(self) -> dict[str, str]:
        return {
            "backbone": self.model,
            "weights": self.weights,
            "text_width": str(self.text_width),
            "embed_dim": str(self.embed_dim),
            "context_length": str(self.context_length),
        }


@dataclass
class Backbone:
    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    identity: BackboneIdentity
    device: torch.device
    extra: dict[str, Any] = field(default_factory=dict)

    def scorer(self, temperature: float = 1.0) -> Scorer:
        """The logits function of this backbone (its learned logit scale), at a temperature."""
        return Scorer.create(self.model.logit_scale, temperature)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features in fp32 (autocast on CUDA)."""
        images = images.to(self.device, non_blocking=True)
        with autocast(self.device):
            feats = self.model.encode_image(images)
        return nn.functional.normalize(feats.float(), dim=-1)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op elsewhere (fp32 on CPU keeps answers exact)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_name(model: str) -> str:
    """Register a JSON config path with open_clip and return its model name (the file stem)."""
    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise BackboneError(f"backbone config not found: {path}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BackboneError(f"backbone config {path} is not valid JSON: {exc}") from exc
        if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise BackboneError(f"backbone config {path} lacks embed_dim/vision_cfg/text_cfg")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise BackboneError(
            f"unknown backbone {model!r}: give an open_clip model name (e.g. ViT-B-16-quickgelu) "
            "or a path to an open_clip JSON model config"
        )
    return model


def _weights_identity(weights: str) -> tuple[str | None, str]:
    """(value for open_clip's `pretrained`, identity string)."""
    if weights in ("", WEIGHTS_NONE):
        return None, WEIGHTS_NONE
    path = Path(weights)
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or path.exists():
        if not path.is_file():
            raise BackboneError(f"weights file not found: {path}")
        return str(path), "sha256:" + file_sha256(path)
    return weights, weights


def load_backbone(
    model: str, weights: str = WEIGHTS_NONE, device: str | torch.device = "cpu", cache_dir: str | None = None
) -> Backbone:
    """Build the frozen backbone. `weights` is a pretrained tag, a local file or "none"."""
    device = torch.device(device)
    name = resolve_model_name(model)
    pretrained, weights_id = _weights_identity(weights)
    if pretrained is not None and weights_id == pretrained:
        known = {tag for m, tag in open_clip.list_pretrained() if m == name}
        if pretrained not in known:
            raise BackboneError(
                f"unknown pretrained tag {pretrained!r} for {name}; known: {sorted(known) or 'none'}; "
                "or give a path to a local weights file"
            )
    try:
        # Random weights ("none") are seeded, so a posterior fitted on them is valid in another process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            clip_model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device, cache_dir=cache_dir
            )
    except (RuntimeError, OSError) as exc:
        if pretrained is not None and weights_id != pretrained:  # a local file
            raise BackboneError(f"weights file {pretrained} does not fit {name}: {exc}") from exc
        raise BackboneError(
            f"weights {weights!r} for {name} are neither in the cache ({cache_dir or 'default cache'}) nor "
            "downloadable here: fetch them ahead with `vpt-fetch-weights`, mount the cache, or pass a weights file"
        ) from exc
    clip_model.eval().requires_grad_(False)
    check_text_tower(clip_model)
    identity = BackboneIdentity(
        model=name,
        weights=weights_id,
        text_width=int(clip_model.token_embedding.weight.shape[1]),
        embed_dim=int(clip_model.text_projection.shape[1]),
        context_length=int(clip_model.context_length),
    )
    tokenizer = open_clip.get_tokenizer(name)
    log.info("backbone %s weights %s on %s", name, weights_id, device)
    return Backbone(clip_model, preprocess, tokenizer, identity, device)


def check_text_tower(model: nn.Module) -> None:
    """Prompt learning runs the text tower on input embeddings; only plain causal CLIP towers allow it."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    missing = [a for a in needed if getattr(model, a, None) is None]
    if missing:
        raise BackboneError(
            f"{type(model).__name__} has no plain CLIP text tower (missing {', '.join(missing)}); "
            "prompt learning needs an open_clip CLIP model with a built-in text transformer"
        )
    if not isinstance(model.text_projection, torch.Tensor):
        raise BackboneError("text projection is not a matrix; this text tower is not supported")
    if getattr(model, "attn_mask", None) is None:
        raise BackboneError("text tower is not causal (no attention mask); prompts cannot be cut to length")
    if model.text_pool_type != "argmax":
        raise BackboneError(f"text tower pools with {model.text_pool_type!r}; only 'argmax' (EOT) pooling is supported")
