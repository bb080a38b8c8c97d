"""Speed limits in real time, on a real server: a ~2-second transfer lands within ±15% of
the configured rate at each of the four levels and in both directions, two transfers
sharing a level share it fairly, and a limit changed on the running server changes a
running transfer. (The token bucket itself is tested without sleeping in tests/transfer.)

These are the only timed assertions in the suite; they take about 30 s in all.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import fsftpd
from fsftpd.server.events import Event, TransferProgress
from tests.harness import running_server
from tests.server.rawftp import Raw, rst

pytestmark = pytest.mark.timeout(120)

KB = 1000
MB = 1000 * 1000
SECONDS = 2.0  # the nominal length of each timed transfer
TOLERANCE = 0.15


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int) -> bytes:
    """``size`` random bytes, made quickly even for 100 MB (a random megabyte repeated,
    each copy with its own prefix so no two megabytes are equal)."""
    if size <= 4 * MB:
        return os.urandom(size)
    block = os.urandom(1 << 20)
    parts = [i.to_bytes(8, "big") + block[8:] for i in range(size // len(block) + 1)]
    return b"".join(parts)[:size]


def open_data(raw: Raw, *, sndbuf: int | None = None) -> socket.socket:
    code, text = raw.cmd("EPSV")
    assert code == 229, text
    port = int(text.split("|||")[1].split("|")[0])
    sock = socket.socket()
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.settimeout(30)
    sock.connect((raw.host, port))
    return sock


@dataclass
class Timed:
    seconds: float  # from the command to the 226
    data: bytes = b""
    sent_at: float = 0.0  # uploads: when the client had handed its last byte to its socket

    def rate(self, size: int) -> float:
        return size / self.seconds


def download(raw: Raw, name: str, on_progress: Callable[[float, int], None] | None = None) -> Timed:
    data = open_data(raw)
    started = time.monotonic()
    code, text = raw.cmd(f"RETR {name}")
    assert code == 150, text
    chunks = []
    received = 0
    while True:
        chunk = data.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
        if on_progress is not None:
            on_progress(time.monotonic() - started, received)
    data.close()
    code, text = raw.read()
    assert code == 226, text
    return Timed(time.monotonic() - started, b"".join(chunks))


def upload(raw: Raw, name: str, content: bytes, rate: float,
           on_progress: Callable[[float, int], None] | None = None) -> Timed:
    # A client send buffer of ~20 ms of the rate, so what the client has "sent" is about
    # what the server let in (plus the server's receive buffer): that is how we see the
    # client being held back.
    data = open_data(raw, sndbuf=max(32 * 1024, int(rate * 0.02)))
    started = time.monotonic()
    code, text = raw.cmd(f"STOR {name}")
    assert code == 150, text
    view = memoryview(content)
    step = max(16 * 1024, min(256 * 1024, int(rate * 0.005)))
    for offset in range(0, len(view), step):
        data.sendall(view[offset : offset + step])
        if on_progress is not None:
            on_progress(time.monotonic() - started, offset + step)
    sent_at = time.monotonic() - started
    data.close()
    code, text = raw.read()
    assert code == 226, text
    return Timed(time.monotonic() - started, sent_at=sent_at)


def assert_rate(timed: Timed, size: int, limit: float) -> None:
    measured = timed.rate(size)
    assert abs(measured / limit - 1) <= TOLERANCE, (
        f"{size} bytes in {timed.seconds:.3f} s = {measured / KB:.1f} kB/s, limit {limit / KB:.1f} kB/s")


# level -> (where the limit goes, rate in bytes/s). The rates span the range from small
# (100 kB/s) to large (50 MB/s).
LEVELS: dict[str, tuple[str, float]] = {
    "server": ("server", 50 * MB),
    "connection": ("server-per-connection", 1 * MB),
    "user": ("user", 5 * MB),
    "user-connection": ("user-per-connection", 100 * KB),
}


def configure(level: str, direction: str, rate: float,
              home: Path) -> tuple[list[fsftpd.User], dict[str, Any]]:
    key = "write" if direction == "download" else "read"  # the server writes downloads
    where = LEVELS[level][0]
    user_options: dict[str, Any] = {}
    server_options: dict[str, Any] = {}
    if where == "server":
        server_options[f"{key}_speed_limit"] = rate
    elif where == "server-per-connection":
        server_options[f"{key}_speed_limit_per_connection"] = rate
    elif where == "user":
        user_options[f"{key}_speed_limit"] = rate
    else:
        user_options[f"{key}_speed_limit_per_connection"] = rate
    return [fsftpd.User("alice", "secret", base_path=str(home), **user_options)], server_options


@pytest.mark.parametrize("direction", ["download", "upload"])
@pytest.mark.parametrize("level", list(LEVELS))
def test_each_level_holds_a_transfer_to_its_rate(home: Path, level: str, direction: str) -> None:
    rate = LEVELS[level][1]
    size = int(rate * SECONDS)
    content = payload(size)
    users, options = configure(level, direction, rate, home)
    # The other direction is limited too, far lower: a limit applies to its own direction only.
    other = "read" if direction == "download" else "write"
    options.setdefault(f"{other}_speed_limit", 1000)
    with running_server(users, **options) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        if direction == "download":
            (home / "file.bin").write_bytes(content)
            timed = download(raw, "file.bin")
            assert sha256(timed.data) == sha256(content)
        else:
            timed = upload(raw, "file.bin", content, rate)
            assert sha256((home / "file.bin").read_bytes()) == sha256(content)
            if size >= 1 * MB:
                # The client was really held back: it could not dump the file into socket
                # buffers and wait (see the next test for small rates).
                assert timed.sent_at >= 0.5 * timed.seconds, timed
        assert_rate(timed, size, rate)


def test_a_throttled_upload_holds_the_client_back(home: Path, user: fsftpd.User) -> None:
    """At 100 kB/s the client can get ahead of the limit by a bounded amount of socket
    buffering (a few hundred kB), not by megabytes (unfitted buffers let it push 1.5 MB+
    in this test). The server sizes the receive buffer right after accepting the data
    connection; the client starts sending a network round trip after the 150 (0.1 s here),
    as it would over a real network."""
    rate = 100 * KB
    user.read_speed_limit_per_connection = rate
    with running_server([user]) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        data = open_data(raw, sndbuf=32 * 1024)
        assert raw.code("STOR file.bin") == 150
        time.sleep(0.1)
        data.settimeout(0.05)
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            try:
                sent += data.send(b"x" * 16384)
            except TimeoutError:
                pass
        elapsed = time.monotonic() - started
        assert sent >= rate * elapsed * 0.8  # it does move...
        assert sent <= rate * elapsed + 500 * KB  # ...but only as fast as the limit allows
        rst(data)
        assert raw.read()[0] == 426
        assert not (home / "file.bin").exists()


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_two_transfers_sharing_a_level_share_it_fairly(home: Path, direction: str) -> None:
    """alice's two sessions share her user-level limit: each gets half of it."""
    rate = 1 * MB
    size = int(rate / 2 * SECONDS)  # each gets half the rate: both take ~2 s
    key = "write" if direction == "download" else "read"
    user = fsftpd.User("alice", "secret", base_path=str(home), **{f"{key}_speed_limit": rate})
    contents = [payload(size), payload(size)]
    results: list[Timed | None] = [None, None]
    errors: list[BaseException] = []
    with running_server([user]) as srv:
        raws = [Raw(srv.host, srv.port) for _ in range(2)]
        for i, raw in enumerate(raws):
            raw.login("alice", "secret")
            if direction == "download":
                (home / f"f{i}.bin").write_bytes(contents[i])
        barrier = threading.Barrier(2)

        def run(i: int) -> None:
            try:
                barrier.wait()
                if direction == "download":
                    results[i] = download(raws[i], f"f{i}.bin")
                else:
                    results[i] = upload(raws[i], f"f{i}.bin", contents[i], rate / 2)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for raw in raws:
            raw.close()
    assert not errors, errors
    for i, timed in enumerate(results):
        assert timed is not None
        assert_rate(timed, size, rate / 2)
        if direction == "download":
            assert sha256(timed.data) == sha256(contents[i])
        else:
            assert sha256((home / f"f{i}.bin").read_bytes()) == sha256(contents[i])


def test_raising_a_server_limit_speeds_up_a_running_download(home: Path, user: fsftpd.User) -> None:
    before, after = 100 * KB, 1 * MB
    size = 600 * KB
    content = payload(size)
    (home / "file.bin").write_bytes(content)
    change: dict[str, float] = {}
    with running_server([user], write_speed_limit=before) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")

        def progress(elapsed: float, received: int) -> None:
            if not change and elapsed >= 1.0:
                srv.call(lambda s: s.set_limits(write_speed_limit=after))
                change.update(at=elapsed, received=received)

        timed = download(raw, "file.bin", progress)
    assert sha256(timed.data) == sha256(content)
    assert change["received"] == pytest.approx(before * change["at"], rel=TOLERANCE)
    expected = change["at"] + (size - change["received"]) / after  # ~1.5 s, not 6 s
    assert abs(timed.seconds / expected - 1) <= TOLERANCE, (timed.seconds, expected, change)


def test_lowering_a_user_limit_slows_down_a_running_upload(home: Path) -> None:
    before, after = 1 * MB, 200 * KB
    size = 1_400 * KB
    content = payload(size)
    user = fsftpd.User("alice", "secret", base_path=str(home), read_speed_limit=before)
    received = 0
    change: dict[str, float] = {}

    def observe(event: Event) -> None:  # runs on the server's loop: the server-side count
        nonlocal received
        if isinstance(event, TransferProgress) and event.direction == "upload":
            received += event.bytes

    with running_server([user]) as srv, Raw(srv.host, srv.port) as raw:
        srv.call(lambda s: s.events.subscribe(observe))
        raw.login("alice", "secret")
        started = time.monotonic()

        def lower(server: fsftpd.Server) -> int:
            user.read_speed_limit = after  # a User attribute, read at every booking
            return received

        def progress(elapsed: float, sent: int) -> None:
            if not change and elapsed >= 1.0:
                change.update(received=srv.call(lower), at=time.monotonic() - started)

        timed = upload(raw, "file.bin", content, after, progress)
    assert sha256((home / "file.bin").read_bytes()) == sha256(content)
    assert change["received"] == pytest.approx(before * change["at"], rel=TOLERANCE)
    expected = change["at"] + (size - change["received"]) / after  # ~3 s, not 1.4 s
    assert abs(timed.seconds / expected - 1) <= TOLERANCE, (timed.seconds, expected, change)
