"""What vpt-train and vpt-eval share: flags for the backbone, device choice, error reporting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.artifact import ArtifactError
from training.backbone import BackboneError
from training.data import DataError
from training.progress import set_quiet
from training.text_tower import PromptError

DEFAULT_BACKBONE = "ViT-B-16-quickgelu"
DEFAULT_WEIGHTS = "openai"
USER_ERRORS = (DataError, BackboneError, ArtifactError, PromptError, ValueError, FileNotFoundError)


def add_backbone_args(parser: argparse.ArgumentParser, default_backbone: str | None = DEFAULT_BACKBONE) -> None:
    parser.add_argument(
        "--backbone", default=default_backbone, help="open_clip model name, or path to an open_clip JSON model config"
    )
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS if default_backbone else None,
        help="pretrained tag (e.g. openai), a local weights file, or 'none' for random weights",
    )
    parser.add_argument("--cache-dir", default=None, help="open_clip / Hugging Face cache folder for weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (and show tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_config_args(
    parser: argparse.ArgumentParser,
    config: type,
    helps: dict[str, str],
    choices: dict[str, tuple] | None = None,
    defaults: dict[str, Any] | None = None,
    prefix: str = "",
) -> None:
    """One --flag per field of a config dataclass (the default shown is the dataclass's own, or `defaults`).
    With a prefix, field `samples` becomes `--<prefix>-samples` (dest `<prefix>_samples`), so two configs
    with a field of the same name can share a parser."""
    choices = choices or {}
    defaults = defaults or {}
    for f in dataclasses.fields(config):
        if f.name not in helps:
            continue
        own = None if f.default is dataclasses.MISSING else f.default
        default = defaults.get(f.name, own)
        dest = f"{prefix}_{f.name}" if prefix else f.name
        flag = "--" + dest.replace("_", "-")
        text = helps[f.name] if default is not None or own is None else f"{helps[f.name]} (dataclass default {own})"
        if isinstance(own, bool):
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            kind = type(own) if own is not None else type(default) if default is not None else str
            parser.add_argument(flag, dest=dest, type=kind, default=default, choices=choices.get(f.name), help=text)


def config_from_args(config: type, args: argparse.Namespace, prefix: str = "", **fixed: Any) -> Any:
    """The dataclass built from the parsed flags of its fields (as add_config_args named them), plus `fixed`."""
    parsed = vars(args)
    values = {}
    for f in dataclasses.fields(config):
        dest = f"{prefix}_{f.name}" if prefix else f.name
        if dest in parsed:
            values[f.name] = parsed[dest]
    return config(**{**values, **fixed})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def run_cli(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a CLI body; user mistakes print one clear line and exit 2 instead of a traceback (-v adds it)."""
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    verbose = getattr(args, "verbose", False)
    set_quiet(getattr(args, "quiet", False))
    try:
        return body(args)
    except USER_ERRORS as exc:
        if verbose:  # a ValueError may also be a bug: -v shows where it came from
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun with --resume to continue from the last finished epoch" if hasattr(args, "resume") else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
