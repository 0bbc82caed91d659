"""SQLite class registry: one transaction per call, order kept, survives reopening."""

from __future__ import annotations

import pytest

from app.registry import ClassRegistry, RegistryError


def test_add_remove_order_and_idempotence(tmp_path):
    reg = ClassRegistry(tmp_path / "r.sqlite")
    assert reg.add(["b", "a", "b"]) == ["b", "a"]
    assert reg.add(["a", "c"]) == ["c"]
    assert reg.names() == ["b", "a", "c"]
    assert reg.remove("a") and not reg.remove("a")
    reg.close()
    assert ClassRegistry(tmp_path / "r.sqlite").names() == ["b", "c"]


def test_seed_only_once(tmp_path):
    reg = ClassRegistry(tmp_path / "r.sqlite")
    assert reg.seed(["x", "y"]) == ["x", "y"]
    assert reg.seed(["z"]) == []
    other = ClassRegistry(tmp_path / "s.sqlite")
    other.add(["q"])
    assert other.seed(["z"]) == [] and other.names() == ["q"]


def test_unwritable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RegistryError, match="cannot open the class registry"):
        ClassRegistry(blocker / "r.sqlite")


def test_one_class_per_identity_in_the_form_first_registered(tmp_path):
    reg = ClassRegistry(tmp_path / "r.sqlite")
    assert reg.add(["Red Circle", "red circle"]) == ["Red Circle"]
    assert reg.add(["RED CIRCLE", "blue"]) == ["blue"]
    assert reg.names() == ["Red Circle", "blue"]
    assert reg.remove("red circle") and reg.names() == ["blue"]


def test_an_empty_file_is_refused_not_reseeded(tmp_path):
    path = tmp_path / "r.sqlite"
    reg = ClassRegistry(path)
    reg.add(["a", "b"])
    reg.close()
    path.write_bytes(b"")  # truncated to 0 bytes while the server was stopped
    with pytest.raises(RegistryError, match="empty file, not a new registry"):
        ClassRegistry(path)
    assert path.stat().st_size == 0  # left as found for the operator


def test_a_damaged_file_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    reg = ClassRegistry(path)
    reg.add([f"class number {i} with a longish name" for i in range(400)])  # several pages
    reg.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[4096 : 4096 + 512] = bytes(range(256)) * 2  # garbage in the second page
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="damaged|cannot open"):
        ClassRegistry(path)


def test_a_new_path_is_created(tmp_path):
    reg = ClassRegistry(tmp_path / "sub" / "new.sqlite")
    assert reg.names() == [] and reg.seed(["x"]) == ["x"]
