"""Every file command over FTP, with the same replies whatever the home is on: local
disk, memory, S3 on moto, S3 on SeaweedFS."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ServerThread, running_server
from tests.s3.fixtures import HOMES, user_on


@pytest.fixture(params=HOMES)
def backend_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    with running_server([user_on(request.param, tmp_path)]) as srv:
        yield srv


def code_of(call: object) -> str:
    try:
        return str(call())  # type: ignore[operator]
    except ftplib.all_errors as exc:
        return str(exc)


def retr(ftp: ftplib.FTP, name: str, rest: int | None = None) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write, rest=rest)
    return out.getvalue()


def test_command_tour(backend_server: ServerThread) -> None:
    ftp = backend_server.ftp("alice", "secret")
    data = os.urandom(2 * 1024 * 1024 + 9)
    assert ftp.pwd() == "/"
    assert ftp.mkd("a") == "/a"
    assert ftp.mkd("a/b") == "/a/b"
    assert code_of(lambda: ftp.mkd("a"))[:3] == "550"
    assert code_of(lambda: ftp.mkd("missing/x"))[:3] == "550"
    assert ftp.cwd("a").startswith("250")
    assert ftp.pwd() == "/a"
    assert ftp.storbinary("STOR f.bin", io.BytesIO(data)).startswith("226")
    assert ftp.sendcmd("CDUP").startswith("250")
    assert ftp.size("a/f.bin") == len(data)
    assert ftp.sendcmd("MDTM a/f.bin")[:3] == "213"
    assert hashlib.sha256(retr(ftp, "a/f.bin")).digest() == hashlib.sha256(data).digest()
    assert retr(ftp, "a/f.bin", rest=len(data) - 9) == data[-9:]
    assert ftp.storbinary("APPE a/f.bin", io.BytesIO(b"++")).startswith("226")
    assert ftp.size("a/f.bin") == len(data) + 2
    assert ftp.storbinary("STOR a/f.bin", io.BytesIO(b"XY"), rest=3).startswith("226")
    assert retr(ftp, "a/f.bin") == data[:3] + b"XY"
    stou = ftp.storbinary("STOU", io.BytesIO(b"unique"))
    assert stou.startswith("226")
    assert sorted(ftp.nlst("a")) == ["b", "f.bin"]
    listing: list[str] = []
    ftp.retrlines("LIST a", listing.append)
    assert sorted(line[0] + line.rsplit(" ", 1)[1] for line in listing) == ["-f.bin", "db"]
    facts = dict(ftp.mlsd("a"))
    assert (facts["b"]["type"], facts["f.bin"]["type"], facts["f.bin"]["size"]) == ("dir", "file", "5")
    assert "type=file;size=5;" in ftp.sendcmd("MLST a/f.bin")
    assert code_of(lambda: ftp.sendcmd("MFMT 20200102030405 a/f.bin"))[:3] in ("213", "502")
    assert code_of(lambda: ftp.rmd("a"))[:3] == "550"  # not empty
    assert code_of(lambda: ftp.delete("a/b"))[:3] == "550"  # a directory
    assert code_of(lambda: ftp.size("a/b"))[:3] == "550"
    assert code_of(lambda: ftp.cwd("a/f.bin"))[:3] == "550"
    assert code_of(lambda: retr(ftp, "nope"))[:3] == "550"
    assert code_of(lambda: ftp.storbinary("STOR a/b", io.BytesIO(b"x")))[:3] == "550"
    assert ftp.rename("a/f.bin", "a/b/g.bin").startswith("250")
    assert ftp.rename("a", "z").startswith("250")
    assert ftp.nlst("z/b") == ["g.bin"]
    assert retr(ftp, "z/b/g.bin") == data[:3] + b"XY"
    assert ftp.delete("z/b/g.bin").startswith("250")
    assert ftp.rmd("z/b").startswith("250")
    assert ftp.rmd("z").startswith("250")
    assert len(ftp.nlst()) == 1  # the STOU file
    ftp.quit()
