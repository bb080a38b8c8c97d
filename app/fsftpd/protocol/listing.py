"""LIST, NLST, MLSD and MLST lines from stat records (RFC 959, RFC 3659 section 7).

Locale-independent: month names come from a fixed table, never from ``strftime("%b")``.
"""

from __future__ import annotations

import functools
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
