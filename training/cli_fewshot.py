"""vpt-eval few-shot: base-to-new accuracy, HM and new-class ECE at 1, 2, 4, 8 and 16 shots.

Every run gets about the same number of optimiser steps (--steps; default: what the preset's
epochs give at the largest shot count), so low-shot runs are trained as far as high-shot ones.
Without --data it runs on the shapes world. With --add, the runs join the results already in --out
(a sweep built a method, a shot count or a seed at a time).
"""

from __future__ import annotations

import argparse
import json
import shlex

from training.cli_base2new import add_protocol_args, protocol_backbone, protocol_config
from training.cli_common import run_cli
from training.data import class_subset, few_shot, load_dataset, require_train
from training.fewshot import SHOTS, check_mergeable, merge_fewshot, run_fewshot
from training.report import fewshot_table, write_fewshot_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vpt-eval few-shot", description=__doc__)
    p.add_argument("--data", default=None, help="CoOp-layout or class-per-folder dataset (default: the shapes world)")
    p.add_argument("--shots", nargs="+", type=int, default=list(SHOTS), help="shot counts to run")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default: see above)")
    p.add_argument(
        "--add",
        action="store_true",
        help="add these runs to the results already in --out (same settings; a repeated method/seed/shots is replaced)",
    )
    add_protocol_args(p, "runs/fewshot", shots=False)
    return p


def run(args: argparse.Namespace) -> int:
    if any(k < 1 for k in args.shots):
        raise ValueError(f"--shots must all be at least 1, got {args.shots}")
    world = None
    if args.data is None:
        from training.shapes.cache import ensure_world

        world = ensure_world(args.world_dir, quick=args.quick)
    dataset = require_train(load_dataset(args.data or world.dataset))
    cfg, record = protocol_config(args, dataset.name)
    steps = args.steps
    if steps is None:
        _, base_of = class_subset(dataset, "base")
        n_images = len(few_shot(base_of(dataset.train), max(args.shots), cfg.seeds[0]))
        steps = cfg.fit.epochs * -(-n_images // cfg.fit.batch_size)
    backbone, backbone_arg, weights_arg = protocol_backbone(args, world)
    config = {"dataset": dataset.name, "backbone": backbone_arg, "weights": weights_arg, **record}
    command = "vpt-eval few-shot " + shlex.join(args.argv)
    old = None
    if args.add and (args.out / "fewshot.json").is_file():
        old = json.loads((args.out / "fewshot.json").read_text())
        check_mergeable(old, steps, config)
    result = run_fewshot(backbone, dataset, cfg, tuple(sorted(set(args.shots))), steps) | {"config": config}
    if old is not None:
        result, command = merge_fewshot(old, result), f"{old['command']}; {command}"
    report = write_fewshot_report(result, args.out, command)
    print(fewshot_table(result))
    print(f"written: {report} (+ fewshot.json, fewshot.png)")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_cli(run, args)
