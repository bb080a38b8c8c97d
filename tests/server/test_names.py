"""Names with spaces and non-ASCII UTF-8 (RFC 2640) round-trip through every command, on
local disk and in memory."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all

NAMES = [
    "with space.txt",
    "  two leading and trailing  ",
    "\u00fcn\u00efc\u00f6d\u00e9 \u2603.txt",
    "\u65e5\u672c\u8a9e \u30d5\u30a1\u30a4\u30eb",
    "emoji \U0001f389 party",
    'quote"name',
    "semi;colon=x",
    "-starts-with-dash",
    "photo [1] *?{a,b}.jpg",  # glob characters are plain characters in FTP names
]


@pytest.fixture(params=["local", "memory"])
def any_home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    base = str(tmp_path / "home") if request.param == "local" else "memory://names"
    with running_server([fsftpd.User("alice", "secret", base_path=base)]) as srv:
        yield srv


def _data(raw: Raw, cmd: str, payload: bytes | None = None) -> bytes:
    data = raw.epsv()
    code, text = raw.cmd(cmd)
    assert code == 150, (cmd, code, text)
    if payload is None:
        received = recv_all(data)
    else:
        data.sendall(payload)
        data.close()
        received = b""
    code, text = raw.read()
    assert code == 226, (cmd, code, text)
    return received


@pytest.mark.parametrize("name", NAMES)
def test_name_round_trips_through_every_command(any_home: ServerThread, name: str) -> None:
    with Raw(any_home.host, any_home.port) as raw:
        raw.login("alice", "secret")
        dirname = f"dir {name}"
        assert raw.cmd(f"MKD {dirname}")[1].startswith('"/' + dirname.replace('"', '""') + '"')
        assert raw.code(f"CWD {dirname}") == 250
        assert raw.cmd("PWD")[1] == '"/' + dirname.replace('"', '""') + '" is the current directory'
        assert raw.code("XPWD") == 257
        payload = name.encode() * 100
        _data(raw, f"STOR {name}", payload)
        assert raw.cmd(f"SIZE {name}") == (213, str(len(payload)))
        assert raw.code(f"MDTM {name}") == 213
        assert _data(raw, f"RETR {name}") == payload
        _data(raw, f"APPE {name}", b"!")
        assert raw.cmd(f"SIZE /{dirname}/{name}") == (213, str(len(payload) + 1))
        assert _data(raw, "NLST").decode().split("\r\n")[:-1] == [name]
        assert _data(raw, "LIST").decode().rstrip("\r\n").endswith(" " + name)
        mlsd = _data(raw, "MLSD").decode().rstrip("\r\n")
        assert mlsd.split(" ", 1)[1] == name
        code, text = raw.cmd(f"MLST {name}")
        assert code == 250 and text.split("\n")[1].endswith(f" /{dirname}/{name}")
        code, text = raw.cmd(f"STAT {name}")
        assert code == 213 and text.split("\n")[1].endswith(" " + name)
        renamed = f"{name} (renamed) \u00e9"
        assert raw.code(f"RNFR {name}") == 350
        assert raw.code(f"RNTO {renamed}") == 250
        assert raw.code(f"SIZE {name}") == 550
        assert _data(raw, f"RETR {renamed}") == payload + b"!"
        code, text = raw.cmd(f"STOU {name}")  # no data channel: refused, nothing created
        assert code == 425
        assert raw.code(f"DELE {renamed}") == 250
        assert raw.code("CDUP") == 250
        code, text = raw.cmd("MLSD")
        assert code == 425
        assert raw.code(f"RNFR {dirname}") == 350
        assert raw.code(f"RNTO {name}") == 250
        assert raw.code(f"RMD {name}") == 250
        assert _data(raw, "NLST") == b""


def test_mfmt_with_spaces(tmp_path: Path) -> None:
    with (
        running_server([fsftpd.User("alice", "secret", base_path=str(tmp_path))]) as srv,
        Raw(srv.host, srv.port) as raw,
    ):
        raw.login("alice", "secret")
        (tmp_path / "a b \u00e9").write_bytes(b"")
        assert raw.cmd("MFMT 20200101020304 a b \u00e9") == (213, "Modify=20200101020304; a b \u00e9")
        assert raw.cmd("MDTM a b \u00e9") == (213, "20200101020304")


def test_ftplib_with_unicode_names(any_home: ServerThread) -> None:
    ftp = any_home.ftp("alice", "secret")
    for name in NAMES:
        if name != name.strip():
            continue  # ftplib itself strips some arguments
        ftp.storbinary(f"STOR {name}", io.BytesIO(name.encode()))
    assert sorted(ftp.nlst()) == sorted(n for n in NAMES if n == n.strip())
    assert sorted(n for n, f in ftp.mlsd() if f["type"] == "file") == sorted(
        n for n in NAMES if n == n.strip()
    )
    for name in NAMES:
        if name != name.strip():
            continue
        out = io.BytesIO()
        ftp.retrbinary(f"RETR {name}", out.write)
        assert out.getvalue() == name.encode()
    ftp.quit()


def test_non_utf8_names_on_disk_do_not_break_listings(tmp_path: Path) -> None:
    # A name that is not UTF-8 (made outside FTP) is listed as its raw bytes; nothing fails.
    home = tmp_path / "home"
    home.mkdir()
    with open(os.path.join(os.fsencode(home), b"bad\xffname"), "wb") as f:
        f.write(b"x")
    (home / "good").write_bytes(b"y")
    with (
        running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv,
        Raw(srv.host, srv.port) as raw,
    ):
        raw.login("alice", "secret")
        for verb in ("LIST", "NLST", "MLSD"):
            data = raw.epsv()
            assert raw.cmd(verb)[0] == 150
            listing = recv_all(data)
            assert raw.read()[0] == 226
            assert b"bad\xffname" in listing and b"good" in listing
        code, text = raw.cmd("STAT .")
        assert code == 213 and "bad\udcffname" in text
        assert raw.code("NOOP") == 200
