"""Dynamic batching: gather concurrent requests into one call of a model function.

Pure asyncio around one worker thread. `submit` puts a request on a bounded queue (full ->
QueueFullError, the API answers 503); a collector task takes up to `max_batch_size` requests,
waiting at most `max_delay_s` after the first, and runs `process_batch` on the single worker
thread. `run_exclusive` runs any other function on that same thread, so model state changes
(class registration) never overlap a forward pass. Nothing here knows about torch or HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")


class QueueFullError(Exception):
    """The request queue is at its bound; the client should retry later."""


class BatcherClosedError(Exception):
    """The batcher is not running (starting up or shutting down)."""


class RequestTimeoutError(Exception):
    """No answer within the request timeout."""


@dataclass
class BatchStats:
    """What one batch looked like, for metrics."""

    size: int
    queue_waits: list[float]
    seconds: float


@dataclass
class _Pending(Generic[In, Out]):
    payload: In
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher(Generic[In, Out]):
    def __init__(
        self,
        process_batch: Callable[[list[In]], Sequence[Out]],
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._process = process_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda stats: None)
        self._on_depth = on_queue_depth or (lambda depth: None)
        self._queue: asyncio.Queue[_Pending[In, Out]] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpt-model")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.create_task(self._collect(), name="vpt-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still queued fail with BatcherClosedError."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosedError())
        # wait (off the loop) for a forward pass or class change in progress, so callers can close what it uses
        done = functools.partial(self._executor.shutdown, wait=True, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, done)

    async def submit(self, payload: In, timeout_s: float | None = None) -> Out:
        """Queue one request and wait for its answer (QueueFullError at once when the queue is full)."""
        if not self.running or self._queue is None:
            raise BatcherClosedError()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(payload, future))
        except asyncio.QueueFull:
            raise QueueFullError() from None
        self._on_depth(self._queue.qsize())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # the collector skips it if it has not started yet
            raise RequestTimeoutError() from None
        except asyncio.CancelledError:
            future.cancel()  # client went away
            raise

    async def run_exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the model thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _take_batch(self) -> list[_Pending[In, Out]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [p for p in batch if not p.future.done()]

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take_batch()
            self._on_depth(self._queue.qsize())
            if not batch:
                continue
            started = time.perf_counter()
            waits = [started - p.enqueued for p in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._process, [p.payload for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"process_batch returned {len(results)} results for {len(batch)} inputs")
            except asyncio.CancelledError:  # shutting down mid-batch: nobody waits forever
                self._fail(batch, BatcherClosedError())
                raise
            except Exception as exc:  # every request of the batch gets the error; the API maps it
                self._fail(batch, exc)
                continue
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)
            try:
                self._on_batch(BatchStats(len(batch), waits, time.perf_counter() - started))
            except Exception:  # metrics must never stop the batcher
                log.exception("batch statistics callback failed")

    @staticmethod
    def _fail(batch: list[_Pending[In, Out]], exc: BaseException) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
