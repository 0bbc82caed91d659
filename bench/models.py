"""Many posteriors on one backbone: memory and throughput with 1, 10 and 100 vpt models, and a hot swap.

Makes N vpt posteriors (C = 100 classes each: every model serves the world's 100 classes) from the
shipped demo posterior, each with its own small perturbation of the learned tensors (so its own
sha256, hence its own version), and starts real `vpt-serve --models-dir` servers on loopback:

- memory: the server's RSS (/proc/<pid>/status VmRSS) with 1, N/10 and N models loaded, read after
  readiness, a settle and a few warm requests to every model; per extra posterior =
  (RSS_N - RSS_1) / (N - 1), against its analytic size M x C x D fp32 floats (the class cache of text
  features) + the posterior's parameters. Where the difference goes is counted on an engine built
  in this process (the tensors an engine keeps per model).
- throughput: closed-loop keep-alive clients (the raw request driver of bench/serve_load.py: the
  load generator shares the CPUs with the server) against the 1-model server and the N-model server
  with requests spread round robin over the models (?model=); runs alternate single/spread twice
  and the median of each is kept.
- swap: on a 2-model server, 32 concurrent clients (app.client.AsyncClient) classify with model
  m000 while its file is replaced atomically (os.replace) and POST /models/m000/reload is called;
  then again on a fresh server that picks the change up with its file watcher. Every answer must be
  a 2xx naming the old or the new version, and every answer to a request sent after the swap (the
  reload returned / GET /models showed the new version) the new one.

Ends with one line (wrapped here)
    RESULT models=<n> mem_ratio=<measured / analytic per extra posterior>
           throughput_ratio=<spread / single> swap_errors=<non-2xx during the swaps>

Servers run with OMP_NUM_THREADS=--threads (default 1); every wait is bounded and every server is
stopped on exit. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from serve_load import Load, build_request, drive_requests, free_port, load_images, run_loop, stop_process

from app.client import AsyncClient, Client, VPTError

ROOT = Path(__file__).resolve().parents[1]
FLOAT_BYTES = 4  # the class cache is fp32 on the CPU (checked against the engine in engine_footprint)


def say(line: str) -> None:
    print(f"[models] {line}", file=sys.stderr, flush=True)


# -- the posteriors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSet:
    backbone: Path  # open_clip config of the demo backbone
    weights: Path
    classes: list[str]  # what every model serves (the world's classes)
    files: list[Path]  # m000 ... : the posteriors
    swap_file: Path  # another version of m000 (written beside the models folder, moved in by os.replace)
    embed_dim: int
    param_bytes: int  # the posterior's tensors: sum of numel x element size (the same for every file)


def make_models(root: Path, count: int, data_dir: Path) -> ModelSet:
    """`count` perturbed copies of the shipped demo posterior (and one more version of m000)."""
    from app.demo import prepare_demo
    from training.artifact import load_posterior, read_metadata, save_posterior
    from training.backbone import load_backbone
    from training.shapes.world import classnames

    demo = prepare_demo(data_dir, say=say)
    backbone = load_backbone(str(demo.backbone), str(demo.weights), "cpu")
    meta = read_metadata(demo.posterior)
    post = load_posterior(demo.posterior, backbone)
    base = {k: v.clone() for k, v in post.learner.state_dict().items()}
    folder = root / "models"

    def write(path: Path, seed: int) -> Path:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in post.learner.state_dict().items():
                tensor.copy_(base[name] + 1e-3 * torch.randn(base[name].shape, generator=gen))
        return save_posterior(
            path, post.learner, backbone.identity, post.classnames, meta["training"], meta["metrics"], post.calibration
        )

    files = [write(folder / f"m{i:03d}.safetensors", 1 + i) for i in range(count)]
    swap_file = write(root / "staging" / "m000.safetensors", 100_000)
    ident = backbone.identity
    return ModelSet(
        demo.backbone,
        demo.weights,
        classnames(),
        files,
        swap_file,
        ident.embed_dim,
        sum(v.numel() * v.element_size() for v in base.values()),
    )


def seed_registry(path: Path, names: list[str], classes: list[str]) -> None:
    """A server's own registry with `classes` for every model (the demo posterior was fitted on 50
    base classes and calibrated on all 100: each model serves all 100, C = 100)."""
    from app.registry import open_registry

    registry = open_registry(path, legacy_model=names[0])
    try:
        for name in names:
            registry.seed(name, classes)
    finally:
        registry.close()


def engine_footprint(models: ModelSet, samples: int) -> dict[str, int]:
    """Bytes of the tensors one engine keeps for its model (100 classes registered, warmed up), each
    storage counted once, in the part that holds it first: what an extra posterior really costs."""
    from app.engine.engine import Engine
    from training.backbone import load_backbone

    backbone = load_backbone(str(models.backbone), str(models.weights), "cpu")
    engine = Engine.from_posterior(backbone, models.files[0], max_samples=samples)
    engine.set_classes(models.classes)
    engine.warmup()
    classes = engine._classes  # noqa: SLF001 - a read-only look at what the engine keeps
    if classes.text_t is None or classes.text_t.dtype != torch.float32:
        raise SystemExit(f"unexpected class cache: {None if classes.text_t is None else classes.text_t.dtype}")
    tokens = classes.tokens
    parts = {
        "class cache text_t [D, M, C]": [classes.text_t, classes.text],  # text: a view of text_t
        "class token embeddings (ClassTokens)": [tokens.prefix, tokens.suffix, tokens.eot] if tokens else [],
        "context rows, noise bank, probes": [engine.cache.shared_ctx, engine.noise, engine._probes],  # noqa: SLF001
        "posterior parameters": list(engine.learner.state_dict().values()),
    }
    seen: set[int] = set()
    out: dict[str, int] = {}
    for name, tensors in parts.items():
        total = 0
        for t in tensors:
            if t is None:
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        out[name] = total
    return out


# -- servers ----------------------------------------------------------------------------------


@dataclass
class ModelServer:
    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def rss(self) -> int:
        """Resident set size in bytes (VmRSS)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


@contextmanager
def serve(
    name: str, root: Path, models: ModelSet, files: list[Path], args: argparse.Namespace, poll_s: float = 0.0
) -> Iterator[ModelServer]:
    """`vpt-serve --models-dir` over copies of `files`, with its own registry; stopped on exit."""
    work = root / name
    folder = work / "models"
    folder.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    names = sorted(f.stem for f in files)
    seed_registry(work / "classes.sqlite", names, models.classes)
    port = free_port()
    flags = {
        "--models-dir": folder,
        "--backbone": models.backbone,
        "--weights": models.weights,
        "--device": "cpu",
        "--max-samples": args.samples,
        "--samples": args.samples,
        "--models-poll-s": poll_s,
        "--registry": work / "classes.sqlite",
        "--data-dir": work,
        "--host": "127.0.0.1",
        "--port": port,
        "--max-queue": max(256, 4 * max(args.clients, args.swap_clients)),
        "--log-level": "warning",
    }
    command = [sys.executable, "-m", "app.cli", *(str(part) for pair in flags.items() for part in pair)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPT_")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    log = work / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ModelServer(name, f"http://127.0.0.1:{port}", process, log)
    try:
        started = time.monotonic()
        wait_ready(server, args.start_timeout)
        say(f"{name}: {len(files)} models ready in {time.monotonic() - started:.1f} s (pid {process.pid})")
        yield server
    finally:
        server.stop()


def wait_ready(server: ModelServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with Client(server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise SystemExit(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
            if client.ready():
                return
            time.sleep(0.5)
    raise SystemExit(f"{server.name} not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


# -- memory -----------------------------------------------------------------------------------


@dataclass
class Memory:
    models: int
    rss_ready: int  # after readiness and a settle
    rss: int  # after warm requests to every model (median of a few reads)
    load_s: float


def measure_memory(
    server: ModelServer, names: list[str], image: bytes, args: argparse.Namespace, load_s: float
) -> Memory:
    time.sleep(args.settle)
    rss_ready = server.rss()
    with Client(server.url, timeout=60) as client:
        for name in names:
            for _ in range(args.warm_requests):
                answer = client.classify(image, model=name, top_k=1)
                if answer.model.name != name or len(answer.classes) != 1:
                    raise SystemExit(f"{server.name}: model {name} answered as {answer.model.name}")
        served = client.models()
        if sorted(served.names) != sorted(names) or any(m.classes != args.classes for m in served.models):
            raise SystemExit(f"{server.name}: serves {len(served.names)} models, not the {len(names)} with C classes")
    time.sleep(args.settle)
    reads = []
    for _ in range(5):
        reads.append(server.rss())
        time.sleep(0.3)
    return Memory(len(names), rss_ready, int(statistics.median(reads)), load_s)


# -- throughput -------------------------------------------------------------------------------


@dataclass
class Throughput:
    run: str  # "single" or "spread"
    images_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    errors: int
    seconds: float


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def requests_for(url: str, images: list[bytes], names: list[str], top_k: int) -> list[bytes]:
    """Pre-built requests: the n-th asks model names[n % len(names)] (round robin), images in turn."""
    host = url.removeprefix("http://")
    count = math.lcm(len(images), len(names))
    return [
        build_request(host, images[k % len(images)], {"model": names[k % len(names)], "top_k": top_k})
        for k in range(count)
    ]


def measure_throughput(run: str, url: str, raws: list[bytes], args: argparse.Namespace) -> Throughput:
    async def bounded() -> Load:
        return await asyncio.wait_for(
            drive_requests(url, raws, args.clients, args.requests, 2 * args.clients), args.run_timeout
        )

    load = run_loop(bounded())
    lat = load.latencies_ms
    return Throughput(
        run,
        len(lat) / load.seconds if load.seconds else 0.0,
        percentile(lat, 50),
        percentile(lat, 99),
        load.mean_batch,
        load.errors,
        load.seconds,
    )


# -- swap -------------------------------------------------------------------------------------


@dataclass
class Swap:
    trigger: str  # "reload" (POST /models/m000/reload) or "watcher" (the server's file watcher)
    old: str
    new: str
    answers: int = 0
    errors: int = 0  # non-2xx answers and failed connections
    old_answers: int = 0
    new_answers: int = 0
    other_versions: int = 0
    sent_after_swap: int = 0
    old_after_swap: int = 0  # answers to requests sent after the swap that still carried the old version
    swap_s: float = 0.0  # from os.replace to the swap being visible (reload returned / /models shows it)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.other_versions == 0 and self.old_after_swap == 0 and self.new_answers > 0


async def swap_under_load(
    url: str,
    model: str,
    image: bytes,
    clients: int,
    swap: Swap,
    trigger: Callable[[AsyncClient], Awaitable[None]],
    before_s: float,
    after_s: float,
    timeout_s: float,
) -> None:
    """`clients` closed-loop clients classify with `model`; `trigger` swaps after before_s; after_s more of load."""
    records: list[tuple[float, int | None, str | None]] = []  # sent at, status (None: no answer), version
    stop = asyncio.Event()
    async with AsyncClient(url, timeout=60) as client, AsyncClient(url, timeout=timeout_s) as control:

        async def worker() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    answer = await client.classify(image, model=model, top_k=1)
                    records.append((sent, 200, answer.model.version))
                except VPTError as exc:
                    records.append((sent, exc.status, None))
                    if len(swap.error_samples) < 5:
                        swap.error_samples.append(f"{exc.status}: {exc}")

        tasks = [asyncio.create_task(worker()) for _ in range(clients)]
        try:
            await asyncio.sleep(before_s)
            started = time.monotonic()
            await asyncio.wait_for(trigger(control), timeout_s)
            swapped_at = time.monotonic()
            swap.swap_s = swapped_at - started
            await asyncio.sleep(after_s)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    for sent, status, version in records:
        swap.answers += 1
        if status is None or not 200 <= status < 300:
            swap.errors += 1
            continue
        if version == swap.old:
            swap.old_answers += 1
        elif version == swap.new:
            swap.new_answers += 1
        else:
            swap.other_versions += 1
        if sent > swapped_at:
            swap.sent_after_swap += 1
            swap.old_after_swap += version != swap.new


def measure_swap(root: Path, models: ModelSet, args: argparse.Namespace, image: bytes, watcher: bool) -> Swap:
    from app.models import VERSION_DIGITS, file_sha256

    files = models.files[:2]
    old = file_sha256(files[0])[:VERSION_DIGITS]
    new = file_sha256(models.swap_file)[:VERSION_DIGITS]
    kind = "watcher" if watcher else "reload"
    swap = Swap(kind, old, new)
    with serve(f"swap-{kind}", root, models, files, args, poll_s=args.poll_s if watcher else 0.0) as server:
        target = Path(root / f"swap-{kind}" / "models" / files[0].name)
        staged = target.with_name(".m000.staged")  # beside the model, on the same file system
        shutil.copyfile(models.swap_file, staged)

        async def by_reload(control: AsyncClient) -> None:
            os.replace(staged, target)
            answer = await control.reload("m000")
            if (answer.version, answer.previous_version, answer.changed) != (new, old, True):
                raise SystemExit(f"reload answered {answer}, expected {old} -> {new}")

        async def by_watcher(control: AsyncClient) -> None:
            os.replace(staged, target)
            while (await control.model("m000")).version != new:
                await asyncio.sleep(0.05)

        say(f"swap ({kind}): {args.swap_clients} clients on m000, {old} -> {new}")
        asyncio.run(
            swap_under_load(
                server.url,
                "m000",
                image,
                args.swap_clients,
                swap,
                by_watcher if watcher else by_reload,
                args.swap_before,
                args.swap_after,
                args.run_timeout,
            )
        )
    return swap


# -- the bench --------------------------------------------------------------------------------


def model_counts(n: int) -> list[int]:
    return sorted({1, n // 10, n} - {0}) if n >= 20 else sorted({1, n})


def run(args: argparse.Namespace, root: Path) -> dict:
    started = time.monotonic()
    say(f"writing {args.models} posteriors under {root}")
    models = make_models(root, args.models, args.data_dir)
    images = load_images(16)
    c, d, m = len(models.classes), models.embed_dim, args.samples
    args.classes = c
    cache_bytes = m * c * d * FLOAT_BYTES
    analytic = cache_bytes + models.param_bytes
    footprint = engine_footprint(models, m)
    say(f"analytic per posterior: {m} x {c} x {d} x {FLOAT_BYTES} B + {models.param_bytes} B = {analytic / 1e6:.3f} MB")
    for name, size in footprint.items():
        say(f"  engine keeps: {name}: {size / 1e6:.3f} MB")

    names = [f.stem for f in models.files]
    memory: dict[int, Memory] = {}
    throughput: list[Throughput] = []
    counts = model_counts(args.models)
    with ExitStack() as keep:
        servers: dict[int, ModelServer] = {}
        for n in counts:
            with ExitStack() as this:
                t0 = time.monotonic()
                server = this.enter_context(serve(f"mem-{n}", root, models, models.files[:n], args))
                load_s = time.monotonic() - t0
                memory[n] = measure_memory(server, names[:n], images[0], args, load_s)
                say(f"{n} models: RSS {memory[n].rss / 2**20:.1f} MiB (at ready {memory[n].rss_ready / 2**20:.1f} MiB)")
                if n in (1, args.models):  # the 1- and N-model servers stay up for the throughput runs
                    servers[n] = server
                    keep.push(this.pop_all())
        single = requests_for(servers[1].url, images, names[:1], args.top_k)
        spread = requests_for(servers[args.models].url, images, names, args.top_k)
        for rep in range(args.repeats):
            for run_name, server, raws in (("single", servers[1], single), ("spread", servers[args.models], spread)):
                result = measure_throughput(run_name, server.url, raws, args)
                throughput.append(result)
                say(
                    f"throughput {run_name} #{rep + 1}: {result.images_per_s:.1f} images/s, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                    f"mean batch {result.mean_batch:.1f}, errors {result.errors}"
                )
    swaps = [measure_swap(root, models, args, images[0], watcher) for watcher in (False, True)]
    for s in swaps:
        say(
            f"swap ({s.trigger}): {s.answers} answers, {s.errors} errors, old {s.old_answers}, new {s.new_answers}, "
            f"other {s.other_versions}; sent after the swap {s.sent_after_swap} of which old {s.old_after_swap}; "
            f"visible {s.swap_s:.2f} s after the file was replaced"
        )

    one, top = memory[1], memory[args.models]
    per_extra = (top.rss - one.rss) / (args.models - 1) if args.models > 1 else float("nan")
    per_extra_by = {n: (memory[n].rss - one.rss) / (n - 1) for n in counts if n > 1}
    rate = {r: statistics.median(t.images_per_s for t in throughput if t.run == r) for r in ("single", "spread")}
    return {
        "config": {
            "models": args.models,
            "classes_per_model": c,
            "samples_M": m,
            "embed_dim_D": d,
            "threads": args.threads,
            "clients": args.clients,
            "requests": args.requests,
            "swap_clients": args.swap_clients,
            "top_k": args.top_k,
            "cpus": os.cpu_count(),
        },
        "analytic_bytes": {"class_cache": cache_bytes, "parameters": models.param_bytes, "total": analytic},
        "engine_footprint_bytes": footprint,
        "memory": [asdict(memory[n]) for n in counts],
        "per_extra_posterior_bytes": per_extra_by,
        "mem_ratio": per_extra / analytic,
        "throughput_runs": [asdict(t) for t in throughput],
        "images_per_s": rate,
        "throughput_ratio": rate["spread"] / rate["single"] if rate["single"] else float("nan"),
        "swaps": [{**asdict(s), "ok": s.ok} for s in swaps],
        "swap_errors": sum(s.errors for s in swaps),
        "wall_s": time.monotonic() - started,
    }


def report(fig: dict) -> None:
    cfg = fig["config"]
    mib = 2**20
    print(f"models on one backbone: C = {cfg['classes_per_model']}, M = {cfg['samples_M']}, D = {cfg['embed_dim_D']}")
    a = fig["analytic_bytes"]
    print(
        f"analytic per posterior: class cache {a['class_cache'] / 1e6:.3f} MB + parameters {a['parameters']} B "
        f"= {a['total'] / 1e6:.3f} MB"
    )
    print("what one engine keeps per model (in-process count):")
    for name, size in fig["engine_footprint_bytes"].items():
        print(f"  {name:<45} {size / 1e6:8.3f} MB")
    print(f"  {'total':<45} {sum(fig['engine_footprint_bytes'].values()) / 1e6:8.3f} MB")
    print(f"{'models':>6} {'RSS MiB':>9} {'at ready':>9} {'start s':>8} {'per extra MB':>13} {'vs analytic':>11}")
    for mem in fig["memory"]:
        extra = fig["per_extra_posterior_bytes"].get(mem["models"])
        tail = f"{extra / 1e6:>13.3f} {extra / a['total']:>10.2f}x" if extra is not None else f"{'':>13} {'':>11}"
        print(
            f"{mem['models']:>6} {mem['rss'] / mib:>9.1f} {mem['rss_ready'] / mib:>9.1f} {mem['load_s']:>8.1f} {tail}"
        )
    print(f"{'run':<7} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'errors':>6}")
    for t in fig["throughput_runs"]:
        print(
            f"{t['run']:<7} {t['images_per_s']:>9.1f} {t['p50_ms']:>8.1f} {t['p99_ms']:>8.1f} "
            f"{t['mean_batch']:>10.2f} {t['errors']:>6}"
        )
    rate = fig["images_per_s"]
    print(f"median images/s: single {rate['single']:.1f}, spread over {cfg['models']} models {rate['spread']:.1f}")
    for s in fig["swaps"]:
        print(
            f"swap by {s['trigger']}: {s['answers']} answers, {s['errors']} non-2xx, versions old {s['old_answers']} / "
            f"new {s['new_answers']} / other {s['other_versions']}, sent after the swap {s['sent_after_swap']} "
            f"(old among them {s['old_after_swap']}), swap visible after {s['swap_s']:.2f} s: "
            f"{'ok' if s['ok'] else 'FAILED'}"
        )
    print(
        f"RESULT models={cfg['models']} mem_ratio={fig['mem_ratio']:.2f} "
        f"throughput_ratio={fig['throughput_ratio']:.2f} swap_errors={fig['swap_errors']}"
    )


def main(argv: list[str] | None = None) -> int:
    from app.config import DEFAULT_DATA_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=100, help="the largest number of models (also 1 and N/10)")
    p.add_argument("--requests", type=int, default=1000, help="timed requests per throughput run")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients of the throughput runs")
    p.add_argument("--repeats", type=int, default=2, help="alternating single/spread throughput runs (median)")
    p.add_argument("--swap-clients", type=int, default=32, help="concurrent clients during a swap")
    p.add_argument("--swap-before", type=float, default=2.0, help="seconds of load before the swap")
    p.add_argument("--swap-after", type=float, default=3.0, help="seconds of load after the swap")
    p.add_argument("--poll-s", type=float, default=0.5, help="--models-poll-s of the watcher swap's server")
    p.add_argument("--samples", type=int, default=20, help="M: --max-samples and --samples of the servers")
    p.add_argument("--top-k", type=int, default=5, help="classes per answer in the throughput runs")
    p.add_argument("--warm-requests", type=int, default=2, help="requests to every model before reading RSS")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before each RSS read-out")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the servers")
    p.add_argument("--start-timeout", type=float, default=900.0, help="seconds a server may take to be ready")
    p.add_argument("--run-timeout", type=float, default=600.0, help="seconds a throughput run or swap may take")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where the demo backbone is unpacked")
    p.add_argument("--quick", action="store_true", help="a small configuration (3 models, few requests): for tests")
    p.add_argument("--out", type=Path, default=None, help="write every figure as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.requests, args.clients, args.repeats = 3, 48, 4, 1
        args.swap_clients, args.swap_before, args.swap_after, args.settle, args.warm_requests = 8, 0.5, 1.0, 0.2, 1
    if args.models < 2 or args.requests < 1 or args.clients < 1 or args.swap_clients < 1:
        p.error("--models must be at least 2; --requests, --clients and --swap-clients positive")
    with tempfile.TemporaryDirectory(prefix="vpt-bench-models-") as tmp:
        figures = run(args, Path(tmp))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    report(figures)
    failed = figures["swap_errors"] or not all(s["ok"] for s in figures["swaps"])
    failed = failed or any(t["errors"] for t in figures["throughput_runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
