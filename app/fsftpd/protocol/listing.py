"""LIST, NLST, MLSD and MLST lines from stat records (RFC 959, RFC 3659 section 7).

Locale-independent: month names come from a fixed table, never from ``strftime("%b")``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SIX_MONTHS = 182 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Entry:
    """What the storage layer says about one name."""

    name: str
    is_dir: bool
    size: int
    mtime: float  # seconds since the epoch, UTC
    mode: int = 0  # permission bits; 0 means "synthesise"
    nlink: int = 1
    unique: str = ""
    is_link: bool = False


def unix_mode(entry: Entry, writable: bool) -> str:
    if entry.mode:
        bits = entry.mode & 0o777
    else:
        bits = 0o755 if entry.is_dir else 0o644
        if not writable:
            bits &= 0o555
    return _mode_string(bits, entry.is_dir)


# The formatting helpers below are cached: a listing of thousands of entries repeats a
# handful of modes and, mostly, a few distinct minutes/seconds.
@functools.lru_cache(maxsize=1024)
def _mode_string(bits: int, is_dir: bool) -> str:
    kind = "d" if is_dir else "-"
    return kind + "".join((c if bits & (1 << (8 - i)) else "-") for i, c in enumerate("rwxrwxrwx"))


def ls_time(mtime: float, now: float) -> str:
    recent = now - SIX_MONTHS < mtime <= now + 3600
    return _ls_stamp(int(max(mtime, 0)) // 60, recent)


@functools.lru_cache(maxsize=4096)
def _ls_stamp(minute: int, recent: bool) -> str:
    t = time.gmtime(minute * 60)
    month = MONTHS[t.tm_mon - 1]
    if recent:
        return f"{month} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{month} {t.tm_mday:2d}  {t.tm_year}"


def list_line(entry: Entry, now: float, writable: bool = True, owner: str = "ftp") -> str:
    """One ``ls -l`` style line, as FileZilla, lftp, curl and ftplib parse it."""
    return (
        f"{unix_mode(entry, writable)} {entry.nlink:>3} {owner:<8} {owner:<8} "
        f"{entry.size:>12} {ls_time(entry.mtime, now)} {entry.name}"
    )


def mlsx_time(mtime: float) -> str:
    """RFC 3659 time-val: YYYYMMDDHHMMSS[.sss] in UTC."""
    frac = int((mtime % 1) * 1000) if mtime > 0 else 0
    base = _mdtm_stamp(int(max(mtime, 0)))
    return f"{base}.{frac:03d}" if frac else base


@functools.lru_cache(maxsize=4096)
def _mdtm_stamp(seconds: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def mdtm_time(mtime: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(max(mtime, 0)))


def parse_time_val(text: str) -> float:
    """Parse an RFC 3659 time-val (as used by MFMT) into epoch seconds; ValueError if bad."""
    import calendar

    main, _, frac = text.partition(".")
    if len(main) != 14 or not main.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(text)
    parsed = time.strptime(main, "%Y%m%d%H%M%S")
    return calendar.timegm(parsed) + (float("0." + frac) if frac else 0.0)


MLST_FACTS = ("type", "size", "modify", "perm", "unique")


def mlsx_facts(entry: Entry, facts: Iterable[str], *, readable: bool, writable: bool,
               kind: str | None = None) -> str:
    """The fact string of an MLSD/MLST line, with the trailing ``;``."""
    out: list[str] = []
    for fact in facts:
        if fact == "type":
            out.append(f"type={kind or ('dir' if entry.is_dir else 'file')}")
        elif fact == "size":
            out.append(f"size={entry.size}")
        elif fact == "modify":
            out.append(f"modify={mlsx_time(entry.mtime)}")
        elif fact == "perm":
            out.append(f"perm={_perm(entry, readable, writable)}")
        elif fact == "unique" and entry.unique:
            out.append(f"unique={entry.unique}")
    return "".join(f"{item};" for item in out)


def _perm(entry: Entry, readable: bool, writable: bool) -> str:
    # RFC 3659 7.5.5
    if entry.is_dir:
        return ("el" if readable else "") + ("cmpfd" if writable else "")
    return ("r" if readable else "") + ("wadf" if writable else "")


def mlsx_line(entry: Entry, facts: Iterable[str], *, readable: bool, writable: bool,
              kind: str | None = None) -> str:
    return f"{mlsx_facts(entry, facts, readable=readable, writable=writable, kind=kind)} {entry.name}"


# -- lines straight from stat records ---------------------------------------------------
#
# A local listing of 10,000 entries spends most of its time in the per-entry ``stat``
# system call. The renderers below turn a whole batch of ``(name, os.stat_result)`` rows
# into text with one %-format per line and no Entry object; the parts that repeat from
# line to line (mode string, link count and owners; time stamp; fact templates) are
# looked up in small per-listing dicts. Their output is exactly what ``list_line`` /
# ``mlsx_line`` / the name give for ``entry_from_stat(name, st)``: the local backend uses
# them as a fast path and every other backend goes through Entry objects.

#: one directory entry as the local disk reports it
StatRow = tuple[str, os.stat_result]

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
#: a per-listing cache is emptied when it grows past this (directories of millions)
_CACHE_MAX = 4096
#: RFC 3659 time-val fractions: "" for none, else ".sss" (1000 only through float rounding)
_FRACTIONS = ("", *(f".{i:03d}" for i in range(1, 1001)))


def entry_from_stat(name: str, st: os.stat_result) -> Entry:
    """The Entry of a local directory entry (directories list size 0)."""
    mode = st.st_mode
    is_dir = mode & _S_IFMT == _S_IFDIR
    # positional: this runs once per directory entry in listings
    return Entry(name, is_dir, 0 if is_dir else st.st_size, st.st_mtime, mode & 0o777, st.st_nlink,
                 f"{st.st_dev:x}g{st.st_ino:x}")


class StatRenderer:
    """Renders batches of rows into listing text (CRLF-terminated lines)."""

    __slots__ = ()

    #: False: the rows' stat records are placeholders and need not be fetched (NLST)
    needs_stat = True

    def render(self, rows: Iterable[StatRow]) -> str:
        raise NotImplementedError


class NameLines(StatRenderer):
    """NLST: the names only, each after ``prefix`` (the directory part of a pattern)."""

    __slots__ = ("_prefix",)
    needs_stat = False

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix

    def render(self, rows: Iterable[StatRow]) -> str:
        prefix = self._prefix
        if prefix:
            return "".join([f"{prefix}{name}\r\n" for name, _ in rows])
        return "".join([f"{name}\r\n" for name, _ in rows])


class LsLines(StatRenderer):
    """LIST: ``list_line(entry_from_stat(name, st), now, writable, owner)`` for each row.

    The time stamp is taken from the record's whole seconds (``st[8]``), where
    ``list_line`` truncates the float ``st_mtime``: the two differ only when the float
    rounds up to the next second (a modification time within ~120 ns of one)."""

    __slots__ = ("_now", "_owner", "_stamps", "_templates", "_writable")

    def __init__(self, now: float, *, writable: bool = True, owner: str = "ftp") -> None:
        self._now = now
        self._writable = writable
        self._owner = owner
        # (mode | nlink << 32) -> "-rw-r--r--   1 ftp      ftp      %12d %s %s\r\n"
        self._templates: dict[int, str] = {}
        # minute -> "Mar  5 09:07"; only minutes lying wholly on one side of both of
        # ls_time's "recent" bounds are cached, so a stamp never depends on the second
        # (typeshed calls st[8] a float: it is the int seconds)
        self._stamps: dict[float, str] = {}

    def _template(self, mode: int, nlink: int) -> str:
        is_dir = mode & _S_IFMT == _S_IFDIR
        entry = Entry("", is_dir, 0, 0.0, mode & 0o777, nlink)
        owner = self._owner
        head = f"{unix_mode(entry, self._writable)} {nlink:>3} {owner:<8} {owner:<8} ".replace("%", "%%")
        # a directory lists size 0: "%.0s" consumes its size unseen
        template = head + (f"{0:>12}%.0s" if is_dir else "%12d") + " %s %s\r\n"
        if len(self._templates) >= _CACHE_MAX:
            self._templates.clear()
        self._templates[mode | nlink << 32] = template
        return template

    def _stamp(self, st: os.stat_result, minute: float) -> str:
        mtime = st.st_mtime
        stamp = ls_time(mtime, self._now)
        low, high = minute * 60, minute * 60 + 60
        lo, hi = self._now - SIX_MONTHS, self._now + 3600
        uniform = (lo < low and high <= hi) or high <= lo or low > hi
        if minute > 0 and uniform and int(mtime) // 60 == minute:
            if len(self._stamps) >= _CACHE_MAX:
                self._stamps.clear()
            self._stamps[minute] = stamp
        return stamp

    def render(self, rows: Iterable[StatRow]) -> str:
        templates = self._templates
        stamps = self._stamps
        out: list[str] = []
        add = out.append
        for name, st in rows:
            template = templates.get(st[0] | st[3] << 32)
            if template is None:
                template = self._template(st[0], st[3])
            minute = st[8] // 60
            stamp = stamps.get(minute)
            if stamp is None:
                stamp = self._stamp(st, minute)
            add(template % (st[6], stamp, name))
        return "".join(out)


class MlsdLines(StatRenderer):
    """MLSD: ``mlsx_line(entry_from_stat(name, st), facts, readable, writable)`` for each
    row, when every entry shares the same permission decision."""

    __slots__ = ("_canonical", "_facts", "_readable", "_seconds", "_templates", "_writable")

    def __init__(self, facts: Iterable[str], *, readable: bool, writable: bool) -> None:
        self._facts = tuple(facts)
        self._readable = readable
        self._writable = writable
        self._seconds: dict[int, str] = {}  # whole second -> "YYYYMMDDHHMMSS"
        # (mode | dev << 16) -> a line template taking (size, stamp, fraction, ino, name),
        # its type, perm and device part filled in; a value whose fact is not asked for
        # (or a directory's size, always 0) is consumed unseen by "%.0s".
        self._templates: dict[int, str] = {}
        # Facts in an order of their own (only possible through the API, OPTS MLST keeps
        # RFC 3659's) go through mlsx_line entry by entry.
        self._canonical = self._facts == tuple(f for f in MLST_FACTS if f in self._facts)

    def _template(self, mode: int, dev: int) -> str:
        facts = self._facts
        is_dir = mode & _S_IFMT == _S_IFDIR
        parts = ["type=dir;" if is_dir else "type=file;"] if "type" in facts else []
        if is_dir:
            parts.append("size=0;%.0s" if "size" in facts else "%.0s")
        else:
            parts.append("size=%d;" if "size" in facts else "%.0s")
        parts.append("modify=%s%s;" if "modify" in facts else "%.0s%.0s")
        if "perm" in facts:
            probe = Entry("", is_dir, 0, 0.0)
            parts.append(f"perm={_perm(probe, self._readable, self._writable)};")
        parts.append(f"unique={dev:x}g%x;" if "unique" in facts else "%.0s")
        parts.append(" %s\r\n")
        template = "".join(parts)
        if len(self._templates) >= _CACHE_MAX:
            self._templates.clear()
        self._templates[mode | dev << 16] = template
        return template

    def _second(self, second: int) -> str:
        if len(self._seconds) >= _CACHE_MAX:
            self._seconds.clear()
        stamp = self._seconds[second] = _mdtm_stamp(second)
        return stamp

    def render(self, rows: Iterable[StatRow]) -> str:
        if not self._canonical:
            facts, readable, writable = self._facts, self._readable, self._writable
            return "".join([mlsx_line(entry_from_stat(name, st), facts, readable=readable, writable=writable)
                            + "\r\n" for name, st in rows])
        templates = self._templates
        seconds = self._seconds
        fractions = _FRACTIONS
        out: list[str] = []
        add = out.append
        for name, st in rows:
            # as mlsx_time: whole seconds, then milliseconds if any (for mtime >= 1,
            # mtime - int(mtime) is exactly mtime % 1)
            mtime = st.st_mtime
            second = int(mtime)
            if second > 0:
                fraction = fractions[int((mtime - second) * 1000)]
            else:  # up to the first second after the epoch, where mlsx_time clamps
                fraction = fractions[int((mtime % 1) * 1000)] if mtime > 0 else ""
                second = 0
            stamp = seconds.get(second)
            if stamp is None:
                stamp = self._second(second)
            template = templates.get(st[0] | st[2] << 16)
            if template is None:
                template = self._template(st[0], st[2])
            add(template % (st[6], stamp, fraction, st[1], name))
        return "".join(out)
