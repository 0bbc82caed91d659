"""A registry shared by several processes: concurrent writers, RegistryWatcher, and a PostgreSQL outage."""

from __future__ import annotations

import multiprocessing
import queue
import random
import statistics
import threading
import time
from collections import Counter

import pytest

from app.names import name_key
from app.registry import RegistryUnavailableError, open_registry
from app.registry.watch import RegistryWatcher

NAMES = ["red circle", "blue square", "green star", "yellow heart", "purple ring", "black dot"]
WORKERS = 4
ROUNDS = 25


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request, tmp_path):
    return str(tmp_path / "r.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _writer(spec: str, seed: int, start, results) -> None:
    """Add and remove the shared names in random case forms; report what each call said it did."""
    rng = random.Random(seed)
    start.wait(30)
    reg = open_registry(spec, legacy_model="legacy")  # every worker opens at once: a fresh schema is created once
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    versions = []
    for _ in range(ROUNDS):
        if rng.random() < 0.6:
            batch = [rng.choice([str.upper, str.title, str.lower])(rng.choice(NAMES)) for _ in range(2)]
            added.update(name_key(n) for n in reg.add("m", batch))
        else:
            name = rng.choice(NAMES)
            removed[name_key(name)] += reg.remove("m", name.upper())
        versions.append(reg.version())
    mine = f"worker {seed}"
    added.update(name_key(n) for n in reg.add("m", [mine]))
    reg.close()
    results.put((dict(added), dict(removed), versions, mine))


def test_concurrent_writers_end_consistent_with_no_duplicate(spec):
    ctx = multiprocessing.get_context("spawn")  # no pool threads or sockets inherited through fork
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(spec, seed, start, results)) for seed in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    reports, deadline = [], time.monotonic() + 120
    while len(reports) < len(procs):
        try:
            reports.append(results.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not failed and time.monotonic() < deadline, f"writers failed (exit codes {failed}); see stderr"
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    reg = open_registry(spec, legacy_model="legacy")
    version, models = reg.snapshot()
    reg.close()
    names = models["m"]
    keys = [name_key(n) for n in names]
    assert len(keys) == len(set(keys)), f"duplicate classes: {names}"
    for _, _, seen, mine in reports:
        assert seen == sorted(seen) and name_key(mine) in keys  # each writer saw the version grow; nothing lost
    # Each class's adds minus its removes, as the calls reported them, is exactly whether it is there now.
    for key in {name_key(n) for n in NAMES}:
        net = sum(a.get(key, 0) for a, *_ in reports) - sum(r.get(key, 0) for _, r, *_ in reports)
        assert net == (1 if key in keys else 0), key
    assert version >= WORKERS and version >= max(v for _, _, seen, _ in reports for v in seen)


class _Changes:
    """on_change for a watcher: every version handed over, with the time it arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []
        self.cond = threading.Condition()

    def __call__(self, version: int) -> None:
        with self.cond:
            self.seen.append((version, time.perf_counter()))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.seen), timeout)


def test_the_watcher_sees_another_process_write_by_polling(tmp_path):
    """A SQLite file has no notifications: the poll is what tells (two handles: two processes' view)."""
    path = tmp_path / "r.sqlite"
    writer, reader = (open_registry(path, legacy_model="legacy") for _ in range(2))
    changes = _Changes()
    watcher = RegistryWatcher(reader, changes, poll_s=0.05)
    try:
        assert changes.wait_for(lambda seen: len(seen) == 1, 5)  # the first look hands the version over
        writer.add("m", ["cat"])
        target = writer.version()
        assert changes.wait_for(lambda seen: seen[-1][0] == target, 5)
        assert watcher.healthy and watcher.reason is None and watcher.version == target
        time.sleep(0.2)
        assert len(changes.seen) == 2  # no change, no call
    finally:
        t0 = time.monotonic()
        watcher.close()
        assert time.monotonic() - t0 < 1.0 and not watcher._thread.is_alive()
        writer.close()
        reader.close()


def test_a_failing_consumer_gets_the_version_again(tmp_path):
    reg = open_registry(tmp_path / "r.sqlite", legacy_model="legacy")
    calls: list[int] = []

    def flaky(version: int) -> None:
        calls.append(version)
        if len(calls) == 2:
            raise RuntimeError("cache refresh failed")

    watcher = RegistryWatcher(reg, flaky, poll_s=0.05)
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        reg.add("m", ["x"])
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls[1:3] == [reg.version()] * 2 and watcher.healthy
    finally:
        watcher.close()
        reg.close()


def test_notify_reaches_another_replica_within_a_bound(pg_url):
    """Write on one registry, measure until a watcher on another sees it (poll 60 s: NOTIFY does it)."""
    writer, reader = (open_registry(pg_url, legacy_model="legacy") for _ in range(2))
    changes = _Changes()
    watcher = RegistryWatcher(reader, changes, poll_s=60)
    latencies = []
    try:
        assert changes.wait_for(lambda seen: len(seen) == 1, 10)
        for i in range(40):
            t0 = time.perf_counter()
            writer.add("m", [f"class {i}"])
            target = writer.version()
            assert changes.wait_for(lambda seen, target=target: seen[-1][0] >= target, 5), f"write {i} not seen"
            latencies.append(next(t for v, t in changes.seen if v >= target) - t0)
    finally:
        watcher.close()
        writer.close()
        reader.close()
    p50, p99 = statistics.median(latencies) * 1000, statistics.quantiles(latencies, n=100)[98] * 1000
    print(f"\nregistry NOTIFY write->on_change over {len(latencies)} writes: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert p99 < 1000


def test_an_outage_is_bounded_reported_and_recovered(pg_server, pg_url):
    if not pg_server.restartable:
        pytest.skip("an external database (VPT_TEST_DATABASE_URL) is not stopped by the tests")
    from app.registry.postgres import PostgresRegistry

    reg = PostgresRegistry(pg_url, timeout_s=1.0)
    reg.add("m", ["before"])
    changes = _Changes()
    watcher = RegistryWatcher(reg, changes, poll_s=0.5)
    try:
        assert changes.wait_for(lambda seen: len(seen) >= 1, 10)
        with pg_server.stopped():
            t0 = time.monotonic()
            with pytest.raises(RegistryUnavailableError, match="unreachable"):
                reg.add("m", ["during"])
            elapsed = time.monotonic() - t0
            assert elapsed < reg.timeout_s + 1.0, elapsed
            deadline = time.monotonic() + 10
            while watcher.healthy and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not watcher.healthy and "registry" in (watcher.reason or "")
            calls_while_down = len(changes.seen)
        assert changes.wait_for(lambda seen: len(seen) > calls_while_down, 15)  # reconnected: handed over again
        assert watcher.healthy and watcher.reason is None
        assert reg.add("m", ["after"]) == ["after"] and reg.names("m") == ["before", "after"]
    finally:
        t0 = time.monotonic()
        watcher.close()
        assert time.monotonic() - t0 < reg.timeout_s + 1.0
        reg.close()


def test_two_services_share_one_postgresql_registry_under_their_model_name(tmp_path, pg_url):
    """Wiring: vpt-serve's app keeps its classes in the database, in the namespace of the model it serves."""
    from tests.app.conftest import make_settings, serve
    from tests.app.fakes import FakeEngine

    settings = make_settings(tmp_path, registry=pg_url, posterior=tmp_path / "flowers.safetensors")
    with serve(settings, FakeEngine()) as c:
        assert c.post("/classes", json={"names": ["rose", "tulip"]}).status_code == 200
        c.delete("/classes/rose")
    engine = FakeEngine()
    with serve(make_settings(tmp_path / "other", registry=pg_url, posterior=settings.posterior), engine) as c:
        assert c.get("/classes").json()["classes"] == ["tulip"] and engine.classnames == ["tulip"]
    reg = open_registry(pg_url, legacy_model="unused")
    assert reg.snapshot()[1] == {"flowers": ["tulip"]}
    reg.close()
