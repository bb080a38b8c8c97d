"""A session's life when it never needs a task: login, commands answered at once, and every
way it can end (QUIT, the client closing or resetting, idle timeout, server shutdown, the
client half-closing with lines still buffered). Each end must send the right last reply,
close the socket and give back the connection and user slots."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, wait_until

pytestmark = pytest.mark.timeout(60)


def _user(home: Path, limit: int | None = 1) -> fsftpd.User:
    return fsftpd.User("u", "p", base_path=str(home), maximum_connections=limit)


def _closed(raw: Raw) -> bool:
    """The server closed the control connection (EOF after whatever it sent)."""
    return raw.file.readline() == b""


def _tasks(srv: ServerThread) -> int:
    return srv.call(lambda s: len(s._tasks))


def _sessions(srv: ServerThread) -> int:
    return srv.call(lambda s: s.connection_count)


def _can_log_in(srv: ServerThread) -> bool:
    with Raw(srv.host, srv.port) as raw:
        assert raw.code("USER u") == 331
        return raw.code("PASS p") == 230


def _warm(srv: ServerThread) -> None:
    """The user's first login readies the home (a storage call, so it takes the task);
    later logins are answered at once."""
    assert _can_log_in(srv)
    assert wait_until(lambda: _tasks(srv) == 0 and _sessions(srv) == 0)


def test_login_and_quit_frees_every_slot(tmp_path: Path) -> None:
    with running_server([_user(tmp_path)]) as srv:
        _warm(srv)
        for _ in range(3):  # the one-session limit: each QUIT must give the slot back
            with Raw(srv.host, srv.port) as raw:
                raw.login("u", "p")
                assert raw.code("PWD") == 257
                assert raw.code("TYPE I") == 200
                assert _tasks(srv) == 0  # nothing so far needed waiting
                assert raw.code("QUIT") == 221
                assert _closed(raw)
            assert wait_until(lambda: _sessions(srv) == 0)


def test_a_command_that_waits_starts_the_task(tmp_path: Path) -> None:
    with running_server([_user(tmp_path)]) as srv:
        _warm(srv)
        raw = Raw(srv.host, srv.port)
        raw.login("u", "p")
        assert _tasks(srv) == 0
        assert raw.code("MKD made") == 257  # a storage call: the session gets its task
        assert (tmp_path / "made").is_dir()
        assert _tasks(srv) == 1
        assert raw.code("QUIT") == 221
        assert _closed(raw)
        raw.close()
        assert wait_until(lambda: _tasks(srv) == 0 and _sessions(srv) == 0)


@pytest.mark.parametrize("how", ["close", "reset", "partial line then close"])
def test_client_leaving_without_quit_frees_the_slot(tmp_path: Path, how: str) -> None:
    with running_server([_user(tmp_path)]) as srv:
        raw = Raw(srv.host, srv.port)
        raw.login("u", "p")
        if how == "reset":
            raw.reset()
        else:
            if how == "partial line then close":
                raw.sock.sendall(b"NOO")
            raw.close()
        assert wait_until(lambda: _sessions(srv) == 0)
        assert _can_log_in(srv)


def test_idle_timeout_without_a_task(tmp_path: Path) -> None:
    with running_server([_user(tmp_path)], idle_timeout=1) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("u", "p")
        code, text = raw.read()  # nothing sent: the server speaks first
        assert code == 421 and "Idle timeout" in text
        assert _closed(raw)
        assert wait_until(lambda: _sessions(srv) == 0)
        assert _can_log_in(srv)


def test_shutdown_sends_421_to_sessions_without_a_task(tmp_path: Path) -> None:
    srv = ServerThread([_user(tmp_path, limit=None)]).start()
    try:
        _warm(srv)
        logged_in = [Raw(srv.host, srv.port) for _ in range(3)]
        for raw in logged_in:
            raw.login("u", "p")
        greeted = Raw(srv.host, srv.port)  # connected, never logged in
        assert _tasks(srv) == 0
        srv.stop()
        for raw in [*logged_in, greeted]:
            code, text = raw.read()
            assert code == 421 and "shutting down" in text
            assert _closed(raw)
            raw.close()
    finally:
        srv.stop()


def test_half_close_after_pipelined_lines_answers_them_all(tmp_path: Path) -> None:
    """``printf 'USER..PASS..MKD..' | nc``: the client sends everything and closes its
    sending side at once; every line is still answered, including the ones that need the
    task, and only then is the session ended."""
    with running_server([_user(tmp_path)]) as srv:
        with socket.create_connection((srv.host, srv.port), timeout=20) as sock:
            sock.sendall(b"USER u\r\nPASS p\r\nMKD one\r\nPWD\r\nMKD two\r\n")
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        codes = [line[:3] for line in received.split(b"\r\n") if line]
        assert codes == [b"220", b"331", b"230", b"257", b"257", b"257"]
        assert (tmp_path / "one").is_dir() and (tmp_path / "two").is_dir()
        assert wait_until(lambda: _sessions(srv) == 0)
        assert _can_log_in(srv)
