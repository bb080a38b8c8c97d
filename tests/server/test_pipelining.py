"""Commands sent in one burst (pipelined). Commands whose replies need no waiting are
served inline in the control channel's receive callback, the others by the session task;
the replies must still come in order, one per command, with the same codes, and nothing
after QUIT may run."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all


def _send_burst(raw: Raw, *lines: str) -> None:
    """All lines in one write (Raw.send adds the last CRLF)."""
    raw.send("\r\n".join(lines))


def _burst(raw: Raw, *lines: str) -> list[int]:
    _send_burst(raw, *lines)
    return [raw.read()[0] for _ in lines]


def test_mixed_burst_gets_every_reply_in_order(server: ServerThread, home: Path) -> None:
    (home / "d").mkdir()
    (home / "f.txt").write_bytes(b"x" * 10)
    with Raw(server.host, server.port) as raw:
        codes = _burst(
            raw,
            "USER alice", "PASS secret",  # inline USER; PASS inline or by the task
            "TYPE I", "CWD d", "PWD",      # CWD needs storage: the task; PWD after it
            "CDUP", "SIZE f.txt", "NOOP", "BOGUS", "MKD new", "SYST", "RMD new", "FEAT", "HELP",
        )
        assert codes == [331, 230, 200, 250, 257, 250, 213, 200, 500, 257, 215, 250, 211, 214]
        assert raw.cmd("PWD") == (257, '"/" is the current directory')
    assert not (home / "new").exists()


def test_pwd_after_cwd_in_the_same_burst_sees_the_new_directory(server: ServerThread, home: Path) -> None:
    (home / "sub").mkdir()
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        _send_burst(raw, "CWD sub", "PWD")
        assert raw.read()[0] == 250
        assert raw.read() == (257, '"/sub" is the current directory')


def test_nothing_runs_after_quit_in_a_burst(server: ServerThread, home: Path) -> None:
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        _send_burst(raw, "NOOP", "QUIT", "MKD after-quit", "NOOP")
        assert raw.read()[0] == 200
        assert raw.read()[0] == 221
        raw.sock.settimeout(5)
        assert raw.file.read() == b""  # closed, no further reply
    time.sleep(0.2)
    assert not (home / "after-quit").exists()


def test_failed_login_in_a_burst_waits_and_keeps_order(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], failed_login_delay=0.3) as srv, Raw(srv.host, srv.port) as raw:
        started = time.monotonic()
        codes = _burst(raw, "USER alice", "PASS wrong", "PWD", "USER alice", "PASS secret", "PWD")
        assert codes == [331, 530, 530, 331, 230, 257]
        assert time.monotonic() - started >= 0.3  # the delay was served by the task


def test_transfer_in_a_burst(server: ServerThread, home: Path) -> None:
    payload = bytes(range(256)) * 400
    (home / "a.bin").write_bytes(payload)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        # PWD waits for the transfer (RFC 959 4.1.3); NOOP may be answered during it.
        _send_burst(raw, "TYPE I", "RETR a.bin", "PWD", "NOOP")
        assert raw.read()[0] == 200
        assert raw.read()[0] == 150
        got = recv_all(data)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert [raw.read()[0] for _ in range(3)] == [226, 257, 200]


def test_inline_commands_from_many_clients_at_once(server: ServerThread) -> None:
    socks = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(b"USER alice\r\nPASS secret\r\nTYPE I\r\nPWD\r\nQUIT\r\n")
        for s in socks:
            text = recv_all(s).decode()
            codes = [line[:3] for line in text.split("\r\n") if line[:3].isdigit() and line[3:4] == " "]
            assert codes == ["220", "331", "230", "200", "257", "221"]
    finally:
        for s in socks:
            s.close()
