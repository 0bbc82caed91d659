"""The class registry: the only package that speaks SQL.

Classes are registered per model (a namespace: the model's name). Two backends keep one contract:
a SQLite file (the embedded default, app.registry.sqlite) and PostgreSQL shared by several replicas
(app.registry.postgres). Names arrive already normalised; two names with one app.names.name_key are
one class, kept in the form first registered and in registration order. Every write is one
transaction that also bumps the registry-wide version, so a replica that sees the version it knows
knows it has every class (app.registry.watch follows it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable


class RegistryError(Exception):
    """The registry cannot be opened, read or written; the message is ours, safe to show."""


class RegistryUnavailableError(RegistryError):
    """Transient: the database is unreachable now (retries ran out); mutations answer 503 + Retry-After."""


class RegistryLimitError(RegistryError):
    """The model would exceed its class limit (checked inside the write transaction)."""


class Listener(Protocol):
    """Change notifications from the database (PostgreSQL LISTEN); see RegistryWatcher."""

    def wait(self, timeout: float) -> list[int]:
        """Versions announced within `timeout` seconds (empty: none); RegistryUnavailableError when the link is lost."""

    def close(self) -> None: ...


@runtime_checkable
class ClassRegistry(Protocol):
    location: str  # file path, or the URL without password (for logs and messages)

    def names(self, model: str) -> list[str]:
        """The model's classes in registration order."""

    def add(self, model: str, names: Iterable[str], limit: int | None = None) -> list[str]:
        """Register names (normalised); returns those newly added; RegistryLimitError past `limit` classes."""

    def remove(self, model: str, name: str) -> bool:
        """Remove the class `name` names (any form of it); False when it was not registered."""

    def seed(self, model: str, names: Iterable[str]) -> list[str]:
        """Register `names` only if this model's namespace was never written; returns what was added."""

    def version(self) -> int:
        """Increases with every committed write (any model)."""

    def snapshot(self) -> tuple[int, dict[str, list[str]]]:
        """The version and every model's names, from one consistent read."""

    def listen(self) -> Listener | None:
        """A connection that receives change notifications, or None where there are none (poll only)."""

    def close(self) -> None: ...


def is_database_url(spec: str | Path) -> bool:
    """Whether a registry spec names a PostgreSQL database rather than a SQLite file."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def location_of(spec: str | Path) -> str:
    """How a registry spec is shown in logs and messages: a URL loses its password."""
    if is_database_url(spec):
        from app.registry.postgres import redact

        return redact(str(spec))
    return str(spec)


def open_registry(spec: str | Path, legacy_model: str) -> ClassRegistry:
    """The registry `spec` names: a postgresql:// (or postgres://) URL, else a SQLite file path.

    `legacy_model` owns the classes (and the 'seeded' flag) of a SQLite file written before
    registries had models.
    """
    if is_database_url(spec):
        from app.registry.postgres import PostgresRegistry

        return PostgresRegistry(str(spec))
    from app.registry.sqlite import SqliteRegistry

    return SqliteRegistry(spec, legacy_model=legacy_model)


__all__ = [
    "ClassRegistry",
    "Listener",
    "RegistryError",
    "RegistryLimitError",
    "RegistryUnavailableError",
    "is_database_url",
    "location_of",
    "open_registry",
]
