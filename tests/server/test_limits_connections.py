"""Connection limits on a real server: maximum_connections (421 before login),
maximum_connections_per_ip (421), a user's maximum_connections (530 at PASS, then closed),
limits changed at run time, and the counters returning to zero on every exit path."""

from __future__ import annotations

import ftplib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all, rst, wait_until
from tests.server.test_limits_timeouts import SlowMemoryPathIO

pytestmark = pytest.mark.timeout(60)


def counters(srv: ServerThread, ip: str = "127.0.0.1") -> tuple[int, dict[str, int], int]:
    """(open control connections, logged-in sessions per user, connections from ``ip``)."""
    return srv.call(lambda s: (len(s.connections), dict(s.users.sessions), s.per_ip_count(ip)))


def released(srv: ServerThread) -> bool:
    return counters(srv) == (0, {}, 0)


def connect_from(srv: ServerThread, source: str) -> Raw:
    """A control connection from another loopback address (Linux routes all of 127/8)."""
    raw = Raw.__new__(Raw)
    raw.host = srv.host
    raw.sock = socket.create_connection((srv.host, srv.port), timeout=20, source_address=(source, 0))
    raw.file = raw.sock.makefile("rb")
    raw.greeting = raw.read()
    return raw


def assert_refused(raw: Raw, words: str) -> None:
    code, text = raw.greeting
    assert code == 421, text
    assert words in text.lower()
    raw.sock.settimeout(5)
    assert raw.file.readline() == b""  # and closed at once
    raw.close()


@pytest.fixture
def users(tmp_path: Path) -> list[fsftpd.User]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return [fsftpd.User("alice", "secret", base_path=str(tmp_path / "a"), maximum_connections=2),
            fsftpd.User("bob", "pw", base_path=str(tmp_path / "b"))]


# -- server-wide limit ----------------------------------------------------------------------

def test_server_limit_refuses_with_421_before_login(users: list[fsftpd.User]) -> None:
    with running_server(users, maximum_connections=2) as srv:
        first = Raw(srv.host, srv.port)
        first.login("alice", "secret")
        second = Raw(srv.host, srv.port)  # not logged in: counts all the same
        assert second.greeting[0] == 220
        assert counters(srv) == (2, {"alice": 1}, 2)
        assert_refused(Raw(srv.host, srv.port), "too many connections")
        with pytest.raises(ftplib.error_temp, match="421"):
            srv.ftp()
        assert counters(srv) == (2, {"alice": 1}, 2)  # refusals leave no trace
        assert first.code("QUIT") == 221
        first.close()
        assert wait_until(lambda: counters(srv)[0] == 1)
        third = Raw(srv.host, srv.port)
        assert third.greeting[0] == 220
        third.login("bob", "pw")
        for raw in (second, third):
            assert raw.code("QUIT") == 221
            raw.close()
        assert wait_until(lambda: released(srv))


def test_per_ip_limit_refuses_that_address_only(users: list[fsftpd.User]) -> None:
    with running_server(users, maximum_connections_per_ip=2) as srv:
        a, b = Raw(srv.host, srv.port), Raw(srv.host, srv.port)
        assert_refused(Raw(srv.host, srv.port), "from your address")
        other = connect_from(srv, "127.0.0.2")
        assert other.greeting[0] == 220
        other.login("bob", "pw")
        assert counters(srv, "127.0.0.2")[2] == 1
        assert counters(srv)[2] == 2
        assert_refused(Raw(srv.host, srv.port), "from your address")
        a.close()
        assert wait_until(lambda: counters(srv)[2] == 1)
        c = Raw(srv.host, srv.port)
        assert c.greeting[0] == 220
        for raw in (b, c, other):
            raw.close()
        assert wait_until(lambda: released(srv) and counters(srv, "127.0.0.2")[2] == 0)


# -- per-user limit -------------------------------------------------------------------------

def test_user_limit_refuses_pass_with_530_and_closes(users: list[fsftpd.User]) -> None:
    with running_server(users) as srv:
        sessions = [Raw(srv.host, srv.port) for _ in range(2)]
        for raw in sessions:
            raw.login("alice", "secret")
        extra = Raw(srv.host, srv.port)
        assert extra.code("USER alice") == 331
        code, text = extra.cmd("PASS secret")
        assert code == 530, text
        assert "too many connections" in text.lower()
        extra.sock.settimeout(5)
        assert extra.file.readline() == b""  # the session is closed
        extra.close()
        assert counters(srv) == (2, {"alice": 2}, 2)
        # Other users are not affected...
        with Raw(srv.host, srv.port) as bob:
            bob.login("bob", "pw")
            assert counters(srv)[1] == {"alice": 2, "bob": 1}
        # ...and a freed slot can be used again.
        sessions[0].code("QUIT")
        sessions[0].close()
        assert wait_until(lambda: counters(srv)[1] == {"alice": 1})
        with Raw(srv.host, srv.port) as again:
            again.login("alice", "secret")
            assert counters(srv)[1] == {"alice": 2}
        sessions[1].close()
        assert wait_until(lambda: released(srv))


def test_a_wrong_password_does_not_take_a_user_slot(users: list[fsftpd.User]) -> None:
    with running_server(users, failed_login_delay=0) as srv, Raw(srv.host, srv.port) as raw:
        assert raw.code("USER alice") == 331
        assert raw.code("PASS wrong") == 530
        assert counters(srv)[1] == {}
        raw.login("alice", "secret")
        assert counters(srv)[1] == {"alice": 1}
        assert raw.code("REIN") == 220
        assert counters(srv)[1] == {}


# -- limits changed at run time -------------------------------------------------------------

def test_connection_limits_can_be_changed_on_a_running_server(users: list[fsftpd.User]) -> None:
    with running_server(users) as srv:
        first = Raw(srv.host, srv.port)
        srv.call(lambda s: s.set_limits(maximum_connections=1))
        assert_refused(Raw(srv.host, srv.port), "too many connections")
        srv.call(lambda s: s.set_limits(maximum_connections=None, maximum_connections_per_ip=1))
        assert_refused(Raw(srv.host, srv.port), "from your address")
        srv.call(lambda s: s.set_limits(maximum_connections_per_ip=None, maximum_connections=0))
        assert_refused(Raw(srv.host, srv.port), "too many connections")  # 0 is a real limit
        srv.call(lambda s: s.set_limits(maximum_connections=None))
        with Raw(srv.host, srv.port) as second:
            assert second.greeting[0] == 220
        # A user's limit is an attribute of the User, read at every PASS.
        first.login("alice", "secret")
        users[0].maximum_connections = 1
        with Raw(srv.host, srv.port) as third:
            assert third.code("USER alice") == 331
            assert third.code("PASS secret") == 530
        first.close()
        assert wait_until(lambda: released(srv))


def test_bad_limit_values_are_rejected_and_change_nothing() -> None:
    server = fsftpd.Server([fsftpd.User("u", "p")], maximum_connections=5)
    with pytest.raises(ValueError):
        server.set_limits(maximum_connections=2, write_speed_limit=-1)
    with pytest.raises(TypeError):
        server.set_limits(maximum_conections=2)
    with pytest.raises(ValueError):
        server.set_limits(read_speed_limit="fast")  # type: ignore[arg-type]
    assert server.limits.maximum_connections == 5
    assert server.limits.write_speed_limit is None
    with pytest.raises(ValueError):
        fsftpd.Server([fsftpd.User("u", "p")], read_speed_limit=-5)
    for timeout in ("socket_timeout", "path_timeout", "idle_timeout", "wait_future_timeout"):
        with pytest.raises(ValueError, match=timeout):
            fsftpd.Server([fsftpd.User("u", "p")], **{timeout: 0})
        fsftpd.Server([fsftpd.User("u", "p")], **{timeout: None})


# -- counters return to zero on every exit path --------------------------------------------

def _quit(raw: Raw, srv: ServerThread) -> None:
    assert raw.code("QUIT") == 221


def _close(raw: Raw, srv: ServerThread) -> None:
    raw.close()  # a FIN without QUIT


def _reset(raw: Raw, srv: ServerThread) -> None:
    raw.reset()


def _reset_during_upload(raw: Raw, srv: ServerThread) -> None:
    data = raw.epsv()
    assert raw.code("STOR partial.bin") == 150
    data.sendall(os.urandom(100_000))
    rst(data)
    raw.reset()


def _reset_during_download(raw: Raw, srv: ServerThread) -> None:
    data = raw.epsv()
    assert raw.code("RETR big.bin") == 150
    data.recv(1000)
    raw.reset()
    rst(data)


def _idle(raw: Raw, srv: ServerThread) -> None:
    code, text = raw.read()
    assert code == 421, text


def _storage_exception(raw: Raw, srv: ServerThread) -> None:
    assert raw.code("SIZE boom.txt") == 451  # a bug-like exception inside the handler
    raw.close()


def _storage_exception_during_transfer(raw: Raw, srv: ServerThread) -> None:
    data = raw.epsv()
    assert raw.code("LIST boom") == 451
    data.close()
    raw.reset()


def _server_shutdown(raw: Raw, srv: ServerThread) -> None:
    srv.run(lambda s: s.close(timeout=2))
    code, _ = raw.read()
    assert code == 421


EXITS: dict[str, Callable[[Raw, ServerThread], None]] = {
    "quit": _quit,
    "close": _close,
    "reset": _reset,
    "reset-during-upload": _reset_during_upload,
    "reset-during-download": _reset_during_download,
    "idle-timeout": _idle,
    "exception-in-handler": _storage_exception,
    "exception-before-transfer": _storage_exception_during_transfer,
    "server-shutdown": _server_shutdown,
}


@pytest.fixture
def exit_server() -> Iterator[ServerThread]:
    users = [fsftpd.User("alice", "secret", base_path="memory://alice", maximum_connections=3)]
    with running_server(users, path_io_factory=SlowMemoryPathIO, idle_timeout=1.0,
                        maximum_connections=10, maximum_connections_per_ip=5) as srv:
        with Raw(srv.host, srv.port) as raw:
            raw.login("alice", "secret")
            data = raw.epsv()
            assert raw.code("STOR big.bin") == 150
            data.sendall(os.urandom(8 * 1024 * 1024))
            data.close()
            assert raw.read()[0] == 226
        assert wait_until(lambda: released(srv))
        yield srv


@pytest.mark.parametrize("how", list(EXITS))
def test_counters_return_to_zero(exit_server: ServerThread, how: str) -> None:
    srv = exit_server
    raws = [Raw(srv.host, srv.port) for _ in range(2)]
    raws[0].login("alice", "secret")
    raws[1].login("alice", "secret")
    anonymous = Raw(srv.host, srv.port)  # connected, never logged in
    assert counters(srv) == (3, {"alice": 2}, 3)
    EXITS[how](raws[0], srv)
    if how not in ("server-shutdown", "idle-timeout"):  # those end every session
        assert wait_until(lambda: counters(srv) == (2, {"alice": 1}, 2))
        raws[1].close()
        anonymous.close()
    assert wait_until(lambda: released(srv))
    for raw in raws:
        raw.close()
    anonymous.close()


def test_counters_after_a_failed_home_at_login() -> None:
    """The home cannot be opened (an exception after the user's slot was taken): PASS
    fails with 451 and the slot is given back."""
    users = [fsftpd.User("boomer", "pw", base_path="memory://boom", maximum_connections=1)]
    with running_server(users, path_io_factory=SlowMemoryPathIO) as srv:
        for _ in range(3):  # would hit maximum_connections=1 if a slot leaked
            with Raw(srv.host, srv.port) as raw:
                assert raw.code("USER boomer") == 331
                code, text = raw.cmd("PASS pw")
                assert code == 451, text
                assert counters(srv) == (1, {}, 1)
        assert wait_until(lambda: released(srv))


def test_many_clients_coming_and_going_leave_nothing_behind(users: list[fsftpd.User]) -> None:
    with running_server(users, maximum_connections=50, maximum_connections_per_ip=50) as srv:
        clients = []
        for i in range(30):
            raw = Raw(srv.host, srv.port)
            if i % 3 == 0:
                raw.login("bob", "pw")
            clients.append(raw)
        for i, raw in enumerate(clients):
            if i % 2:
                raw.reset()
            else:
                raw.close()
        assert wait_until(lambda: released(srv))
        time.sleep(0.1)
        with Raw(srv.host, srv.port) as raw:
            raw.login("bob", "pw")
            data = raw.epsv()
            assert raw.code("LIST") == 150
            recv_all(data)
            assert raw.read()[0] == 226
