"""Which entries a listing shows, and in which order: name patterns and the sort window.

Pure: no I/O. Used by the listing handlers (Entry batches from any backend) and by the
local-disk reader (directory entries in a worker thread), so both select and order alike.

- A *pattern* is a last path component holding ``*``, ``?`` or ``[``, matched as
  :func:`fnmatch.fnmatchcase` does (case-sensitive everywhere). As in a POSIX shell, a
  name starting with ``.`` is matched only by a pattern that starts with ``.`` too, so
  ``mdelete *`` leaves dot files alone.
- A :class:`SortWindow` sorts a stream of at most ``limit`` items and passes a longer one
  on in arrival order, so it never holds more than ``limit + 1`` items (a huge directory
  still streams, in directory order).
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: the characters that make a last path component a pattern (fnmatch's)
PATTERN_CHARS = frozenset("*?[")

#: a predicate on entry names
NameMatch = Callable[[str], bool]
#: the sort key of listings: the name (Entry and os.DirEntry alike), in code point order,
#: which is the byte order of UTF-8 names ("B" before "a", as ``LC_ALL=C ls``)
by_name: Callable[[object], str] = operator.attrgetter("name")


def is_pattern(name: str) -> bool:
    """True when ``name`` (one path component) holds a wildcard character."""
    return not PATTERN_CHARS.isdisjoint(name)


def name_matcher(pattern: str) -> NameMatch:
    """The predicate "this name matches ``pattern``" (fnmatch syntax, case-sensitive;
    a leading ``.`` must be matched by a leading ``.``)."""
    regex = re.compile(fnmatch.translate(pattern), re.DOTALL)
    match = regex.match
    if pattern.startswith("."):
        return lambda name: match(name) is not None
    return lambda name: not name.startswith(".") and match(name) is not None


class SortWindow(Generic[T]):
    """Sorts a stream of batches by ``key`` if it has at most ``limit`` items; a longer
    stream is passed on in arrival order from the moment it outgrows the window.

    Feed it with :meth:`add` (what comes back may be sent now) and end with
    :meth:`finish` (the rest, sorted when the whole stream fitted). ``limit`` 0 turns
    sorting off: every batch passes straight through. :attr:`peak` is the largest number
    of items it ever held at once (what a listing keeps in memory for ordering)."""

    __slots__ = ("_held", "_key", "_limit", "peak")

    def __init__(self, limit: int, key: Callable[[T], str]) -> None:
        if limit < 0:
            raise ValueError("the sort limit is a count >= 0")
        self._limit = limit
        self._key = key
        self._held: list[T] | None = [] if limit > 0 else None
        self.peak = 0

    @property
    def holding(self) -> bool:
        """True while items are being held back to be sorted."""
        return self._held is not None

    def add(self, items: list[T]) -> list[T]:
        held = self._held
        if held is None:
            return items
        held.extend(items)
        if len(held) > self.peak:
            self.peak = len(held)
        if len(held) > self._limit:
            # Outgrown: what was held goes out in the order it came, the rest streams.
            self._held = None
            return held
        return []

    def finish(self) -> list[T]:
        held = self._held
        if held is None:
            return []
        self._held = None
        held.sort(key=self._key)
        return held


def entry_prefix(arg: str) -> str:
    """What NLST puts before each name matched by the pattern argument ``arg``: its
    directory part as the client wrote it ("dir/" for "dir/*.txt", "" for "*.txt"), so
    every name it answers can be handed back to RETR or DELE as it is, like the words a
    shell expands ``dir/*.txt`` to."""
    cut = max(arg.rfind("/"), arg.rfind("\\"))
    return arg[: cut + 1]
