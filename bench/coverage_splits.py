"""Split-conformal coverage on the shapes world: the fixed val -> test split, and re-drawn splits.

The guarantee of split conformal prediction is marginal: over the draw of the calibration images
as well as the test image. One fixed calibration set can land above or below 1 - alpha by chance
(its images easier or harder than the test images). This fits one `vpt` posterior on the shipped
world, then measures the coverage at alpha on the test images when calibrating on the val split
(what `vpt-eval base2new` reports), and over many random halvings of val + test pooled, where the
average should sit at 1 - alpha (to sampling error). Prints one RESULT line.

    python bench/coverage_splits.py [--alpha 0.1] [--splits 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.backbone import load_backbone  # noqa: E402
from training.calibration import conformal_scores, conformal_threshold, fit_temperature, prediction_sets  # noqa: E402
from training.classifier import PromptClassifier  # noqa: E402
from training.data import class_subset, few_shot, load_dataset  # noqa: E402
from training.evaluate import predict_logits  # noqa: E402
from training.features import encode_samples  # noqa: E402
from training.fit import FitConfig, fit  # noqa: E402
from training.learners import LearnerConfig  # noqa: E402
from training.shapes.cache import ensure_world  # noqa: E402
from training.uncertainty import summarize  # noqa: E402


def coverage(cal_logits, cal_y, test_logits, test_y, temperature, method, alpha) -> tuple[float, float]:
    cal = summarize(cal_logits / temperature).probs
    test = summarize(test_logits / temperature).probs
    q = conformal_threshold(conformal_scores(cal, cal_y, method).sort().values.tolist(), alpha)
    member = prediction_sets(test, q, method)
    return float(member.gather(1, test_y[:, None]).float().mean()), float(member.sum(1).float().mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--splits", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    world = ensure_world(None, quick=False)
    backbone = load_backbone(str(world.config), str(world.weights), "cpu")
    dataset = load_dataset(world.dataset)
    names, base_of = class_subset(dataset, "base")
    train = encode_samples(backbone, few_shot(base_of(dataset.train), 16, args.seed))
    val = encode_samples(backbone, base_of(dataset.val))
    test = encode_samples(backbone, base_of(dataset.test))
    torch.manual_seed(args.seed)
    clf = PromptClassifier.create(backbone, LearnerConfig("vpt"), names)
    fit(clf, *train, FitConfig(epochs=4, batch_size=8, samples=4, seed=args.seed))
    lv, lt = predict_logits(clf, val[0], 8, args.seed), predict_logits(clf, test[0], 8, args.seed)
    t = fit_temperature(lv, val[1])
    acc = {
        k: float((summarize(v).probs.argmax(1) == y).float().mean())
        for k, v, y in (("val", lv, val[1]), ("test", lt, test[1]))
    }
    print(f"accuracy val {100 * acc['val']:.1f}%  test {100 * acc['test']:.1f}%  (T = {t:.3f})")
    pooled, labels = torch.cat([lv, lt]), torch.cat([val[1], test[1]])
    out = {}
    for method in ("lac", "aps"):
        fixed, size = coverage(lv, val[1], lt, test[1], t, method, args.alpha)
        redrawn = []
        for s in range(args.splits):
            perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(s))
            a, b = perm[: len(val[1])], perm[len(val[1]) :]
            redrawn.append(coverage(pooled[a], labels[a], pooled[b], labels[b], t, method, args.alpha)[0])
        mean = statistics.fmean(redrawn)
        print(
            f"{method}: val -> test coverage {fixed:.3f} (mean set size {size:.2f}); "
            f"{args.splits} re-drawn splits: mean {mean:.3f}, min {min(redrawn):.3f}, max {max(redrawn):.3f}"
        )
        out[method] = (fixed, mean)
    print(
        f"RESULT alpha={args.alpha} lac_fixed={out['lac'][0]:.3f} lac_redrawn_mean={out['lac'][1]:.3f} "
        f"aps_fixed={out['aps'][0]:.3f} aps_redrawn_mean={out['aps'][1]:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
