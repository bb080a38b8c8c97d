"""The library hooks the appliance uses: Server.set_users on a running server, a pluggable
password check run off the event loop, passive_ports checks, the passive address by DNS
name (re-resolved at most every 30 s)."""

from __future__ import annotations

import asyncio
import ftplib
import threading
from pathlib import Path

import pytest

import fsftpd
from fsftpd.server.masquerade import TTL, PassiveAddress
from tests.harness import running_server


def test_set_users_keeps_sessions_and_changes_logins(tmp_path: Path) -> None:
    alice = fsftpd.User("alice", "a1", base_path=str(tmp_path / "a"))
    bob = fsftpd.User("bob", "b1", base_path=str(tmp_path / "b"))
    with running_server([alice, bob]) as srv:
        session = srv.ftp("alice", "a1")
        carol = fsftpd.User("carol", "c1", base_path=str(tmp_path / "c"))
        new_bob = fsftpd.User("bob", "b2", base_path=str(tmp_path / "b"))
        srv.call(lambda s: s.set_users([new_bob, carol]))
        assert srv.ftp("carol", "c1").quit().startswith("221")
        assert srv.ftp("bob", "b2").quit().startswith("221")
        for name, password in (("alice", "a1"), ("bob", "b1")):
            with pytest.raises(ftplib.error_perm, match=r"^530"):
                srv.ftp(name, password)
        assert session.pwd() == "/"  # still logged in as the removed user
        session.quit()
        assert srv.call(lambda s: s.users.sessions) == {}


def test_password_check_runs_in_a_thread(tmp_path: Path) -> None:
    threads: list[str] = []

    def check(stored: str, typed: str) -> bool:
        threads.append(threading.current_thread().name)
        return typed == stored.removeprefix("hash:")

    user = fsftpd.User("h", "hash:pw", base_path=str(tmp_path), password_check=check)
    with running_server([user]) as srv:
        assert srv.ftp("h", "pw").quit().startswith("221")
        assert srv.ftp("h", "pw").quit().startswith("221")  # storage ready: still a thread
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            srv.ftp("h", "hash:pw")
    assert len(threads) == 3
    assert "fsftpd-test-server" not in threads  # never the event loop's thread


@pytest.mark.parametrize("ports", [[], range(30010, 30000), [0], [70000], range(65530, 65540)])
def test_unusable_passive_ports_are_refused(ports: list[int] | range) -> None:
    with pytest.raises(ValueError, match="passive_ports"):
        fsftpd.Server([], passive_ports=ports)


async def test_passive_address_by_name_is_resolved_at_most_every_ttl() -> None:
    now = [1000.0]
    address = PassiveAddress("localhost", clock=lambda: now[0])
    assert address.current("10.0.0.1") == "10.0.0.1"  # not resolved yet: the control address
    first = address._refreshing
    assert first is not None  # ...and a lookup started in the background
    await asyncio.wait([first])
    assert address.current("10.0.0.1") == "127.0.0.1"
    address.configured = "nonexistent.invalid"  # a lookup now would fail and keep the old one
    now[0] += TTL / 2
    assert address.current("10.0.0.1") == "127.0.0.1"
    assert address._refreshing is first  # no new lookup before the TTL
    now[0] += TTL
    assert address.current("10.0.0.1") == "127.0.0.1"
    second = address._refreshing
    assert second is not None and second is not first  # a background lookup; the reply did not wait
    await asyncio.wait([second])
    assert address.current("10.0.0.1") == "127.0.0.1"  # the failure kept the last address
    await address.close()
    assert PassiveAddress("192.0.2.7").current("10.0.0.1") == "192.0.2.7"
    assert PassiveAddress(None).current("10.0.0.1") == "10.0.0.1"
