"""Out of file descriptors: a real ``fsftpd`` under a low ``ulimit -n`` and a flood of
connections. The accept path must pause (not spin, not flood the log), the sessions already
in must go on, and a normal client must be served once the flood is over; with the
appliance's ``auto`` cap the flood gets 421 before descriptors run out at all."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.appliance.proc import FSFTPD, base_env, wait_until

NOFILE = 128
FLOOD = 300


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))  # the hard one too: no raising


class LowLimitServer:
    def __init__(self, tmp: Path, **extra: str) -> None:
        self.log_path = tmp / "fsftpd.log"
        env = base_env(tmp, FSFTPD_USER="alice", FSFTPD_PASSWORD="secret", FSFTPD_METRICS_PORT="0",
                       **extra)
        self.log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen([FSFTPD], env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, preexec_fn=_limit_descriptors)
        self.port = 0
        wait_until(self._ready, timeout=30, what="the server to be ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.text()
        match = re.search(r"fsftpd ready on port (\d+)", self.text())
        if match:
            self.port = int(match.group(1))
        return bool(match)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def size(self) -> int:
        return self.log_path.stat().st_size

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def low_limit_server(tmp: Path, **extra: str) -> Iterator[LowLimitServer]:
    srv = LowLimitServer(tmp, **extra)
    try:
        yield srv
    finally:
        srv.stop()


@contextlib.contextmanager
def flood(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.settimeout(10)
            s.connect(("127.0.0.1", port))  # completes in the kernel's backlog even unaccepted
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _round_trip(port: int, payload: bytes) -> bytes:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=15)
    try:
        ftp.login("alice", "secret")
        ftp.storbinary("STOR check.bin", io.BytesIO(payload))
        out = io.BytesIO()
        ftp.retrbinary("RETR check.bin", out.write)
        ftp.quit()
    finally:
        ftp.close()
    return out.getvalue()


def _served(port: int, payload: bytes) -> bool:
    try:
        return _round_trip(port, payload) == payload
    except (OSError, EOFError, ftplib.Error):
        return False


def test_out_of_descriptors_pauses_accepting_and_recovers(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    with low_limit_server(tmp_path, FSFTPD_MAXIMUM_CONNECTIONS="none",
                          FSFTPD_MAXIMUM_CONNECTIONS_PER_IP="none") as srv:
        inside = ftplib.FTP()
        inside.connect("127.0.0.1", srv.port, timeout=15)
        inside.login("alice", "secret")
        with flood(srv.port, FLOOD):
            wait_until(lambda: "cannot accept connections" in srv.text(), timeout=30,
                       what="the descriptor shortage")
            size, cpu, started = srv.size(), srv.cpu_seconds(), time.monotonic()
            # While descriptors are out, the session already in is served.
            for _ in range(20):
                assert inside.voidcmd("NOOP").startswith("200")
            # Hold the flood for a while (bounded): the server must neither spin nor log in a loop.
            wait_until(lambda: time.monotonic() - started > 3, timeout=10, what="3 s of flood")
            grown, used = srv.size() - size, srv.cpu_seconds() - cpu
            held = time.monotonic() - started
        # Bounded: a few lines (a session admitted when a descriptor frees up, the one
        # shortage line per 10 s); the bug wrote 4.5 MB per second.
        assert grown < 20_000, f"log grew {grown} bytes in {held:.1f} s of shortage:\n{srv.text()[-3000:]}"
        assert used < 0.5 * held, f"{used:.2f} s of CPU in {held:.1f} s: the accept path spins"
        assert srv.text().count("cannot accept connections") <= 2 + int(held / 10)
        # The flood is over: a normal client is served again (bounded wait).
        wait_until(lambda: _served(srv.port, payload), timeout=60, what="a normal client to be served")
        assert hashlib.sha256((tmp_path / "home" / "check.bin").read_bytes()).digest() == \
            hashlib.sha256(payload).digest()
        assert inside.voidcmd("NOOP").startswith("200")
        inside.close()


def test_the_auto_cap_refuses_with_421_before_descriptors_run_out(tmp_path: Path) -> None:
    payload = os.urandom(100_000)
    with low_limit_server(tmp_path) as srv:
        cap = (NOFILE - 64) // 4
        with flood(srv.port, FLOOD) as socks:
            greetings = []
            for s in socks:
                try:
                    greetings.append(s.recv(200)[:3])
                except OSError:
                    greetings.append(b"")
        assert greetings.count(b"220") == cap
        assert greetings.count(b"421") == FLOOD - cap
        assert "cannot accept connections" not in srv.text()
        assert "Too many connections" in srv.text()
        wait_until(lambda: _served(srv.port, payload), timeout=60, what="a normal client to be served")
