"""Progress output for long jobs: a live bar on a terminal, one line per epoch elsewhere.

Bars redraw many times a second; written to a log file or a pipe they add up to hundreds of
kilobytes per run. So a bar is shown only when stderr is a terminal; otherwise `milestone`
prints one plain line (e.g. per epoch). `--quiet` on the CLIs silences both.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def _tty() -> bool:
    return sys.stderr.isatty()


def bar(iterable: Iterable[T], **kwargs) -> Iterator[T] | tqdm:
    """tqdm on a terminal; the plain iterable otherwise (or when quiet)."""
    if _quiet or not _tty():
        return iter(iterable)
    return tqdm(iterable, **kwargs)


def milestone(text: str) -> None:
    """One line for logs and pipes (a terminal already shows the bar)."""
    if not _quiet and not _tty():
        print(text, file=sys.stderr, flush=True)
