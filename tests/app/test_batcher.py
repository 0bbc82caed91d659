"""The dynamic batcher alone: pure asyncio, a plain function as the model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.batcher import Batcher, BatcherClosedError, BatchStats, QueueFullError, RequestTimeoutError


def run(coro):
    return asyncio.run(coro)


def make(process, **kw) -> tuple[Batcher, list[BatchStats]]:
    stats: list[BatchStats] = []
    opts = {"max_batch_size": 4, "max_delay_s": 0.02, "max_queue": 16, **kw}
    return Batcher(process, on_batch=stats.append, **opts), stats


def test_gathers_up_to_max_batch_size_and_keeps_order():
    seen: list[list[int]] = []

    def double(xs):
        seen.append(list(xs))
        time.sleep(0.01)
        return [2 * x for x in xs]

    async def main():
        b, stats = make(double)
        await b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return out, stats

    out, stats = run(main())
    assert out == [2 * i for i in range(10)]
    assert max(len(s) for s in seen) == 4 and sum(len(s) for s in seen) == 10
    assert [s.size for s in stats] == [len(s) for s in seen]
    assert all(w >= 0 for s in stats for w in s.queue_waits)


def test_a_lone_request_waits_at_most_the_delay():
    async def main():
        b, _ = make(lambda xs: xs, max_delay_s=0.05)
        await b.start()
        t = time.perf_counter()
        await b.submit(1)
        elapsed = time.perf_counter() - t
        await b.stop()
        return elapsed

    assert run(main()) < 1.0


def test_full_queue_raises_at_once():
    gate = threading.Event()

    def slow(xs):
        gate.wait(5)
        return xs

    async def main():
        b, _ = make(slow, max_batch_size=1, max_queue=2, max_delay_s=0)
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(6)]
        await asyncio.sleep(0.1)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return results

    results = run(main())
    assert sum(isinstance(r, QueueFullError) for r in results) >= 1
    assert sum(isinstance(r, int) for r in results) >= 2


def test_errors_reach_every_request_of_the_batch_and_the_batcher_survives():
    def maybe_fail(xs):
        if -1 in xs:
            raise ValueError("boom")
        return xs

    async def main():
        b, _ = make(maybe_fail, max_delay_s=0.05)
        await b.start()
        bad = await asyncio.gather(b.submit(-1), b.submit(5), return_exceptions=True)
        good = await b.submit(7)
        await b.stop()
        return bad, good

    bad, good = run(main())
    assert all(isinstance(e, ValueError) for e in bad)
    assert good == 7


def test_timeout_and_closed():
    async def main():
        b, _ = make(lambda xs: (time.sleep(0.3), xs)[1])
        with pytest.raises(BatcherClosedError):
            await b.submit(1)
        await b.start()
        with pytest.raises(RequestTimeoutError):
            await b.submit(1, timeout_s=0.05)
        await b.stop()

    run(main())


def test_run_exclusive_uses_the_model_thread():
    names = set()

    def record(xs):
        names.add(threading.current_thread().name)
        return xs

    async def main():
        b, _ = make(record)
        await b.start()
        await b.submit(1)
        other = await b.run_exclusive(lambda: threading.current_thread().name)
        await b.stop()
        return other

    other = run(main())
    assert names == {other} and other.startswith("vpt-model")
