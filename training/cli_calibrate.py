"""vpt-calibrate: refit the temperature, conformal scores and unknown threshold of a posterior for a
class set (e.g. after registering new classes zero-shot) from labelled images; writes a new artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.artifact import fitted_sources, load_posterior, read_metadata, save_posterior
from training.backbone import load_backbone
from training.classifier import PromptClassifier
from training.cli_common import add_backbone_args, add_config_args, config_from_args, resolve_device, run_cli
from training.data import class_subset, load_dataset, load_split
from training.evaluate import evaluate
from training.features import encode_samples
from training.pipeline import (
    CALIBRATION_CHOICES,
    CALIBRATION_HELP,
    CalibrationConfig,
    calibrate,
    held_out,
    probe_subset,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpt-calibrate", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--posterior", type=Path, required=True, help="artifact written by vpt-train")
    p.add_argument("--data", required=True, help="class-per-folder image folder, or a CoOp-layout dataset folder")
    p.add_argument(
        "--classes", default="all", choices=("base", "new", "all"), help="the class set the server will have"
    )
    p.add_argument("--out", type=Path, required=True, help="the recalibrated artifact (.safetensors)")
    add_config_args(p, CalibrationConfig, CALIBRATION_HELP, CALIBRATION_CHOICES)
    p.add_argument("--seed", type=int, default=1)
    add_backbone_args(p, default_backbone=None)
    return p


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors: {args.out}")
    device = resolve_device(args.device)
    meta = read_metadata(args.posterior)
    backbone_arg, weights_arg = fitted_sources(meta)
    backbone = load_backbone(args.backbone or backbone_arg, args.weights or weights_arg, device, args.cache_dir)
    post = load_posterior(args.posterior, backbone)
    dataset = load_dataset(args.data)
    classnames, restrict = class_subset(dataset, args.classes)
    # Without a val split, held-out images are the training images the posterior was not fitted on:
    # the split file written beside it names those shots (it must belong to this dataset then).
    split_file = args.posterior.with_name(args.posterior.stem + ".split.json")
    shots = []
    if not restrict(dataset.val) and split_file.is_file():
        shots = restrict(load_split(split_file, dataset.root)["train"])
    cfg = config_from_args(CalibrationConfig, args)
    pool = held_out(dataset, restrict, shots, cfg.max_per_class, args.seed)
    if not pool:
        raise ValueError(f"{dataset.name} has no held-out labelled images for the {args.classes} classes")
    clf = PromptClassifier(backbone, post.learner, classnames)
    feats, labels = encode_samples(backbone, pool, desc="held-out features")
    cal = calibrate(clf, feats, labels, cfg, args.seed)
    metrics = {
        **meta["metrics"],
        "recalibration": {"classes": args.classes, "n": len(pool), "temperature": cal.temperature},
    }
    test = restrict(dataset.test)
    if test:
        tf, tl = encode_samples(backbone, test, desc="test features")
        metrics["recalibration"]["test"] = evaluate(clf, tf, tl, cfg.samples, args.seed, cal)
    probes = probe_subset(feats, args.seed)
    save_posterior(args.out, post.learner, backbone.identity, post.classnames, meta["training"], metrics, cal, probes)
    print(json.dumps({"artifact": str(args.out), **metrics["recalibration"]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
