"""The embedded registry: one SQLite file in WAL mode with synchronous=FULL.

Every public call is one transaction, so a registration survives a crash (kill -9 included)
entirely or not at all; BEGIN IMMEDIATE makes writers take turns, also across processes that
share the file. A file written before registries had models (one `classes` table without a
`model` column, a 'seeded' meta row) is migrated in place, in one transaction, to `legacy_model`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from app.registry import RegistryError, RegistryUnavailableError, core

T = TypeVar("T")

_TABLES = """
CREATE TABLE classes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (model, name)
);
CREATE TABLE IF NOT EXISTS seeded_models (model TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS registry_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT INTO registry_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;
"""


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount


class SqliteRegistry:
    """Opening refuses a file that exists but is empty or damaged: starting afresh there would
    silently drop every registered class (and re-seed the defaults), so the operator decides."""

    def __init__(self, path: str | Path, legacy_model: str) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.Lock()
        try:
            if self.path.is_file() and self.path.stat().st_size == 0:
                raise RegistryError(
                    f"the class registry {self.path} is an empty file, not a new registry (truncated?): "
                    "restore it from a backup, or delete it to start with no registered classes"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                _create_whole(self.path)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                self._conn.close()
                raise RegistryError(
                    f"the class registry {self.path} is damaged ({'; '.join(problems)}): "
                    "restore it from a backup, or move it away to start with no registered classes"
                )
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(f"cannot open the class registry {self.path}: {exc}") from exc
        self._transaction(lambda tx: _create_or_migrate(self._conn, legacy_model), write=True)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, body: Callable[[_Tx], T], write: bool) -> T:
        """One transaction; a write one takes the file's write lock first (BEGIN IMMEDIATE)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = body(_Tx(self._conn))
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):  # another process held it past the busy timeout
                    raise RegistryUnavailableError(f"class registry {self.path} is busy: {exc}; retry shortly") from exc
                raise RegistryError(f"class registry {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise RegistryError(f"class registry {self.path}: {exc}") from exc

    def _write(self, body: Callable[[_Tx], tuple[T, bool]]) -> T:
        def step(tx: _Tx) -> T:
            result, changed = body(tx)
            if changed:
                core.bump_version(tx)
            return result

        return self._transaction(step, write=True)

    def names(self, model: str) -> list[str]:
        return self._transaction(lambda tx: core.read_names(tx, model), write=False)

    def version(self) -> int:
        return self._transaction(core.read_version, write=False)

    def snapshot(self) -> tuple[int, dict[str, list[str]]]:
        return self._transaction(core.read_snapshot, write=False)

    def add(self, model: str, names: Iterable[str], limit: int | None = None) -> list[str]:
        return self._write(lambda tx: core.add(tx, model, names, limit))

    def remove(self, model: str, name: str) -> bool:
        return self._write(lambda tx: core.remove(tx, model, name))

    def seed(self, model: str, names: Iterable[str]) -> list[str]:
        return self._write(lambda tx: core.seed(tx, model, names))

    def listen(self) -> None:
        """No notifications: processes sharing the file see changes by polling the version."""
        return None


def _create_whole(path: Path) -> None:
    """Write a new registry beside `path` and link it into place, so no process that shares the file ever
    sees it empty (which would be refused as truncated) while another is creating it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
            conn.execute("BEGIN IMMEDIATE")
            _create_or_migrate(conn, legacy_model="")
            conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        for leftover in (temp, temp.with_name(temp.name + "-wal"), temp.with_name(temp.name + "-shm")):
            leftover.unlink(missing_ok=True)


def _create_or_migrate(conn: sqlite3.Connection, legacy_model: str) -> None:
    """Inside the opening write transaction, so two processes opening one old file migrate it once."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(classes)")]
    if "model" in columns:
        return
    legacy = bool(columns)
    if legacy:  # the first schema: classes(id, name UNIQUE, created_at) + meta(key, value)
        conn.execute("ALTER TABLE classes RENAME TO classes_v1")
    for statement in _TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)
    if not legacy:
        return
    conn.execute(
        "INSERT INTO classes (id, model, name, created_at) SELECT id, ?, name, created_at FROM classes_v1 ORDER BY id",
        (legacy_model,),
    )
    conn.execute("DROP TABLE classes_v1")
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta:
        if conn.execute("SELECT 1 FROM meta WHERE key = 'seeded'").fetchone():
            conn.execute("INSERT INTO seeded_models (model) VALUES (?)", (legacy_model,))
        conn.execute("DROP TABLE meta")
    conn.execute("UPDATE registry_version SET version = 1 WHERE id = 1")
