"""Class names: what a valid name is, when two names are the same class, how one is quoted.

The one place for these rules; the engine, the service and the registry all call it.
- Display form (`normalize_name`): Unicode NFC with every run of whitespace collapsed to one
  space; the form the client first registered is the one shown.
- Identity (`name_key`): compatibility- and case-folded, so "Red Circle", "RED CIRCLE", the
  fullwidth "ｒｅｄ ｃｉｒｃｌｅ" and NFD "cafe\u0301" vs NFC "café" are each one class.
- Refused (InvalidClassNameError, a 422): empty names, lone surrogates, and control or format
  characters (Unicode Cc, Cf: NUL, zero-width and bidi overrides such as U+202E, which make
  a name display as something else).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from app.engine.errors import InvalidClassNameError

SHOWN_CHARS = 60  # a name quoted in a message or log line is cut to this many characters
_REFUSED_CATEGORIES = {"Cc": "control", "Cf": "format (invisible)", "Cs": "surrogate"}


def show(name: str) -> str:
    """A client-supplied name quoted for a message or a log line: escaped (repr) and cut to a readable length."""
    return repr(name if len(name) <= SHOWN_CHARS else name[:SHOWN_CHARS] + "...")


def normalize_name(name: object) -> str:
    """The display form of a class name (NFC, whitespace collapsed), or InvalidClassNameError saying why not."""
    if not isinstance(name, str):
        raise InvalidClassNameError(f"a class name must be a string, not {type(name).__name__}")
    for ch in name:  # first: NFC and the category lookup both need valid code points
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise InvalidClassNameError(
                f"class name {show(name)} holds a lone surrogate U+{ord(ch):04X}: send valid Unicode"
            )
    text = " ".join(unicodedata.normalize("NFC", name).split())
    if not text:
        raise InvalidClassNameError("class name is empty (or only whitespace)")
    for ch in text:
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if kind is not None:
            raise InvalidClassNameError(
                f"class name {show(text)} holds the {kind} character U+{ord(ch):04X}: use visible characters only"
            )
    return text


def name_key(name: str) -> str:
    """The identity of a normalised name: two names with one key are one class."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def unique(names: Iterable[str]) -> list[str]:
    """The first name of each identity, in order (names already normalised)."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name_key(name), name)
    return list(seen.values())


def find(name: str, registered: Iterable[str]) -> str | None:
    """The registered name that is the same class as `name` (normalised), or None."""
    key = name_key(name)
    return next((known for known in registered if name_key(known) == key), None)
