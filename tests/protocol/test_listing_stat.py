"""The stat-record renderers (the local listing's fast path) give exactly the lines the
Entry path gives: ``list_line`` / ``mlsx_line`` / the name of ``entry_from_stat(name, st)``."""

from __future__ import annotations

import calendar
import math
import os
import stat

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fsftpd.protocol import listing
from fsftpd.protocol.listing import StatRow, entry_from_stat

NOW = calendar.timegm((2024, 6, 15, 12, 0, 0)) + 0.25
KINDS = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)


def record(mode: int, sec: int, nsec: int = 0, *, size: int = 0, nlink: int = 1,
           ino: int = 1, dev: int = 2049) -> os.stat_result:
    """A stat record as the kernel and CPython make it: whole seconds at index 8, the float
    ``st_mtime`` computed as ``sec + nsec * 1e-9``."""
    mtime = sec + nsec * 1e-9
    return os.stat_result((mode, ino, dev, nlink, 0, 0, size, sec, sec, sec, mtime, mtime, mtime))


def ls_generic(rows: list[StatRow], now: float, writable: bool = True) -> str:
    return "".join(listing.list_line(entry_from_stat(n, s), now, writable=writable) + "\r\n" for n, s in rows)


def mlsd_generic(rows: list[StatRow], facts: tuple[str, ...], readable: bool, writable: bool) -> str:
    return "".join(
        listing.mlsx_line(entry_from_stat(n, s), facts, readable=readable, writable=writable) + "\r\n"
        for n, s in rows
    )


names = st.text(min_size=1, max_size=12).filter(lambda n: "\r" not in n and "\n" not in n)
records = st.builds(
    record,
    st.builds(lambda kind, bits: kind | bits, st.sampled_from(KINDS), st.integers(0, 0o7777)),
    st.integers(-(10**9), 4 * 10**9),
    st.integers(0, 999_999_999),
    size=st.integers(0, 2**63),
    nlink=st.integers(1, 2**20),
    ino=st.integers(0, 2**64 - 1),
    dev=st.integers(0, 2**64 - 1),
)
rows_strategy = st.lists(st.tuples(names, records), min_size=1, max_size=25)


def _whole_seconds_agree(rows: list[StatRow]) -> bool:
    # LsLines reads the whole seconds (st[8]); list_line truncates the float, which rounds
    # up to the next second for a time within ~120 ns of one. Only those records differ.
    return all(math.floor(s.st_mtime) == s[8] for _, s in rows)


@settings(max_examples=300)
@given(rows_strategy, st.floats(-(10**9), 5 * 10**9), st.booleans())
def test_ls_lines_match_list_line(rows: list[StatRow], now: float, writable: bool) -> None:
    assume(_whole_seconds_agree(rows))
    assert listing.LsLines(now, writable=writable).render(rows) == ls_generic(rows, now, writable)


@settings(max_examples=300)
@given(rows_strategy, st.lists(st.sampled_from((*listing.MLST_FACTS, "bogus")), max_size=7),
       st.booleans(), st.booleans())
def test_mlsd_lines_match_mlsx_line(rows: list[StatRow], facts: list[str], readable: bool,
                                    writable: bool) -> None:
    # any fact list, canonical (the template path) or not (entry by entry)
    got = listing.MlsdLines(facts, readable=readable, writable=writable).render(rows)
    assert got == mlsd_generic(rows, tuple(facts), readable, writable)


@given(st.lists(st.tuples(names, records), max_size=10))
def test_name_lines(rows: list[StatRow]) -> None:
    assert listing.NameLines().render(rows) == "".join(f"{n}\r\n" for n, _ in rows)


def test_canonical_mlsd_facts_use_the_template_path() -> None:
    # the path the two tests above compare most often: every fact, and a subset
    rows = [("f", record(stat.S_IFREG | 0o644, 1_700_000_000, 500_000_000, size=42, ino=0xABC)),
            ("d", record(stat.S_IFDIR | 0o755, 1_700_000_000, size=4096, ino=0xDEF, nlink=3))]
    full = listing.MlsdLines(listing.MLST_FACTS, readable=True, writable=False).render(rows)
    assert full == (
        "type=file;size=42;modify=20231114221320.500;perm=r;unique=801gabc; f\r\n"
        "type=dir;size=0;modify=20231114221320;perm=el;unique=801gdef; d\r\n"
    )
    some = listing.MlsdLines(("size", "unique"), readable=True, writable=True).render(rows)
    assert some == "size=42;unique=801gabc; f\r\nsize=0;unique=801gdef; d\r\n"


def test_ls_stamps_across_the_recent_bounds_in_one_listing() -> None:
    # Every second around both of ls_time's bounds (six months back, one hour ahead),
    # with and without fractions, rendered together: the per-minute stamp cache must never
    # hand a minute's stamp to a second on the other side of a bound.
    rows: list[StatRow] = []
    for bound in (NOW - listing.SIX_MONTHS, NOW + 3600):
        for offset in range(-150, 151):
            sec = int(bound) + offset
            for nsec in (0, 250_000_000, 750_000_000):
                rows.append((f"f{sec}.{nsec}", record(stat.S_IFREG | 0o644, sec, nsec)))
    for order in (rows, rows[::-1]):
        assert listing.LsLines(NOW).render(order) == ls_generic(order, NOW)


def test_caches_overflow_and_stay_exact() -> None:
    # more distinct minutes, seconds, modes and link counts than the caches keep
    rows = [
        (f"n{i}", record((stat.S_IFDIR if i % 7 == 0 else stat.S_IFREG) | (i % 512), 1_600_000_000 + i * 61,
                         i * 1_000_003 % 1_000_000_000, size=i, nlink=1 + i, ino=i, dev=i % 3))
        for i in range(9000)
    ]
    ls = listing.LsLines(NOW)
    assert ls.render(rows[:4500]) + ls.render(rows[4500:]) == ls_generic(rows, NOW)
    mlsd = listing.MlsdLines(listing.MLST_FACTS, readable=True, writable=True)
    assert mlsd.render(rows) == mlsd_generic(rows, listing.MLST_FACTS, True, True)


def test_zero_permission_bits_are_synthesised_like_list_line() -> None:
    rows = [("locked", record(stat.S_IFREG, 1_700_000_000)), ("d", record(stat.S_IFDIR, 1_700_000_000))]
    out = listing.LsLines(NOW).render(rows)
    assert out == ls_generic(rows, NOW)
    assert out.startswith("-rw-r--r--") and "\r\ndrwxr-xr-x" in out


def test_names_that_are_not_utf8_keep_their_surrogates() -> None:
    name = os.fsdecode(b"bad\xffname")
    rows = [(name, record(stat.S_IFREG | 0o644, 1_700_000_000, size=1))]
    renderers = (listing.LsLines(NOW), listing.MlsdLines(listing.MLST_FACTS, readable=True, writable=True),
                 listing.NameLines())
    for renderer in renderers:
        text = renderer.render(rows)
        assert "\udcff" in text
        assert text.encode("utf-8", "surrogateescape").endswith(b"bad\xffname\r\n")
