"""vpt-eval cross-dataset | domain-gen: fit every method on a source dataset, test it on targets.

cross-dataset (the paper's Table 2): --source $DATA/imagenet --targets <the 10 other datasets>.
domain-gen (Table 3): --source $DATA/imagenet --targets imagenetv2 imagenet-sketch
imagenet-adversarial imagenet-rendition. All source classes are trained on (few shots each).
Without --source both run on the shapes world: domain-gen trains on the clean style and tests
on the infrared style; cross-dataset trains on the clean base classes and tests on the new
classes, clean and infrared.
"""

from __future__ import annotations

import argparse
import logging
import shlex

from training.cli_base2new import add_protocol_args, protocol_backbone, protocol_config
from training.cli_common import run_cli
from training.data import Dataset, load_dataset, require_train, subset_dataset
from training.report import transfer_table, write_transfer_report
from training.transfer import run_transfer

TITLES = {"cross-dataset": "Cross-dataset transfer", "domain-gen": "Domain generalisation"}


def build_parser(protocol: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"vpt-eval {protocol}", description=__doc__)
    p.add_argument("--source", default=None, help="dataset to train on (default: the shapes world)")
    p.add_argument("--targets", nargs="+", default=None, help="datasets to test on (with --source)")
    add_protocol_args(p, f"runs/{protocol}")
    return p


def shapes_sets(args: argparse.Namespace, protocol: str) -> tuple[Dataset, dict[str, Dataset], object]:
    from training.shapes.cache import ensure_clean_set, ensure_world

    world = ensure_world(args.world_dir, quick=args.quick)
    clean, infrared = load_dataset(ensure_clean_set(args.world_dir, quick=args.quick)), load_dataset(world.dataset)
    if protocol == "domain-gen":
        return clean, {"Shapes-infrared": infrared}, world
    targets = {"Shapes-new": subset_dataset(clean, "new"), "Shapes-new-infrared": subset_dataset(infrared, "new")}
    return subset_dataset(clean, "base"), targets, world


def named_targets(paths: list[str]) -> dict[str, Dataset]:
    targets: dict[str, Dataset] = {}
    for path in paths:
        ds = load_dataset(path)
        name, n = ds.name, 2
        while name in targets:
            name, n = f"{ds.name}-{n}", n + 1
        targets[name] = ds
    return targets


def run(args: argparse.Namespace) -> int:
    logging.getLogger("training.transfer").setLevel(logging.INFO)  # one line per method and seed
    protocol = args.protocol
    if args.source is None:
        if args.targets:
            raise ValueError("--targets needs --source")
        source, targets, world = shapes_sets(args, protocol)
    else:
        if not args.targets:
            raise ValueError("--source needs --targets")
        source, targets, world = require_train(load_dataset(args.source)), named_targets(args.targets), None
    cfg, record = protocol_config(args, source.name, transfer=True)
    backbone, backbone_arg, weights_arg = protocol_backbone(args, world)
    result = run_transfer(backbone, source, targets, cfg)
    result["config"] = {"backbone": backbone_arg, "weights": weights_arg, **record}
    command = f"vpt-eval {protocol} " + shlex.join(args.argv)
    report = write_transfer_report(result, args.out, command, protocol, TITLES[protocol])
    print(transfer_table(result, "accuracy"))
    print(f"written: {report} (+ {protocol}.json, accuracy.png, reliability.png)")
    return 0


def main(protocol: str, argv: list[str]) -> int:
    args = build_parser(protocol).parse_args(argv)
    args.argv, args.protocol = argv, protocol
    return run_cli(run, args)
