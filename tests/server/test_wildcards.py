"""Patterns in LIST and NLST, sorted listings, HELP SITE: reply codes and contents through
ftplib, on every home kind (local disk, memory, S3 on moto and on SeaweedFS)."""

from __future__ import annotations

import asyncio
import ftplib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from fsftpd.protocol import listing
from fsftpd.storage.local_listing import DirReader
from tests.harness import ServerThread, running_server
from tests.server.homes import HOMES, home_server, put_files

FILES = {
    # stored in an order that is not the sorted one
    "/f3.txt": b"three",
    "/notes.md": b"notes",
    "/f1.txt": b"one",
    "/b.tmp": b"tmp b",
    "/B.txt": b"capital B",
    "/f2.txt": b"two",
    "/a.tmp": b"tmp a",
    "/a*b": b"a literal star",
    "/.hidden.txt": b"dot file",
    "/sub/y.csv": b"y",
    "/sub/x.csv": b"x",
    "/sub/z.txt": b"z",
    "/secret/s.txt": b"secret",
}
ROOT_NAMES = sorted({p.split("/")[1] for p in FILES})


@pytest.fixture(params=HOMES, scope="module")
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server per home kind for the module: its tests only read (or fail to change)."""
    rules = [fsftpd.Permission("/"), fsftpd.Permission("/secret", readable=False)]
    with home_server(request.param, tmp_path_factory.mktemp("wild"), permissions=rules) as (server, _):
        put_files(server, FILES)
        yield server


def code_of(call: object) -> str:
    try:
        return str(call())  # type: ignore[operator]
    except ftplib.all_errors as exc:
        return str(exc)


def list_names(ftp: ftplib.FTP, arg: str) -> list[str]:
    lines: list[str] = []
    ftp.retrlines(f"LIST {arg}".rstrip(), lines.append)
    return [line.split(None, 8)[8] for line in lines]


def test_patterns_in_nlst_and_list(srv: ServerThread) -> None:
    ftp = srv.ftp("alice", "secret")
    assert ftp.nlst("*.txt") == ["B.txt", "f1.txt", "f2.txt", "f3.txt"]  # sorted; no dot file
    assert ftp.nlst("f?.txt") == ["f1.txt", "f2.txt", "f3.txt"]
    assert ftp.nlst("[ab].tmp") == ["a.tmp", "b.tmp"]
    assert ftp.nlst(".*") == [".hidden.txt"]
    assert ftp.nlst("*") == [n for n in ROOT_NAMES if not n.startswith(".")]
    # the directory part comes back as written, so each name can go straight to RETR
    assert ftp.nlst("sub/*.csv") == ["sub/x.csv", "sub/y.csv"]
    assert ftp.nlst("/sub/*") == ["/sub/x.csv", "/sub/y.csv", "/sub/z.txt"]
    ftp.cwd("sub")
    assert ftp.nlst("../f[12].txt") == ["../f1.txt", "../f2.txt"]
    ftp.cwd("/")
    assert list_names(ftp, "*.txt") == ["B.txt", "f1.txt", "f2.txt", "f3.txt"]
    assert list_names(ftp, "-la sub/*.csv") == ["x.csv", "y.csv"]  # LIST: names, as for a directory
    out = io.BytesIO()
    ftp.retrbinary("RETR sub/x.csv", out.write)
    assert out.getvalue() == b"x"
    ftp.quit()


def test_an_existing_name_wins_over_the_pattern(srv: ServerThread) -> None:
    ftp = srv.ftp("alice", "secret")
    assert ftp.nlst("a*b") == ["a*b"]  # the file called a*b, not "a.tmp b.tmp"...
    assert list_names(ftp, "a*b") == ["a*b"]
    out = io.BytesIO()
    ftp.retrbinary("RETR a*b", out.write)
    assert out.getvalue() == b"a literal star"
    ftp.quit()


def test_no_match_and_bad_patterns_are_550_and_the_session_goes_on(srv: ServerThread) -> None:
    ftp = srv.ftp("alice", "secret")
    assert code_of(lambda: ftp.nlst("*.zip")) == "550 No files found matching *.zip"
    assert code_of(lambda: list_names(ftp, "*.zip"))[:3] == "550"
    assert code_of(lambda: ftp.nlst("nodir/*.txt"))[:3] == "550"  # the directory is missing
    assert code_of(lambda: ftp.nlst("*/x.csv"))[:3] == "550"  # only the last component matches
    assert code_of(lambda: ftp.nlst("f1.txt/*"))[:3] == "550"  # a file is no directory
    assert code_of(lambda: ftp.nlst("secret/*.txt")) == "550 Permission denied"
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


def test_other_commands_take_names_literally(srv: ServerThread) -> None:
    ftp = srv.ftp("alice", "secret")
    assert code_of(lambda: ftp.retrbinary("RETR *.txt", lambda b: None))[:3] == "550"
    assert code_of(lambda: ftp.delete("*.tmp"))[:3] == "550"
    assert code_of(lambda: ftp.size("f?.txt"))[:3] == "550"
    assert code_of(lambda: ftp.sendcmd("MDTM *.txt"))[:3] == "550"
    assert code_of(lambda: list(ftp.mlsd("s*")))[:3] == "550"  # RFC 3659: MLSD does not glob
    assert code_of(lambda: ftp.sendcmd("MLST *.txt"))[:3] == "550"
    assert code_of(lambda: ftp.rename("*.tmp", "x"))[:3] == "550"
    assert code_of(lambda: ftp.sendcmd("STAT *.txt"))[:3] == "550"
    assert ftp.nlst("*.tmp") == ["a.tmp", "b.tmp"]  # nothing was deleted
    ftp.quit()


def test_listings_are_sorted_by_name(srv: ServerThread) -> None:
    ftp = srv.ftp("alice", "secret")
    assert ftp.nlst() == ROOT_NAMES
    assert list_names(ftp, "") == ROOT_NAMES
    assert [name for name, _ in ftp.mlsd()] == ROOT_NAMES
    assert ftp.nlst("sub") == ["x.csv", "y.csv", "z.txt"]
    status = ftp.sendcmd("STAT /")
    assert [line.split(None, 8)[8] for line in status.splitlines()[1:-1]] == ROOT_NAMES
    ftp.quit()


def test_help_site_and_site_help(srv: ServerThread) -> None:
    ftp = srv.ftp()
    # before login too: ncftp asks right after connecting
    help_site = ftp.sendcmd("HELP SITE")
    assert help_site.startswith("214-") and help_site.splitlines()[1].split() == ["HELP"]
    ftp.login("alice", "secret")
    assert ftp.sendcmd("SITE HELP") == help_site
    assert ftp.sendcmd("HELP SITE HELP").startswith("214 SITE HELP")
    assert code_of(lambda: ftp.sendcmd("HELP SITE CHMOD"))[:3] == "501"
    assert code_of(lambda: ftp.sendcmd("SITE CHMOD 600 f1.txt"))[:3] == "502"
    assert "SITE" in ftp.sendcmd("HELP").split()
    assert ftp.sendcmd("HELP NLST").startswith("214 NLST [path|dir/pattern]")
    ftp.quit()


# -- bounds ------------------------------------------------------------------------------


def test_sort_limit_keeps_directory_order_beyond_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    names = [f"n{i:02d}" for i in range(40)]
    for name in names:
        (home / name).write_bytes(b"")
    user = [fsftpd.User("alice", "secret", base_path=str(home))]
    order: dict[int, list[str]] = {}
    for limit in (0, 39, 40):
        with running_server(user, listing_sort_limit=limit) as srv:
            ftp = srv.ftp("alice", "secret")
            order[limit] = ftp.nlst()
            assert list_names(ftp, "") == order[limit]
            assert ftp.nlst("n*") == order[limit]
            ftp.quit()
    assert order[40] == names  # fits: sorted
    assert order[39] == order[0] != names  # one too many: directory order, as with no sorting
    assert sorted(order[39]) == names
    with pytest.raises(ValueError):
        fsftpd.Server(user, listing_sort_limit=-1)


BIG = 10_000
MATCHES = ["hit-1.txt", "hit-2.txt", "hit-3.txt"]


def big_directory(count: int) -> dict[str, bytes]:
    files = {f"/big/file-{i:05d}.dat": b"" for i in range(count - len(MATCHES))}
    files.update({f"/big/{name}": name.encode() for name in MATCHES})
    return files


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_pattern_over_10000_entries_holds_only_its_matches(kind: str, tmp_path: Path) -> None:
    # Through the Entry path of any backend (the probe sees every Entry the storage hands
    # out): the server keeps the matches and about one storage batch, not the directory.
    with home_server(kind, tmp_path, probe=True) as (srv, probes):
        put_files(srv, big_directory(BIG))
        (probe,) = probes
        ftp = srv.ftp("alice", "secret")
        probe.reset()
        assert ftp.nlst("big/*.txt") == [f"big/{name}" for name in MATCHES]
        assert probe.listed == BIG
        assert 3 <= probe.peak_alive <= 2 * 1024 + 3  # two storage batches at most
        # The measure can fail: an unpatterned listing of the same directory is sorted,
        # so it holds every entry until the last one is read.
        probe.reset()
        assert len(ftp.nlst("big")) == BIG
        assert probe.peak_alive >= BIG - 1024
        ftp.quit()


class CountingPathIO(fsftpd.PathIO):
    """Local disk on its worker-thread text path; remembers the readers it opens."""

    readers: list[DirReader] = []

    def _dir_reader(self, path: str, **kwargs: object) -> DirReader:
        reader = super()._dir_reader(path, **kwargs)  # type: ignore[arg-type]
        CountingPathIO.readers.append(reader)
        return reader


def test_a_local_pattern_stats_and_holds_only_its_matches(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for name in big_directory(BIG):
        (tmp_path / name.lstrip("/")).write_bytes(b"")
    io_ = CountingPathIO(str(tmp_path))
    CountingPathIO.readers.clear()

    async def read(**kwargs: object) -> bytes:
        text = io_.list_text("/big", listing.NameLines(), **kwargs)  # type: ignore[arg-type]
        assert text is not None
        return b"".join([chunk async for chunk in text])

    assert asyncio.run(read(match=lambda n: n.endswith(".txt"), sort_limit=BIG)) == b"".join(
        f"{name}\r\n".encode() for name in MATCHES)
    assert CountingPathIO.readers[-1].held_peak == 3
    assert len(asyncio.run(read(sort_limit=BIG)).splitlines()) == BIG
    assert CountingPathIO.readers[-1].held_peak == BIG  # the measure can fail
    data = asyncio.run(read(sort_limit=BIG - 1))  # too big to sort: streams in directory order
    assert CountingPathIO.readers[-1].held_peak == BIG
    assert sorted(data.splitlines()) == sorted(n.split("/")[-1].encode() for n in big_directory(BIG))

    def factory(base_path: str, **_: object) -> CountingPathIO:
        return CountingPathIO(base_path)

    with running_server([fsftpd.User("alice", "secret", base_path=str(tmp_path))],
                        path_io_factory=factory) as srv:
        ftp = srv.ftp("alice", "secret")
        assert ftp.nlst("big/hit-*") == [f"big/{name}" for name in MATCHES]
        lines: list[str] = []
        ftp.retrlines("LIST big/*.txt", lines.append)
        assert [line.split()[-1] for line in lines] == MATCHES
        ftp.quit()
    assert CountingPathIO.readers[-1].held_peak == 3
    assert os.path.exists(big / "hit-1.txt")
