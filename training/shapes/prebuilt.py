"""The prebuilt shapes models shipped in the package: the default backbone and the demo posterior.

Why ship them: pretraining takes minutes on a CPU and is not bit-reproducible from machine to
machine (thread counts, kernels), so a world built on each machine gives each machine its own
benchmark and a slow first start. These files were produced once, with the commands recorded
in prebuilt/manifest.json and prebuilt/README.md, and are the same everywhere.

Storage: the backbone's 49,408 x W token table is mostly rows for words the captions never use;
those rows never receive a gradient (only weight decay), so the packed file keeps the trained
rows and regenerates the others from a seed (same scale, different draw). Every tensor of two or
more dimensions is stored in fp16. `unpack` writes the full fp32 weights file that
`training.backbone.load_backbone` reads, byte for byte the same on every machine (its sha256 is
recorded and checked), so a posterior fitted on it passes the artifact's identity check anywhere.

    vpt-pretrain-shapes --out runs/prebuilt/pretrained --seed 0 --threads 2
    python -m training.shapes.prebuilt backbone --pretrained runs/prebuilt/pretrained
    python -m training.shapes.prebuilt posterior     # refit the demo posterior (e.g. after a trainer change)
    python -m training.shapes.prebuilt check         # digests of the shipped files
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from training.backbone import file_sha256
from training.shapes.cache import build_lock, cached_step

log = logging.getLogger(__name__)

PREBUILT_DIR = Path(__file__).resolve().parent / "prebuilt"
MANIFEST = "manifest.json"
CONFIG_FILE = "backbone.json"  # the name matters: the backbone's identity is the config's stem
WEIGHTS_FILE = "weights.safetensors"
PACKED_FILE = "backbone.packed.safetensors"
POSTERIOR_FILE = "demo-vpt.safetensors"
EMBEDDING = "token_embedding.weight"
ROWS, VALUES = "token_embedding.rows", "token_embedding.values"
PACK_FORMAT = "vpt-packed/1"
# A row counts as trained when it left the line of its initial value by more than this (relative):
# untrained rows are the initial row times the weight-decay factor, to float precision (~1e-7).
TRAINED_ROW_TOL = 1e-3
WORK = Path("runs/prebuilt")  # where the rebuild commands put their intermediate files

# The demo posterior: vpt (one global Gaussian) on the base half, fitted on a clean/infrared mix so
# that it reads the clean pictures a visitor uploads as well as the benchmark's infrared ones.
DEMO_SEED = 0
DEMO_WORLD = ("downstream_shift_fraction=0.5",)
DEMO_EXPORT = ("--train-per-class", "16", "--val-per-class", "4", "--test-per-class", "0")
DEMO_CLEAN_TEST = ("--train-per-class", "0", "--val-per-class", "0", "--test-per-class", "10")
# Calibration for the class set the demo serves (all 100): 20 held-out pictures per class of the same
# clean/infrared mix, rendered from another seed than the training pictures.
DEMO_CALIBRATION = ("--train-per-class", "0", "--val-per-class", "20", "--test-per-class", "0")
DEMO_TRAIN = (
    "--variant", "vpt", "--shots", "16", "--classes", "base", "--epochs", "5", "--batch-size", "32",
    "--samples", "5", "--lr", "0.01", "--warmup-epochs", "0", "--device", "cpu", "--seed", str(DEMO_SEED),
    "--log-var-lr-scale", "20",  # lr 0.01 x 20: the log-variance's rate of the defaults (0.002 x 100)
)  # fmt: skip


class PrebuiltError(RuntimeError):
    """A shipped file is missing or does not match its recorded digest; the message says which."""


def manifest(folder: Path = PREBUILT_DIR) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise PrebuiltError(f"{path} is missing: the package ships without its prebuilt models")
    return json.loads(path.read_text())


def posterior_path(folder: Path = PREBUILT_DIR) -> Path:
    """The shipped demo posterior (checked against its recorded digest)."""
    path = folder / POSTERIOR_FILE
    _check_digest(path, manifest(folder)["files"].get(POSTERIOR_FILE))
    return path


def verify(folder: Path = PREBUILT_DIR) -> dict[str, str]:
    """sha256 of every shipped file, checked against the manifest; raises PrebuiltError on a mismatch."""
    files = manifest(folder)["files"]
    for name, digest in files.items():
        _check_digest(folder / name, digest)
    return files


def _check_digest(path: Path, expected: str | None) -> None:
    if expected is None:
        raise PrebuiltError(f"{path.name} is not listed in {MANIFEST}")
    if not path.is_file():
        raise PrebuiltError(f"shipped file {path} is missing")
    actual = file_sha256(path)
    if actual != expected:
        raise PrebuiltError(f"{path} has sha256 {actual[:12]}..., the manifest records {expected[:12]}...")


# -- packing -------------------------------------------------------------------------------------


def trained_rows(weights: torch.Tensor, initial: torch.Tensor, tol: float = TRAINED_ROW_TOL) -> torch.Tensor:
    """Indices of token rows that moved off the line of their initial value (the rows a gradient reached)."""
    w, w0 = weights.double(), initial.double()
    scale = (w * w0).sum(1) / (w0 * w0).sum(1).clamp_min(1e-30)
    residual = (w - scale[:, None] * w0).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30)
    return torch.nonzero(residual > tol).flatten()


def pack(weights: Path, initial_embedding: torch.Tensor, out: Path, fill_seed: int) -> dict[str, object]:
    """Write the compact file: fp16 matrices, trained token rows only; returns what it kept."""
    state = load_file(str(weights))
    table = state.pop(EMBEDDING)
    rows = trained_rows(table, initial_embedding)
    untrained = torch.ones(len(table), dtype=torch.bool)
    untrained[rows] = False
    fill_std = float(table[untrained].std())
    packed = {k: v.half() if v.is_floating_point() and v.ndim >= 2 else v for k, v in state.items()}
    packed[ROWS] = rows.to(torch.int64)
    packed[VALUES] = table[rows].half()
    meta = {
        "format": PACK_FORMAT,
        "vocab_size": str(table.shape[0]),
        "width": str(table.shape[1]),
        "fill_seed": str(fill_seed),
        "fill_std": repr(fill_std),
        "source_sha256": file_sha256(weights),
    }
    save_file(packed, str(out), metadata=meta)
    return {"trained_rows": len(rows), "vocab_size": table.shape[0], "fill_std": fill_std}


def unpack_state(packed: Path) -> dict[str, torch.Tensor]:
    """The full fp32 state dict from a packed file (deterministic: the same bytes on every machine)."""
    with safe_open(str(packed), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != PACK_FORMAT:
        raise PrebuiltError(f"{packed} is not a packed backbone ({PACK_FORMAT})")
    state = load_file(str(packed))
    rows, values = state.pop(ROWS), state.pop(VALUES)
    shape = (int(meta["vocab_size"]), int(meta["width"]))
    # Untrained rows: a fresh N(0, fill_std^2) draw from numpy's PCG64 (stable across versions and machines).
    fill = np.random.default_rng(int(meta["fill_seed"])).standard_normal(shape, dtype=np.float32)
    table = torch.from_numpy(fill * np.float32(float(meta["fill_std"])))
    table[rows] = values.float()
    full = {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
    full[EMBEDDING] = table.contiguous()
    return full


def unpack(out: Path, folder: Path = PREBUILT_DIR) -> None:
    """Write backbone.json + weights.safetensors into out (a new folder) and check the weights' digest."""
    record = manifest(folder)
    for name in (CONFIG_FILE, PACKED_FILE):
        _check_digest(folder / name, record["files"].get(name))
    out.mkdir(parents=True)
    shutil.copyfile(folder / CONFIG_FILE, out / CONFIG_FILE)
    save_file(unpack_state(folder / PACKED_FILE), str(out / WEIGHTS_FILE))
    expected = record["backbone"]["weights_sha256"]
    if file_sha256(out / WEIGHTS_FILE) != expected:
        raise PrebuiltError(
            f"unpacking {PACKED_FILE} gave weights other than the recorded sha256 {expected[:12]}...: "
            "this torch/safetensors/numpy writes different bytes; retrain with vpt-pretrain-shapes instead"
        )


def shipped_backbone(root: Path, say: Callable[[str], None] = print) -> tuple[Path, Path]:
    """(backbone.json, weights.safetensors) of the shipped backbone, unpacked once under root."""
    digest = manifest()["backbone"]["weights_sha256"]
    folder = Path(root).expanduser() / f"prebuilt-{digest[:12]}"
    with build_lock(folder.parent):
        cached_step(folder, "unpacking the shipped shapes backbone", unpack, say)
    return folder / CONFIG_FILE, folder / WEIGHTS_FILE


# -- rebuilding (run here, once; the results are committed) --------------------------------------


def _run(main: Callable[[list[str]], object], prog: str, argv: list[str]) -> str:
    """Run one of the project's CLIs in-process; returns the command line as a user would type it."""
    command = f"{prog} {shlex.join(argv)}"
    log.info("running: %s", command)
    code = main(argv)
    if code not in (None, 0):
        raise PrebuiltError(f"{command} failed (exit {code})")
    return command


def pretrain_command(out: Path, record: dict) -> str:
    """The vpt-pretrain-shapes command line that pretrains what `record` (its pretrain.json) describes."""
    from training.shapes.pretrain import DEFAULT_CONFIG, DEFAULT_STEPS

    argv = ["--out", str(out), "--seed", str(record["seed"])]
    if record["model"] != DEFAULT_CONFIG.stem:
        argv += ["--config", f"training/shapes/configs/{record['model']}.json"]
    if record["steps"] != DEFAULT_STEPS:
        argv += ["--steps", str(record["steps"])]
    if "threads" in record:
        argv += ["--threads", str(record["threads"])]
    return f"vpt-pretrain-shapes {shlex.join(argv)}"


def build_backbone(pretrained: Path, folder: Path = PREBUILT_DIR) -> dict:
    """Pack a `vpt-pretrain-shapes --out` folder into `folder` and measure the unpacked backbone."""
    from training.shapes.pretrain import create_model, measure_zero_shot
    from training.shapes.world import WorldConfig

    record = json.loads((pretrained / "pretrain.json").read_text())
    if record["world"] != WorldConfig().to_dict():
        raise PrebuiltError(f"{pretrained} was pretrained with other world dials than this code's")
    config = pretrained / "backbone.json"
    initial, _, _ = create_model(config, record["seed"], "cpu")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, folder / CONFIG_FILE)
    kept = pack(pretrained / WEIGHTS_FILE, initial.token_embedding.weight.detach(), folder / PACKED_FILE, 0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "unpacked"
        out.mkdir()
        save_file(unpack_state(folder / PACKED_FILE), str(out / WEIGHTS_FILE))
        weights_sha = file_sha256(out / WEIGHTS_FILE)
        model, tokenizer, _ = create_model(config, 0, "cpu")
        model.load_state_dict(load_file(str(out / WEIGHTS_FILE)))
        model.eval()
        shipped = measure_zero_shot(model, tokenizer, WorldConfig(), record["seed"], "cpu")
    entry = {
        "weights_sha256": weights_sha,
        "pretrain": {k: record[k] for k in ("model", "seed", "steps", "batch_size", "lr")},
        "pretrain_command": pretrain_command(pretrained, record),
        "zero_shot_fp32": {k: v for k, v in record["metrics"].items() if k.startswith("zero_shot")},
        "zero_shot_shipped": shipped,
        "train_seconds": record["metrics"].get("train_seconds"),
        "fp32_sha256": file_sha256(pretrained / WEIGHTS_FILE),
        **kept,
    }
    data = _read_or_new(folder)
    data["backbone"] = entry
    data.pop("posterior", None)  # a posterior fitted on other weights is void
    _write(folder, data)
    return entry


def build_posterior(folder: Path = PREBUILT_DIR, work: Path = WORK) -> dict:
    """Fit the demo posterior on the shipped backbone with vpt-train, calibrate it for the 100 classes
    the demo registers with vpt-calibrate, and measure it on clean images."""
    from training.cli_calibrate import main as calibrate_main
    from training.cli_eval import main as eval_main
    from training.cli_train import main as train_main
    from training.shapes.pretrain import main as pretrain_main

    backbone = work / "backbone"
    if backbone.exists():
        shutil.rmtree(backbone)
    unpack(backbone, folder)
    config, weights = backbone / CONFIG_FILE, backbone / WEIGHTS_FILE
    data, clean, held = work / "demo-data", work / "demo-clean", work / "demo-calibration"
    for path in (data, clean, held):
        if path.exists():
            shutil.rmtree(path)
    seed = str(DEMO_SEED)
    world = ["--world", *DEMO_WORLD]
    export = _run(pretrain_main, "vpt-pretrain-shapes", ["--export", str(data), "--seed", seed, *DEMO_EXPORT, *world])
    fitted = work / "demo-vpt-fitted.safetensors"
    args = ["--data", str(data), "--backbone", str(config), "--weights", str(weights), "--out", str(fitted)]
    train = _run(train_main, "vpt-train", [*args, *DEMO_TRAIN])
    held_argv = ["--export", str(held), "--seed", "2", *DEMO_CALIBRATION, *world]
    held_export = _run(pretrain_main, "vpt-pretrain-shapes", held_argv)
    target = work / POSTERIOR_FILE
    calibrate = _run(
        calibrate_main,
        "vpt-calibrate",
        ["--posterior", str(fitted), "--data", str(held), "--classes", "all", "--out", str(target), "--device", "cpu"],
    )
    clean_world = ["--world", "downstream_shift_fraction=0"]
    clean_argv = ["--export", str(clean), "--seed", "1", *DEMO_CLEAN_TEST, *clean_world]
    test_export = _run(pretrain_main, "vpt-pretrain-shapes", clean_argv)
    figures = work / "demo-clean.json"
    measure = _run(
        eval_main,
        "vpt-eval",
        ["--data", str(clean), "--posterior", str(target), "--classes", "all", "--out", str(figures)],
    )
    result = json.loads(figures.read_text())
    shutil.copyfile(target, folder / POSTERIOR_FILE)
    entry = {
        "commands": [export, train, held_export, calibrate, test_export, measure],
        "classes": "all 100 classes of the world registered; fitted on the base 50, calibrated for all 100",
        "clean_accuracy": result["accuracy"],
        "figures": {k: v for k, v in result.items() if isinstance(v, float)},
    }
    record = _read_or_new(folder)
    record["posterior"] = entry
    _write(folder, record)
    return entry


def _read_or_new(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}


def _write(folder: Path, record: dict) -> None:
    """The manifest (digests of every shipped file) and the README generated from it."""
    names = [CONFIG_FILE, PACKED_FILE] + ([POSTERIOR_FILE] if "posterior" in record else [])
    record["files"] = {name: file_sha256(folder / name) for name in names}
    (folder / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    (folder / "README.md").write_text(readme(record, folder))


def readme(record: dict, folder: Path = PREBUILT_DIR) -> str:
    """prebuilt/README.md: how the files were made, their digests and what they reach."""
    bb = record["backbone"]
    fp32, shipped = bb["zero_shot_fp32"], bb["zero_shot_shipped"]
    lines = [
        "# Prebuilt shapes models (generated by `python -m training.shapes.prebuilt`; do not edit)",
        "",
        "Shipped so that `vpt-serve --demo` and `vpt-eval base2new` build nothing and give the same",
        "numbers on every machine. Rebuild (5-25 min on 2 CPU cores, most of it pretraining):",
        "",
        "```bash",
        bb["pretrain_command"],
        f"python -m training.shapes.prebuilt backbone --pretrained {bb['pretrain_command'].split()[2]}",
        "python -m training.shapes.prebuilt posterior   # only the demo posterior, on the shipped backbone",
        "python -m training.shapes.prebuilt check       # digests below",
        "```",
        "",
        "Pretraining repeats exactly on one machine with the same threads and torch build, not across",
        "machines (CPU kernels, thread counts): a rebuild elsewhere gives close but different weights,",
        "hence new digests and figures, which the commands write here.",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
    ]
    for name, digest in record["files"].items():
        lines.append(f"| `{name}` | {(folder / name).stat().st_size:,} | `{digest}` |")
    p = bb["pretrain"]
    lines += [
        "",
        f"**Backbone** `{p['model']}` (open_clip ModifiedResNet image tower + text transformer), pretrained",
        f"{p['steps']} steps, batch {p['batch_size']}, lr {p['lr']}, seed {p['seed']} ({bb['train_seconds']} s here).",
        f"Stored packed: every matrix in fp16; of the {bb['vocab_size']:,} token rows the {bb['trained_rows']} that",
        "training reached, the others regenerated from a seed at their trained scale",
        f"(std {bb['fill_std']:.5f}). Unpacked, the fp32 weights file has sha256 `{bb['weights_sha256']}`",
        f"(the pretrained original: `{bb['fp32_sha256']}`).",
        "",
        "| zero-shot on its own 100 classes ('a photo of a {c}.', 10 images per class) | clean | infrared |",
        "|---|---|---|",
        f"| fp32, as pretrained | {fp32['zero_shot_clean']:.1%} | {fp32['zero_shot_infrared']:.1%} |",
        f"| shipped (unpacked) | {shipped['zero_shot_clean']:.1%} | {shipped['zero_shot_infrared']:.1%} |",
    ]
    if "posterior" in record:
        post = record["posterior"]
        lines += [
            "",
            f"**Demo posterior** `{POSTERIOR_FILE}`: {post['classes']}.",
            f"Accuracy on clean images of every class (10 per class): **{post['clean_accuracy']:.1%}**.",
            "Made and measured with:",
            "",
            "```bash",
            *post["commands"],
            "```",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.shapes.prebuilt", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bb = sub.add_parser("backbone", help="pack a vpt-pretrain-shapes --out folder into prebuilt/ (voids the posterior)")
    bb.add_argument("--pretrained", type=Path, required=True)
    sub.add_parser("posterior", help="refit the demo posterior on the shipped backbone")
    sub.add_parser("check", help="check the digests of the shipped files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "backbone":
        print(json.dumps(build_backbone(args.pretrained), indent=2))
    elif args.command == "posterior":
        print(json.dumps(build_posterior(), indent=2))
    else:
        for name, digest in verify().items():
            print(f"{digest}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
