"""vpt-train: fit a prompt posterior on a few-shot split and write the artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training import presets
from training.backbone import load_backbone
from training.cli_common import add_backbone_args, add_config_args, config_from_args, resolve_device, run_cli
from training.data import load_dataset, require_train
from training.fit import FitConfig
from training.learners import VARIANTS, LearnerConfig
from training.objective import ESTIMATORS
from training.pipeline import CALIBRATION_CHOICES, CALIBRATION_HELP, CalibrationConfig, DataConfig, train_posterior

PRESET_FIELDS = ("epochs", "lr", "batch_size", "samples")
FIT_HELP = {
    "epochs": "passes over the few-shot images",
    "lr": "SGD learning rate (cosine schedule after the warm-up)",
    "batch_size": "images per step",
    "samples": "L, Monte Carlo samples per image in the loss",
    "beta": "KL weight",
    "estimator": "elbo (the paper) or iwae (the official code)",
    "kl_reduction": "KL over the W dimensions: mean (official code) or sum",
    "warmup_epochs": "epochs at the constant warm-up rate",
    "seed": "seed of the few-shot draw, the initialisation and the noise",
    "log_var_lr_scale": "learning-rate multiplier of the posterior's log-variance (its gradient is scaled by sigma)",
}
LEARNER_HELP = {
    "variant": "zeroshot, coop, cocoop, vpt (one global Gaussian) or vpt-cond (image-conditioned, the paper's)",
    "n_ctx": "learned context tokens",
    "ctx_init": "words to initialise the context ('' = random)",
    "template": "hand-written prompt used by the zeroshot variant",
    "log_var_init": "initial log sigma^2 of q(r) (-4.6: sigma 0.1)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpt-train",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Prints a JSON summary at the end: the artifact path, the variant, the classes trained on, and "
        "the train / calibration / test figures (README: 'Training on your own data').",
    )
    p.add_argument("--data", required=True, help="class-per-folder image folder, or a CoOp-layout dataset folder")
    d = DataConfig()
    p.add_argument("--shots", type=int, default=d.shots, help="images per class (<= 0: all)")
    p.add_argument("--classes", default=d.classes, choices=("base", "all"), help="train on the base half or all")
    p.add_argument("--split", type=Path, default=None, help="reuse a few-shot split file written by an earlier run")
    add_backbone_args(p)
    p.add_argument(
        "--preset",
        choices=("paper",),
        default=None,
        help="the paper's settings for this dataset (batch 1, its L and epochs, lr 0.002, augmentation); "
        "flags given explicitly still win",
    )
    add_config_args(p, LearnerConfig, LEARNER_HELP, {"variant": VARIANTS}, {"variant": "vpt-cond"})
    # the preset fills these four when they are not given (the dataclass default otherwise)
    add_config_args(
        p,
        FitConfig,
        FIT_HELP,
        {"estimator": ESTIMATORS, "kl_reduction": ("mean", "sum")},
        {k: None for k in PRESET_FIELDS},
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random resized crop + flip, re-encoded every epoch (official training; one image-tower pass "
        "per image per epoch instead of one in all; default off, on with --preset paper)",
    )
    p.add_argument("--out", type=Path, required=True, help="artifact path (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint next to --out")
    p.add_argument("--no-calibrate", action="store_true", help="skip the temperature / conformal / unknown fit")
    add_config_args(p, CalibrationConfig, CALIBRATION_HELP, CALIBRATION_CHOICES, prefix="calibration")
    return p


def train(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    dataset = require_train(load_dataset(args.data))
    backbone = load_backbone(args.backbone, args.weights, device, args.cache_dir)
    d = FitConfig()
    base = {k: getattr(d, k) for k in PRESET_FIELDS} | {"augment": False}
    if args.preset == "paper":
        base = {k: v for k, v in presets.paper(dataset.name).items() if k in base}
    pick = presets.resolve(vars(args), base)
    post = train_posterior(
        backbone,
        dataset,
        config_from_args(LearnerConfig, args),
        config_from_args(FitConfig, args, **{k: pick[k] for k in PRESET_FIELDS}),
        args.out,
        DataConfig(args.classes, args.shots, args.split, pick["augment"]),
        config_from_args(CalibrationConfig, args, prefix="calibration", enabled=not args.no_calibrate),
        resume=args.resume,
        sources={"backbone_arg": str(args.backbone), "weights_arg": str(args.weights), "preset": args.preset},
    )
    summary = {"artifact": str(args.out), "variant": args.variant, "classes": post.classnames}
    print(json.dumps({**summary, **post.metadata["metrics"]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(train, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
