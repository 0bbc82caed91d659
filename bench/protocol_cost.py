"""How long each run of the paper's protocols takes: counted work x measured unit cost.

    OMP_NUM_THREADS=2 .venv/bin/python bench/protocol_cost.py --steps 5       # CPU, ~5 minutes
    .venv/bin/python bench/protocol_cost.py --device cuda --probe-classes 100 # a GPU, seconds

Random weights of the real architecture (ViT-B/16; the cost does not depend on the weights,
so nothing downloads). Measured on --device:
- one training step (batch 1, forward + backward, bf16 autocast on CUDA) per method at
  probe-classes classes and probe-samples samples, and its FLOPs (torch's FlopCounterMode);
- test-time prediction per image at the same sizes;
- image encoding per image, batched (cached features) and one at a time (--augment).
Text-tower cost is linear in classes x samples (per image for cocoop/vpt-cond), so each
dataset's run is the probe's cost scaled to its classes and L, times its steps (epochs x 16
shots x classes at batch 1) and test images (CoOp's split sizes below). The GPU column, when
measuring on a CPU, divides the counted FLOPs by --gpu-tflops (an assumed sustained rate), with
assumed floors per batch-1 step and per batch-1 image encode: estimates, not measurements.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.backbone import autocast, load_backbone  # noqa: E402
from training.classifier import PromptClassifier  # noqa: E402
from training.evaluate import predict  # noqa: E402
from training.learners import STOCHASTIC, LearnerConfig  # noqa: E402
from training.objective import negative_elbo  # noqa: E402
from training.presets import PAPER_L_EPOCHS, TRANSFER_L_EPOCHS  # noqa: E402

# CoOp's splits: classes and test images (CoOp, Table 5 of its appendix).
DATASETS = {
    "ImageNet": (1000, 50000),
    "Caltech101": (100, 2465),
    "OxfordPets": (37, 3669),
    "StanfordCars": (196, 8041),
    "OxfordFlowers": (102, 2463),
    "Food101": (101, 30300),
    "FGVCAircraft": (100, 3333),
    "SUN397": (397, 19850),
    "DescribableTextures": (47, 1692),
    "EuroSAT": (10, 8100),
    "UCF101": (101, 3783),
}
DG_TARGETS = {
    "ImageNetV2": (1000, 10000),
    "ImageNetSketch": (1000, 50889),
    "ImageNetA": (200, 7500),
    "ImageNetR": (200, 30000),
}
METHODS = ("coop", "cocoop", "vpt", "vpt-cond")
SHOTS = 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_step(clf, feats, labels, samples, opt, device) -> None:
    """What fit() does per step: sample, forward (bf16 autocast on CUDA), ELBO, backward, SGD."""
    eps = clf.learner.sample_noise(len(feats), samples, device=device)
    with autocast(device):
        out = clf(feats, eps)
    loss, _ = negative_elbo(out, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(backbone, method: str, classes: int, samples: int, steps: int, device: torch.device) -> dict[str, float]:
    names = [f"class {i}" for i in range(classes)]
    torch.manual_seed(0)
    clf = PromptClassifier.create(backbone, LearnerConfig(method), names)
    clf.train()
    opt = torch.optim.SGD([p for p in clf.learner.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    dim = backbone.identity.embed_dim
    n_eval = 32  # one predict() batch: the unconditional methods' text pass is shared by it
    feats = torch.nn.functional.normalize(torch.randn(n_eval, dim, device=device), dim=-1)
    labels = torch.randint(0, classes, (n_eval,), device=device)
    _train_step(clf, feats[:1], labels[:1], samples, opt, device)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        _train_step(clf, feats[i : i + 1], labels[i : i + 1], samples, opt, device)
    _sync(device)
    step_s = (time.perf_counter() - start) / steps
    with FlopCounterMode(display=False) as counter:
        _train_step(clf, feats[:1], labels[:1], samples, opt, device)
    predict(clf, feats[:2], samples)
    _sync(device)
    start = time.perf_counter()
    predict(clf, feats, samples)
    _sync(device)
    eval_s = (time.perf_counter() - start) / n_eval
    return {"step_s": step_s, "step_flops": counter.get_total_flops(), "eval_s_per_image": eval_s}


def image_costs(backbone, device: torch.device) -> dict[str, float]:
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    out = {}
    for name, batch in (("batched", 32), ("single", 1)):
        images = torch.randn(batch, 3, size, size)
        backbone.encode_images(images)
        _sync(device)
        start = time.perf_counter()
        reps = 2
        for _ in range(reps):
            backbone.encode_images(images)
        _sync(device)
        out[f"{name}_s"] = (time.perf_counter() - start) / (reps * batch)
    with FlopCounterMode(display=False) as counter:
        backbone.encode_images(torch.randn(1, 3, size, size))
    out["flops"] = counter.get_total_flops()
    return out


def run_seconds(unit, img, method, classes_train, classes_test, n_test, samples, epochs, probe, gpu=None):
    """(measured-device seconds, GPU-estimate seconds or None) of one run (one method, one seed).
    gpu = (sustained FLOP/s, floor seconds per training step, floor seconds per batch-1 image encode)."""
    stoch = method in STOCHASTIC
    scale_train = classes_train / probe["classes"] * (samples / probe["samples"] if stoch else 1)
    scale_test = classes_test / probe["classes"] * (samples / probe["samples"] if stoch else 1)
    steps = epochs * SHOTS * classes_train
    measured = steps * (unit["step_s"] * scale_train + img["single_s"])
    measured += n_test * (unit["eval_s_per_image"] * scale_test + img["batched_s"])
    if gpu is None:
        return measured, None
    rate, step_floor, image_floor = gpu
    # A batch-1 step is small: it cannot go faster than kernel launches allow (the floors).
    estimate = steps * (
        max(unit["step_flops"] * scale_train / rate, step_floor) + max(img["flops"] / rate, image_floor)
    )
    # Test time: forward only (a third of a training step's FLOPs) per image for the per-image
    # methods; the unconditional ones share one text pass per batch of images (negligible).
    per_image = method in ("cocoop", "vpt-cond")
    estimate += n_test * ((unit["step_flops"] / 3 * scale_test if per_image else 0) + img["flops"]) / rate
    return measured, estimate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="ViT-B-16-quickgelu")
    p.add_argument("--probe-classes", type=int, default=10)
    p.add_argument("--probe-samples", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--gpu-tflops", type=float, default=100.0, help="assumed sustained bf16 TFLOP/s for the estimate")
    p.add_argument("--gpu-step-floor-ms", type=float, default=10.0, help="assumed least time of one batch-1 step")
    p.add_argument("--gpu-image-floor-ms", type=float, default=5.0, help="assumed least time of a batch-1 encode")
    args = p.parse_args()
    device = torch.device(args.device)
    backbone = load_backbone(args.backbone, "none", device)
    probe = {"classes": args.probe_classes, "samples": args.probe_samples}
    units = {m: measure(backbone, m, args.probe_classes, args.probe_samples, args.steps, device) for m in METHODS}
    img = image_costs(backbone, device)
    gpu = None
    if device.type == "cpu":
        gpu = (args.gpu_tflops * 1e12, args.gpu_step_floor_ms / 1e3, args.gpu_image_floor_ms / 1e3)
    print(
        f"device {device}, {args.backbone}, probe {probe}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| method | train step (s) | step GFLOP | predict (s/image) |\n|---|---|---|---|")
    for m, u in units.items():
        print(f"| {m} | {u['step_s']:.3f} | {u['step_flops'] / 1e9:.1f} | {u['eval_s_per_image']:.4f} |")
    print(
        f"image encode: {img['batched_s'] * 1e3:.1f} ms/image batched, {img['single_s'] * 1e3:.1f} ms one at a time, "
        f"{img['flops'] / 1e9:.1f} GFLOP"
    )

    def hours(seconds: float | None) -> str:
        if seconds is None:
            return ""
        h = seconds / 3600
        return f"{h:.2f}" if h < 10 else f"{h:.0f}"

    def minutes(seconds: float | None) -> str:
        return "" if seconds is None else f"{seconds / 60:.1f}" if seconds < 600 else f"{seconds / 60:.0f}"

    col = "GPU minutes (est.)" if gpu else ""
    assumed = f" | {col}: {args.gpu_tflops:.0f} TFLOP/s, floors {args.gpu_step_floor_ms:.0f} ms/step" if col else ""
    print(f"\nbase2new, one seed, hours on {device}" + assumed)
    print(
        "| dataset | L | epochs | " + " | ".join(f"{m} {device.type}" + (f" / {m} GPU" if col else "") for m in METHODS)
    )
    for name, (classes, n_test) in DATASETS.items():
        samples, epochs = PAPER_L_EPOCHS[name]
        base = math.ceil(classes / 2)
        cells = []
        for m in METHODS:
            cpu_s, gpu_s = run_seconds(units[m], img, m, base, base, n_test, samples, epochs, probe, gpu)
            cells.append(hours(cpu_s) + (f" / {minutes(gpu_s)}" if col else ""))
        print(f"| {name} | {samples} | {epochs} | " + " | ".join(cells) + " |")
    samples, epochs = TRANSFER_L_EPOCHS
    print(
        f"\ncross-dataset / domain-gen (train on ImageNet once, test each target), one seed, hours on {device}"
        + assumed
    )
    for name, (classes, n_test) in {**{k: v for k, v in DATASETS.items() if k != "ImageNet"}, **DG_TARGETS}.items():
        cells = []
        for m in METHODS:
            cpu_s, gpu_s = run_seconds(units[m], img, m, 0, classes, n_test, samples, 0, probe, gpu)
            cells.append(hours(cpu_s) + (f" / {minutes(gpu_s)}" if col else ""))
        print(f"| test {name} | " + " | ".join(cells) + " |")
    cells = []
    for m in METHODS:
        cpu_s, gpu_s = run_seconds(units[m], img, m, 1000, 1000, 50000, samples, epochs, probe, gpu)
        cells.append(hours(cpu_s) + (f" / {minutes(gpu_s)}" if col else ""))
    print("| train ImageNet (1000 classes) + test | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
