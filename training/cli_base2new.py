"""vpt-eval base2new: train every method on base classes, test on base and new, over seeds.

Without --data it runs on the shapes world: the backbone shipped in the package (the same numbers on
every machine; --pretrain-world pretrains one here instead) and a data set rendered on first use, then cached.
The flags and presets defined here are shared by few-shot, cross-dataset and domain-gen.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path
from typing import Any

from training import presets
from training.backbone import Backbone, load_backbone
from training.base2new import Base2NewConfig, run_base2new
from training.cli_common import add_backbone_args, resolve_device, run_cli
from training.data import load_dataset, require_train
from training.fit import FitConfig
from training.learners import VARIANTS
from training.objective import ESTIMATORS
from training.report import markdown_table, write_report


def add_protocol_args(p: argparse.ArgumentParser, default_out: str, shots: bool = True) -> None:
    """Flags every protocol takes; None means "from the preset". shots=False leaves --shots to the caller."""
    p.add_argument("--world-dir", type=Path, default=None, help="where the shapes world is cached (default: data dir)")
    p.add_argument("--quick", action="store_true", help="the quick shapes world and the quick preset")
    p.add_argument(
        "--pretrain-world",
        action="store_true",
        help="pretrain the shapes backbone here instead of using the shipped one (minutes; differs by machine)",
    )
    p.add_argument(
        "--preset",
        choices=presets.PRESETS,
        default=None,
        help="cpu (default): sized for 2 cores; quick: CI; paper: the paper's per-dataset settings (GPU)",
    )
    p.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    if shots:
        p.add_argument("--shots", type=int, default=16, help="images per class")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--samples", type=int, default=None, help="L, samples per image in the loss")
    p.add_argument("--eval-samples", type=int, default=None, help="M, samples per image at test time")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="random crop + flip")
    d = FitConfig()
    p.add_argument("--beta", type=float, default=d.beta, help="KL weight")
    p.add_argument("--estimator", default=d.estimator, choices=ESTIMATORS, help="elbo (paper) or iwae")
    p.add_argument("--kl-reduction", default=d.kl_reduction, choices=("mean", "sum"), help="KL over dimensions")
    p.add_argument("--log-var-init", type=float, default=None, help="initial log sigma^2 (default: the learner's)")
    p.add_argument("--log-var-lr-scale", type=float, default=d.log_var_lr_scale, help="lr multiplier of log sigma^2")
    p.add_argument("--out", type=Path, default=Path(default_out), help="folder for the tables and plots")
    add_backbone_args(p, default_backbone=None)


def protocol_config(
    args: argparse.Namespace, dataset: str, transfer: bool = False
) -> tuple[Base2NewConfig, dict[str, Any]]:
    """The run's settings (flags over the preset) and the record of them for the report."""
    preset = args.preset or ("quick" if args.quick else "cpu")
    pick = presets.resolve(vars(args), presets.settings(preset, dataset, transfer))
    fit_cfg = FitConfig(
        epochs=pick["epochs"],
        lr=pick["lr"],
        batch_size=pick["batch_size"],
        samples=pick["samples"],
        beta=args.beta,
        estimator=args.estimator,
        kl_reduction=args.kl_reduction,
        log_var_lr_scale=args.log_var_lr_scale,
    )
    learner = {} if args.log_var_init is None else {"log_var_init": args.log_var_init}
    shots = args.shots if isinstance(args.shots, int) else max(args.shots)
    cfg = Base2NewConfig(
        tuple(args.methods), tuple(pick["seeds"]), shots, fit_cfg, pick["eval_samples"], learner, pick["augment"]
    )
    record = {
        "preset": preset,
        **pick,
        "beta": args.beta,
        "estimator": args.estimator,
        "kl_reduction": args.kl_reduction,
        "log_var_lr_scale": args.log_var_lr_scale,
        "shots": cfg.shots,
    }
    return cfg, record


def protocol_backbone(args: argparse.Namespace, world: Any | None) -> tuple[Backbone, str, str]:
    """The shapes world's backbone when running on it, else --backbone/--weights (required)."""
    if world is not None:
        backbone_arg, weights_arg = str(world.config), str(world.weights)
    else:
        if not args.backbone:
            raise ValueError("with --data/--source, give --backbone (and --weights)")
        backbone_arg, weights_arg = args.backbone, args.weights or "none"
    backbone = load_backbone(backbone_arg, weights_arg, resolve_device(args.device), args.cache_dir)
    return backbone, backbone_arg, weights_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpt-eval base2new", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default=None, help="CoOp-layout or class-per-folder dataset (default: the shapes world)")
    add_protocol_args(p, "runs/base2new")
    return p


def run(args: argparse.Namespace) -> int:
    logging.getLogger("training.base2new").setLevel(logging.INFO)  # one line per method and seed
    world = None
    if args.data is None:
        from training.shapes.cache import ensure_world

        world = ensure_world(args.world_dir, quick=args.quick, pretrain=args.pretrain_world)
    dataset = require_train(load_dataset(args.data or world.dataset))
    cfg, record = protocol_config(args, dataset.name)
    backbone, backbone_arg, weights_arg = protocol_backbone(args, world)
    result = run_base2new(backbone, dataset, cfg)
    result["config"] = {"dataset": dataset.name, "backbone": backbone_arg, "weights": weights_arg, **record}
    report = write_report(result, args.out, "vpt-eval base2new " + shlex.join(args.argv))
    print(markdown_table(result["summary"]))
    print(f"written: {report} (+ uncertainty.md, base2new.json, accuracy.png, reliability.png, coverage.png, roc.png)")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_cli(run, args)
