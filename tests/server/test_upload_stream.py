"""Large and oddly shaped uploads, checked by what is on disk: STOR, APPE and REST+STOR by
hash, a stream of tiny TCP segments, TCP urgent data inside an upload (skipped, as recv
skips it), and a reset mid-upload that must leave the old file and no temp file behind."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest

from fsftpd.storage import local
from tests.conftest import sha256, sha256_file
from tests.harness import ServerThread
from tests.server.rawftp import Raw, rst, wait_until

pytestmark = pytest.mark.timeout(120)

BIG = 5 * 1024 * 1024 + 123  # several receive blocks, the last one partly filled


def _no_temp_files(home: Path) -> bool:
    return not [p for p in home.rglob("*") if p.name.startswith(local.TEMP_PREFIX)]


def test_large_stor_is_exact(server: ServerThread, home: Path) -> None:
    payload = os.urandom(BIG)
    with server.ftp("alice", "secret") as ftp:
        assert ftp.storbinary("STOR big", io.BytesIO(payload), blocksize=65536).startswith("226")
        assert ftp.size("big") == BIG
    assert sha256_file(home / "big") == sha256(payload)
    assert _no_temp_files(home)


def test_large_appe_and_rest_stor(server: ServerThread, home: Path) -> None:
    head = os.urandom(1000)
    (home / "appended").write_bytes(head)
    tail = os.urandom(3 * 1024 * 1024 + 7)
    original = os.urandom(4 * 1024 * 1024)
    (home / "resumed").write_bytes(original[:500_000])
    with server.ftp("alice", "secret") as ftp:
        assert ftp.storbinary("APPE appended", io.BytesIO(tail)).startswith("226")
        assert ftp.storbinary("STOR resumed", io.BytesIO(original[500_000:]), rest=500_000).startswith("226")
    assert sha256_file(home / "appended") == sha256(head + tail)
    assert sha256_file(home / "resumed") == sha256(original)


def test_small_segments_are_reassembled_in_order(server: ServerThread, home: Path) -> None:
    """Many tiny TCP segments (TCP_NODELAY, 700-byte sends) are stored whole and in order."""
    payload = os.urandom(1_500_000)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        data.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code, _ = raw.cmd("STOR segments")
        assert code == 150
        view = memoryview(payload)
        for start in range(0, len(payload), 700):
            data.sendall(view[start:start + 700])
        data.close()
        code, text = raw.read()
        assert code == 226, text
    assert sha256_file(home / "segments") == sha256(payload)


def test_urgent_data_inside_an_upload(server: ServerThread, home: Path) -> None:
    """TCP urgent data (MSG_OOB) inside an upload is not part of the stream (the data
    socket is not OOB-inline): the file holds exactly the ordinary bytes, and the
    upload neither stalls nor ends early."""
    first, second = os.urandom(600_000), os.urandom(900_000)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.code("STOR urgent") == 150
        data.sendall(first)
        data.send(b"!", socket.MSG_OOB)
        data.sendall(second)
        data.close()
        code, text = raw.read()
        assert code == 226, text
        assert raw.code("NOOP") == 200
    assert sha256_file(home / "urgent") == sha256(first + second)


def test_reset_mid_upload_keeps_the_old_file(server: ServerThread, home: Path) -> None:
    old = b"the old contents\n"
    (home / "victim").write_bytes(old)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.code("STOR victim") == 150
        data.sendall(os.urandom(3 * 1024 * 1024))
        rst(data)
        code, _ = raw.read()
        assert code in (426, 451)
        assert raw.code("NOOP") == 200  # the session goes on
    assert (home / "victim").read_bytes() == old
    assert wait_until(lambda: _no_temp_files(home))
