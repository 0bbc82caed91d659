"""vpt-eval base2new: train every method on base classes, test on base and new, over seeds.

Without --data it runs on the shapes world (pretrained and exported on first use, then cached).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from training.backbone import load_backbone
from training.base2new import Base2NewConfig, run_base2new
from training.cli_common import add_backbone_args, resolve_device, run_cli
from training.data import load_dataset
from training.fit import FitConfig
from training.learners import VARIANTS
from training.objective import ESTIMATORS
from training.report import markdown_table, write_report

# --quick: one seed, few epochs, larger batches, fewer samples; minutes on 2 CPU cores.
QUICK = {"seeds": [1], "epochs": 3, "batch_size": 8, "samples": 5, "eval_samples": 10}
# Default: three seeds, sized so the full benchmark fits ~30 minutes on 2 CPU cores (vpt-cond costs
# images x samples x classes text passes per step; the paper's batch 1, L=20, 10 epochs would take hours).
FULL = {"seeds": [1, 2, 3], "epochs": 4, "batch_size": 8, "samples": 4, "eval_samples": 8}


def build_parser() -> argparse.ArgumentParser:
    d = FitConfig()
    p = argparse.ArgumentParser(
        prog="vpt-eval base2new", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default=None, help="CoOp-layout or class-per-folder dataset (default: the shapes world)")
    p.add_argument("--world-dir", type=Path, default=None, help="where the shapes world is cached (default: data dir)")
    p.add_argument("--quick", action="store_true", help="one seed, few epochs, the quick shapes backbone")
    p.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 1 2 3 (--quick: 1)")
    p.add_argument("--shots", type=int, default=16, help="images per base class")
    p.add_argument("--epochs", type=int, default=None, help=f"default {FULL['epochs']} (--quick {QUICK['epochs']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {FULL['batch_size']}")
    p.add_argument("--lr", type=float, default=d.lr, help="SGD learning rate")
    p.add_argument("--samples", type=int, default=None, help="L, samples per image in the loss")
    p.add_argument("--eval-samples", type=int, default=None, help="M, samples per image at test time")
    p.add_argument("--beta", type=float, default=d.beta, help="KL weight")
    p.add_argument("--estimator", default=d.estimator, choices=ESTIMATORS, help="elbo (paper) or iwae")
    p.add_argument("--kl-reduction", default=d.kl_reduction, choices=("mean", "sum"), help="KL over dimensions")
    p.add_argument("--log-var-init", type=float, default=None, help="initial log sigma^2 (default: the learner's)")
    p.add_argument("--log-var-lr-scale", type=float, default=d.log_var_lr_scale, help="lr multiplier of log sigma^2")
    p.add_argument("--out", type=Path, default=Path("runs/base2new"), help="folder for the tables and plots")
    add_backbone_args(p, default_backbone=None)
    return p


def run(args: argparse.Namespace) -> int:
    logging.getLogger("training.base2new").setLevel(logging.INFO)  # one line per method and seed
    preset = QUICK if args.quick else FULL
    pick = {k: v if (v := getattr(args, k)) is not None else preset[k] for k in preset}
    device = resolve_device(args.device)
    if args.data is None:
        from training.shapes.cache import ensure_world

        world = ensure_world(args.world_dir, quick=args.quick)
        data, backbone_arg, weights_arg = world.dataset, str(world.config), str(world.weights)
    else:
        if not args.backbone:
            raise ValueError("with --data, give --backbone (and --weights)")
        data, backbone_arg, weights_arg = args.data, args.backbone, args.weights or "none"
    dataset = load_dataset(data)
    backbone = load_backbone(backbone_arg, weights_arg, device, args.cache_dir)
    fit_cfg = FitConfig(
        epochs=pick["epochs"],
        lr=args.lr,
        batch_size=pick["batch_size"],
        samples=pick["samples"],
        beta=args.beta,
        estimator=args.estimator,
        kl_reduction=args.kl_reduction,
        log_var_lr_scale=args.log_var_lr_scale,
    )
    learner = {} if args.log_var_init is None else {"log_var_init": args.log_var_init}
    cfg = Base2NewConfig(tuple(args.methods), tuple(pick["seeds"]), args.shots, fit_cfg, pick["eval_samples"], learner)
    result = run_base2new(backbone, dataset, cfg)
    result["config"] = {
        "dataset": dataset.name,
        "backbone": backbone_arg,
        "weights": weights_arg,
        **pick,
        "lr": args.lr,
        "beta": args.beta,
        "estimator": args.estimator,
        "shots": args.shots,
    }
    report = write_report(result, args.out, "vpt-eval base2new " + shlex.join(args.argv))
    print(markdown_table(result["summary"]))
    print(f"written: {report} (+ uncertainty.md, base2new.json, accuracy.png, reliability.png, coverage.png, roc.png)")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_cli(run, args)
