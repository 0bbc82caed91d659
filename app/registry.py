"""The class registry's storage: the only module that speaks SQL.

One SQLite file in WAL mode; every public call is one transaction, so a registration either
survives a crash (kill -9 included) entirely or not at all. Names are stored already
normalised, in the form first registered; two names with one app.names.name_key are one class.
The order of registration is kept (it is the order of the model's classes).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from app.names import find, name_key, unique

_SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class RegistryError(Exception):
    """The registry file cannot be opened or written."""


class ClassRegistry:
    """Opening refuses a file that exists but is empty or damaged: starting afresh there would
    silently drop every registered class (and re-seed the defaults), so the operator decides."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if self.path.is_file() and self.path.stat().st_size == 0:
                raise RegistryError(
                    f"the class registry {self.path} is an empty file, not a new registry (truncated?): "
                    "restore it from a backup, or delete it to start with no registered classes"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(f"cannot open the class registry {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, body):
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise RegistryError(f"class registry {self.path}: {exc}") from exc

    def names(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._conn.execute("SELECT name FROM classes ORDER BY id")]

    def add(self, names: Iterable[str]) -> list[str]:
        """Register names (already normalised); returns those that were new, in order."""
        names = list(dict.fromkeys(names))

        def body(conn: sqlite3.Connection) -> list[str]:
            known = {name_key(row[0]) for row in conn.execute("SELECT name FROM classes")}
            added = []
            for name in names:
                if name_key(name) in known:
                    continue
                conn.execute("INSERT INTO classes (name) VALUES (?)", (name,))
                known.add(name_key(name))
                added.append(name)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seeded', '1')")
            return added

        return self._transaction(body)

    def remove(self, name: str) -> bool:
        """Remove the class that `name` (normalised) names, in whatever case or form it was registered."""

        def body(conn: sqlite3.Connection) -> bool:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seeded', '1')")
            stored = find(name, (row[0] for row in conn.execute("SELECT name FROM classes")))
            return stored is not None and conn.execute("DELETE FROM classes WHERE name = ?", (stored,)).rowcount > 0

        return self._transaction(body)

    def seed(self, names: Iterable[str]) -> list[str]:
        """Register `names` only if this registry was never written to (first start); returns what was added."""
        names = unique(names)

        def body(conn: sqlite3.Connection) -> list[str]:
            if conn.execute("SELECT 1 FROM meta WHERE key = 'seeded'").fetchone():
                return []
            conn.execute("INSERT INTO meta (key, value) VALUES ('seeded', '1')")
            conn.executemany("INSERT OR IGNORE INTO classes (name) VALUES (?)", [(n,) for n in names])
            return names

        return self._transaction(body)
