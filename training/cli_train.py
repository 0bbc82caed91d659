"""vpt-train: fit a prompt posterior on a few-shot split and write the artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training import presets
from training.artifact import save_posterior
from training.backbone import load_backbone
from training.classifier import PromptClassifier
from training.cli_common import add_backbone_args, resolve_device, run_cli
from training.data import class_subset, few_shot, load_dataset, load_split, require_train, save_split
from training.evaluate import evaluate
from training.features import AugmentedFeatures, encode_samples
from training.fit import FitConfig, fit
from training.learners import DEFAULT_LOG_VAR_INIT, DEFAULT_TEMPLATE, VARIANTS, LearnerConfig
from training.objective import ESTIMATORS


def build_parser() -> argparse.ArgumentParser:
    d = FitConfig()
    p = argparse.ArgumentParser(prog="vpt-train", description=__doc__)
    p.add_argument("--data", required=True, help="class-per-folder image folder, or a CoOp-layout dataset folder")
    p.add_argument("--variant", default="vpt-cond", choices=VARIANTS)
    p.add_argument("--shots", type=int, default=16, help="images per class (<= 0: all)")
    p.add_argument("--classes", default="base", choices=("base", "all"), help="train on the base half or all classes")
    p.add_argument("--split", type=Path, default=None, help="reuse a few-shot split file written by an earlier run")
    add_backbone_args(p)
    p.add_argument(
        "--preset",
        choices=("paper",),
        default=None,
        help="the paper's settings for this dataset (batch 1, its L and epochs, lr 0.002, augmentation); "
        "flags given explicitly still win",
    )
    p.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    p.add_argument("--samples", type=int, default=None, help=f"L, Monte Carlo samples per image (default {d.samples})")
    p.add_argument("--beta", type=float, default=d.beta, help="KL weight")
    p.add_argument("--estimator", default=d.estimator, choices=ESTIMATORS)
    p.add_argument("--kl-reduction", default=d.kl_reduction, choices=("mean", "sum"))
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random resized crop + flip, re-encoded every epoch (official training; one image-tower pass "
        "per image per epoch instead of one in all)",
    )
    p.add_argument("--n-ctx", type=int, default=4)
    p.add_argument("--ctx-init", default="a photo of a", help="words to initialise the context ('' = random)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="hand-written prompt used by the zeroshot variant")
    p.add_argument("--log-var-init", type=float, default=DEFAULT_LOG_VAR_INIT, help="initial log sigma^2 of q(r)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, required=True, help="artifact path (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint next to --out")
    return p


def train(args: argparse.Namespace) -> int:
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors: {args.out}")
    device = resolve_device(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    dataset = require_train(load_dataset(args.data))
    classnames, restrict = class_subset(dataset, args.classes)
    split_path = args.out.with_name(args.out.stem + ".split.json")
    if args.split is not None:
        shots = restrict(load_split(args.split, dataset.root)["train"])
    else:
        shots = few_shot(restrict(dataset.train), args.shots, args.seed)
        save_split(split_path, dataset.root, {"train": shots, "val": [], "test": []})
    backbone = load_backbone(args.backbone, args.weights, device, args.cache_dir)
    cfg = LearnerConfig(args.variant, args.n_ctx, args.ctx_init, args.template, args.log_var_init)
    d = FitConfig()
    base = {"epochs": d.epochs, "batch_size": d.batch_size, "samples": d.samples, "lr": d.lr, "augment": False}
    if args.preset == "paper":
        base = {k: v for k, v in presets.paper(dataset.name).items() if k in base}
    pick = presets.resolve(vars(args), base)
    fit_cfg = FitConfig(
        epochs=pick["epochs"],
        lr=pick["lr"],
        batch_size=pick["batch_size"],
        samples=pick["samples"],
        beta=args.beta,
        estimator=args.estimator,
        kl_reduction=args.kl_reduction,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
    )
    clf = PromptClassifier.create(backbone, cfg, classnames)
    feats, labels = encode_samples(backbone, shots, desc="train features")
    train_feats = AugmentedFeatures(backbone, shots) if pick["augment"] else feats
    summary = fit(clf, train_feats, labels, fit_cfg, checkpoint=args.out.with_suffix(".ckpt"), resume=args.resume)
    metrics = {"train": {**summary, **evaluate(clf, feats, labels, pick["samples"], args.seed)}}
    test = restrict(dataset.test)
    if test:
        tf, tl = encode_samples(backbone, test, desc="test features")
        metrics["test"] = evaluate(clf, tf, tl, pick["samples"], args.seed)
    training = {
        **fit_cfg.as_dict(),
        "dataset": dataset.name,
        "classes": args.classes,
        "shots": args.shots,
        "augment": pick["augment"],
        "preset": args.preset,
        "n_train": len(shots),
        "backbone_arg": str(args.backbone),
        "weights_arg": str(args.weights),
    }
    save_posterior(args.out, clf.learner, backbone.identity, classnames, training, metrics)
    args.out.with_suffix(".ckpt").unlink(missing_ok=True)
    print(json.dumps({"artifact": str(args.out), "variant": args.variant, **metrics}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(train, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
