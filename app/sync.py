"""Keep a replica's class sets equal to the shared registry's (several replicas, one registry).

The registry is the source of truth; an engine's class set is a cache of it. RegistryWatcher (a
thread: NOTIFY, reconnects, slow poll) reports that the registry version moved; RegistryFollower
hands that to the service's sync coroutine on the event loop and waits for it, so a failed sync
makes the watcher hand the version over again at its next check. The sync itself (Service.sync)
reads one snapshot and applies `plan()` to every served model: only missing classes are encoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Sequence

from app.names import name_key
from app.registry import ClassRegistry, RegistryError
from app.registry.watch import Deferred, RegistryWatcher

log = logging.getLogger(__name__)

SYNC_WAIT_S = 60.0  # the longest the watcher thread waits for one sync (it may queue behind a model reload)


def plan(current: Sequence[str], target: Sequence[str]) -> tuple[list[str], list[str]]:
    """What turns the class set `current` into `target`: (names to add, in target's order; names to remove).
    "Same class" is app.names.name_key, as in the registry, so a class is never encoded twice."""
    have = {name_key(n) for n in current}
    wanted: dict[str, str] = {}
    for name in target:
        wanted.setdefault(name_key(name), name)  # the first form of each identity wins
    missing = [n for key, n in wanted.items() if key not in have]
    extra = [n for n in current if name_key(n) not in wanted]
    return missing, extra


class RegistryFollower:
    """Runs `sync(version)` on `loop` whenever the watcher sees a new registry version (or reconnects).

    `reason` says why the replica may be behind the registry (database unreachable, last sync failed),
    None when it is following; /readyz reports it as "degraded".
    """

    def __init__(
        self,
        registry: ClassRegistry,
        sync: Callable[[int], Awaitable[object]],
        loop: asyncio.AbstractEventLoop,
        poll_s: float,
    ) -> None:
        self._sync = sync
        self._loop = loop
        self.sync_error: str | None = None
        self._watcher = RegistryWatcher(registry, self._on_change, poll_s, start=False)

    def start(self) -> None:
        self._watcher.start()

    @property
    def reason(self) -> str | None:
        if not self._watcher.healthy:
            return self._watcher.reason
        return self.sync_error

    async def close(self) -> None:
        """Stop the watcher thread off the loop (it may be waiting for a sync that needs the loop)."""
        await asyncio.to_thread(self._watcher.close)

    def _on_change(self, version: int) -> None:
        """On the watcher thread: run the sync on the loop and wait for it; an exception reaches the watcher,
        which logs it and hands this version over again at its next check."""
        future = asyncio.run_coroutine_threadsafe(self._sync(version), self._loop)
        try:
            future.result(SYNC_WAIT_S)
        except concurrent.futures.TimeoutError:  # queued (behind a reload?): handed over until a sync finishes
            raise Deferred("is taking long to sync (queued behind a model reload?); looked at again") from None
        except Exception as exc:
            cause = str(exc) if isinstance(exc, RegistryError) else type(exc).__name__  # library text: the log only
            self.sync_error = f"could not follow the class registry: {cause}"
            raise
        self.sync_error = None
