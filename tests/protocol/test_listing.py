"""LIST / MLSx lines: the ls -l shape clients parse, and no dependence on the locale."""

from __future__ import annotations

import calendar
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsftpd.protocol import listing
from fsftpd.protocol.listing import Entry

NOW = calendar.timegm((2024, 6, 15, 12, 0, 0))
RECENT = calendar.timegm((2024, 3, 5, 9, 7, 0))
OLD = calendar.timegm((2019, 11, 30, 23, 59, 0))

# The regex ftplib-style parsers (and lftp/curl/FileZilla) accept.
LS_LINE = re.compile(
    r"^(?P<mode>[d-][rwx-]{9}) +\d+ +\S+ +\S+ +(?P<size>\d+) "
    r"(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) +(?P<time>\d{2}:\d{2}|\d{4}) (?P<name>.+)$"
)


def test_list_line_recent_file() -> None:
    line = listing.list_line(Entry("a b.txt", False, 1234, RECENT, mode=0o640), NOW)
    m = LS_LINE.match(line)
    assert m, line
    assert m["mode"] == "-rw-r-----"
    assert (m["size"], m["month"], m["day"], m["time"], m["name"]) == ("1234", "Mar", "5", "09:07", "a b.txt")


def test_list_line_old_file_shows_year() -> None:
    m = LS_LINE.match(listing.list_line(Entry("old", False, 0, OLD), NOW))
    assert m and (m["month"], m["day"], m["time"]) == ("Nov", "30", "2019")


def test_list_line_directory_and_synthesised_modes() -> None:
    d = listing.list_line(Entry("dir", True, 0, RECENT), NOW)
    assert d.startswith("drwxr-xr-x")
    ro = listing.list_line(Entry("f", False, 1, RECENT), NOW, writable=False)
    assert ro.startswith("-r--r--r--")


def test_every_month_is_english() -> None:
    for month in range(1, 13):
        stamp = calendar.timegm((2024, month, 1, 0, 0, 0))
        line = listing.list_line(Entry("x", False, 1, stamp), stamp + 60)
        assert LS_LINE.match(line)
        assert listing.MONTHS[month - 1] in line


def test_mlsx_facts() -> None:
    e = Entry("f", False, 42, calendar.timegm((2024, 1, 2, 3, 4, 5)) + 0.5, unique="abc")
    assert listing.mlsx_line(e, listing.MLST_FACTS, readable=True, writable=True) == (
        "type=file;size=42;modify=20240102030405.500;perm=rwadf;unique=abc; f"
    )
    d = Entry("d", True, 0, calendar.timegm((2024, 1, 2, 3, 4, 5)))
    assert listing.mlsx_facts(d, listing.MLST_FACTS, readable=True, writable=False) == (
        "type=dir;size=0;modify=20240102030405;perm=el;"
    )
    assert listing.mlsx_facts(d, ("type",), readable=False, writable=True, kind="cdir") == "type=cdir;"
    assert listing.mlsx_facts(e, (), readable=True, writable=True) == ""


def test_times() -> None:
    t = calendar.timegm((2001, 2, 3, 4, 5, 6))
    assert listing.mdtm_time(t) == "20010203040506"
    assert listing.parse_time_val("20010203040506") == t
    assert listing.parse_time_val("20010203040506.25") == t + 0.25
    for bad in (
        "2001020304050",
        "200102030405066",
        "2001x203040506",
        "20010203040506.x",
        "",
        "20011303040506",
    ):
        with pytest.raises(ValueError):
            listing.parse_time_val(bad)


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_mdtm_round_trip(stamp: int) -> None:
    assert listing.parse_time_val(listing.mdtm_time(stamp)) == stamp


@given(
    st.integers(min_value=0, max_value=4_000_000_000),
    st.integers(min_value=0, max_value=4_000_000_000),
    st.integers(min_value=0, max_value=10**15),
)
def test_list_line_always_parses(mtime: int, now: int, size: int) -> None:
    line = listing.list_line(Entry("n a m e", False, size, mtime), now)
    m = LS_LINE.match(line)
    assert m and m["name"] == "n a m e" and int(m["size"]) == size
    assert m["month"] in listing.MONTHS


def test_listing_never_asks_strftime_for_month_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process companion of the subprocess test below (which needs locale sources): even
    # if strftime answered in another language, the listing would still say "Mar".
    real = listing.time.strftime

    def german(fmt: str, t: object = None) -> str:
        fmt = fmt.replace("%b", "M\u00e4r").replace("%B", "M\u00e4rz")
        return real(fmt, t) if t is not None else real(fmt)  # type: ignore[arg-type]

    monkeypatch.setattr(listing.time, "strftime", german)
    line = listing.list_line(Entry("x", False, 1, RECENT), NOW)
    assert " Mar  5 " in line and "M\u00e4r" not in line


_PROBE = """
import locale, sys, time
locale.setlocale(locale.LC_ALL, "")
from fsftpd.protocol.listing import Entry, list_line, mlsx_time
stamp = 1709629620  # 2024-03-05
print(time.strftime("%b", time.gmtime(stamp)))
print(list_line(Entry("x", False, 1, stamp), stamp + 60))
print(mlsx_time(stamp))
"""


def _make_locale(tmp: Path, name: str) -> Path | None:
    localedef = shutil.which("localedef")
    if localedef is None or not Path("/usr/share/i18n/locales", name.split(".")[0]).exists():
        return None
    target = tmp / name
    proc = subprocess.run(
        [localedef, "-i", name.split(".")[0], "-f", "UTF-8", str(target)], capture_output=True, timeout=120
    )
    return tmp if target.exists() or (proc.returncode in (0, 1) and target.exists()) else None


@pytest.mark.parametrize("name", ["de_DE.UTF-8"])
def test_listing_ignores_the_process_locale(tmp_path: Path, name: str) -> None:
    locpath = _make_locale(tmp_path, name)
    if locpath is None:
        pytest.skip("cannot build a non-C locale here (localedef or locale sources missing)")
    env = {**os.environ, "LOCPATH": str(locpath), "LC_ALL": name, "LANG": name}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    localized_month, line, mlsx = out
    # The locale really is active in that process (otherwise this test could not fail)...
    assert localized_month != "Mar", localized_month
    # ...and the listing still says Mar.
    assert LS_LINE.match(line) and " Mar  5 " in line, line
    assert mlsx == "20240305090700"
