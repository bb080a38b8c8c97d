"""Drain on SIGTERM/SIGINT and reload on SIGHUP, through a real fsftpd process."""

from __future__ import annotations

import ftplib
import hashlib
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from tests.appliance.proc import Fsftpd, base_env, wait_until
from tests.s3.endpoints import free_port


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            # Accepted by a listener that is closing: it answers 421 or closes at once.
            sock.settimeout(2)
            data = sock.recv(100)
            return data.startswith(b"421") or data == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except OSError:
        return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_a_running_upload(tmp_path: Path, workers: str) -> None:
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD="p", FSFTPD_WORKERS=workers,
                   FSFTPD_PORT=str(free_port()), FSFTPD_SHUTDOWN_TIMEOUT="30")
    data = os.urandom(3 << 20)
    with Fsftpd(env) as proc:
        idle = proc.ftp("u", "p")
        ftp = proc.ftp("u", "p")
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("STOR up.bin")  # 150 received: the transfer is running
        conn.sendall(data[: 1 << 20])
        proc.send(signal.SIGTERM)
        wait_until(lambda: refused(proc.port), what="the listener to close")
        conn.sendall(data[1 << 20:])
        conn.close()
        assert ftp.voidresp().startswith("226")
        assert proc.proc is not None
        assert proc.proc.wait(timeout=30) == 0
        with pytest.raises((ftplib.error_temp, EOFError, OSError)):
            idle.voidcmd("NOOP")  # the idle session was sent 421 and closed
    digest = hashlib.sha256((tmp_path / "home" / "up.bin").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(data).hexdigest()
    assert "Traceback" not in proc.output


def test_a_transfer_still_running_after_the_timeout_is_cut_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "target.bin").write_bytes(b"old content")
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD="p", FSFTPD_SHUTDOWN_TIMEOUT="1")
    with Fsftpd(env) as proc:
        ftp = proc.ftp("u", "p")
        conn = ftp.transfercmd("STOR target.bin")
        conn.sendall(os.urandom(100_000))
        assert proc.stop(signal.SIGINT) == 0
        conn.close()
    assert (home / "target.bin").read_bytes() == b"old content"
    assert sorted(p.name for p in home.iterdir()) == ["target.bin"]


def write_users(path: Path, users: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(users))
    tmp.replace(path)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_users_without_dropping_sessions(tmp_path: Path, workers: str) -> None:
    users = tmp_path / "users.json"
    write_users(users, [{"login": "alice", "password": "a1"}, {"login": "bob", "password": "b1"}])
    env = base_env(tmp_path, FSFTPD_USERS_FILE=str(users), FSFTPD_WORKERS=workers,
                   FSFTPD_PORT=str(free_port()))
    with Fsftpd(env) as proc:
        alice = proc.ftp("alice", "a1")
        write_users(users, [{"login": "bob", "password": "b2"}, {"login": "carol", "password": "c1"}])
        mark = proc.mark()
        proc.send(signal.SIGHUP)
        for _ in range(int(workers)):
            mark = proc.lines.index(proc.wait_for(r"reload: 2 user\(s\)", start=mark)) + 1
        for _ in range(4):  # several connections: with workers, they land on both
            assert proc.ftp("carol", "c1").quit().startswith("221")
            assert proc.login_fails("alice", "a1")  # removed
            assert proc.login_fails("bob", "b1")  # old password
            assert proc.ftp("bob", "b2").quit().startswith("221")
        assert alice.nlst() == []  # the session already in keeps working
        # an invalid file: the old users stay, the log says why
        users.write_text('[{"login": "dave", "pasword": "x"}]')
        mark = proc.mark()
        proc.send(signal.SIGHUP)
        proc.wait_for(r"reload refused.*unknown user field 'pasword'", start=mark)
        assert proc.ftp("carol", "c1").quit().startswith("221")
        alice.quit()
        assert proc.stop() == 0
    assert "Traceback" not in proc.output
