"""Reading a local directory for listings, batch by batch, in worker threads (used by
``storage/local.py``; the rendering itself is ``protocol/listing.py``'s).

Invariants:
- hidden upload temp files are never listed; a symlink whose target lies outside the home is
  listed as the link itself (its target's size, times and mode are not the client's to see),
  a broken link as the link; an entry that vanishes while being read is left out;
- with a name predicate (a pattern), only matching names are stat'ed and listed; with a sort
  limit, up to that many entries are held (as ``os.DirEntry``, before any stat) and listed
  sorted by name, and a longer directory is listed in directory order
  (:class:`~fsftpd.protocol.selection.SortWindow`); otherwise nothing is held beyond one
  run of :data:`ROW_RUN` entries;
- every batch holds the reader's lock (like ``LocalReadStream``), so the directory is never
  closed under a batch whose awaiting task was cancelled: ``try_close`` only closes when no
  batch is running, otherwise ``close`` waits for it in a worker thread.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator

from ..protocol.listing import Entry, StatRenderer, StatRow, entry_from_stat
from ..protocol.selection import NameMatch, SortWindow, by_name
from .resolve import resolved_path

#: directory entries stat'ed and rendered together inside one batch
ROW_RUN = 256

_Items = list[os.DirEntry[str]]
#: a stand-in stat record for listings that need names only (NLST)
_NO_STAT = os.stat_result((0,) * 10)


class DirReader:
    """One directory listing. ``open_dir`` (run by the first batch, in its worker thread)
    checks the path and returns its real path and a descriptor open on it; ``inside``
    says whether a resolved real path lies inside the home; names starting with
    ``hidden_prefix`` are skipped, and so are names that ``match`` (if given) refuses.
    ``sort_limit`` > 0 lists a directory of up to that many entries sorted by name."""

    def __init__(self, open_dir: Callable[[], tuple[str, int]], inside: Callable[[str], bool],
                 hidden_prefix: str, *, match: NameMatch | None = None, sort_limit: int = 0) -> None:
        self._open_dir = open_dir
        self._inside = inside
        if not hidden_prefix:
            raise ValueError("hidden_prefix must not be empty")
        self._hidden = hidden_prefix
        self._lead = hidden_prefix[0]  # most names are told apart by their first character
        self._real = ""
        self._lock = threading.Lock()
        self._fd = -1
        self._it: Iterator[os.DirEntry[str]] | None = None
        self._state = "new"  # -> "open" -> "closed"
        self._more = True  # the directory has not been read to its end
        self._match = match
        self._window: SortWindow[os.DirEntry[str]] | None = (
            SortWindow(sort_limit, by_name) if sort_limit > 0 else None)
        # entries read and selected, waiting for their turn (a sorted directory, or what
        # a window that was outgrown let go), the next one last
        self._waiting: _Items = []

    # -- batches (worker threads) ------------------------------------------------------
    def entries(self, limit: int) -> tuple[list[Entry], bool]:
        """Up to about ``limit`` entries as Entry objects, and whether more may follow."""
        with self._lock:
            self._open_locked()
            runs = self._runs(limit, self._stat_rows)
            return [entry_from_stat(name, st) for rows in runs for name, st in rows], self.more

    def text(self, renderer: StatRenderer, limit: int) -> tuple[bytes, bool]:
        """Entries rendered into UTF-8 (names that are not UTF-8 keep their bytes), and
        whether more may follow: about ``limit`` entries read or rendered in all, so the
        text may be empty while a sorted listing is still being read."""
        with self._lock:
            self._open_locked()
            runs = self._runs(limit, self._stat_rows if renderer.needs_stat else self._name_rows)
            text = "".join([renderer.render(rows) for rows in runs])
            return text.encode("utf-8", "surrogateescape"), self.more

    @property
    def more(self) -> bool:
        """Whether entries may still follow (unread, or read and waiting)."""
        return self._more or bool(self._waiting)

    @property
    def held_peak(self) -> int:
        """The most directory entries this reader held at once to order them (0 without a
        sort limit): a pattern holds only its matches."""
        return self._window.peak if self._window is not None else 0

    def _open_locked(self) -> None:
        if self._state != "new":
            return
        self._state = "closed"  # if opening fails, there is nothing to close
        self._real, fd = self._open_dir()
        try:
            # scandir on a descriptor: each entry's stat is an fstatat() of one name,
            # cheaper than resolving the whole path again
            self._it = os.scandir(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._state = "open"

    def _take(self, limit: int) -> _Items:
        """Up to ``limit`` entries; fewer means the directory has been read to its end."""
        it = self._it
        items = [] if it is None else list(itertools.islice(it, limit))
        if len(items) < limit:
            self._more = False
        return items

    def _runs(self, limit: int, rows_of: Callable[[_Items], list[StatRow]]) -> Iterator[list[StatRow]]:
        # Runs of ROW_RUN entries: a comprehension per run (not a generator step per
        # entry), and few enough stat records alive at once to stay in the CPU's cache.
        # ``limit`` bounds the work of one call: entries read plus entries rendered.
        while limit > 0:
            waiting = self._waiting
            if waiting:
                # Taken from the end, so each run's entries (and the stat records they
                # cache) are freed once rendered, as in a listing that streams.
                count = min(ROW_RUN, limit, len(waiting))
                items = waiting[-count:]
                del waiting[-count:]
                items.reverse()
                limit -= count
                yield rows_of(items)
                continue
            if not self._more:
                return
            items = self._take(min(ROW_RUN, limit))
            limit -= len(items)
            match = self._match
            if match is not None:
                items = [item for item in items if match(item.name)]
            window = self._window
            if window is not None and window.holding:
                waiting = window.add(items)
                if not self._more:
                    waiting += window.finish()
                waiting.reverse()
                self._waiting = waiting
            elif items:
                yield rows_of(items)

    def _stat_rows(self, items: _Items) -> list[StatRow]:
        hidden, lead = self._hidden, self._lead
        try:
            return [(item.name, self._link(item) if item.is_symlink() else item.stat()) for item in items
                    if item.name[0] != lead or not item.name.startswith(hidden)]
        except OSError:  # an entry vanished since the directory was read: one by one
            return list(self._each_row(items))

    def _each_row(self, items: _Items) -> Iterator[StatRow]:
        for item in items:
            if item.name.startswith(self._hidden):
                continue
            try:
                yield item.name, self._link(item) if item.is_symlink() else item.stat()
            except OSError:
                continue  # left out

    def _name_rows(self, items: _Items) -> list[StatRow]:
        hidden, lead = self._hidden, self._lead
        return [(item.name, _NO_STAT) for item in items
                if item.name[0] != lead or not item.name.startswith(hidden)]

    def _link(self, item: os.DirEntry[str]) -> os.stat_result:
        link = item.stat(follow_symlinks=False)  # OSError: the link itself vanished
        try:
            if not self._inside(resolved_path(os.path.join(self._real, item.name))):
                return link
            return item.stat()
        except OSError:
            return link

    # -- closing -------------------------------------------------------------------------
    def try_close(self) -> bool:
        """Close now unless a batch is running (then False: call :meth:`close` in a
        worker thread, which waits for it)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._close_locked()
        finally:
            self._lock.release()
        return True

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        it, self._it, self._state = self._it, None, "closed"
        if it is not None:
            it.close()  # type: ignore[attr-defined]
            os.close(self._fd)
