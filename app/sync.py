"""Keep a replica's class sets equal to the shared registry's (several replicas, one registry).

The registry is the source of truth; an engine's class set is a cache of it. RegistryWatcher (a
thread: NOTIFY, reconnects, slow poll) reports that the registry version moved; RegistryFollower
hands that to ClassSync.sync on the event loop and waits for it, so a failed sync makes the watcher
hand the version over again at its next check. A sync reads one snapshot and applies `plan()` to
every served model: only missing classes are encoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import Gauge

from app.engine.errors import InvalidClassNameError
from app.models import ServedModel
from app.names import name_key, unique
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


def valid_names(engine: Any, names: Sequence[str], what: str) -> list[str]:
    """The names the engine can take (normalised, duplicates dropped); the others logged and skipped."""
    valid = []
    for name in names:
        try:
            valid.append(engine.normalize_name(name))
        except InvalidClassNameError as exc:
            log.warning("%s skipped: %s", what, exc)
    return unique(valid)


class ClassSync:
    """Brings the served models' class sets to the registry, one snapshot at a time, and knows per engine the
    registry version its classes equal.

    That version is written on the model thread in the same exclusive step that changes the engine's classes,
    or before a new model version serves (inherit), and read by each batch per head: an answer's
    registry_version is that of exactly the classes it was scored against, also for a request still finishing
    on a version a reload replaced (which syncs no longer update). One service-wide value read per batch paired
    old classes with newer versions.
    """

    def __init__(
        self,
        registry: ClassRegistry,
        lock: asyncio.Lock,
        run_exclusive: Callable[..., Awaitable[Any]],
        served: Callable[[], list[ServedModel]],
        changed: Callable[[ServedModel], None],
        gauge: Gauge,
    ) -> None:
        self.registry = registry
        self.version: int | None = None  # what the last sync reached: every served model's classes equal it
        self._lock = lock  # the service's: class changes and reloads, one at a time
        self._run_exclusive = run_exclusive  # on the model thread, between batches
        self._served = served
        self._changed = changed  # per-model metrics follow a change
        self._gauge = gauge
        self._engines: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def version_of(self, engine: Any) -> int | None:
        return self._engines.get(engine)

    def inherit(self, new: Any, old: Any) -> None:
        """A reload gave `new` the classes of `old`: the same registry version."""
        version = self._engines.get(old)
        if version is not None:
            self._engines[new] = version

    async def sync(self, version: int | None = None) -> int:
        """Bring every served model's classes to the registry's snapshot (encoding only missing classes) and
        return the version reached. `version`: one the watcher saw; a replica already there skips the read.
        Any other version means a read, a lower one too: a database restored from a backup is followed."""
        async with self._lock:
            known = self.version
            if version is not None and version == known:
                return known
            reached, snapshot = await asyncio.to_thread(self.registry.snapshot)
            changed = await self._run_exclusive(self._converge, self._served(), snapshot, reached)
        for model in changed:
            self._changed(model)
        self._gauge.set(reached)
        if known is not None and reached != known:
            log.info("class registry version %d -> %d (%d models changed)", known, reached, len(changed))
        return reached

    def _converge(self, models: list[ServedModel], snapshot: dict[str, list[str]], version: int) -> list[ServedModel]:
        """On the model thread, between batches: every model to its names in the snapshot, then the version."""
        changed = []
        for model in models:
            engine = model.engine
            # the registry holds normalised names: only the missing ones are checked against the text context
            # (tokenising every name of every model at each sync stalled answers ~54 us per name)
            missing, extra = plan(engine.classnames, snapshot.get(model.name, []))
            missing = valid_names(engine, missing, "registered class")
            for name in extra:
                engine.remove_class(name)
            if missing:
                engine.add_classes(missing)
            if missing or extra:
                changed.append(model)
            self._engines[engine] = version
        self.version = version
        return changed


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
