"""vpt-eval base2new: train every method on base classes, test on base and new, over seeds.

Without --data it runs on the shapes world: the backbone shipped in the package (the same numbers on
every machine; --pretrain-world pretrains one here instead) and a data set rendered on first use, then cached.
"""

from __future__ import annotations

import argparse
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
    p = argparse.ArgumentParser(prog="vpt-eval base2new", description=__doc__)
    p.add_argument("--data", default=None, help="CoOp-layout or class-per-folder dataset (default: the shapes world)")
    p.add_argument("--world-dir", type=Path, default=None, help="where the shapes world is cached (default: data dir)")
    p.add_argument("--quick", action="store_true", help="one seed, few epochs, the quick shapes backbone")
    p.add_argument(
        "--pretrain-world",
        action="store_true",
        help="pretrain the shapes backbone here instead of using the shipped one (minutes; differs by machine)",
    )
    p.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--samples", type=int, default=None, help="L, samples per image in the loss")
    p.add_argument("--eval-samples", type=int, default=None, help="M, samples per image at test time")
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--estimator", default="elbo", choices=ESTIMATORS)
    p.add_argument("--kl-reduction", default="mean", choices=("mean", "sum"))
    p.add_argument("--log-var-init", type=float, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/base2new"))
    add_backbone_args(p, default_backbone=None)
    return p


def run(args: argparse.Namespace) -> int:
    preset = QUICK if args.quick else FULL
    pick = {k: v if (v := getattr(args, k)) is not None else preset[k] for k in preset}
    device = resolve_device(args.device)
    if args.data is None:
        from training.shapes.cache import ensure_world

        world = ensure_world(args.world_dir, quick=args.quick, pretrain=args.pretrain_world)
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
    print(f"written: {report} (+ base2new.json, accuracy.png, reliability.png)")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_cli(run, args)
