"""Bad input never crashes the server or loses data, and other clients keep being served:
unknown/unimplemented commands, bad arguments and sequences, over-long lines, invalid UTF-8,
raw garbage, clients that vanish or reset their data connection mid-upload."""

from __future__ import annotations

import asyncio
import ftplib
import io
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, rst, wait_until


@pytest.fixture
def bystander(server: ServerThread, home: Path) -> Iterator[ftplib.FTP]:
    """Another client, logged in before the bad one arrives; checked afterwards."""
    ftp = server.ftp("alice", "secret")
    yield ftp
    # It is still served, reads and writes.
    ftp.storbinary("STOR bystander", io.BytesIO(b"still here"))
    out = io.BytesIO()
    ftp.retrbinary("RETR bystander", out.write)
    assert out.getvalue() == b"still here"
    ftp.delete("bystander")
    ftp.quit()
    # And new clients are accepted.
    fresh = server.ftp("alice", "secret")
    assert fresh.voidcmd("NOOP").startswith("200")
    fresh.quit()


def _no_temp_files(home: Path) -> bool:
    return not any(p.name.startswith(".fsftpd-upload-") for p in home.rglob("*"))


def _sessions_drain(server: ServerThread, keep: int) -> bool:
    """Sessions end, and no transfer task outlives its session."""
    assert server.server is not None
    if not wait_until(lambda: server.call(lambda s: len(s.connections)) <= keep):
        return False
    return wait_until(lambda: not _transfer_tasks(server))


def _transfer_tasks(server: ServerThread) -> list[str]:
    names = server.call(lambda s: [t.get_name() for t in asyncio.all_tasks() if not t.done()])
    return [n for n in names if n.startswith("fsftpd-transfer")]


def test_command_errors(server: ServerThread, bystander: ftplib.FTP) -> None:
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        assert raw.code("FOO") == 500
        assert raw.code("XYZZY bar") == 500
        for verb in (
            "SITE CHMOD 600 x",
            "ACCT x",
            "AUTH TLS",
            "PBSZ 0",
            "PROT P",
            "SMNT x",
            "LPSV",
            "LPRT x",
        ):
            assert raw.code(verb) == 502, verb
        assert raw.code("RETR") == 501
        assert raw.code("PWD extra") == 501
        assert raw.code("TYPE Z") == 501
        assert raw.code("RNTO x") == 503
        assert raw.code("NOOP") == 200
    with Raw(server.host, server.port) as raw:
        assert raw.code("PASS x") == 503
        assert raw.code("LIST") == 530
        assert raw.code("RETR x") == 530


def test_over_long_line_with_newline(server: ServerThread, bystander: ftplib.FTP) -> None:
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        assert raw.code(b"NOOP " + b"x" * 9000) == 500
        assert raw.code("NOOP") == 200
        assert raw.code(b"RETR " + b"y" * 20000) == 500
        assert raw.cmd("PWD")[0] == 257


def test_megabyte_line_without_newline(server: ServerThread, bystander: ftplib.FTP) -> None:
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        # 1 MiB and no newline: the server answers 500 without waiting for the end of the
        # line (it never buffers it whole) and keeps discarding until the newline comes.
        raw.sock.sendall(b"STOR " + b"z" * (1 << 20))
        assert raw.read()[0] == 500
        raw.sock.sendall(b"z" * (1 << 20))
        raw.sock.sendall(b"\r\n")
        assert raw.code("NOOP") == 200
        # Its reader buffer stayed bounded: limit 8 KiB (the StreamReader pauses at 2x).
        sizes = server.call(lambda s: [len(c.reader._buffer) for c in s.connections])  # type: ignore[attr-defined]
        assert max(sizes) <= 64 * 1024


def test_invalid_utf8_and_nul(server: ServerThread, home: Path, bystander: ftplib.FTP) -> None:
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        code, text = raw.cmd(b"MKD \xff\xfe\xc3(")
        assert code in (500, 501), text
        assert raw.cmd(b"MKD bad\xc3(name")[0] == 501
        assert raw.cmd(b"STOR \x80\x81")[0] == 501
        assert raw.cmd(b"MKD a\x00b")[0] == 501
        assert raw.cmd(b"CWD \x00")[0] == 501
        assert raw.code("NOOP") == 200
    assert list(home.iterdir()) == []


def test_raw_garbage(server: ServerThread, bystander: ftplib.FTP) -> None:
    rng = os.urandom
    for _ in range(3):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.recv(100)
            sock.sendall(rng(64 * 1024))
            sock.sendall(b"\r\n" + rng(4096) + b"\n\n\r\n\x00\xff\xff\xff\r\n")
            time.sleep(0.05)
    with Raw(server.host, server.port) as raw:
        raw.sock.sendall(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n"
        )  # a TLS hello
        assert raw.read()[0] in (500, 501)
        raw.sock.sendall(b"\r\n\r\n")
        assert raw.read()[0] == 500
        assert raw.read()[0] == 500
        assert raw.code("NOOP") == 200
    assert _sessions_drain(server, keep=1)


def test_client_vanishing_mid_upload(server: ServerThread, home: Path, bystander: ftplib.FTP) -> None:
    raw = Raw(server.host, server.port)
    raw.login("alice", "secret")
    data = raw.epsv()
    assert raw.cmd("STOR half")[0] == 150
    data.sendall(os.urandom(1024 * 1024))
    time.sleep(0.1)
    raw.reset()  # control connection gone with an RST
    time.sleep(0.1)
    rst(data)
    assert _sessions_drain(server, keep=1)
    assert wait_until(lambda: _no_temp_files(home))
    assert not (home / "half").exists()
    assert server.call(lambda s: sum(1 for c in s.connections if c.transfer and not c.transfer.done())) == 0


def test_client_vanishing_mid_download(server: ServerThread, home: Path, bystander: ftplib.FTP) -> None:
    (home / "big").write_bytes(os.urandom(16 * 1024 * 1024))
    raw = Raw(server.host, server.port)
    raw.login("alice", "secret")
    data = raw.epsv()
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    assert raw.cmd("RETR big")[0] == 150
    data.recv(1000)
    raw.reset()
    data.close()
    assert _sessions_drain(server, keep=1)
    # The file descriptor of the download was released.
    fds = {
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert str(home / "big") not in fds


def test_client_vanishing_while_data_connection_awaited(home: Path, user: fsftpd.User) -> None:
    with running_server([user], wait_future_timeout=60) as srv:
        raw = Raw(srv.host, srv.port)
        raw.login("alice", "secret")
        raw.cmd("EPSV")
        assert raw.cmd("STOR pending")[0] == 150
        raw.reset()
        assert wait_until(lambda: srv.call(lambda s: len(s.connections)) == 0)
        assert wait_until(lambda: not _transfer_tasks(srv))
        assert wait_until(lambda: _no_temp_files(home))
        assert list(home.iterdir()) == []


@pytest.mark.parametrize("existing", [None, b"the previous complete version"])
def test_upload_reset_by_client_is_426_and_leaves_nothing(
    server: ServerThread, home: Path, bystander: ftplib.FTP, existing: bytes | None
) -> None:
    if existing is not None:
        (home / "target").write_bytes(existing)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        for _ in range(3):
            data = raw.epsv()
            assert raw.cmd("STOR target")[0] == 150
            data.sendall(os.urandom(512 * 1024))
            time.sleep(0.05)
            rst(data)  # SO_LINGER 0: a reset, not a clean end of file
            code, text = raw.read()
            assert code == 426, text  # never 226: pyftpdlib's silent data loss
            if existing is None:
                assert not (home / "target").exists()
            else:
                assert (home / "target").read_bytes() == existing
            assert _no_temp_files(home)
        assert raw.code("NOOP") == 200


def test_upload_reset_right_after_sending_everything(server: ServerThread, home: Path) -> None:
    # All bytes arrive, then an RST instead of a FIN: still not a complete upload.
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        for _ in range(5):
            data = raw.epsv()
            assert raw.cmd("STOR t")[0] == 150
            data.sendall(b"x" * 100_000)
            rst(data)
            assert raw.read()[0] == 426
            assert not (home / "t").exists()


def test_unknown_verbs_many_times_do_not_pile_up(server: ServerThread) -> None:
    with Raw(server.host, server.port) as raw:
        raw.sock.sendall(b"BOGUS\r\n" * 2000 + b"NOOP\r\n")
        for _ in range(2000):
            assert raw.read()[0] == 500
        assert raw.read()[0] == 200


def _open_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return fds


def _count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_leaked_sockets_or_files_after_every_kind_of_failure(home: Path, user: fsftpd.User) -> None:
    (home / "big").write_bytes(os.urandom(16 * 1024 * 1024))
    with running_server([user], wait_future_timeout=30) as srv:
        # Warm up (thread pools, caches) so the baseline is stable.
        ftp = srv.ftp("alice", "secret")
        ftp.retrbinary("RETR big", lambda b: None)
        ftp.storbinary("STOR warm", io.BytesIO(b"w"))
        ftp.quit()
        assert _sessions_drain(srv, keep=0)
        baseline = _count_fds()
        for _ in range(3):
            # 1. vanish mid-download, 2. vanish mid-upload, 3. vanish while the data
            # connection is awaited, 4. upload reset, 5. ABOR mid-download, 6. garbage.
            raw = Raw(srv.host, srv.port)
            raw.login("alice", "secret")
            data = raw.epsv()
            raw.cmd("RETR big")
            data.recv(1000)
            raw.reset()
            rst(data)

            raw = Raw(srv.host, srv.port)
            raw.login("alice", "secret")
            data = raw.epsv()
            raw.cmd("STOR up")
            data.sendall(b"x" * 300_000)
            raw.reset()
            data.close()

            raw = Raw(srv.host, srv.port)
            raw.login("alice", "secret")
            raw.cmd("PASV")
            raw.cmd("STOR never")
            raw.reset()

            with Raw(srv.host, srv.port) as raw:
                raw.login("alice", "secret")
                data = raw.epsv()
                raw.cmd("STOR reset")
                data.sendall(b"y" * 300_000)
                rst(data)
                assert raw.read()[0] == 426
                data = raw.epsv()
                data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
                raw.cmd("RETR big")
                data.recv(1000)
                assert raw.cmd("ABOR")[0] == 426
                assert raw.read()[0] == 226
                data.close()
                raw.sock.sendall(os.urandom(20000) + b"\r\n")

            assert _sessions_drain(srv, keep=0)
        assert wait_until(lambda: _count_fds() <= baseline, timeout=10), (baseline, _count_fds())
        leftovers = {p for p in _open_fds() if str(home) in p}
        assert not leftovers, leftovers
    assert _no_temp_files(home)
    assert not (home / "never").exists() and not (home / "reset").exists()
