"""Scale out, measured: three real `vpt-serve --demo` replicas on loopback sharing one real PostgreSQL.

1. Convergence: a class is registered through replica A (rotating over the three), and replica B (the
   next one) is polled (GET /classes every few ms, then a /classify to confirm) until an answer holds
   it. The time runs from sending the POST to A until that answer from B arrives, so it includes the
   write itself: an upper bound of "committed on A -> answered by B".
2. Outage under load: clients classify on every replica while PostgreSQL is stopped for a few seconds
   and started again; counts /classify 5xx, /classify latency before and during the outage, what class
   changes answer meanwhile, and how long until every replica is "ready" again.
3. kill -9: acknowledged registrations on replica C, one more in flight, then SIGKILL; counts the
   acknowledged ones missing from the registry or from the surviving replicas.

PostgreSQL: the one VPT_TEST_DATABASE_URL names (its `vpt` schema is dropped first; the outage needs a
local server, so it is skipped there), else a throwaway cluster started with tests/pg.py (Debian's
postgresql package). Ends with one line:

    RESULT replicas=3 convergence_p50_ms=<> convergence_p99_ms=<> classify_5xx_during_outage=<> lost_writes=<>

Run from the repository root: `python bench/replicas.py [--writes 80] [--out docs/results/replicas.json]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.client import Client, VPTError  # noqa: E402
from app.names import name_key  # noqa: E402
from app.registry import open_registry  # noqa: E402
from tests.pg import open_server  # noqa: E402
from tests.servers import Server, run_servers  # noqa: E402

MODEL = "demo-vpt"
WAIT_S = 10.0  # the longest any single wait below lasts


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


IMAGE = png()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def labels(client: Client) -> set[str]:
    return {c.label for c in client.classify(IMAGE, samples=1).classes}


def convergence(clients: list[Client], writes: int) -> list[float]:
    """Seconds from sending each write to replica A until replica B answers with the class."""
    took = []
    for i in range(writes):
        a, b = clients[i % 3], clients[(i + 1) % 3]
        name = f"bench shape {i}"
        t0 = time.perf_counter()
        a.add_classes([name])
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if name in b.classes().classes and name in labels(b):
                took.append(time.perf_counter() - t0)
                break
            time.sleep(0.002)
        else:
            raise SystemExit(f"replica B never answered with {name!r} within {WAIT_S} s")
    return took


def status(server: Server) -> str | None:
    try:
        response = httpx.get(server.url + "/readyz", timeout=5)
    except httpx.TransportError:
        return None
    return response.json().get("status") if response.status_code == 200 else None


def outage(pg, servers: list[Server], clients: list[Client], down_s: float) -> dict:
    """Classify on every replica while PostgreSQL is stopped for down_s seconds, then started again."""
    phase = ["before"]
    records: list[tuple[str, int, float]] = []  # (phase, status, seconds)
    stop = threading.Event()

    def load(client: Client) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                client.classify(IMAGE, samples=1)
                code = 200
            except VPTError as exc:
                code = exc.status or 0
            records.append((phase[0], code, time.perf_counter() - t0))

    threads = [threading.Thread(target=load, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    time.sleep(2.0)
    phase[0] = "during"
    pg.stop()
    t_down = time.monotonic()
    writes: list[tuple[int, float, str | None]] = []
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=servers[0].url, timeout=30) as http:
            while time.monotonic() - t_down < down_s:
                t0 = time.perf_counter()
                r = http.post("/classes", json={"names": ["during the outage"]})
                writes.append((r.status_code, time.perf_counter() - t0, r.headers.get("Retry-After")))
        readyz = [status(s) for s in servers]
    finally:
        pg.start()
    phase[0] = "after"
    t_up = time.monotonic()
    recovered = None
    while time.monotonic() - t_up < 30:
        if all(status(s) == "ready" for s in servers):
            recovered = time.monotonic() - t_up
            break
        time.sleep(0.05)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    clients[1].add_classes(["after the outage"])
    deadline = time.monotonic() + WAIT_S
    caught_up = False
    while time.monotonic() < deadline and not caught_up:
        caught_up = all("after the outage" in labels(c) for c in clients)
        time.sleep(0.01)

    def stats(which: str) -> dict:
        rows = [r for r in records if r[0] == which]
        ok = [s for p, code, s in rows if code == 200]
        return {
            "requests": len(rows),
            "5xx": sum(1 for _, code, _ in rows if code >= 500),
            "other_errors": sum(1 for _, code, _ in rows if code != 200 and code < 500),
            "p50_ms": round(percentile(ok, 50) * 1000, 1) if ok else None,
            "p99_ms": round(percentile(ok, 99) * 1000, 1) if ok else None,
        }

    return {
        "down_s": round(t_up - t_down, 2),
        "classify": {p: stats(p) for p in ("before", "during", "after")},
        "class_changes_while_down": {
            "answers": sorted({code for code, _, _ in writes}),
            "retry_after": sorted({ra for _, _, ra in writes if ra}),
            "max_ms": round(max(s for _, s, _ in writes) * 1000) if writes else None,
        },
        "readyz_while_down": readyz,
        "all_ready_after_restart_s": round(recovered, 2) if recovered is not None else None,
        "write_after_restart_on_all": caught_up,
    }


def kill_9(servers: list[Server], clients: list[Client], registry, writes: int = 20) -> dict:
    """Acknowledged registrations on replica C, one more in flight, SIGKILL; which acknowledged ones are lost."""
    victim, survivors = servers[2], clients[:2]
    acknowledged: list[str] = []

    def write(name: str) -> None:
        try:
            clients[2].add_classes([name])
        except VPTError:
            return
        acknowledged.append(name)

    for i in range(writes):
        write(f"acknowledged {i}")
    in_flight = threading.Thread(target=write, args=("in flight",), daemon=True)
    in_flight.start()
    victim.process.kill()
    victim.process.wait(10)
    in_flight.join(30)
    stored = {name_key(n) for n in registry.names(MODEL)}
    lost_in_registry = [n for n in acknowledged if name_key(n) not in stored]
    deadline = time.monotonic() + WAIT_S
    missing = list(acknowledged)
    while time.monotonic() < deadline:
        missing = [n for n in acknowledged for c in survivors if n not in c.classes().classes]
        if not missing:
            break
        time.sleep(0.05)
    return {
        "acknowledged": len(acknowledged),
        "lost_in_registry": lost_in_registry,
        "missing_on_survivors": sorted(set(missing)),
        "lost": len(set(lost_in_registry) | set(missing)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=80, help="registrations timed for convergence")
    parser.add_argument("--outage-s", type=float, default=5.0, help="how long PostgreSQL is stopped")
    parser.add_argument("--poll-s", type=float, default=5.0, help="VPT_REGISTRY_POLL_S of the replicas (the default)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    pg = open_server()
    try:
        pg.reset()
        registry = open_registry(pg.url, legacy_model="unused")
        with tempfile.TemporaryDirectory(prefix="vpt-replicas-") as tmp:
            roots = [Path(tmp) / f"replica-{i}" for i in range(3)]
            options = {"registry": pg.url, "env": {"VPT_REGISTRY_POLL_S": str(args.poll_s)}}
            t0 = time.monotonic()
            with run_servers(roots, **options) as servers:
                print(f"3 replicas ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
                clients = [Client(s.url, timeout=30) for s in servers]
                for client in clients:
                    labels(client)  # warm the connections
                took = convergence(clients, args.writes)
                p50, p99 = percentile(took, 50) * 1000, percentile(took, 99) * 1000
                print(f"convergence over {len(took)} writes: p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr)
                if pg.restartable:
                    down = outage(pg, servers, clients, args.outage_s)
                else:
                    down = {"skipped": "an external database (VPT_TEST_DATABASE_URL) is not stopped"}
                print(f"outage: {json.dumps(down)}", file=sys.stderr)
                killed = kill_9(servers, clients, registry)
                print(f"kill -9: {json.dumps(killed)}", file=sys.stderr)
                for client in clients:
                    client.close()
        registry.close()
    finally:
        pg.close()

    five_xx = down.get("classify", {}).get("during", {}).get("5xx", "n/a")
    figures = {
        "command": "python bench/replicas.py" + (f" --writes {args.writes}" if args.writes != 80 else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, "
        f"Python {platform.python_version()}, CPU only",
        "replicas": 3,
        "registry_poll_s": args.poll_s,
        "convergence": {
            "writes": len(took),
            "definition": "POST /classes sent to replica A -> first /classify answer from replica B holding the class",
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(max(took) * 1000, 1),
        },
        "outage": down,
        "kill_9": killed,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"RESULT replicas=3 convergence_p50_ms={p50:.1f} convergence_p99_ms={p99:.1f} "
        f"classify_5xx_during_outage={five_xx} lost_writes={killed['lost']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
