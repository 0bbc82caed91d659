"""The class registry's contract, run against SQLite and PostgreSQL; then what only the SQLite file does."""

from __future__ import annotations

import sqlite3

import pytest

from app.registry import ClassRegistry, RegistryError, RegistryLimitError, location_of, open_registry

LEGACY = "old-model"


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request, tmp_path):
    """Where a new, empty registry lives: a SQLite file, or a PostgreSQL database (tests/pg.py)."""
    return tmp_path / "r.sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def reg(spec):
    registry = open_registry(spec, legacy_model=LEGACY)
    yield registry
    registry.close()


def test_add_remove_order_and_idempotence(spec, reg):
    assert isinstance(reg, ClassRegistry)
    assert reg.add("m", ["b", "a", "b"]) == ["b", "a"]
    assert reg.add("m", ["a", "c"]) == ["c"]
    assert reg.names("m") == ["b", "a", "c"]
    assert reg.remove("m", "a") and not reg.remove("m", "a")
    reg.close()
    again = open_registry(spec, legacy_model=LEGACY)
    assert again.names("m") == ["b", "c"]
    again.close()


def test_one_class_per_identity_in_the_form_first_registered(reg):
    assert reg.add("m", ["Red Circle", "red circle"]) == ["Red Circle"]
    assert reg.add("m", ["RED CIRCLE", "blue", "ｒｅｄ ｃｉｒｃｌｅ"]) == ["blue"]
    assert reg.names("m") == ["Red Circle", "blue"]
    assert reg.remove("m", "red circle") and reg.names("m") == ["blue"]


def test_models_are_separate_namespaces(reg):
    assert reg.add("a", ["cat", "dog"]) == ["cat", "dog"]
    assert reg.add("b", ["Dog", "fox"]) == ["Dog", "fox"]  # "Dog" is new for b although a has "dog"
    assert reg.remove("a", "dog")
    assert reg.names("a") == ["cat"] and reg.names("b") == ["Dog", "fox"] and reg.names("c") == []
    assert not reg.remove("c", "cat")


def test_seed_only_once_per_model(reg):
    assert reg.seed("m", ["x", "y", "X"]) == ["x", "y"]
    assert reg.seed("m", ["z"]) == [] and reg.names("m") == ["x", "y"]
    reg.add("n", ["q"])  # a written namespace is never seeded, even if it was written before any seed
    assert reg.seed("n", ["z"]) == [] and reg.names("n") == ["q"]
    reg.remove("o", "nothing")  # a delete also counts as written: the operator emptied it on purpose
    assert reg.seed("o", ["z"]) == []
    assert reg.seed("p", ["z"]) == ["z"]


def test_the_version_grows_with_every_change_and_only_then(reg):
    v0 = reg.version()
    reg.add("m", ["a"])
    v1 = reg.version()
    reg.add("m", ["A"])  # nothing new
    assert v0 < v1 == reg.version()
    reg.add("other", ["a"])
    v2 = reg.version()
    assert v2 > v1
    assert not reg.remove("other", "missing")
    assert reg.version() == v2
    assert reg.remove("other", "a") and reg.version() > v2
    assert reg.seed("m", ["b"]) == [] and reg.seed("fresh", ["b"]) == ["b"]
    assert reg.version() > v2 + 1


def test_the_limit_is_per_model_and_leaves_nothing_behind(reg):
    reg.add("m", ["a", "b"], limit=3)
    with pytest.raises(RegistryLimitError, match="limit of 3"):
        reg.add("m", ["c", "d"], limit=3)
    assert isinstance(RegistryLimitError("x"), RegistryError)
    version = reg.version()
    assert reg.names("m") == ["a", "b"] and reg.version() == version  # the refused write left no trace
    assert reg.add("m", ["A", "c"], limit=3) == ["c"]  # known names do not count
    assert reg.add("m", ["a"], limit=3) == []  # at the limit, re-adding a known name is fine
    assert reg.add("n", ["a", "b", "c"], limit=3) == ["a", "b", "c"]  # another model has its own count


def test_snapshot_holds_every_model_at_one_version(reg):
    assert reg.snapshot() == (reg.version(), {})
    reg.add("a", ["x", "y"])
    reg.add("b", ["z"])
    reg.remove("a", "x")
    version, models = reg.snapshot()
    assert version == reg.version() and models == {"a": ["y"], "b": ["z"]}


def test_location_never_shows_the_password(spec, reg):
    assert reg.location == location_of(spec)
    if isinstance(spec, str):
        from tests.pg import PASSWORD

        assert PASSWORD in spec and PASSWORD not in reg.location and reg.location.startswith("postgresql://vpt@")


# SQLite only -------------------------------------------------------------------------------------


def test_unwritable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RegistryError, match="cannot open the class registry"):
        open_registry(blocker / "r.sqlite", legacy_model=LEGACY)


def test_an_empty_file_is_refused_not_reseeded(tmp_path):
    path = tmp_path / "r.sqlite"
    reg = open_registry(path, legacy_model=LEGACY)
    reg.add("m", ["a", "b"])
    reg.close()
    path.write_bytes(b"")  # truncated to 0 bytes while the server was stopped
    with pytest.raises(RegistryError, match="empty file, not a new registry"):
        open_registry(path, legacy_model=LEGACY)
    assert path.stat().st_size == 0  # left as found for the operator


def test_a_damaged_file_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    reg = open_registry(path, legacy_model=LEGACY)
    reg.add("m", [f"class number {i} with a longish name" for i in range(400)])  # several pages
    reg.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[4096 : 4096 + 512] = bytes(range(256)) * 2  # garbage in the second page
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="damaged|cannot open"):
        open_registry(path, legacy_model=LEGACY)


def test_a_new_path_is_created(tmp_path):
    reg = open_registry(tmp_path / "sub" / "new.sqlite", legacy_model=LEGACY)
    assert reg.names("m") == [] and reg.seed("m", ["x"]) == ["x"]


def test_the_file_stays_in_wal_mode_with_full_sync(tmp_path):
    path = tmp_path / "r.sqlite"
    open_registry(path, legacy_model=LEGACY).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# The schema written before registries had models (app/registry.py until this change), verbatim.
_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _v1_file(path, names: list[str], seeded: bool) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_V1_SCHEMA)
    for name in names:
        conn.execute("INSERT INTO classes (name) VALUES (?)", (name,))
    if seeded:
        conn.execute("INSERT INTO meta (key, value) VALUES ('seeded', '1')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("seeded", [True, False])
def test_an_old_file_is_migrated_to_the_legacy_model(tmp_path, seeded):
    path = tmp_path / "r.sqlite"
    _v1_file(path, ["zebra", "Apple", "mango"], seeded)
    reg = open_registry(path, legacy_model=LEGACY)
    assert reg.names(LEGACY) == ["zebra", "Apple", "mango"]  # registration order kept
    assert reg.snapshot()[1] == {LEGACY: ["zebra", "Apple", "mango"]}
    assert reg.seed(LEGACY, ["x"]) == ([] if seeded else ["x"])
    assert reg.seed("another", ["y"]) == ["y"]  # other models start unseeded
    v = reg.version()
    assert v >= 1 and reg.add(LEGACY, ["apple", "kiwi"]) == ["kiwi"] and reg.version() > v
    reg.close()
    again = open_registry(path, legacy_model="some other name")  # migrated once: the name no longer matters
    assert again.names(LEGACY)[:3] == ["zebra", "Apple", "mango"] and again.names("some other name") == []
    again.close()
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "classes_v1" not in tables and "meta" not in tables


def test_a_failed_migration_leaves_the_old_file_as_it_was(tmp_path, monkeypatch):
    from app.registry import sqlite as backend

    path = tmp_path / "r.sqlite"
    _v1_file(path, ["a", "b"], seeded=True)
    monkeypatch.setattr(backend, "_TABLES", backend._TABLES + ";\nCREATE TABLE broken (")  # fails mid-migration
    with pytest.raises(RegistryError):
        open_registry(path, legacy_model=LEGACY)
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM classes ORDER BY id")] == ["a", "b"]
    assert conn.execute("SELECT value FROM meta WHERE key = 'seeded'").fetchone() == ("1",)
