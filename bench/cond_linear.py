"""vpt-cond's linear pass on a trained posterior: one expansion point against one per bank row.

bench/engine.py measures the linear pass on a random backbone with a deliberately narrow posterior;
this measures it where users are: a vpt-cond posterior fitted on the shapes world (sigma ~ 0.1).
Three linearisations of the same posterior and classes are compared with the exact pass on real
test images (max and mean |dp| over images and classes, top-1 agreement):
- one point: every sample expanded around mu0 (the engine before per-sample points);
- per-sample points, the guard on random unit vectors (artifacts without stored probes);
- per-sample points, the guard on the held-out image features stored in the artifact.
Then images/s of the exact pass, the linear pass and zero-shot CLIP on the same images.

    python bench/cond_linear.py --posterior P.safetensors [--images 40]

P: a vpt-cond artifact on the shipped shapes backbone, e.g. from
    vpt-train --data <world dataset> --backbone <demo backbone.json> --weights <demo weights> \\
        --variant vpt-cond --shots 16 --classes base --epochs 5 --batch-size 32 --samples 5 --lr 0.01 \\
        --warmup-epochs 0 --log-var-lr-scale 20 --out P.safetensors
(the world dataset and backbone: what `vpt-eval base2new` uses, under ~/.cache/vpt).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine.engine import Engine  # noqa: E402
from app.engine.linear import (  # noqa: E402
    expansion_points,
    guard_error,
    linear_logits,
    linearise,
    probe_features,
)
from training.artifact import load_posterior, read_metadata  # noqa: E402
from training.backbone import load_backbone  # noqa: E402
from training.data import class_subset, load_dataset  # noqa: E402
from training.features import encode_samples  # noqa: E402
from training.shapes.cache import ensure_world  # noqa: E402
from training.text_passes import length_groups  # noqa: E402


def mean_probs(logits: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([lg.float().softmax(-1).mean(0) for lg in logits])


def compare(engine: Engine, r0: torch.Tensor, probes: torch.Tensor, feats: torch.Tensor, exact: torch.Tensor) -> dict:
    """A linearisation around points r0 [M, W]: its guard error on `probes`, its error on real image features
    against the exact mean probabilities `exact` [N, C]."""
    m, classes = engine.max_samples, engine._classes  # noqa: SLF001 - the bench builds linearisations by hand
    with torch.inference_mode():
        lin = linearise(engine.passes, engine.learner.ctx.float(), r0, length_groups(classes.tokens), len(classes))
        probe_exact = engine._logits(classes, probes, [m] * len(probes))  # noqa: SLF001
        guard = guard_error(lin, engine.learner, probes, engine.noise, engine.scorer, probe_exact)
        approx = mean_probs(linear_logits(lin, engine.learner, feats, [m] * len(feats), engine.noise, engine.scorer))
    diff = (approx - exact).abs()
    top1 = float((approx.argmax(1) == exact.argmax(1)).float().mean())
    return {"guard": guard, "max": float(diff.max()), "mean": float(diff.mean()), "top1": top1}


def images_per_s(engine: Engine, images: torch.Tensor, samples: int) -> float:
    """End to end from preprocessed images: the image encode included, as a server answers."""
    engine.predict(images[:2], [samples] * 2)
    start = time.perf_counter()
    engine.predict(images, [samples] * len(images))
    return len(images) / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posterior", type=Path, required=True, help="a vpt-cond artifact on the shipped shapes backbone")
    p.add_argument("--images", type=int, default=40, help="test images compared")
    p.add_argument("--samples", type=int, default=20, help="M")
    args = p.parse_args()
    if read_metadata(args.posterior)["variant"] != "vpt-cond":
        raise SystemExit(f"{args.posterior} is not a vpt-cond posterior")
    torch.set_num_threads(1)
    world = ensure_world(None, quick=False)
    backbone = load_backbone(str(world.config), str(world.weights), "cpu")
    post = load_posterior(args.posterior, backbone)
    if post.probes is None:
        raise SystemExit(f"{args.posterior} stores no held-out probe features (re-run vpt-calibrate on it)")
    dataset = load_dataset(world.dataset)
    _, base_of = class_subset(dataset, "base")
    test = base_of(dataset.test)
    test = test[:: max(1, len(test) // args.images)][: args.images]
    feats, _ = encode_samples(backbone, test)
    m = args.samples
    engine = Engine.from_posterior(backbone, args.posterior, max_samples=m)  # the exact pass
    engine.set_classes(post.classnames)
    with torch.inference_mode():
        exact = mean_probs(engine._logits(engine._classes, feats, [m] * len(feats)))  # noqa: SLF001
        random_probes = probe_features(4, feats.shape[1], 0, feats.device)
        mu, _ = engine.learner.posterior(random_probes)
        rows = {
            "one point (before)": compare(engine, mu.mean(0).expand(m, -1).contiguous(), random_probes, feats, exact),
            "per-sample points, random probes": compare(
                engine, expansion_points(engine.learner, random_probes, engine.noise), random_probes, feats, exact
            ),
            "per-sample points, stored held-out probes": compare(
                engine, expansion_points(engine.learner, post.probes, engine.noise), post.probes, feats, exact
            ),
        }
    print(f"{args.posterior.name}: vpt-cond, C = {len(post.classnames)}, M = {m}, {len(feats)} test images")
    print("| linearisation | guard max \\|dp\\| (probes) | max \\|dp\\| (test images) | mean \\|dp\\| | top-1 agrees |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['guard']:.1e} | {r['max']:.1e} | {r['mean']:.1e} | {r['top1']:.3f} |")
    linear = Engine.from_posterior(backbone, args.posterior, max_samples=m, cond_mode="linear", linear_tolerance=1.0)
    linear.set_classes(post.classnames)
    zeroshot = Engine.from_posterior(backbone, None, max_samples=m)
    zeroshot.set_classes(post.classnames)
    pixels = torch.stack([backbone.preprocess(Image.open(s.path).convert("RGB")) for s in test[:16]])
    speed = {
        "exact": images_per_s(engine, pixels[:8], m),
        "linear": images_per_s(linear, pixels, m),
        "zeroshot": images_per_s(zeroshot, pixels, 1),
    }
    print("images/s, images in, one thread: " + ", ".join(f"{k} {v:.1f}" for k, v in speed.items()))
    stored = rows["per-sample points, stored held-out probes"]
    print(
        f"RESULT one_point_max_dp={rows['one point (before)']['max']:.2e} per_sample_max_dp={stored['max']:.2e} "
        f"per_sample_mean_dp={stored['mean']:.2e} top1_agreement={stored['top1']:.3f} guard_stored_probes="
        f"{stored['guard']:.2e} linear_vs_exact={speed['linear'] / speed['exact']:.1f} "
        f"linear_vs_zeroshot={speed['linear'] / speed['zeroshot']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
