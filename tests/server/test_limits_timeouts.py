"""Timeouts on a real server: idle_timeout (421 and close; a running transfer is not idle),
path_timeout (451 through a deliberately slow storage backend, and the server stays
healthy), wait_future_timeout (425 when the data connection never comes) and
socket_timeout (426 on a stalled data connection)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import fsftpd
from fsftpd.protocol.listing import Entry
from fsftpd.storage.base import ReadStream, WriteStream
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all, rst, wait_until

pytestmark = pytest.mark.timeout(60)

SLOW = 30.0  # how long a "slow" storage call would take if nothing cut it short


class SlowMemoryPathIO(fsftpd.MemoryPathIO):
    """A fault-injecting memory backend: once a marker is armed, a path containing it makes
    one kind of call hang (``stat-slow``, ``mkd-slow``, ``list-slow``); files named
    ``read-slow``/``write-slow`` hang after their first block; ``boom`` raises a bug-like
    exception. Everything else is plain memory storage."""

    armed: set[str] = set()

    async def stat(self, path: str) -> Entry:
        await _maybe(path, "stat-slow")
        return await super().stat(path)

    async def mkdir(self, path: str) -> None:
        await _maybe(path, "mkd-slow")
        await super().mkdir(path)

    async def list(self, path: str) -> AsyncIterator[Entry]:  # type: ignore[override]
        async for entry in super().list(path):
            await _maybe(path, "list-slow")
            yield entry

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        stream = await super().open_read(path, offset)
        return SlowReadStream(stream) if "read-slow" in path else stream

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        stream = await super().open_write(path, offset=offset, append=append)
        return SlowWriteStream(stream) if "write-slow" in path else stream

    async def ensure_root(self) -> None:
        if "boom" in self._root:
            raise RuntimeError("injected failure while opening the home")
        await super().ensure_root()


async def _maybe(path: str, marker: str) -> None:
    if "boom" in path:
        raise RuntimeError("injected bug in the storage backend")
    if marker in path and marker in SlowMemoryPathIO.armed:
        await asyncio.sleep(SLOW)


class SlowReadStream(ReadStream):
    """The first block comes at once (the transfer really starts), then reads hang."""

    def __init__(self, inner: ReadStream) -> None:
        self.inner = inner
        self.block_size = inner.block_size
        self.reads = 0

    async def read(self, size: int) -> bytes:
        self.reads += 1
        if self.reads > 1:
            await asyncio.sleep(SLOW)
        return await self.inner.read(size)

    async def close(self) -> None:
        await self.inner.close()


class SlowWriteStream(WriteStream):
    def __init__(self, inner: WriteStream) -> None:
        self.inner = inner

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await asyncio.sleep(SLOW)
        await self.inner.write(data)

    async def commit(self) -> None:
        await self.inner.commit()

    async def abort(self) -> None:
        await self.inner.abort()


def data_port(text: str) -> int:
    m = re.search(r"\(\|\|\|(\d+)\|\)", text)
    assert m, text
    return int(m.group(1))


def counters(srv: ServerThread) -> tuple[int, dict[str, int], int]:
    return srv.call(lambda s: (len(s.connections), dict(s.users.sessions), s.per_ip_count("127.0.0.1")))


def all_released(srv: ServerThread) -> bool:
    return counters(srv) == (0, {}, 0)


def expect_closed(raw: Raw) -> None:
    """The server closed the control connection: EOF (or a reset) on the next read."""
    raw.sock.settimeout(5)
    try:
        assert raw.file.readline() == b""
    except ConnectionResetError:
        pass


# -- idle_timeout ---------------------------------------------------------------------------

@pytest.fixture
def idle_server(user: fsftpd.User) -> Iterator[ServerThread]:
    with running_server([user], idle_timeout=1.0) as srv:
        yield srv


@pytest.mark.parametrize("logged_in", [True, False])
def test_idle_client_gets_421_and_is_disconnected(idle_server: ServerThread, logged_in: bool) -> None:
    with Raw(idle_server.host, idle_server.port) as raw:
        if logged_in:
            raw.login("alice", "secret")
        started = time.monotonic()
        code, text = raw.read()  # say nothing; the next thing the server says is 421
        waited = time.monotonic() - started
        assert code == 421, text
        assert "idle" in text.lower()
        assert waited >= 0.9
        expect_closed(raw)
    assert wait_until(lambda: all_released(idle_server))


def test_half_an_over_long_line_then_silence_is_idle_too(idle_server: ServerThread) -> None:
    with Raw(idle_server.host, idle_server.port) as raw:
        raw.sock.sendall(b"X" * 20_000)  # over the line limit, and never a newline
        code, text = raw.read()
        assert code == 500, text
        code, text = raw.read()
        assert code == 421, text
        expect_closed(raw)
    assert wait_until(lambda: all_released(idle_server))


def test_commands_reset_the_idle_timer(idle_server: ServerThread) -> None:
    with Raw(idle_server.host, idle_server.port) as raw:
        raw.login("alice", "secret")
        for _ in range(4):  # 2 s in all, never 1 s of silence
            time.sleep(0.5)
            assert raw.code("NOOP") == 200
        assert raw.code("QUIT") == 221


def test_a_running_transfer_is_not_idle(home: Path) -> None:
    payload = os.urandom(500_000)
    (home / "big.bin").write_bytes(payload)
    user = fsftpd.User("alice", "secret", base_path=str(home), write_speed_limit_per_connection=200_000)
    with running_server([user], idle_timeout=1.0) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        code, text = raw.cmd("RETR big.bin")
        assert code == 150, text
        received = recv_all(data)  # about 2.5 s at 200 kB/s: longer than the idle timeout
        code, text = raw.read()
        ended = time.monotonic()
        assert code == 226, text
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
        # Idle time counts from the end of the transfer, not from the RETR.
        code, text = raw.read()
        assert code == 421, text
        assert time.monotonic() - ended >= 0.9
        expect_closed(raw)
        assert wait_until(lambda: all_released(srv))


# -- path_timeout ---------------------------------------------------------------------------

@pytest.fixture
def slow_server() -> Iterator[ServerThread]:
    users = [fsftpd.User("alice", "secret", base_path="memory://alice"),
             fsftpd.User("boomer", "secret", base_path="memory://boom")]
    SlowMemoryPathIO.armed.clear()
    try:
        with running_server(users, path_io_factory=SlowMemoryPathIO, path_timeout=0.5) as srv:
            yield srv
    finally:
        SlowMemoryPathIO.armed.clear()


def store(raw: Raw, name: str, payload: bytes) -> None:
    data = raw.epsv()
    code, text = raw.cmd(f"STOR {name}")
    assert code == 150, text
    data.sendall(payload)
    data.close()
    code, text = raw.read()
    assert code == 226, text


def retrieve(raw: Raw, name: str) -> bytes:
    data = raw.epsv()
    code, text = raw.cmd(f"RETR {name}")
    assert code == 150, text
    received = recv_all(data)
    code, text = raw.read()
    assert code == 226, text
    return received


def names(raw: Raw) -> set[str]:
    data = raw.epsv()
    code, text = raw.cmd("NLST")
    assert code == 150, text
    listing = recv_all(data).decode()
    assert raw.read()[0] == 226
    return set(listing.split())


def assert_healthy(raw: Raw, srv: ServerThread) -> None:
    """After a timeout the session and the server go on as if nothing happened."""
    assert raw.code("NOOP") == 200
    store(raw, "after.txt", b"still fine")
    assert retrieve(raw, "after.txt") == b"still fine"
    with Raw(srv.host, srv.port) as other:
        other.login("alice", "secret")
        assert retrieve(other, "after.txt") == b"still fine"
        assert other.code("QUIT") == 221


@pytest.mark.parametrize(("command", "seed"), [
    ("SIZE stat-slow.txt", "stat-slow.txt"),
    ("MDTM stat-slow.txt", "stat-slow.txt"),
    ("CWD stat-slow", None),
    ("MKD mkd-slow", None),
    ("RETR stat-slow.txt", "stat-slow.txt"),
    ("DELE stat-slow.txt", "stat-slow.txt"),
])
def test_a_hanging_storage_call_gets_451_and_the_server_stays_healthy(
        slow_server: ServerThread, command: str, seed: str | None) -> None:
    with Raw(slow_server.host, slow_server.port) as raw:
        raw.login("alice", "secret")
        if seed:
            store(raw, seed, b"x" * 100)
        SlowMemoryPathIO.armed.update({"stat-slow", "mkd-slow"})
        if command.startswith("RETR"):
            raw.cmd("EPSV")
        started = time.monotonic()
        code, text = raw.cmd(command)
        assert code == 451, text
        assert "timed out" in text.lower()
        assert time.monotonic() - started < SLOW / 2  # cut short, not waited out
        assert_healthy(raw, slow_server)
        assert raw.code("QUIT") == 221
    assert wait_until(lambda: all_released(slow_server))


def test_a_download_whose_reads_hang_ends_with_451(slow_server: ServerThread) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # several blocks: the first goes, the next hangs
    with Raw(slow_server.host, slow_server.port) as raw:
        raw.login("alice", "secret")
        store(raw, "read-slow.bin", payload)
        data = raw.epsv()
        code, text = raw.cmd("RETR read-slow.bin")
        assert code == 150, text
        received = recv_all(data)
        code, text = raw.read()
        assert code == 451, text
        assert 0 < len(received) < len(payload)
        assert_healthy(raw, slow_server)


def test_an_upload_whose_writes_hang_ends_with_451_and_leaves_nothing(slow_server: ServerThread) -> None:
    with Raw(slow_server.host, slow_server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        code, text = raw.cmd("STOR write-slow.bin")
        assert code == 150, text
        data.sendall(os.urandom(2 * 1024 * 1024))
        data.close()
        code, text = raw.read()
        assert code == 451, text
        assert "write-slow.bin" not in names(raw)
        assert not any(name.startswith(".fsftpd") for name in names(raw))
        assert_healthy(raw, slow_server)


def test_a_listing_that_hangs_ends_with_451(slow_server: ServerThread) -> None:
    with Raw(slow_server.host, slow_server.port) as raw:
        raw.login("alice", "secret")
        assert raw.code("MKD list-slow") == 257
        store(raw, "list-slow/a.txt", b"a")
        SlowMemoryPathIO.armed.add("list-slow")
        data = raw.epsv()
        code, text = raw.cmd("LIST list-slow")
        assert code == 150, text
        recv_all(data)
        code, text = raw.read()
        assert code == 451, text
        assert_healthy(raw, slow_server)


def test_a_pattern_over_a_listing_that_hangs_is_451_before_150(slow_server: ServerThread) -> None:
    # A pattern is matched before 150 (a pattern matching nothing must be refused like a
    # missing name): each step of that scan is bounded by path_timeout like any listing's.
    with Raw(slow_server.host, slow_server.port) as raw:
        raw.login("alice", "secret")
        assert raw.code("MKD list-slow") == 257
        store(raw, "list-slow/a.txt", b"a")
        SlowMemoryPathIO.armed.add("list-slow")
        data = raw.epsv()
        code, text = raw.cmd("NLST list-slow/*.txt")
        assert code == 451, text
        data.close()
        assert_healthy(raw, slow_server)


def test_a_storage_bug_gets_451_and_the_session_goes_on(slow_server: ServerThread) -> None:
    with Raw(slow_server.host, slow_server.port) as raw:
        raw.login("alice", "secret")
        code, text = raw.cmd("SIZE boom.txt")
        assert code == 451, text
        assert_healthy(raw, slow_server)


# -- wait_future_timeout --------------------------------------------------------------------

@pytest.fixture
def waiting_server(user: fsftpd.User, home: Path) -> Iterator[ServerThread]:
    (home / "file.txt").write_bytes(b"hello")
    with running_server([user], wait_future_timeout=0.5) as srv:
        yield srv


@pytest.mark.parametrize("command", ["RETR file.txt", "STOR new.txt", "LIST", "NLST", "MLSD"])
def test_425_when_the_client_never_opens_the_passive_connection(
        waiting_server: ServerThread, home: Path, command: str) -> None:
    with Raw(waiting_server.host, waiting_server.port) as raw:
        raw.login("alice", "secret")
        code, text = raw.cmd("EPSV")
        assert code == 229, text
        port = data_port(text)
        code, text = raw.cmd(command)
        assert code == 150, text
        code, text = raw.read()
        assert code == 425, text
        # The passive port is closed again and nothing was created.
        with pytest.raises(OSError):
            socket.create_connection((waiting_server.host, port), timeout=2).close()
        assert not (home / "new.txt").exists()
        assert raw.code("NOOP") == 200
        # The next transfer works normally.
        data = raw.epsv()
        assert raw.code("RETR file.txt") == 150
        assert recv_all(data) == b"hello"
        assert raw.read()[0] == 226


def test_425_when_the_active_connection_cannot_be_made_in_time(waiting_server: ServerThread) -> None:
    # A listener whose accept queue is full: the kernel drops the server's SYNs, so its
    # connect hangs (neither accepted nor refused) until wait_future_timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.2)
    try:
        with Raw(waiting_server.host, waiting_server.port) as raw:
            raw.login("alice", "secret")
            port = listener.getsockname()[1]
            assert raw.code(f"EPRT |1|127.0.0.1|{port}|") == 200
            started = time.monotonic()
            code, text = raw.cmd("RETR file.txt")
            assert code == 150, text
            code, text = raw.read()
            assert code == 425, text
            assert time.monotonic() - started < 5
            assert raw.code("NOOP") == 200
    finally:
        for s in fillers:
            s.close()
        listener.close()


# -- socket_timeout -------------------------------------------------------------------------

@pytest.fixture
def stall_server(user: fsftpd.User, home: Path) -> Iterator[ServerThread]:
    with running_server([user], socket_timeout=0.5, idle_timeout=30) as srv:
        yield srv


def test_stalled_upload_gets_426_and_leaves_no_file(stall_server: ServerThread, home: Path) -> None:
    with Raw(stall_server.host, stall_server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.code("STOR stalled.bin") == 150
        data.sendall(b"x" * 10_000)  # some data, then silence with the connection open
        code, text = raw.read()
        assert code == 426, text
        data.close()
        assert not (home / "stalled.bin").exists()
        assert [p.name for p in home.iterdir()] == []
        assert raw.code("NOOP") == 200


def test_stalled_download_gets_426(stall_server: ServerThread, home: Path) -> None:
    with open(home / "huge.bin", "wb") as f:
        f.truncate(64 * 1024 * 1024)  # more than every socket buffer on the way
    with Raw(stall_server.host, stall_server.port) as raw:
        raw.login("alice", "secret")
        code, text = raw.cmd("EPSV")
        data = socket.socket()
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data.connect((stall_server.host, data_port(text)))
        assert raw.code("RETR huge.bin") == 150
        code, text = raw.read()  # the client never reads: the server's sends stall
        assert code == 426, text
        rst(data)
        assert raw.code("NOOP") == 200
        assert raw.code("QUIT") == 221
    assert wait_until(lambda: all_released(stall_server))


def test_a_slow_but_steady_client_is_not_cut_off(user: fsftpd.User, home: Path) -> None:
    """socket_timeout bounds each stall, not the whole transfer: 1.5 s throttled transfers
    with a 0.5 s socket_timeout complete."""
    payload = os.urandom(300_000)
    (home / "f.bin").write_bytes(payload)
    with running_server([user], socket_timeout=0.5, write_speed_limit=200_000,
                        read_speed_limit=200_000) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        assert retrieve(raw, "f.bin") == payload
        store(raw, "g.bin", payload)
        assert (home / "g.bin").read_bytes() == payload


def test_a_client_that_stops_reading_replies_is_disconnected(stall_server: ServerThread) -> None:
    """Pipelined commands whose replies are never read: once the server's buffers are full
    its reply stalls, and after socket_timeout the control connection is dropped."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((stall_server.host, stall_server.port))
    try:
        sock.sendall(b"USER alice\r\nPASS secret\r\n")
        sock.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(OSError):  # TimeoutError once nobody reads our commands any more
            while time.monotonic() - started < 20:
                sock.send(b"HELP\r\n" * 100)
        # The client never closed anything: the server let go by itself.
        assert wait_until(lambda: all_released(stall_server))
    finally:
        sock.close()
