"""The posterior artifact: one .safetensors file carrying a fitted prompt learner to serving.

Tensors are the learner's state dict; the header holds JSON-encoded metadata (DESIGN 2).
Loading checks the metadata against the running backbone and names any mismatch, because a
posterior fitted on one backbone silently produces nonsense on another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from training.backbone import Backbone, BackboneIdentity
from training.calibration import Calibration
from training.learners import LearnerConfig, PromptLearner, build_learner

FORMAT_VERSION = "2"  # 2 added the optional "calibration" field
READABLE_VERSIONS = ("1", "2")
_IDENTITY_FIELDS = ("backbone", "weights", "text_width", "embed_dim", "context_length")
# A few held-out image features [K, D], stored beside the learner's tensors: the serving engine measures its
# vpt-cond linear pass on them (random unit vectors stand in for images when an artifact has none).
PROBES_KEY = "probe_features"


class ArtifactError(ValueError):
    """The artifact is unreadable or does not belong to the running backbone."""


@dataclass
class Posterior:
    learner: PromptLearner
    classnames: list[str]
    metadata: dict[str, Any]
    calibration: Calibration | None = None  # None: fitted without held-out images (or format 1)
    probes: torch.Tensor | None = None  # [K, D] held-out image features (PROBES_KEY), if stored


def save_posterior(
    path: str | Path,
    learner: PromptLearner,
    identity: BackboneIdentity,
    classnames: list[str],
    training: dict[str, Any],
    metrics: dict[str, Any],
    calibration: Calibration | None = None,
    probes: torch.Tensor | None = None,
) -> Path:
    """Write tensors + metadata atomically (a crash mid-write never leaves a half file in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        **identity.as_metadata(),
        "learner": json.dumps(learner.cfg.as_dict()),
        "variant": learner.cfg.variant,
        "classnames": json.dumps(classnames),
        "training": json.dumps(training),
        "metrics": json.dumps(metrics),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if calibration is not None:
        meta["calibration"] = json.dumps(calibration.as_dict())
    tensors = {k: v.detach().cpu().contiguous() for k, v in learner.state_dict().items()}
    if probes is not None:
        tensors[PROBES_KEY] = probes.detach().float().cpu().contiguous()
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Header only, decoded (JSON fields parsed)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"posterior artifact not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable .safetensors artifact: {exc}") from exc
    if raw.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this version reads {', '.join(READABLE_VERSIONS)})"
        )
    meta: dict[str, Any] = dict(raw)
    for key in ("learner", "classnames", "training", "metrics"):
        try:
            meta[key] = json.loads(raw[key])
        except (KeyError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path}: metadata field {key!r} is missing or not JSON") from exc
    if "calibration" in raw:
        try:
            meta["calibration"] = Calibration.from_dict(json.loads(raw["calibration"]))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: metadata field 'calibration' is not valid: {exc}") from exc
    return meta


def check_identity(meta: dict[str, Any], identity: BackboneIdentity, path: str | Path = "artifact") -> None:
    running = identity.as_metadata()
    for key in _IDENTITY_FIELDS:
        if str(meta.get(key)) != running[key]:
            raise ArtifactError(
                f"{path} was fitted on {key}={meta.get(key)!r} but the running backbone has {key}={running[key]!r}"
            )


def load_posterior(path: str | Path, backbone: Backbone) -> Posterior:
    meta = read_metadata(path)
    check_identity(meta, backbone.identity, path)
    cfg = LearnerConfig(**meta["learner"])
    ident = backbone.identity
    learner = build_learner(cfg, ident.text_width, ident.embed_dim)
    state = load_file(str(path))
    probes = state.pop(PROBES_KEY, None)
    if probes is not None and (probes.ndim != 2 or probes.shape[1] != ident.embed_dim):
        raise ArtifactError(
            f"{path}: {PROBES_KEY} {tuple(probes.shape)} are not image features of width {ident.embed_dim}"
        )
    try:
        learner.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: tensors do not fit variant {cfg.variant}: {exc}") from exc
    learner.to(backbone.device).eval().requires_grad_(False)
    probes = probes.to(backbone.device) if probes is not None else None
    return Posterior(learner, list(meta["classnames"]), meta, meta.get("calibration"), probes)


def fitted_sources(meta: dict[str, Any]) -> tuple[str, str]:
    """(--backbone, --weights) as given to vpt-train, for tools that rebuild the backbone from an artifact."""
    training = meta.get("training", {})
    return str(training.get("backbone_arg", meta["backbone"])), str(training.get("weights_arg", meta["weights"]))
