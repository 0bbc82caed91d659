"""Load test of the real server: dynamic batching on vs off (max batch size 1).

Starts `vpt-serve --demo` on a free loopback port (the shipped model: ready in seconds), sends a
bounded number of /classify requests from N concurrent clients, reads the batch-size histogram
from /metrics, then does the same with --max-batch-size 1. Prints one table row per run and ends with

    RESULT batching_speedup=<throughput ratio> p99_ms=<p99 with batching> errors=<failed requests>

The load generator shares the CPUs with the server, so it is as cheap as we can make it: every
request is built once (headers + multipart body) and sent over a raw keep-alive asyncio stream
(on uvloop when installed); an answer counts when it is a 200 holding the classes. The control calls
(readiness, /metrics) go through app.client.

Only loopback traffic; every loop is bounded by a request count and a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from app.client import AsyncClient, Client

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunResult:
    name: str
    max_batch_size: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    mean_batch: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_images(count: int) -> list[bytes]:
    """PNG bytes of pictures of the demo's world: every class in turn, half of them infrared."""
    from training.shapes.world import WorldConfig, classnames, labelled_sample

    cfg, n_classes = WorldConfig(), len(classnames())
    images = []
    for i in range(count):
        pixels, _ = labelled_sample(cfg, 0, "test", i, i % n_classes, 0.5)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        images.append(buf.getvalue())
    return images


class ServerProcess:
    def __init__(self, args: argparse.Namespace, max_batch_size: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "app.cli", "--demo", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--max-batch-size", str(max_batch_size), "--max-queue", str(max(256, 4 * args.clients))]
        cmd += ["--max-queue-delay-ms", str(args.max_queue_delay_ms), "--log-level", "warning"]
        if args.data_dir:
            cmd += ["--data-dir", str(args.data_dir)]
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)  # its output shows here

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with Client(self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"server exited with code {self.proc.returncode}")
                if client.ready():  # False while the server is down or loading
                    return
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"server not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, then kill: a server that hangs on shutdown never hangs the bench."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def batch_stats(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the vpt_batch_size histogram."""
    values = {}
    for line in metrics_text.splitlines():
        for key in ("vpt_batch_size_sum", "vpt_batch_size_count"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[1])
    return values.get("vpt_batch_size_sum", 0.0), values.get("vpt_batch_size_count", 0.0)


@dataclass
class Load:
    seconds: float
    latencies_ms: list[float]
    errors: int
    mean_batch: float


BOUNDARY = "vptbenchboundary7MA4YWxkTrZu0gW"


def build_request(host: str, image: bytes, params: dict[str, int | str]) -> bytes:
    """One complete keep-alive POST /classify (multipart/form-data), built once before timing starts."""
    body = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    query = "&".join(f"{k}={v}" for k, v in params.items())
    head = (
        f"POST /classify{'?' + query if query else ''} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """A raw HTTP/1.1 keep-alive connection over asyncio streams: the cheapest client we can write,
    so the load generator takes as little as possible of the CPUs it shares with the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def drive(
    url: str, images: list[bytes], clients: int, requests: int, warmup: int, samples: int | None, top_k: int | None
) -> Load:
    """drive_requests() with one pre-built /classify request per image."""
    host = url.removeprefix("http://")
    params = {k: v for k, v in (("samples", samples), ("top_k", top_k)) if v}
    raws = [build_request(host, image, params) for image in images]
    return await drive_requests(url, raws, clients, requests, warmup)


async def drive_requests(url: str, raws: list[bytes], clients: int, requests: int, warmup: int) -> Load:
    """`clients` workers, each with its own keep-alive connection, sending the pre-built requests `raws`
    in turn (the n-th request sent is raws[n % len(raws)]) over raw asyncio streams. Each first sends
    warmup/clients untimed requests (opening its connection); once all have, they share a bounded
    counter of `requests` timed ones. An answer counts as a success when it is a 200 whose JSON holds
    the classes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors = 0
    issued = 0
    warmed = 0
    all_warm, go = asyncio.Event(), asyncio.Event()

    async def one(conn: Connection, i: int) -> float | None:
        start = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(conn.request(raws[i % len(raws)]), 60)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
            await conn.close()
            return None
        ok = status == 200 and b'"classes"' in body and b'"label"' in body
        return (time.perf_counter() - start) * 1000 if ok else None

    async def worker(first: int) -> None:
        nonlocal issued, errors, warmed
        conn = Connection(host, int(port))
        try:
            for k in range(max(1, warmup // clients)):
                await one(conn, first + k)
            warmed += 1
            if warmed == clients:
                all_warm.set()
            await go.wait()
            while issued < requests:
                issued += 1
                ms = await one(conn, issued)
                if ms is None:
                    errors += 1
                else:
                    latencies.append(ms)
        finally:
            await conn.close()

    async with AsyncClient(url, timeout=60) as control:
        workers = [asyncio.create_task(worker(i)) for i in range(clients)]
        await all_warm.wait()
        before = batch_stats(await control.metrics())
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*workers)
        seconds = time.perf_counter() - started
        after = batch_stats(await control.metrics())
    batches = after[1] - before[1]
    return Load(seconds, latencies, errors, (after[0] - before[0]) / batches if batches else 0.0)


def run_loop(main: Coroutine[Any, Any, Load]) -> Load:
    """asyncio.run, on uvloop when it is installed (a cheaper client loop leaves more CPU to the server)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def run_once(args: argparse.Namespace, name: str, max_batch_size: int, images: list[bytes]) -> RunResult:
    server = ServerProcess(args, max_batch_size)
    try:
        server.wait_ready(args.start_timeout)
        load = run_loop(drive(server.url, images, args.clients, args.requests, args.warmup, args.samples, args.top_k))
    finally:
        server.stop()
    return RunResult(name, max_batch_size, load.seconds, load.latencies_ms, load.errors, load.mean_batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--requests", type=int, default=640, help="requests per run (bounded)")
    p.add_argument("--warmup", type=int, default=64, help="untimed requests first (they open the connections)")
    p.add_argument("--max-batch-size", type=int, default=32, help="batch size of the batching run")
    p.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    p.add_argument("--samples", type=int, default=None, help="samples per request (server default when unset)")
    p.add_argument("--top-k", type=int, default=5, help="classes per answer (0: all)")
    p.add_argument("--data-dir", type=Path, default=None, help="VPT_DATA_DIR for the demo")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        p.error("--clients and --requests must be positive")

    images = load_images(64)
    results = []
    for name, size in (("batching", args.max_batch_size), ("no batching", 1)):
        print(f"run '{name}': max batch size {size}, {args.clients} clients, {args.requests} requests", flush=True)
        results.append(run_once(args, name, size, images))

    header = f"{'run':<12} {'max batch':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<12} {r.max_batch_size:>9} {r.throughput:>8.1f} {r.pct(50):>8.1f} {r.pct(99):>8.1f} "
            f"{r.mean_batch:>10.2f} {r.errors:>6}"
        )
    batched, single = results
    speedup = batched.throughput / single.throughput if single.throughput else float("nan")
    errors = sum(r.errors for r in results)
    print(f"RESULT batching_speedup={speedup:.2f} p99_ms={batched.pct(99):.1f} errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
