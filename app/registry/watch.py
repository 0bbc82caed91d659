"""Follow the registry's version from a background thread, so a replica learns of other replicas' writes.

Three triggers, because each alone misses something: a NOTIFY (PostgreSQL; fast, but not replayed
to a connection that was down when it was sent), every (re)connection (what was missed while
down), and a slow poll (a notification lost for any other reason; the only trigger for a SQLite
file shared by several processes). `on_change(version)` is called with the version seen whenever
it differs from the last one handed over, and once after every (re)connection; the consumer
brings its state to registry.snapshot() and may see a version more than once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.registry import ClassRegistry, Listener, RegistryError

log = logging.getLogger(__name__)

WAIT_SLICE_S = 0.25  # the longest a LISTEN wait lasts before the thread checks whether to stop
MAX_BACKOFF_S = 2.0  # while the database is down, reconnect at least this often


class Deferred(Exception):
    """on_change could not finish yet (and did not fail): the watcher hands the version over again at its next
    check instead of recording it as followed."""


class RegistryWatcher:
    """healthy / reason say whether the database answered the last attempt (for /readyz: "degraded")."""

    def __init__(
        self,
        registry: ClassRegistry,
        on_change: Callable[[int], None],
        poll_s: float = 5.0,
        start: bool = True,
    ) -> None:
        self.registry = registry
        self.on_change = on_change
        self.poll_s = poll_s
        self.healthy = True
        self.reason: str | None = None
        self.version: int | None = None  # the last version handed to on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vpt-registry-watch", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; returns within about WAIT_SLICE_S plus one registry call's retry budget."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # the thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            listener: Listener | None = None
            try:
                listener = self.registry.listen()
                self._check(force=True)  # just (re)connected: whatever was sent meanwhile is lost
                backoff = 0.1
                self._follow(listener)
            except RegistryError as exc:
                self._unhealthy(str(exc))
            finally:
                if listener is not None:
                    listener.close()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _follow(self, listener: Listener | None) -> None:
        """Until stopped or the link fails: act on notifications, and poll the version every poll_s."""
        next_poll = time.monotonic() + self.poll_s
        while not self._stop.is_set():
            left = next_poll - time.monotonic()
            if left <= 0:
                self._check()
                next_poll = time.monotonic() + self.poll_s
                continue
            if listener is None:
                self._stop.wait(left)
                continue
            announced = listener.wait(min(left, WAIT_SLICE_S))
            if announced and max(announced) != self.version:
                self._check()

    def _check(self, force: bool = False) -> None:
        """Read the version; hand it over if it changed (or after a reconnection)."""
        version = self.registry.version()
        if not self.healthy:
            log.info("class registry %s reachable again", self.registry.location)
        self.healthy, self.reason = True, None
        if force or version != self.version:
            try:
                self.on_change(version)
            except Deferred as exc:  # not done yet (nor failed): the next check hands it over again
                log.info("class registry watcher: version %d %s", version, exc)
                return
            except Exception:  # the consumer's failure: keep watching; the next check hands it over again
                log.exception("class registry watcher: on_change(%d) failed", version)
                return
            self.version = version

    def _unhealthy(self, reason: str) -> None:
        if self.healthy:
            log.warning("class registry %s: %s", self.registry.location, reason)
        self.healthy, self.reason = False, reason
