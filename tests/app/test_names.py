"""app.names: one display form, one identity, and the characters a class name may not hold."""

from __future__ import annotations

import pytest

from app.engine.errors import InvalidClassNameError
from app.names import find, name_key, normalize_name, show, unique


def test_display_form_is_nfc_with_whitespace_collapsed():
    assert normalize_name("  Red \t Circle\n") == "Red Circle"
    assert normalize_name("cafe\u0301") == "caf\u00e9"  # NFD in, NFC out
    assert normalize_name("red\u3000circle") == "red circle"  # any Unicode space collapses


def test_case_width_and_composition_variants_are_one_class():
    variants = ["red circle", "Red Circle", "RED CIRCLE", "\uff52\uff45\uff44 \uff43\uff49\uff52\uff43\uff4c\uff45"]
    assert len({name_key(normalize_name(v)) for v in variants}) == 1
    assert name_key(normalize_name("cafe\u0301")) == name_key(normalize_name("Caf\u00e9"))
    assert name_key("red circle") != name_key("red circles")
    assert unique(["Red Circle", "red circle", "blue", "RED CIRCLE"]) == ["Red Circle", "blue"]
    assert find("RED circle", ["blue", "Red Circle"]) == "Red Circle"
    assert find("green", ["blue", "Red Circle"]) is None


@pytest.mark.parametrize(
    "bad",
    ["x\ud800y", "a\x00b", "a\x1bb", "\u202etxt.exe", "zero\u200bwidth", "a\ufeffb", "bidi\u2066x"],
)
def test_surrogates_control_and_format_characters_are_refused(bad):
    with pytest.raises(InvalidClassNameError, match=r"U\+[0-9A-F]{4}"):
        normalize_name(bad)


def test_empty_and_non_strings_are_refused():
    for empty in ("", " \t\n"):
        with pytest.raises(InvalidClassNameError, match="empty"):
            normalize_name(empty)
    with pytest.raises(InvalidClassNameError, match="string"):
        normalize_name(3)


def test_show_escapes_and_cuts():
    assert show("\u202eabc") == repr("\u202eabc") and "\\u202e" in show("\u202eabc")
    long = show("x" * 500)
    assert long.endswith("...'") and len(long) < 70
