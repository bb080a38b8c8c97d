"""Brute force and enumeration: address bans after failed logins (across sessions and
worker processes), the safelist, and logins that tell nothing about which names exist."""

from __future__ import annotations

import ftplib
import socket
import threading
import time
from pathlib import Path

import pytest

import fsftpd
from fsftpd.auth.users import same_secret
from fsftpd.server.bans import BanPolicy, BanTable, Safelist
from tests.appliance.proc import base_env, serving
from tests.harness import running_server
from tests.server.rawftp import Raw, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(threshold: int = 3, window: float = 10, ban: float = 5, cap: float = 18,
          safelist: tuple[str, ...] = ()) -> tuple[BanTable, Clock]:
    clock = Clock()
    return BanTable(BanPolicy(threshold, window, ban, cap), Safelist(safelist), clock=clock), clock


def test_threshold_failures_within_the_window_ban_then_the_ban_ends() -> None:
    bans, clock = table()
    assert bans.failed("10.0.0.1") is None and bans.failed("10.0.0.1") is None
    assert bans.banned("10.0.0.1") is None
    assert bans.failed("10.0.0.1") == 5
    assert bans.banned("10.0.0.1") == pytest.approx(5)
    assert bans.banned("10.0.0.2") is None  # only that address
    assert bans.banned("::ffff:10.0.0.1") is not None  # the same address, IPv4-mapped
    clock.now += 5.01
    assert bans.banned("10.0.0.1") is None


def test_failures_spread_wider_than_the_window_do_not_ban() -> None:
    bans, clock = table()
    for _ in range(10):
        assert bans.failed("10.0.0.1") is None
        clock.now += 6  # two failures per window at most
        assert bans.failed("10.0.0.1") is None
        clock.now += 11


def test_repeat_offenders_get_doubling_bans_up_to_the_cap() -> None:
    bans, clock = table()
    lengths = []
    for _ in range(4):
        for _ in range(3):
            length = bans.failed("10.0.0.9")
        lengths.append(length)
        assert length is not None
        clock.now += length + 0.01
    assert lengths == [5, 10, 18, 18]


def test_the_safelist_is_never_banned() -> None:
    bans, _ = table(safelist=("192.168.0.0/16", "10.0.0.7", "::1"))
    for ip in ("192.168.4.4", "10.0.0.7", "::1", "::ffff:192.168.1.1"):
        for _ in range(10):
            assert bans.failed(ip) is None
        assert bans.banned(ip) is None
    with pytest.raises(ValueError):
        Safelist(["not-an-address"])


def test_many_addresses_never_ban_an_innocent_one() -> None:
    bans, _ = table(threshold=2)
    for i in range(20_000):  # far more than the table holds: old records are evicted
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        bans.failed(ip)
        bans.failed(ip)
    assert bans.banned("172.16.0.1") is None
    assert bans.banned("10.0.78.31") is not None  # among the latest offenders


def test_same_secret() -> None:
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd") and not same_secret("abc", "abcd") and not same_secret("", "x")


# -- over the wire ---------------------------------------------------------------------------
def _fail_login(port: int, host: str = "127.0.0.1") -> tuple[int, str]:
    raw = Raw(host, port)
    try:
        raw.cmd("USER alice")
        return raw.cmd("PASS wrong")
    finally:
        raw.close()


def _greeting(port: int, source: str = "127.0.0.1") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        return s.makefile("rb").readline().decode()


def _second_loopback() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.2, source_address=("127.0.0.2", 0)).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return True


def test_a_banned_address_gets_421_at_connect_and_an_event(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    events: list[fsftpd.ConnectionRefused] = []
    with running_server([user], ban_threshold=3, ban_time=600, failed_login_delay=0) as srv:
        srv.call(lambda s: s.events.subscribe(
            lambda e: events.append(e) if isinstance(e, fsftpd.ConnectionRefused) else None))
        # A session already in (not failing) when the ban starts.
        inside = srv.ftp("alice", "secret")
        assert _fail_login(srv.port)[0] == 530
        assert _fail_login(srv.port)[0] == 530
        code, text = _fail_login(srv.port)  # the third failure within the window
        assert code == 421 and "failed logins" in text
        greeting = _greeting(srv.port)
        assert greeting.startswith("421 ") and "failed logins" in greeting
        assert [e.reason for e in events] == ["banned"]
        with pytest.raises(ftplib.error_temp, match="421"):
            srv.ftp("alice", "secret")  # even the right password: the address is banned
        if _second_loopback():
            assert _greeting(srv.port, "127.0.0.2").startswith("220 ")
        # Sessions already logged in go on (the ban is for new connections and logins).
        assert inside.voidcmd("NOOP").startswith("200")
        inside.close()


def test_a_session_open_before_the_ban_cannot_go_on_guessing(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], ban_threshold=2, failed_login_delay=0, max_login_attempts=10) as srv:
        guesser = Raw("127.0.0.1", srv.port)
        assert guesser.cmd("USER alice")[0] == 331
        assert _fail_login(srv.port)[0] == 530
        assert _fail_login(srv.port)[0] == 421  # banned now
        assert guesser.cmd("PASS secret")[0] == 421  # closed, not even the right password
        guesser.close()


def test_the_ban_ends_after_ban_time(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], ban_threshold=1, ban_time=0.5, failed_login_delay=0) as srv:
        assert _fail_login(srv.port)[0] == 421
        assert wait_until(lambda: _greeting(srv.port).startswith("220 "), timeout=15, interval=0.1)
        srv.ftp("alice", "secret").quit()


def test_a_safelisted_address_is_never_banned(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], ban_threshold=2, failed_login_delay=0,
                        ban_safelist=["127.0.0.0/8"]) as srv:
        for _ in range(6):
            assert _fail_login(srv.port)[0] == 530
        srv.ftp("alice", "secret").quit()


def test_bans_hold_across_worker_processes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = base_env(tmp_path, FSFTPD_USER="alice", FSFTPD_PASSWORD="secret", FSFTPD_WORKERS="2",
                   FSFTPD_PORT=str(port), FSFTPD_METRICS_PORT="0", FSFTPD_BAN_THRESHOLD="4",
                   FSFTPD_MAX_LOGIN_ATTEMPTS="1")
    with serving(env) as proc:
        # The failures land on either worker; the fourth bans the address in both.
        answers = [_fail_login(proc.port)[1] for _ in range(4)]
        assert ["from your address" in a for a in answers] == [False, False, False, True], answers
        # Each new connection lands on either worker (SO_REUSEPORT): every one is refused.
        greetings = [_greeting(proc.port) for _ in range(12)]
        assert all(g.startswith("421 ") for g in greetings), greetings
        pids = proc.output.count("banning 127.0.0.1")
        assert pids == 1


# -- enumeration -------------------------------------------------------------------------------
def test_user_answers_the_same_for_known_and_unknown_names(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], failed_login_delay=0) as srv:
        raw = Raw("127.0.0.1", srv.port)
        known = raw.cmd("USER alice")
        raw.cmd("PASS x")
        unknown = raw.cmd("USER mallory")
        raw.close()
    assert known[0] == unknown[0] == 331
    assert known[1].replace("alice", "NAME") == unknown[1].replace("mallory", "NAME")


def test_an_unknown_user_costs_a_password_check_and_the_same_delay(home: Path) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def check(stored: str, typed: str) -> bool:
        with lock:
            calls.append(typed)
        return same_secret(stored, typed)

    user = fsftpd.User("alice", "secret", base_path=str(home), password_check=check)
    delay = 0.3
    with running_server([user], failed_login_delay=delay, max_login_attempts=10) as srv:
        raw = Raw("127.0.0.1", srv.port)
        answers = {}
        for name in ("alice", "mallory"):
            raw.cmd(f"USER {name}")
            started = time.monotonic()
            answers[name] = raw.cmd(f"PASS guess-{name}")
            assert time.monotonic() - started >= delay * 0.9  # never answered early
        raw.close()
    assert answers["alice"] == answers["mallory"] == (530, "Login incorrect")
    assert calls == ["guess-alice", "guess-mallory"]  # the unknown user's check ran too
