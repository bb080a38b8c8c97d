"""Uploads larger than the first receive block go socket -> pipe -> file by splice(2) on
local disk. What a user checks: the stored bytes (by hash) for STOR, APPE and REST+STOR,
for large and for oddly segmented streams; a reset mid-upload leaves the old file alone and
no temp file behind; a filesystem that refuses splice still gets every byte."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import socket
import stat
from pathlib import Path

import pytest

import fsftpd
from fsftpd.storage import local
from fsftpd.transfer import copy
from tests.conftest import sha256, sha256_file
from tests.harness import ServerThread
from tests.server.rawftp import Raw, rst, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not copy._SPLICE, reason="no splice(2) on this platform"),
]

BIG = 5 * 1024 * 1024 + 123  # several pipes, and a last one partly filled


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
    """A client that sends tiny TCP segments fills a pipe's slots long before its byte
    size: the server must hand the pipe over, not spin or reorder."""
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
    """TCP urgent data (MSG_OOB) stops splice(2) at its mark while the socket stays
    readable: the server must move past it (as recv does, dropping the urgent byte), not
    spin; the file holds exactly the ordinary bytes."""
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


def test_filesystem_refusing_splice_still_gets_every_byte(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage-side fault injection: splice into the file fails as on a filesystem without
    splice support; the stream falls back to read + write from the same pipe."""
    real_splice = os.splice

    def refuse_files(src: int, dst: int, count: int, *args: object, **kwargs: object) -> int:
        if stat.S_ISREG(os.fstat(dst).st_mode):
            raise OSError(errno.EINVAL, "splice to this file is not supported")
        return real_splice(src, dst, count, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "splice", refuse_files)
    payload = os.urandom(2 * 1024 * 1024 + 5)

    async def upload() -> None:
        io_ = fsftpd.PathIO(str(tmp_path))
        await io_.ensure_root()
        writer = await io_.open_write("/refused")
        assert writer.takes_pipe
        r, w = os.pipe()
        try:
            for start in range(0, len(payload), 65536):
                chunk = payload[start:start + 65536]
                os.write(w, chunk)
                await writer.write_from_pipe(r, len(chunk))
        finally:
            await writer.close_pipes((r, w))
        await writer.commit()

    asyncio.run(upload())
    assert hashlib.sha256((tmp_path / "refused").read_bytes()).hexdigest() == sha256(payload)
