"""vpt-fetch-weights: download pretrained CLIP weights ahead of time, for hosts without network.

Run it where there is network; then mount the cache folder (or the exported file) on the
offline host and start `vpt-serve` with HF_HUB_OFFLINE=1 and the same --cache-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

from training.backbone import load_backbone
from training.cli_common import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vpt-fetch-weights", description=__doc__)
    p.add_argument("spec", nargs="?", default="ViT-B-16-quickgelu:openai", help="MODEL:TAG (default %(default)s)")
    p.add_argument("--cache-dir", type=Path, required=True, help="cache folder to fill (mount it as VPT_CACHE_DIR)")
    p.add_argument("--export", type=Path, default=None, help="also write the weights as one .safetensors file")
    return p


def fetch(args: argparse.Namespace) -> int:
    model, sep, tag = args.spec.partition(":")
    if not sep or not model or not tag:
        raise ValueError(f"expected MODEL:TAG, e.g. ViT-B-16-quickgelu:openai; got {args.spec!r}")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(model, tag, "cpu", str(args.cache_dir))
    print(f"{model} ({tag}) is cached in {args.cache_dir}")
    if args.export is not None:
        state = {k: v.contiguous() for k, v in backbone.model.state_dict().items()}
        save_file(state, str(args.export))
        print(f"weights written to {args.export}: serve with --backbone {model} --weights {args.export}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(fetch, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
