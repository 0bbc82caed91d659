"""What a registry call does, written once for both backends over a minimal transaction handle.

Each backend opens the transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: a lock on the version
row, so writers of every replica take turns and each sees the rows the previous one committed),
calls one of these, and bumps the version when it reports a change. Statements use `?`
placeholders and SQL that SQLite and PostgreSQL both read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from app.names import find, name_key, unique
from app.registry import RegistryLimitError


class Tx(Protocol):
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""


def read_names(tx: Tx, model: str) -> list[str]:
    return [row[0] for row in tx.rows("SELECT name FROM classes WHERE model = ? ORDER BY id", (model,))]


def read_version(tx: Tx) -> int:
    return int(tx.rows("SELECT version FROM registry_version WHERE id = 1")[0][0])


def read_snapshot(tx: Tx) -> tuple[int, dict[str, list[str]]]:
    """Call inside one read transaction (one snapshot): the version and the names agree."""
    version = read_version(tx)
    models: dict[str, list[str]] = {}
    for model, name in tx.rows("SELECT model, name FROM classes ORDER BY id"):
        models.setdefault(model, []).append(name)
    return version, models


def bump_version(tx: Tx) -> int:
    tx.run("UPDATE registry_version SET version = version + 1 WHERE id = 1")
    return read_version(tx)


def _mark_written(tx: Tx, model: str) -> bool:
    """Record that the model's namespace was written (seed() does nothing from then on); True if new."""
    return tx.run("INSERT INTO seeded_models (model) VALUES (?) ON CONFLICT DO NOTHING", (model,)) > 0


def add(tx: Tx, model: str, names: Iterable[str], limit: int | None) -> tuple[list[str], bool]:
    """The names newly added (first form of each identity, in order), and whether anything changed."""
    names = list(dict.fromkeys(names))
    stored = read_names(tx, model)
    known = {name_key(name) for name in stored}
    added = []
    for name in names:
        if name_key(name) not in known:
            known.add(name_key(name))
            added.append(name)
    if limit is not None and added and len(stored) + len(added) > limit:
        raise RegistryLimitError(
            f"registering {len(added)} more classes for model {model!r} would exceed its limit of {limit} "
            f"({len(stored)} registered); delete some first"
        )
    for name in added:
        tx.run("INSERT INTO classes (model, name) VALUES (?, ?)", (model, name))
    return added, _mark_written(tx, model) or bool(added)


def remove(tx: Tx, model: str, name: str) -> tuple[bool, bool]:
    """Whether the class `name` names was registered (and is now removed), and whether anything changed."""
    marked = _mark_written(tx, model)
    stored = find(name, read_names(tx, model))
    removed = stored is not None and tx.run("DELETE FROM classes WHERE model = ? AND name = ?", (model, stored)) > 0
    return removed, marked or removed


def seed(tx: Tx, model: str, names: Iterable[str]) -> tuple[list[str], bool]:
    """Register `names` only if the model's namespace was never written; what was added, and whether it changed."""
    names = unique(names)
    if not _mark_written(tx, model):
        return [], False
    for name in names:
        tx.run("INSERT INTO classes (model, name) VALUES (?, ?) ON CONFLICT DO NOTHING", (model, name))
    return names, True
