"""vpt-train: fit a prompt posterior on a few-shot split and write the artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.backbone import load_backbone
from training.calibration import CONFORMAL_METHODS, UNKNOWN_SCORES
from training.cli_common import add_backbone_args, resolve_device, run_cli
from training.data import load_dataset
from training.fit import FitConfig
from training.learners import DEFAULT_LOG_VAR_INIT, DEFAULT_TEMPLATE, VARIANTS, LearnerConfig
from training.objective import ESTIMATORS
from training.pipeline import CalibrationConfig, DataConfig, train_posterior


def build_parser() -> argparse.ArgumentParser:
    d = FitConfig()
    p = argparse.ArgumentParser(prog="vpt-train", description=__doc__)
    p.add_argument("--data", required=True, help="class-per-folder image folder, or a CoOp-layout dataset folder")
    p.add_argument("--variant", default="vpt-cond", choices=VARIANTS)
    p.add_argument("--shots", type=int, default=16, help="images per class (<= 0: all)")
    p.add_argument("--classes", default="base", choices=("base", "all"), help="train on the base half or all classes")
    p.add_argument("--split", type=Path, default=None, help="reuse a few-shot split file written by an earlier run")
    add_backbone_args(p)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--samples", type=int, default=d.samples, help="L, Monte Carlo samples per image in the loss")
    p.add_argument("--beta", type=float, default=d.beta, help="KL weight")
    p.add_argument("--estimator", default=d.estimator, choices=ESTIMATORS)
    p.add_argument("--kl-reduction", default=d.kl_reduction, choices=("mean", "sum"))
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    p.add_argument("--n-ctx", type=int, default=4)
    p.add_argument("--ctx-init", default="a photo of a", help="words to initialise the context ('' = random)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="hand-written prompt used by the zeroshot variant")
    p.add_argument("--log-var-init", type=float, default=DEFAULT_LOG_VAR_INIT, help="initial log sigma^2 of q(r)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, required=True, help="artifact path (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint next to --out")
    c = CalibrationConfig()
    p.add_argument("--no-calibrate", action="store_true", help="skip the temperature / conformal / unknown calibration")
    p.add_argument("--conformal", default=c.method, choices=CONFORMAL_METHODS, help="conformal score")
    p.add_argument("--unknown-score", default=c.unknown_score, choices=UNKNOWN_SCORES, help="served unknown score")
    p.add_argument(
        "--false-alarm", type=float, default=c.false_alarm, help="share of known images the unknown flag may fire on"
    )
    p.add_argument("--eval-samples", type=int, default=c.samples, help="M, samples per image for calibration and test")
    return p


def train(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    dataset = load_dataset(args.data)
    backbone = load_backbone(args.backbone, args.weights, device, args.cache_dir)
    fit_cfg = FitConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        samples=args.samples,
        beta=args.beta,
        estimator=args.estimator,
        kl_reduction=args.kl_reduction,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
    )
    post = train_posterior(
        backbone,
        dataset,
        LearnerConfig(args.variant, args.n_ctx, args.ctx_init, args.template, args.log_var_init),
        fit_cfg,
        args.out,
        DataConfig(args.classes, args.shots, args.split),
        CalibrationConfig(
            enabled=not args.no_calibrate,
            method=args.conformal,
            unknown_score=args.unknown_score,
            false_alarm=args.false_alarm,
            samples=args.eval_samples,
        ),
        resume=args.resume,
        sources={"backbone_arg": str(args.backbone), "weights_arg": str(args.weights)},
    )
    print(json.dumps({"artifact": str(args.out), "variant": args.variant, **post.metadata["metrics"]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(train, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
