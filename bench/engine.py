"""Serving-engine throughput against the reference path and plain zero-shot CLIP, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/engine.py --quick      # < 2 minutes on 2 CPU cores
    .venv/bin/python bench/engine.py --device cuda

Three ways to classify the same images against the same classes, with the same noise:
- reference: what the official Bayesian prompt learning code does. Per image, for each of the
  M samples, build all C prompts at the full context length (77 tokens) and run the text tower
  on them (M passes of C sequences); nothing is cached, also for the unconditional variant.
- engine:    app.engine.Engine (vpt: cached bank, one matmul; vpt-cond: batched, cut, shared prefix).
- zero-shot CLIP: cached "a photo of a {}." text features, one image encode and one matmul.

The reference is slow by design, so it runs on few images and, where marked '~', on fewer
samples than M: its cost is exactly linear in the number of samples (M identical passes), so
ms/image is scaled by M / samples run. Its probabilities are then compared with the engine's
answer for the same number of samples (a prefix of the same noise bank).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine.engine import AUTO, Engine, Prediction  # noqa: E402
from training.backbone import Backbone, autocast, load_backbone  # noqa: E402
from training.learners import LearnerConfig, PromptLearner, create_learner  # noqa: E402
from training.text_passes import MODES, encode_prompts  # noqa: E402
from training.text_tower import CTX_PLACEHOLDER, TextTower  # noqa: E402

SMALL_CONFIG = Path(__file__).with_name("bench-small.json")
ADJECTIVES = "red green blue yellow black white small large striped spotted wooden metal golden silver dark light wild old young tiny".split()  # noqa: E501
NOUNS = (
    "dog cat fox bird car truck boat plane chair table lamp clock shoe hat apple orange banana flower tree "
    "house bridge tower guitar piano drum camera phone bottle cup bowl horse cow sheep goat frog snake turtle "
    "shark whale dolphin owl eagle parrot tiger lion bear wolf rabbit mouse spider"
).split()


def class_names(n: int) -> list[str]:
    """n distinct two- or three-token names ('striped fox', ...), a seeded shuffle of 1,000."""
    names = [f"{a} {b}" for b in NOUNS for a in ADJECTIVES]
    random.Random(0).shuffle(names)
    return names[:n]


def make_learner(
    backbone: Backbone, variant: str, seed: int = 0, log_var: float = -4.0, spread: float = 0.05
) -> PromptLearner:
    """A learner with non-trivial weights (random backbone: there is nothing to fit); spread nudges its MLPs."""
    torch.manual_seed(seed)
    learner = create_learner(LearnerConfig(variant, log_var_init=log_var), backbone)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if name != "ctx":
                p.add_(torch.randn_like(p) * spread)
    return learner.to(backbone.device).eval().requires_grad_(False)


class Reference:
    """The official code's inference path: per image, M passes of C full-length prompts."""

    def __init__(self, backbone: Backbone, learner: PromptLearner, names: list[str]) -> None:
        clip = backbone.model
        n_ctx = learner.cfg.n_ctx
        ids = backbone.tokenizer([" ".join([CTX_PLACEHOLDER] * n_ctx) + f" {n}." for n in names]).to(backbone.device)
        with torch.no_grad():
            emb = clip.token_embedding(ids)
        self.backbone, self.learner, self.clip = backbone, learner, clip
        self.prefix, self.suffix, self.eot = emb[:, :1], emb[:, 1 + n_ctx :], ids.argmax(dim=-1)

    def text_encoder(self, prompts: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        x = prompts + clip.positional_embedding.to(prompts.dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), self.eot] @ clip.text_projection

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        """(per-sample probabilities [M, C] per image, seconds spent encoding images); batch size 1."""
        out, encode_s = [], 0.0
        n_cls = self.prefix.shape[0]
        for image in images:
            start = time.perf_counter()
            f = self.backbone.encode_images(image[None])
            encode_s += time.perf_counter() - start
            mu, log_var = self.learner.posterior(f)
            probs = []
            for eps in noise:
                ctx = self.learner.ctx + (mu + torch.exp(0.5 * log_var) * eps)[0]
                prompts = torch.cat([self.prefix, ctx.expand(n_cls, -1, -1), self.suffix], dim=1)
                with autocast(self.backbone.device):
                    text = F.normalize(self.text_encoder(prompts).float(), dim=-1)
                probs.append(torch.softmax(self.backbone.scorer().factor * f @ text.T, dim=-1))
            out.append(torch.cat(probs))
        return out, encode_s


class ZeroShotCLIP:
    """Plain CLIP: cached class text features (computed once), one image encode and one matmul."""

    def __init__(self, backbone: Backbone, names: list[str]) -> None:
        tower = TextTower(backbone.model, backbone.tokenizer)
        with torch.inference_mode(), autocast(backbone.device):
            tokens = tower.class_tokens(names, 0, "a photo of a {}.")
            ctx = torch.zeros(1, 0, tower.width, device=backbone.device)
            self.text = encode_prompts(tower, ctx, tokens)[0]
        self.backbone = backbone

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        f = self.backbone.encode_images(images)
        return torch.softmax(self.backbone.scorer().factor * f @ self.text.T, dim=-1).cpu()


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or sampled RSS growth over the start on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        try:  # hand freed heap back, so the start is not inflated by earlier runs
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.high = _rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.002):
            self.high = max(self.high, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
            return
        self.stop.set()
        self.thread.join()
        self.peak_mb = (max(self.high, _rss()) - self.base) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(
    fns: dict[str, Callable[[], object]], device: torch.device, min_time: float, min_reps: int = 1, max_reps: int = 30
) -> dict[str, tuple[list[float], float]]:
    """{name: (seconds of each timed call, peak MB)}. The first call warms up and measures peak
    memory; then rounds call every function once (interleaved, so a busy neighbour slows them
    alike) until each has run min_time seconds and min_reps times. A function whose warm-up
    call alone exceeds min_time is not repeated."""
    times: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    for name, fn in fns.items():
        with PeakMemory(device) as mem:
            times[name] = [_timed(fn, device)]
        peaks[name] = mem.peak_mb
    for _ in range(max_reps):
        todo = [n for n, t in times.items() if t[0] < min_time and (sum(t[1:]) < min_time or len(t) <= min_reps)]
        if not todo:
            break
        for name in fns:  # whole rounds keep the calls paired for ratios
            times[name].append(_timed(fns[name], device))
    return {n: (t[1:] or t, peaks[n]) for n, t in times.items()}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a_i / b_i: robust to load that comes and goes between rounds."""
    ratios = sorted(x / y for x, y in zip(a, b))
    return ratios[len(ratios) // 2]


@dataclass
class Row:
    config: str
    classes: int
    samples: int
    method: str
    images: int
    ms_per_image: float
    peak_mb: float
    note: str = ""
    speedup: float | None = None  # reference ms / this ms
    vs_zeroshot: float | None = None  # this images/s / zero-shot CLIP images/s
    max_diff: float | None = None  # max |p_engine - p_reference|


@dataclass
class Plan:
    batch: int  # images per engine vpt / zero-shot call
    cond_images: int  # images per engine vpt-cond call
    ref_images: int
    ref_samples: int  # samples the reference runs; ms/image is scaled to M when fewer
    min_time: float
    ref_classes: int | None = None  # classes the reference runs (None: all); ms/image scaled to C when fewer


def probs_by_label(pred: Prediction, names: list[str]) -> torch.Tensor:
    by = {c.label: c.probability for c in pred.classes}
    return torch.tensor([by[n] for n in names])


def bench_classes(
    config: str, backbone: Backbone, learners: dict[str, PromptLearner], n_cls: int, samples: list[int], plan: Plan
) -> list[Row]:
    """Every method at C classes, for each M in `samples`; one engine per variant (max_samples = max M)."""
    device = backbone.device
    names = class_names(n_cls)
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    n_img = max(plan.batch, plan.cond_images, plan.ref_images)
    images = torch.randn(n_img, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    zs = ZeroShotCLIP(backbone, names)
    engines, register = {}, {}
    for variant, learner in learners.items():
        engines[variant] = Engine(backbone, learner, max_samples=max(samples), seed=0)
        start = time.perf_counter()
        engines[variant].set_classes(names)
        register[variant] = time.perf_counter() - start

    # The reference once per variant: per-sample probabilities, so every M <= k is checked exactly.
    # The cost is linear in samples and classes (identical passes of independent sequences).
    k = min(max(samples), plan.ref_samples)
    ref_cls = min(n_cls, plan.ref_classes or n_cls)
    ref_images = images[: plan.ref_images]
    reference = {}
    for variant, learner in learners.items():
        ref = Reference(backbone, learner, names[:ref_cls])
        start = time.perf_counter()
        per_sample, encode_s = ref.predict(ref_images, engines[variant].noise[:k])  # [k, C] per image
        passes_s = (time.perf_counter() - start - encode_s) / len(ref_images) * (n_cls / ref_cls)
        reference[variant] = (per_sample if ref_cls == n_cls else None, encode_s / len(ref_images), passes_s / k)

    rows: list[Row] = []
    for m in samples:
        batch, cond = images[: plan.batch], images[: plan.cond_images]
        fns = {
            "zero-shot CLIP": partial(zs.predict, batch),
            "vpt": partial(engines["vpt"].predict, batch, [m] * len(batch)),
        }
        timing = measure(fns, device, plan.min_time, min_reps=5)
        vpt_vs_zs = paired_ratio(timing["zero-shot CLIP"][0], timing["vpt"][0])
        cond_fn = partial(engines["vpt-cond"].predict, cond, [m] * len(cond))
        timing |= measure({"vpt-cond": cond_fn}, device, plan.min_time, min_reps=3)  # slow calls: once
        zs_ms = 1000 * min(timing["zero-shot CLIP"][0]) / len(batch)
        rows.append(Row(config, n_cls, m, "zero-shot CLIP", len(batch), zs_ms, timing["zero-shot CLIP"][1]))
        for variant, engine in engines.items():
            per_sample, encode_s, sample_s = reference[variant]
            used = min(m, k)
            diff = None
            if per_sample is not None:
                got = engine.predict(ref_images, [used] * len(ref_images))
                diff = max(
                    (probs_by_label(p, names) - r[:used].mean(dim=0).cpu()).abs().max().item()
                    for p, r in zip(got, per_sample)
                )
            ref_ms = 1000 * (encode_s + sample_s * m)
            scaled = [f"{k} of {m} samples"] if k < m else []
            scaled += [f"{ref_cls} of {n_cls} classes"] if ref_cls < n_cls else []
            note = f"~ timed on {', '.join(scaled)}" if scaled else ""
            rows.append(Row(config, n_cls, m, f"reference {variant}", len(ref_images), ref_ms, float("nan"), note))
            n = len(cond) if engine.cfg.per_image else len(batch)
            eng_ms = 1000 * min(timing[variant][0]) / n
            vs_zs = vpt_vs_zs if variant == "vpt" else zs_ms / eng_ms  # vpt: paired rounds, same batch
            rows.append(
                Row(
                    config, n_cls, m, f"engine {variant}", n, eng_ms, timing[variant][1],
                    f"register {register[variant]:.2f} s" + (f"; diff at {used} samples" if used < m else ""),
                    speedup=ref_ms / eng_ms, vs_zeroshot=vs_zs, max_diff=diff,
                )
            )  # fmt: skip
    return rows


def bench_text_modes(backbone: Backbone, learner: PromptLearner, n_cls: int, m: int, n_img: int) -> list[str]:
    """vpt-cond with each text-pass mode (whole sequences / EOT-only last layer / shared prefix)."""
    names = class_names(n_cls)
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    images = torch.randn(n_img, 3, size, size, generator=torch.Generator().manual_seed(2)).to(backbone.device)
    fns, answers = {}, {}
    for mode in MODES:
        engine = Engine(backbone, learner, max_samples=m, text_mode=mode)
        engine.set_classes(names)
        fns[mode] = partial(engine.predict, images, [m] * n_img)
        answers[mode] = torch.stack([probs_by_label(p, names) for p in fns[mode]()])
    timing = {mode: (min(t), mb) for mode, (t, mb) in measure(fns, backbone.device, 0.0).items()}
    base = timing["tower"][0]
    lines = [
        "| text-pass mode (vpt-cond) | ms/image | vs tower | peak MB | max abs diff p vs tower |",
        "|---|---|---|---|---|",
    ]
    for mode, (sec, mb) in timing.items():
        diff = (answers[mode] - answers["tower"]).abs().max().item()
        lines.append(f"| {mode} | {1000 * sec / n_img:,.1f} | {base / sec:.2f}x | {mb:.0f} | {diff:.1e} |")
    return lines


# The linear row's posterior: sigma = e^-8 ~ 3e-4 and mu(f) nearly constant, narrow enough for the guard
# on the random small backbone (the default bench learner, sigma e^-2, measures ~2e-2 and runs exact).
NARROW = {"log_var": -16.0, "spread": 0.001}


def bench_linear(backbone: Backbone, n_cls: int, m: int, n_img: int, min_time: float) -> tuple[Row, list[str]]:
    """vpt-cond in cond_mode "linear" against the exact engine and zero-shot CLIP (same images, same noise)."""
    names = class_names(n_cls)
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    images = torch.randn(n_img, 3, size, size, generator=torch.Generator().manual_seed(3)).to(backbone.device)
    learner = make_learner(backbone, "vpt-cond", **NARROW)
    exact = Engine(backbone, learner, max_samples=m)
    linear = Engine(backbone, learner, max_samples=m, cond_mode="linear")
    exact.set_classes(names)
    start = time.perf_counter()
    linear.set_classes(names)
    register = time.perf_counter() - start
    zs = ZeroShotCLIP(backbone, names)
    timing = measure(
        {"zero-shot CLIP": partial(zs.predict, images), "linear": partial(linear.predict, images, [m] * n_img)},
        backbone.device, min_time, min_reps=5,
    )  # fmt: skip
    got = torch.stack([probs_by_label(p, names) for p in linear.predict(images, [m] * n_img)])
    want = torch.stack([probs_by_label(p, names) for p in exact.predict(images, [m] * n_img)])
    lin = linear._classes.linear
    ms = 1000 * min(timing["linear"][0]) / n_img
    row = Row(
        "small", n_cls, m, f"engine vpt-cond linear ({linear.active_cond_mode})", n_img, ms, timing["linear"][1],
        f"register {register:.2f} s; Jacobians {lin.nbytes / 2**20:.1f} MB; guard max |dp| {linear.linear_error:.1e}",
        vs_zeroshot=paired_ratio(timing["zero-shot CLIP"][0], timing["linear"][0]),
        max_diff=(got - want).abs().max().item(),
    )  # fmt: skip
    default = Engine(backbone, make_learner(backbone, "vpt-cond"), max_samples=m, cond_mode="linear")
    default.set_classes(names[:10])
    note = (
        f"# guard on the default bench learner (sigma e^-2), C=10, M={m}: max |dp| {default.linear_error:.1e} "
        f"-> {default.active_cond_mode}"
    )
    return row, [note]


def bench_auto(backbone: Backbone, learner: PromptLearner, n_cls: int, m: int, n_img: int) -> Row:
    """vpt-cond (exact pass) with samples=AUTO against the same engine at the full M."""
    names = class_names(n_cls)
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    images = torch.randn(n_img, 3, size, size, generator=torch.Generator().manual_seed(4)).to(backbone.device)
    engine = Engine(backbone, learner, max_samples=m)
    engine.set_classes(names)
    fns = {
        "full": partial(engine.predict, images, [m] * n_img),
        "auto": partial(engine.predict, images, [AUTO] * n_img),
    }
    timing = measure(fns, backbone.device, 0.0)
    full, auto = fns["full"](), fns["auto"]()
    diff = max((probs_by_label(a, names) - probs_by_label(f, names)).abs().max().item() for a, f in zip(auto, full))
    used = sum(p.samples for p in auto) / n_img
    ms = 1000 * min(timing["auto"][0]) / n_img
    note = f"mean {used:.1f} of {m} samples (tolerance {engine.auto_tolerance}); full M {1000 * min(timing['full'][0]) / n_img:,.1f} ms/image"  # noqa: E501
    return Row("small", n_cls, m, "engine vpt-cond samples=auto", n_img, ms, timing["auto"][1], note, max_diff=diff)


def print_table(rows: list[Row]) -> None:
    head = "| config | C | M | method | images | images/s | ms/image | peak MB | speedup vs ref | vs zero-shot | max abs diff p | note |"  # noqa: E501
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        opt = [
            "" if r.speedup is None else f"{r.speedup:,.1f}x",
            "" if r.vs_zeroshot is None else f"{r.vs_zeroshot:.2f}x",
            "" if r.max_diff is None else f"{r.max_diff:.1e}",
        ]
        peak = "" if r.peak_mb != r.peak_mb else f"{r.peak_mb:.0f}"
        print(
            f"| {r.config} | {r.classes} | {r.samples} | {r.method} | {r.images} | {1000 / r.ms_per_image:,.2f} "
            f"| {r.ms_per_image:,.1f} | {peak} | {opt[0]} | {opt[1]} | {opt[2]} | {r.note} |"
        )


def machine_facts(device: torch.device) -> str:
    facts = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}"
    )
    if device.type == "cuda":
        facts += f" ({torch.cuda.get_device_name(device)})"
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few images, the reference on few samples (< 2 min)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"# machine: {machine_facts(device)}")
    start = time.perf_counter()

    torch.manual_seed(0)
    small = load_backbone(str(SMALL_CONFIG), "none", device)
    learners = {v: make_learner(small, v) for v in ("vpt", "vpt-cond")}
    gpu = device.type == "cuda"
    rows: list[Row] = []
    for n_cls in (10, 100, 1000):
        if gpu:
            plan = Plan(batch=64, cond_images=8, ref_images=2, ref_samples=20, min_time=1.0)
        elif args.quick:
            ref = {10: (20, None), 100: (4, None), 1000: (1, 250)}[n_cls]
            plan = Plan(16, 1 if n_cls == 1000 else 2, 1, *ref[:1], min_time=0.3, ref_classes=ref[1])
        else:
            ref_samples = {10: 20, 100: 20, 1000: 2}[n_cls]
            plan = Plan(32, 2 if n_cls == 1000 else 4, 2 if n_cls < 1000 else 1, ref_samples, min_time=2.0)
        rows += bench_classes("small", small, learners, n_cls, [10, 20], plan)
        print(f"# small C={n_cls} done at {time.perf_counter() - start:.0f} s", file=sys.stderr)

    modes = bench_text_modes(small, learners["vpt-cond"], 100, 20, 8 if gpu else 1 if args.quick else 2)
    linear_row, linear_notes = bench_linear(small, 100, 20, 16 if args.quick else 32, 0.3 if args.quick else 2.0)
    rows.append(linear_row)
    rows.append(bench_auto(small, learners["vpt-cond"], 100, 20, 2 if args.quick else 4))
    del small, learners
    torch.manual_seed(0)
    big = load_backbone("ViT-B-16-quickgelu", "none", device)
    big_learners = {v: make_learner(big, v) for v in ("vpt", "vpt-cond")}
    if gpu:
        plan = Plan(batch=64, cond_images=8, ref_images=2, ref_samples=10, min_time=1.0)
    elif args.quick:
        plan = Plan(batch=2, cond_images=1, ref_images=1, ref_samples=1, min_time=0.0)
    else:
        plan = Plan(batch=8, cond_images=2, ref_images=1, ref_samples=2, min_time=2.0)
    rows += bench_classes("ViT-B/16", big, big_learners, 10, [10], plan)

    print_table(rows)
    print()
    print("\n".join(modes))
    print("\n".join(linear_notes))
    print(f"# total {time.perf_counter() - start:.0f} s")
    key = {r.method: r for r in rows if r.config == "small" and r.classes == 100 and r.samples == 20}
    vpt, cond = key["engine vpt"], key["engine vpt-cond"]
    print(
        f"RESULT speedup_vpt={vpt.speedup:.1f} speedup_cond={cond.speedup:.1f} "
        f"vpt_vs_zeroshot={vpt.vs_zeroshot:.2f} max_abs_diff={max(vpt.max_diff, cond.max_diff):.1e} "
        f"cond_linear_vs_zeroshot={linear_row.vs_zeroshot:.2f} cond_linear_max_abs_diff={linear_row.max_diff:.1e}"
    )


if __name__ == "__main__":
    main()
