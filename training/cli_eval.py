"""vpt-eval: accuracy, calibration and uncertainty quality of a posterior (or zero-shot CLIP)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.artifact import fitted_sources, load_posterior, read_metadata
from training.backbone import load_backbone
from training.calibration import is_calibrated_for
from training.classifier import PromptClassifier
from training.cli_common import add_backbone_args, resolve_device, run_cli, write_json
from training.data import class_subset, load_dataset
from training.evaluate import evaluate, evaluate_raw_and_calibrated
from training.features import encode_samples
from training.learners import DEFAULT_TEMPLATE, LearnerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpt-eval",
        description=__doc__,
        epilog="Benchmarks: `vpt-eval base2new|few-shot|cross-dataset|domain-gen --help`.",
    )
    p.add_argument("--data", required=True, help="class-per-folder image folder, or a CoOp-layout dataset folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--posterior", type=Path, help="artifact written by vpt-train")
    src.add_argument("--variant", choices=("zeroshot",), help="evaluate plain CLIP with --template instead")
    p.add_argument("--template", default=DEFAULT_TEMPLATE)
    p.add_argument("--classes", default="all", choices=("base", "new", "all"))
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--samples", type=int, default=20, help="M, Monte Carlo samples per image")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    add_backbone_args(p, default_backbone=None)
    return p


def run_eval(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    dataset = load_dataset(args.data)
    classnames, restrict = class_subset(dataset, args.classes)
    samples = restrict(getattr(dataset, args.split))
    if not samples:
        raise ValueError(f"{dataset.name} has no {args.split} images for the {args.classes} classes")
    if args.posterior is not None:
        meta = read_metadata(args.posterior)
        backbone_arg, weights_arg = fitted_sources(meta)
        backbone = load_backbone(args.backbone or backbone_arg, args.weights or weights_arg, device, args.cache_dir)
        post = load_posterior(args.posterior, backbone)
        clf = PromptClassifier(backbone, post.learner, classnames)
        calibration = post.calibration
        model = f"{meta['variant']}:{args.posterior.name}"
    else:
        if not args.backbone:
            raise ValueError("--variant zeroshot needs --backbone (and --weights)")
        backbone = load_backbone(args.backbone, args.weights or "none", device, args.cache_dir)
        clf = PromptClassifier.create(backbone, LearnerConfig("zeroshot", template=args.template), classnames)
        model, calibration = "zeroshot", None
    feats, labels = encode_samples(backbone, samples, desc=f"{args.split} features")
    figures = {"model": model, "dataset": dataset.name, "classes": args.classes, "split": args.split}
    figures["samples"] = args.samples
    if calibration is not None:  # the served (calibrated) figures, and what the raw posterior gives
        figures["temperature"] = calibration.temperature
        figures["calibrated_classes"] = is_calibrated_for(calibration, classnames)
        raw, served = evaluate_raw_and_calibrated(clf, feats, labels, args.samples, args.seed, calibration)
        figures["uncalibrated"] = raw
        figures.update(served)
    else:
        figures.update(evaluate(clf, feats, labels, args.samples, args.seed))
    print(json.dumps(figures, indent=2))
    if args.out is not None:
        write_json(args.out, figures)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["base2new"]:
        from training.cli_base2new import main as base2new_main

        return base2new_main(argv[1:])
    if argv[:1] == ["few-shot"]:
        from training.cli_fewshot import main as fewshot_main

        return fewshot_main(argv[1:])
    if argv[:1] and argv[0] in ("cross-dataset", "domain-gen"):
        from training.cli_transfer import main as transfer_main

        return transfer_main(argv[0], argv[1:])
    return run_cli(run_eval, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
