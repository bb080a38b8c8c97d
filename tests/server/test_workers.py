"""The multi-worker server (``fsftpd.run_workers``), run for real: a supervisor process with
two forked workers sharing one port through SO_REUSEPORT, driven by real clients. The workers
run the event loop the other server tests use (FSFTPD_TEST_LOOP: asyncio, or uvloop).

Which worker holds a session is read from /proc (the worker process owning the server end
of the client's TCP connection), so each limit is checked with sessions known to sit in
*different* workers: a per-worker count would let them through.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fsftpd
from fsftpd.server.workers import passive_slices
from fsftpd.transfer.throttle import SharedTokenBucket
from tests.harness import SERVER_LOOP
from tests.server.rawftp import Raw, wait_until

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="multi-worker mode is Linux only"),
]

HOST = "127.0.0.1"
MB = 1000 * 1000
TOLERANCE = 0.15

SCRIPT = """
import json, logging, os, sys
import fsftpd
logging.basicConfig(level=logging.WARNING)
cfg = json.loads(sys.argv[1])
users = [fsftpd.User(**u) for u in cfg["users"]]

def setup(server, index):  # each worker leaves its index and pid where the test can see them
    if cfg.get("marks"):
        with open(os.path.join(cfg["marks"], f"worker-{index}"), "w") as f:
            f.write(str(os.getpid()))

fsftpd.run_workers(users, host=cfg["host"], port=cfg["port"], workers=cfg["workers"],
                   ready=lambda: print("READY", flush=True), event_loop=cfg["loop"],
                   setup=setup, **cfg["options"])
print("STOPPED", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Workers:
    """A running supervisor (a subprocess) and its workers."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.host = HOST
        self.port = port

    def worker_pids(self) -> set[int]:
        pids = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == self.proc.pid and state != "Z":  # a zombie is a dead worker
                pids.add(int(name))
        return pids

    def worker_of(self, sock: socket.socket) -> int:
        """The worker process holding the server end of the control connection ``sock``."""
        client_port = sock.getsockname()[1]
        for _ in range(100):
            inode = _server_inode(self.port, client_port)
            if inode:
                for pid in self.worker_pids():
                    with contextlib.suppress(OSError):
                        for fd in os.listdir(f"/proc/{pid}/fd"):
                            with contextlib.suppress(OSError):
                                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                                    return pid
            time.sleep(0.02)
        raise AssertionError(f"no worker holds the connection from port {client_port}")

    def connect(self, source: str = HOST) -> Raw:
        raw = Raw.__new__(Raw)
        raw.host = self.host
        raw.sock = socket.create_connection((self.host, self.port), timeout=20, source_address=(source, 0))
        raw.file = raw.sock.makefile("rb")
        raw.greeting = raw.read()
        return raw

    def one_per_worker(self, source: str = HOST) -> dict[int, Raw]:
        """Accepted control connections, one in each worker (extra ones are closed)."""
        found: dict[int, Raw] = {}
        for _ in range(60):
            raw = self.connect(source)
            if raw.greeting[0] != 220:  # a limit still counts a connection closed just now
                raw.close()
                time.sleep(0.05)
                continue
            pid = self.worker_of(raw.sock)
            if pid in found:
                raw.close()
            else:
                found[pid] = raw
            if len(found) == 2:
                return found
        raise AssertionError("SO_REUSEPORT never spread 60 connections over both workers")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def _server_inode(server_port: int, client_port: int) -> int:
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote = parts[1], parts[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return int(parts[9])
    return 0


@contextlib.contextmanager
def run_workers(users: list[dict[str, Any]], workers: int = 2, marks: Path | None = None,
                **options: Any) -> Iterator[Workers]:
    port = free_port()
    cfg = {"users": users, "host": HOST, "port": port, "workers": workers, "options": options,
           "loop": SERVER_LOOP, "marks": str(marks) if marks else None}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(cfg)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", f"supervisor did not start: {line!r}"
        srv = Workers(proc, port)
        assert wait_until(lambda: len(srv.worker_pids()) == workers, timeout=5)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def alice(home: Path, **extra: Any) -> dict[str, Any]:
    return {"login": "alice", "password": "secret", "base_path": str(home), **extra}


# -- connection limits ----------------------------------------------------------------------
def test_server_limit_is_exact_across_workers(home: Path) -> None:
    with run_workers([alice(home)], maximum_connections=3) as srv:
        socks = [socket.create_connection((HOST, srv.port), timeout=10) for _ in range(8)]
        replies = [s.makefile("rb").readline()[:3] for s in socks]
        # 8 connections over 2 workers: counting per worker would let 4 to 6 of them in.
        assert sorted(replies) == [b"220"] * 3 + [b"421"] * 5
        for s in socks:
            s.close()
        # Every count returns to zero: 3 new sessions fit again, and a 4th does not.
        def three_fit() -> bool:
            raws = [srv.connect() for _ in range(3)]
            ok = all(r.greeting[0] == 220 for r in raws)
            for r in raws:
                r.close()
            return ok
        assert wait_until(three_fit, timeout=5)
        held: list[Raw] = []

        def fill() -> bool:  # (the closes just above may still be on their way)
            while len(held) < 3:
                raw = srv.connect()
                if raw.greeting[0] != 220:
                    raw.close()
                    return False
                held.append(raw)
            return True

        assert wait_until(fill, timeout=5)
        fourth = srv.connect()
        assert fourth.greeting[0] == 421
        for r in [*held, fourth]:
            r.close()


def test_per_ip_and_per_user_limits_across_workers(home: Path) -> None:
    with run_workers([alice(home, maximum_connections=2)], maximum_connections_per_ip=2) as srv:
        # Two connections from 127.0.0.2, one in each worker: a third from it is refused
        # (each worker alone holds only one) while other addresses are still welcome.
        spread = srv.one_per_worker("127.0.0.2")
        for _ in range(4):
            extra = srv.connect("127.0.0.2")
            assert extra.greeting[0] == 421, extra.greeting
            assert "your address" in extra.greeting[1]
            extra.close()
        # alice logged in once in each worker: a third login anywhere gets 530.
        for raw in spread.values():
            raw.login("alice", "secret")
        third = srv.connect("127.0.0.3")
        assert third.code("USER alice") == 331
        code, text = third.cmd("PASS secret")
        assert code == 530, text
        assert "too many connections" in text.lower()
        third.close()
        # A session that ends frees its user slot and its address slot.
        first = next(iter(spread.values()))
        assert first.code("QUIT") == 221
        first.close()

        def login_again() -> bool:
            raw = srv.connect("127.0.0.2")
            try:
                if raw.greeting[0] != 220 or raw.code("USER alice") != 331:
                    return False
                return raw.code("PASS secret") == 230
            finally:
                raw.close()

        assert wait_until(login_again, timeout=5)
        for raw in spread.values():
            raw.close()


# -- shared throttles ------------------------------------------------------------------------
def _timed_concurrently(jobs: list[Any]) -> float:
    barrier = threading.Barrier(len(jobs) + 1)
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - start
    assert not errors, errors
    return elapsed


def test_server_speed_limits_are_shared_by_workers(home: Path) -> None:
    rate = 1 * MB
    size = 1 * MB  # two transfers of 1 MB at 1 MB/s in all: 2 s
    data = {name: os.urandom(size) for name in ("a.bin", "b.bin")}
    for name, content in data.items():
        (home / name).write_bytes(content)
    with run_workers([alice(home)], write_speed_limit=rate, read_speed_limit=rate) as srv:
        sessions = list(srv.one_per_worker().values())
        for raw in sessions:
            raw.close()
        # ftplib sessions on both workers: reconnect until each worker has one.
        clients: dict[int, ftplib.FTP] = {}
        for _ in range(60):
            if len(clients) == 2:
                break
            ftp = ftplib.FTP()
            ftp.connect(HOST, srv.port, timeout=20)
            pid = srv.worker_of(ftp.sock)
            if pid in clients:
                ftp.close()
                continue
            ftp.login("alice", "secret")
            clients[pid] = ftp
        ftps = list(clients.values())
        assert len(ftps) == 2, "SO_REUSEPORT never spread the ftplib sessions over both workers"

        # Downloads: the server writes, so the server-wide write limit holds both.
        got: dict[str, bytearray] = {name: bytearray() for name in data}

        def download(ftp: ftplib.FTP, name: str) -> Any:
            return lambda: ftp.retrbinary(f"RETR {name}", got[name].extend)

        elapsed = _timed_concurrently([download(f, n) for f, n in zip(ftps, data, strict=True)])
        for name, content in data.items():
            assert sha256(bytes(got[name])) == sha256(content)
        measured = 2 * size / elapsed
        assert abs(measured - rate) <= TOLERANCE * rate, f"downloads: {measured:.0f} B/s for {rate}"

        # Uploads: the server reads, so the server-wide read limit holds both.
        def upload(ftp: ftplib.FTP, name: str) -> Any:
            import io

            return lambda: ftp.storbinary(f"STOR up-{name}", io.BytesIO(data[name]))

        elapsed = _timed_concurrently([upload(f, n) for f, n in zip(ftps, data, strict=True)])
        for name, content in data.items():
            assert sha256((home / f"up-{name}").read_bytes()) == sha256(content)
        measured = 2 * size / elapsed
        assert abs(measured - rate) <= TOLERANCE * rate, f"uploads: {measured:.0f} B/s for {rate}"
        for ftp in ftps:
            ftp.quit()


def test_shared_bucket_books_one_timeline() -> None:
    """Two buckets over the same cell (as in two workers) add up to one rate (fake clock)."""
    import threading as _t

    now = [100.0]
    cells = [0.0]
    lock = _t.Lock()
    a = SharedTokenBucket(1000, lock=lock, cells=cells, index=0, clock=lambda: now[0], burst=0.0)
    b = SharedTokenBucket(1000, lock=lock, cells=cells, index=0, clock=lambda: now[0], burst=0.0)
    assert a.book(500) == pytest.approx(0.5)
    assert b.book(500) == pytest.approx(1.0)  # b waits behind a's bytes
    assert a.backlog == pytest.approx(1.0)
    now[0] += 5
    assert b.book(100) == pytest.approx(0.1)  # idle time is not saved up
    a.rate = None
    assert a.book(10**9) == 0.0 and cells[0] == 0.0  # unlimited forgets the debt


# -- passive ports ---------------------------------------------------------------------------
def free_port_block(count: int) -> list[int]:
    """``count`` consecutive ports below the ephemeral range (where client sockets of other
    tests and processes cannot be holding them), each free right now."""
    for _ in range(50):
        base = random.randrange(15000, 30000, count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind((HOST, port))
            return list(range(base, base + count))
        except OSError:
            continue
    raise AssertionError("no free block of ports")


def test_passive_ports_come_from_disjoint_slices(home: Path) -> None:
    ports = free_port_block(8)
    slices = [set(s or []) for s in passive_slices(ports, 2)]
    assert slices == [set(ports[0::2]), set(ports[1::2])]
    with run_workers([alice(home)], passive_ports=ports) as srv:
        seen: dict[int, set[int]] = {}
        for pid, raw in srv.one_per_worker().items():
            raw.login("alice", "secret")
            seen[pid] = set()
            for _ in range(8):
                code, text = raw.cmd("EPSV")
                assert code == 229, text
                seen[pid].add(int(text.split("|||")[1].split("|")[0]))
            raw.close()
        first, second = seen.values()
        assert any(first <= s for s in slices) and any(second <= s for s in slices), seen
        assert not first & second, seen


def test_slices_refuse_fewer_ports_than_workers() -> None:
    with pytest.raises(ValueError, match="each worker needs"):
        passive_slices([30000, 30001], 3)


def test_memory_homes_are_refused_with_several_workers() -> None:
    with pytest.raises(ValueError, match="memory://"):
        fsftpd.run_workers([fsftpd.User("u", "p", base_path="memory://x")], host=HOST, port=0, workers=2)


# -- signals and crashes ---------------------------------------------------------------------
def test_sigterm_drains_a_running_transfer(home: Path) -> None:
    content = os.urandom(1500 * 1000)
    (home / "big.bin").write_bytes(content)
    with run_workers([alice(home)], write_speed_limit_per_connection=1 * MB) as srv:
        ftp = ftplib.FTP()
        ftp.connect(HOST, srv.port, timeout=20)
        ftp.login("alice", "secret")
        got = bytearray()
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(ftp.retrbinary("RETR big.bin", got.extend)))
        thread.start()
        assert wait_until(lambda: len(got) > 100_000, timeout=5)
        srv.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                raw = srv.connect()
            except ConnectionError:
                # refused once the listeners are closed, or reset if the connection was queued
                # on a listener that closed before accepting it: either way, no session
                return True
            code = raw.greeting[0]
            raw.close()
            return code == 421

        assert wait_until(refused, timeout=5)  # no new sessions while draining
        assert len(got) < len(content), "the transfer ended before the drain was tested"
        thread.join(20)
        assert result and result[0].startswith("226"), result
        assert sha256(bytes(got)) == sha256(content)
        assert srv.proc.wait(timeout=20) == 0
        assert srv.worker_pids() == set()


def test_killed_worker_is_restarted_and_its_counts_released(home: Path, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def by_index() -> dict[str, int]:
        return {p.name: int(p.read_text() or 0) for p in marks.iterdir()}

    with run_workers([alice(home, maximum_connections=1)], marks=marks, maximum_connections=2) as srv:
        before = srv.worker_pids()
        assert set(by_index().values()) == before  # setup(server, index) ran in each worker
        assert set(by_index()) == {"worker-0", "worker-1"}
        victim = srv.connect()
        victim.login("alice", "secret")
        dead = srv.worker_of(victim.sock)
        indexes = by_index()
        dead_index = next(name for name, pid in indexes.items() if pid == dead)
        os.kill(dead, signal.SIGKILL)
        victim.sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert victim.file.readline() == b""  # its session went with it
        victim.close()
        assert wait_until(lambda: len(srv.worker_pids() - before) == 1, timeout=10)
        reborn = (srv.worker_pids() - before).pop()
        assert srv.worker_pids() == before - {dead} | {reborn}
        # The new worker took the dead one's index (and so its passive-port slice).
        assert wait_until(lambda: by_index()[dead_index] == reborn, timeout=5)
        assert by_index() == {**indexes, dead_index: reborn}
        # alice's slot and the server-wide slot held by the dead worker are free again:
        # alice logs in, and a second connection still fits under maximum_connections=2.
        for _ in range(40):
            first = srv.connect()
            assert first.greeting[0] == 220, first.greeting
            first.login("alice", "secret")
            second = srv.connect()
            assert second.greeting[0] == 220, second.greeting
            on_new = reborn in {srv.worker_of(first.sock), srv.worker_of(second.sock)}
            first.close()
            second.close()
            if on_new:
                break
            time.sleep(0.05)  # let the closes be counted before the next pair
        else:
            raise AssertionError("the restarted worker never served a client")
        assert srv.stop() == 0


def test_cli_workers_option(tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "root"
    (root).mkdir()
    (root / "hello.txt").write_bytes(b"hello\n")
    proc = subprocess.Popen([sys.executable, "-m", "fsftpd", str(root), "--host", HOST, "--port", str(port),
                             "--workers", "2", "--log-level", "WARNING",
                             # no default account any more; any free passive port (not 30000-30009)
                             "--user", "demo", "--password", "demo", "--passive-ports", "any"],
                            env={**os.environ, "FSFTPD_METRICS_PORT": "0"})  # never the fixed 9100
    try:
        srv = Workers(proc, port)  # type: ignore[arg-type]
        assert wait_until(lambda: len(srv.worker_pids()) == 2, timeout=10)

        def fetch() -> bytes | None:
            try:
                ftp = ftplib.FTP()
                ftp.connect(HOST, port, timeout=5)
            except OSError:
                return None
            ftp.login("demo", "demo")
            got = bytearray()
            ftp.retrbinary("RETR hello.txt", got.extend)
            ftp.quit()
            return bytes(got)

        assert wait_until(lambda: fetch() == b"hello\n", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_a_worker_that_cannot_start_stops_the_supervisor(home: Path) -> None:
    with socket.socket() as taken:  # listening without SO_REUSEPORT: the workers cannot join it
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = {"users": [alice(home)], "host": HOST, "port": port, "workers": 2, "options": {},
               "loop": SERVER_LOOP}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cfg)], capture_output=True,
                              text=True, timeout=30)
    assert proc.returncode != 0
    assert "READY" not in proc.stdout
    assert "failed to start" in proc.stderr
    assert "address already in use" in proc.stderr.lower()


def test_limits_set_in_one_worker_apply_to_all(home: Path) -> None:
    """``set_limits`` writes the shared memory every worker reads (one mapping, two views)."""
    from fsftpd.server.config import ServerConfig
    from fsftpd.server.shared import SharedState

    user = fsftpd.User("alice", "secret", base_path=str(home))
    state = SharedState(2, [user], ServerConfig(maximum_connections=5, write_speed_limit=1000))
    try:
        one = fsftpd.Server([user], shared=state.slot(0))
        two = fsftpd.Server([user], shared=state.slot(1))
        assert two.limits.maximum_connections == 5 and two.limits.write_speed_limit == 1000
        one.set_limits(maximum_connections=1, write_speed_limit=None, read_speed_limit=250)
        assert two.limits.maximum_connections == 1
        assert two.limits.write_speed_limit is None
        assert two.limits.read_bucket.rate == 250
        with pytest.raises(ValueError):
            two.set_limits(maximum_connections=-1)
        assert one.limits.maximum_connections == 1
        assert state.slot(0).try_open("10.0.0.1") is None
        refusal = state.slot(1).try_open("10.0.0.2")
        assert refusal is not None and refusal[0] == "server-limit"
        assert state.release_worker(0) == (1, 0)
        assert state.slot(1).try_open("10.0.0.2") is None
    finally:
        state.close()
