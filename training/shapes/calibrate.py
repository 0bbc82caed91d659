"""Does the world separate the methods? Zero-shot, few-shot ceilings and a quick CoOp, per mix.

    python -m training.shapes.calibrate --backbone runs/shapes-small --mix 0.3 0.5 0.7

Every downstream image is rendered twice (clean and infrared, same scene), so one feature
pass serves every clean/infrared mix: an image is infrared in mix m when its fixed uniform
draw is below m. Base/new as in the paper: the first half of the labels is base.
CoOp here is a diagnostic (Adam, full batch on frozen features), not the project's trainer.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import nn

from training.scoring import Scorer
from training.shapes.evaluate import (
    DEFAULT_TEMPLATE,
    accuracy,
    encode_images,
    encode_texts,
    linear_probe_accuracy,
    nearest_mean_accuracy,
    render_labelled,
)
from training.shapes.world import WorldConfig, classnames
from training.text_passes import encode_prompts
from training.text_tower import TextTower


def load_pretrained(backbone: Path) -> tuple[nn.Module, object, WorldConfig]:
    open_clip.add_model_config(backbone / "backbone.json")
    model = open_clip.create_model("backbone", pretrained=str(backbone / "weights.safetensors"))
    model.eval().requires_grad_(False)
    record = json.loads((backbone / "pretrain.json").read_text())
    return model, open_clip.get_tokenizer("backbone"), WorldConfig(**record["world"])


def coop(
    model: nn.Module,
    tokenizer,
    feats: torch.Tensor,
    labels: np.ndarray,
    names: list[str],
    steps: int = 300,
    lr: float = 2e-3,
    n_ctx: int = 4,
    init: str = "a photo of a",
) -> torch.Tensor:
    """Learn n_ctx shared context vectors on `names` (labels index `names`); returns ctx [1, n_ctx, W]."""
    tower = TextTower(model, tokenizer)
    tokens = tower.class_tokens(names, n_ctx)
    ctx = nn.Parameter(tower.embed_words(init)[:n_ctx].clone().unsqueeze(0))
    opt = torch.optim.Adam([ctx], lr=lr)
    y = torch.from_numpy(labels)
    scale = Scorer.create(model.logit_scale).factor
    for _ in range(steps):
        text = encode_prompts(tower, ctx, tokens)[0]
        loss = nn.functional.cross_entropy(scale * feats @ text.T, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ctx.detach()


@torch.no_grad()
def coop_logits(model: nn.Module, tokenizer, ctx: torch.Tensor, feats: torch.Tensor, names: list[str]) -> torch.Tensor:
    tower = TextTower(model, tokenizer)
    return feats @ encode_prompts(tower, ctx, tower.class_tokens(names, ctx.shape[1]))[0].T


def calibrate(
    backbone: Path, mixes: list[float], shots: int, test_per_class: int, seed: int, coop_steps: int
) -> list[dict]:
    model, tokenizer, world = load_pretrained(backbone)
    names = classnames()
    n, n_base = len(names), (len(names) + 1) // 2
    views = {}
    for stream, per_class in (("train", shots), ("test", test_per_class)):
        clean, labels, _ = render_labelled(world, seed, stream, per_class, n, 0.0)
        shifted, _, _ = render_labelled(world, seed, stream, per_class, n, 1.0)
        u = np.random.default_rng([seed, 99, len(labels)]).random(len(labels))
        views[stream] = (encode_images(model, clean), encode_images(model, shifted), labels, u)
    text = encode_texts(model, tokenizer, [DEFAULT_TEMPLATE.format(c) for c in names])
    rows = []
    for mix in mixes:
        started = time.time()
        feats = {}
        for stream, (fc, fs, labels, u) in views.items():
            pick = torch.from_numpy(u < mix).unsqueeze(1)
            feats[stream] = (torch.where(pick, fs, fc), labels, u < mix)
        (tr, ytr, _), (te, yte, ir) = feats["train"], feats["test"]
        base_tr, base_te, new_te = ytr < n_base, yte < n_base, yte >= n_base
        zs = te @ text.T
        zs_base = accuracy(zs[base_te][:, :n_base], yte[base_te])
        zs_new = accuracy(zs[new_te][:, n_base:], yte[new_te] - n_base)
        ctx = coop(model, tokenizer, tr[base_tr], ytr[base_tr], names[:n_base], steps=coop_steps)
        coop_train = accuracy(coop_logits(model, tokenizer, ctx, tr[base_tr], names[:n_base]), ytr[base_tr])
        coop_base = accuracy(coop_logits(model, tokenizer, ctx, te[base_te], names[:n_base]), yte[base_te])
        coop_new = accuracy(coop_logits(model, tokenizer, ctx, te[new_te], names[n_base:]), yte[new_te] - n_base)
        row = {
            "mix": mix,
            "zs_all": accuracy(zs, yte),
            "zs_clean": accuracy(zs[torch.from_numpy(~ir)], yte[~ir]),
            "zs_infrared": accuracy(zs[torch.from_numpy(ir)], yte[ir]) if ir.any() else float("nan"),
            "zs_base": zs_base,
            "zs_new": zs_new,
            "ncm_all": nearest_mean_accuracy(tr, ytr, te, yte),
            "probe_all": linear_probe_accuracy(tr, ytr, te, yte),
            "probe_base": linear_probe_accuracy(tr[base_tr], ytr[base_tr], te[base_te], yte[base_te]),
            "coop_train": coop_train,
            "coop_base": coop_base,
            "coop_new": coop_new,
            "seconds": round(time.time() - started, 1),
        }
        rows.append(row)
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", type=Path, required=True, help="directory written by vpt-pretrain-shapes")
    parser.add_argument("--mix", type=float, nargs="+", default=[0.5], help="shares of infrared downstream images")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coop-steps", type=int, default=300)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = calibrate(args.backbone, args.mix, args.shots, args.test_per_class, args.seed, args.coop_steps)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
