"""`vpt-pretrain-shapes`: contrastively pretrain a small open_clip model on the shapes world.

CLIP saw every concept before anyone tuned prompts on it; likewise this backbone sees all
classes of the world (clean and infrared), with plain one-positive InfoNCE: a caption is the
positive of its own image only, so generic captions do not leak class identity.

Writes <out>/backbone.json (the model config), <out>/weights.safetensors (state dict, loadable
by `training.backbone.load_backbone`) and <out>/pretrain.json (world dials, seed, metrics),
and optionally exports the downstream data set in the CoOp layout.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from training.shapes.evaluate import (
    encode_images,
    encode_text_ids,
    render_labelled,
    to_tensor,
    zero_shot_accuracy,
)
from training.shapes.export import export_downstream
from training.shapes.world import WorldConfig, classnames, pretrain_sample

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# Small ResNet image towers (open_clip's ModifiedResNet): at 32 px a ViT of this size learned
# colour at once but shape hardly at all (supervised, 400 steps: ViT 20%, ResNet 88% of classes).
DEFAULT_CONFIG = CONFIG_DIR / "shapes-rn-small.json"
QUICK_CONFIG = CONFIG_DIR / "shapes-rn-tiny.json"
DEFAULT_STEPS, QUICK_STEPS = 800, 600  # longer runs see through the infrared shift (README.md)


def size_defaults(quick: bool) -> tuple[Path, int]:
    """(model config, steps) of the quick or default backbone: one choice for the CLI and the cache."""
    return (QUICK_CONFIG, QUICK_STEPS) if quick else (DEFAULT_CONFIG, DEFAULT_STEPS)


def create_model(config: Path, seed: int, device: str) -> tuple[nn.Module, object, str]:
    """A freshly initialised open_clip model (seeded) and its tokenizer, from a JSON config."""
    open_clip.add_model_config(config)
    name = config.stem
    torch.manual_seed(seed)
    model = open_clip.create_model(name, device=device)
    return model, open_clip.get_tokenizer(name), name


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1) -> torch.optim.Optimizer:
    """AdamW as in open_clip: no decay on gains, biases, embeddings' scales or the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_batch(cfg: WorldConfig, seed: int, start: int, size: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [pretrain_sample(cfg, seed, i) for i in range(start, start + size)]
    images = to_tensor(np.stack([p[0] for p in pairs]))
    return images, tokenizer([p[1] for p in pairs])


def clip_loss(model: nn.Module, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with one positive per row (the pair's own caption)."""
    img = nn.functional.normalize(model.encode_image(images), dim=-1)
    txt = encode_text_ids(model, ids)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    target = torch.arange(len(images), device=images.device)
    return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2


def pretrain(
    config: Path,
    out: Path,
    steps: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    lr: float = 1e-3,
    world: WorldConfig | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train, save the backbone into `out`, and return zero-shot accuracies on the world's classes."""
    world = world or WorldConfig()
    model, tokenizer, name = create_model(config, seed, device)
    model.train()
    opt = make_optimizer(model, lr)
    warmup = max(1, min(200, steps // 10))
    started = time.time()
    bar = tqdm(range(steps), desc=f"pretrain {name}", disable=not progress, mininterval=2.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        images, ids = make_batch(world, seed, step * batch_size, batch_size, tokenizer)
        loss = clip_loss(model, images.to(device), ids.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    metrics = measure_zero_shot(model, tokenizer, world, seed, device)
    metrics["train_seconds"] = round(time.time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, out / "backbone.json")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, out / "weights.safetensors")
    record = {
        "model": name,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "threads": torch.get_num_threads(),
        "world": world.to_dict(),
        "metrics": metrics,
    }
    (out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("saved backbone %s to %s", name, out)
    return metrics


def measure_zero_shot(
    model: nn.Module, tokenizer, world: WorldConfig, seed: int, device: str, per_class: int = 10
) -> dict[str, float]:
    """Zero-shot ("a photo of a {c}.") on clean, infrared and downstream-mix images of all classes."""
    names = classnames()
    result = {}
    for key, fraction in (("clean", 0.0), ("infrared", 1.0)):
        images, labels, _ = render_labelled(world, seed, "eval", per_class, len(names), fraction)
        feats = encode_images(model, images, device)
        result[f"zero_shot_{key}"] = round(zero_shot_accuracy(model, tokenizer, feats, labels, names, device=device), 4)
    return result


def _parse_world(pairs: list[str]) -> WorldConfig:
    values = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in WorldConfig.__dataclass_fields__:
            raise SystemExit(f"unknown world dial {key!r}; known: {', '.join(WorldConfig.__dataclass_fields__)}")
        values[key] = float(value) if key != "image_size" else int(value)
    return WorldConfig(**values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vpt-pretrain-shapes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for backbone.json + weights.safetensors")
    parser.add_argument("--quick", action="store_true", help=f"tiny model, {QUICK_STEPS} steps (~2 min; CI)")
    parser.add_argument("--config", type=Path, help="open_clip JSON model config (default by size)")
    parser.add_argument("--steps", type=int, help=f"default {DEFAULT_STEPS} ({QUICK_STEPS} with --quick)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a busy machine)")
    parser.add_argument("--world", nargs="*", default=[], metavar="DIAL=VALUE", help="override world dials")
    parser.add_argument("--export", type=Path, help="also write the downstream data set (CoOp layout) here")
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--val-per-class", type=int, default=4)
    parser.add_argument("--test-per-class", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out is None and args.export is None:
        parser.error("give --out (pretrain) and/or --export (data set)")
    if args.threads:
        torch.set_num_threads(args.threads)
    world = _parse_world(args.world)
    if args.out is not None:
        default_config, default_steps = size_defaults(args.quick)
        config = args.config or default_config
        steps = args.steps if args.steps is not None else default_steps
        metrics = pretrain(config, args.out, steps, args.batch_size, args.seed, args.device, args.lr, world)
        print(
            f"zero-shot on its own {len(classnames())} classes ('a photo of a {{c}}.'): "
            f"clean {metrics['zero_shot_clean']:.1%}, infrared {metrics['zero_shot_infrared']:.1%} "
            f"({metrics['train_seconds']:.0f} s); saved to {args.out}"
        )
    if args.export is not None:
        split = export_downstream(
            args.export, args.train_per_class, args.test_per_class, args.seed, world, args.val_per_class
        )
        print(f"downstream data set: {', '.join(f'{k} {len(v)}' for k, v in split.items())} images in {args.export}")


if __name__ == "__main__":
    main()
