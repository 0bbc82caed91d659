"""The shared registry: PostgreSQL, for several replicas behind one load balancer.

Driver: psycopg 3 (maintained; its synchronous API fits the model thread the service already
writes from; `Connection.notifies()` reads LISTEN/NOTIFY), with psycopg-pool's connection pool.

- Tables live in their own schema (`vpt`), created if missing under an advisory lock, so replicas
  starting at once do not race on CREATE. Opening only checks the URL: the schema is made by the
  first call that reaches the server, so a replica can start while the database is still down (its
  calls raise RegistryUnavailableError until it is up) and needs no restart when it comes.
- Every write transaction first locks the single `registry_version` row: writers of all replicas
  take turns, and each one (READ COMMITTED: every statement sees what was committed before it)
  decides "same class" (app.names.name_key) on the rows its predecessor committed, so concurrent
  adds and deletes of one name end with one row or none, never two. A write that changes
  something bumps the version and sends `NOTIFY vpt_registry, '<version>'` in that transaction
  (PostgreSQL delivers it only on commit).
- Transient errors (connection refused or lost, server shutting down, serialization failure,
  deadlock, pool exhausted, a lock or statement past `timeout_s`) are retried with exponential
  backoff until `timeout_s` has passed in all; then RegistryUnavailableError, so no request waits
  much longer (an attempt started near the end may run its own bounded course: the connect
  timeout, the statement timeout). A write retried after a
  connection lost during COMMIT may already have been applied: add and remove are idempotent,
  so the retry finds it done (it then reports nothing newly added / nothing removed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from app.registry import RegistryError, RegistryUnavailableError, core

log = logging.getLogger(__name__)
# The pool retries connecting in the background and warns at every attempt while the database is down;
# RegistryWatcher reports the outage once (and its end), so only the pool's errors are worth a line.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

T = TypeVar("T")

CHANNEL = "vpt_registry"
SCHEMA = "vpt"
_SCHEMA_LOCK = 0x767074  # pg_advisory_xact_lock key while creating the schema ("vpt")
_TABLES = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    """CREATE TABLE IF NOT EXISTS classes (
        id BIGSERIAL PRIMARY KEY,
        model TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (model, name)
    )""",
    "CREATE TABLE IF NOT EXISTS seeded_models (model TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS registry_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    )""",
    "INSERT INTO registry_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING",
)
# Errors worth another try: the server is unreachable, restarting, or chose this transaction to abort.
_TRANSIENT = (psycopg.OperationalError, pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
CONNECT_TIMEOUT_S = 2  # libpq's smallest; each attempt within the retry budget


def redact(url: str) -> str:
    """The URL as logs may show it: user, host, port and database, never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable URL>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname', '')}"


def check_url(url: str) -> None:
    """RegistryError for a URL no retry can fix (unparsable, a port that is not a number): the operator's
    mistake, reported at start-up, unlike a server that is not reachable yet."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # libpq's text quotes the token it failed on: the password, maybe
        raise RegistryError(
            f"the class registry URL {redact(url)} is malformed (check its form: postgresql://user:password@host:"
            "port/database; a password with '%', '@', '/' or ':' must be percent-encoded)"
        ) from None
    for port in str(parts.get("port") or "5432").split(","):
        if not port.strip().isdigit() or not 0 < int(port) < 65536:
            raise RegistryError(f"the class registry URL {redact(url)} is malformed: port {port!r} is not a number")


def connection_kwargs(timeout_s: float) -> dict[str, Any]:
    """Settings of every connection: our schema first, bounded connects, statements and lock waits (within
    the retry budget, so a writer queued behind a stuck one gives up in time), dead peers noticed."""
    ms = max(int(timeout_s * 1000), 100)
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "options": f"-c search_path={SCHEMA} -c statement_timeout={ms} -c lock_timeout={ms}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": 5000,
    }


class _Tx:
    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._conn.execute(sql.replace("?", "%s"), params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql.replace("?", "%s"), params).rowcount


class PostgresRegistry:
    def __init__(self, url: str, timeout_s: float = 3.0, pool_size: int = 4) -> None:
        self.url = url
        self.location = redact(url)
        self.timeout_s = timeout_s
        check_url(url)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        try:
            self._pool = ConnectionPool(
                url,
                kwargs=connection_kwargs(timeout_s),
                min_size=1,
                max_size=pool_size,
                open=False,
                check=ConnectionPool.check_connection,  # a connection the server dropped is replaced, not used
                name="vpt-registry",
                reconnect_timeout=24 * 3600.0,  # keep trying in the background while the database is down
            )
            self._pool.open(wait=False)
        except psycopg.Error as exc:
            raise RegistryError(f"cannot open the class registry {self.location}: {exc}") from exc

    def close(self) -> None:
        self._pool.close(timeout=1.0)

    # transactions ---------------------------------------------------------------------------------

    def _retry(self, attempt: Callable[[float], T]) -> T:
        """attempt(seconds left) until it succeeds or the budget is spent; backoff doubles from 50 ms."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                return attempt(max(left, 0.1))
            except _TRANSIENT as exc:
                left = deadline - time.monotonic()
                if left <= delay:
                    raise RegistryUnavailableError(
                        f"the class registry {self.location} is unreachable ({_first_line(exc)}); retry shortly"
                    ) from exc
                log.debug("class registry: transient error, retrying in %.2f s: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except psycopg.Error as exc:
                raise RegistryError(f"class registry {self.location}: {_first_line(exc)}") from exc

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        """Create the tables on the first connection that reaches the server (once per registry object)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _TABLES:
                    conn.execute(statement)
            self._schema_ready = True

    def _read(self, body: Callable[[_Tx], T]) -> T:
        def attempt(wait_s: float) -> T:
            with self._pool.connection(timeout=wait_s) as conn:
                self._ensure_schema(conn)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for every statement
                with conn.transaction():
                    return body(_Tx(conn))

        return self._retry(attempt)

    def _write(self, body: Callable[[_Tx], tuple[T, bool]]) -> T:
        def attempt(wait_s: float) -> T:
            with self._pool.connection(timeout=wait_s) as conn:
                self._ensure_schema(conn)
                conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
                with conn.transaction():
                    conn.execute("SELECT version FROM registry_version WHERE id = 1 FOR UPDATE")  # writers take turns
                    result, changed = body(_Tx(conn))
                    if changed:
                        version = core.bump_version(_Tx(conn))
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
                    return result

        return self._retry(attempt)

    # the contract ---------------------------------------------------------------------------------

    def names(self, model: str) -> list[str]:
        return self._read(lambda tx: core.read_names(tx, model))

    def version(self) -> int:
        return self._read(core.read_version)

    def snapshot(self) -> tuple[int, dict[str, list[str]]]:
        return self._read(core.read_snapshot)

    def add(self, model: str, names: Iterable[str], limit: int | None = None) -> list[str]:
        names = list(names)  # retried attempts read it again
        return self._write(lambda tx: core.add(tx, model, names, limit))

    def remove(self, model: str, name: str) -> bool:
        return self._write(lambda tx: core.remove(tx, model, name))

    def seed(self, model: str, names: Iterable[str]) -> list[str]:
        names = list(names)
        return self._write(lambda tx: core.seed(tx, model, names))

    def listen(self) -> PostgresListener:
        """A dedicated connection (outside the pool) that LISTENs; RegistryUnavailableError if it cannot connect."""
        return PostgresListener(self.url, self.location, self.timeout_s)


class PostgresListener:
    """LISTEN vpt_registry on its own autocommit connection. NOTIFY is not replayed to a connection
    opened later, so whoever reconnects re-reads the version (RegistryWatcher does)."""

    def __init__(self, url: str, location: str, timeout_s: float) -> None:
        self.location = location
        try:
            self._conn = psycopg.connect(url, autocommit=True, **connection_kwargs(timeout_s))
            self._conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise RegistryUnavailableError(
                f"cannot listen to the class registry {location}: {_first_line(exc)}"
            ) from exc

    def wait(self, timeout: float) -> list[int]:
        try:
            # stop_after=1: back at the first notification, not at the end of `timeout`
            payloads = [n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)]
        except psycopg.Error as exc:
            raise RegistryUnavailableError(
                f"lost the notification link to the class registry {self.location}: {_first_line(exc)}"
            ) from exc
        return [int(p) for p in payloads if p.isdigit()]

    def close(self) -> None:
        self._conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
