"""Passive ports are a shared, small resource: unused listeners expire, PASV tries every free
port of the range before 425, and the data-channel switches (peer check, active mode)."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.harness import running_server
from tests.server.rawftp import Raw, recv_all, wait_until


def free_ports(count: int) -> list[int]:
    """``count`` ports free right now on 127.0.0.1 (bound then released)."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pasv_port(reply: str) -> int:
    match = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply)
    assert match, reply
    return int(match.group(5)) * 256 + int(match.group(6))


@contextlib.contextmanager
def sessions(port: int, count: int) -> Iterator[list[Raw]]:
    raws = [Raw("127.0.0.1", port) for _ in range(count)]
    try:
        for raw in raws:
            raw.login("alice", "secret")
        yield raws
    finally:
        for raw in raws:
            raw.close()


def test_idle_passive_listeners_expire_and_their_ports_come_back(home: Path) -> None:
    ports = free_ports(3)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], passive_ports=ports, passive_timeout=0.5) as srv, \
            sessions(srv.port, 4) as raws:
        held = set()
        for raw in raws[:3]:
            code, text = raw.cmd("PASV")
            assert code == 227
            held.add(pasv_port(text))
        assert held == set(ports)  # every port of the range was tried and handed out
        code, text = raws[3].cmd("PASV")
        assert code == 425 and "busy" in text
        # The three listeners nobody uses close after passive_timeout: the range is free again.
        assert wait_until(lambda: raws[3].cmd("PASV")[0] == 227, timeout=15, interval=0.2)
        # An expired listener refuses connections, and a transfer command needs a new PASV.
        assert raws[0].cmd("RETR nothing")[0] == 425


def test_pasv_finds_the_one_free_port_of_a_mostly_busy_range(home: Path) -> None:
    ports = free_ports(8)
    blockers = []
    for port in ports[:-1]:  # another program holds all but one port
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen(1)
        blockers.append(s)
    (home / "f.bin").write_bytes(b"x" * 1000)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    try:
        with running_server([user], passive_ports=ports) as srv, sessions(srv.port, 1) as (raw,):
            for _ in range(30):
                code, text = raw.cmd("PASV")
                assert code == 227 and pasv_port(text) == ports[-1]
            data = socket.create_connection(("127.0.0.1", ports[-1]), timeout=10)
            assert raw.cmd("RETR f.bin")[0] == 150
            assert recv_all(data) == b"x" * 1000
            assert raw.read()[0] == 226
    finally:
        for s in blockers:
            s.close()


def test_a_passive_listener_in_use_is_not_expired(home: Path) -> None:
    (home / "f.bin").write_bytes(b"y" * 5000)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], passive_timeout=2) as srv, sessions(srv.port, 1) as (raw,):
        for _ in range(5):
            data = raw.epsv()
            assert raw.cmd("RETR f.bin")[0] == 150
            assert recv_all(data) == b"y" * 5000
            assert raw.read()[0] == 226


def test_active_mode_off_answers_502(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], active_mode=False) as srv, sessions(srv.port, 1) as (raw,):
        assert raw.cmd("PORT 127,0,0,1,200,10")[0] == 502
        assert raw.cmd("EPRT |1|127.0.0.1|51210|")[0] == 502
        assert raw.cmd("PASV")[0] == 227  # passive mode still works


def _other_loopback_connect(port: int) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    return s


@pytest.mark.parametrize("check", [True, False])
def test_passive_peer_check(home: Path, check: bool) -> None:
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.1, source_address=("127.0.0.2", 0)).close()
    except ConnectionRefusedError:
        pass
    except OSError:
        pytest.skip("127.0.0.2 is not usable here")
    (home / "f.bin").write_bytes(b"z" * 3000)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], passive_peer_check=check, wait_future_timeout=1) as srv, \
            sessions(srv.port, 1) as (raw,):
        _, text = raw.cmd("PASV")
        data = _other_loopback_connect(pasv_port(text))
        assert raw.cmd("RETR f.bin")[0] == 150
        if check:
            # The stranger's connection is dropped, the client never came: 425.
            assert recv_all(data) == b""
            assert raw.read()[0] == 425
        else:
            assert recv_all(data) == b"z" * 3000
            assert raw.read()[0] == 226
        data.close()
