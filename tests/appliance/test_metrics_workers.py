"""Two workers (``fsftpd.run_workers``, on uvloop when installed): one scrape of the shared
metrics port shows the whole server, summed over both workers; when a worker dies its
gauges' share is dropped and its counts stay in the totals."""

from __future__ import annotations

import ftplib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appliance.metrics_helpers import http_get, scrape, value, wait_for
from tests.s3.endpoints import free_port_block

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run_workers is Linux only")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int, int]]:
    base = free_port_block(10)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.appliance.metrics_workers_main", str(tmp_path), str(base)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        _, ftp_port, metrics_port = line.split()
        yield proc, int(ftp_port), int(metrics_port), base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_pids(supervisor: int) -> list[int]:
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
        return [int(pid) for pid in f.read().split()]


def test_one_scrape_sums_both_workers(workers: tuple[subprocess.Popen[str], int, int, int]) -> None:
    proc, ftp_port, metrics_port, base = workers
    sessions: list[tuple[ftplib.FTP, int]] = []  # (client, worker index by its passive port)
    total = 0
    # Worker i offers passive ports base+i, base+i+2, ...: the port tells which worker
    # serves a session. Open sessions until both have some (bounded).
    for n in range(60):
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", ftp_port, timeout=30)
        ftp.login("alice", "pw")
        size = 1000 + n
        ftp.storbinary(f"STOR f{n}", io.BytesIO(os.urandom(size)))
        total += size
        _, port = ftp.makepasv()
        ftp.sendcmd("ABOR")
        sessions.append((ftp, (port - base) % 2))
        if len({index for _, index in sessions}) == 2 and len(sessions) >= 4:
            break
    per_worker = [sum(1 for _, i in sessions if i == w) for w in (0, 1)]
    assert all(per_worker), per_worker

    def whole() -> dict | None:
        s = scrape(metrics_port)
        complete = (value(s, "fsftpd_active_sessions", user="alice") == len(sessions)
                    and value(s, "fsftpd_received_bytes_total", user="alice") == total
                    and value(s, "fsftpd_active_connections") == len(sessions))
        return s if complete else None

    # Every scrape (the kernel picks which worker answers it) shows both workers' sums.
    for _ in range(6):
        s = wait_for(whole)
        assert value(s, "fsftpd_transfers_total", user="alice", direction="upload",
                     result="ok") == len(sessions)
        assert value(s, "fsftpd_passive_ports_available") == 10
        assert value(s, "fsftpd_storage_operation_duration_seconds_count", backend="file",
                     operation="open_write") == len(sessions)
    loops = {dict(labels)["event_loop"].split()[0] for name, labels in s if name == "fsftpd_server_info"}
    assert loops <= {"uvloop", "asyncio"} and loops
    assert http_get(metrics_port, "/healthz")[0] == 200
    assert http_get(metrics_port, "/readyz")[0] == 200

    # A worker dies: its sessions go, its gauges' share is dropped, its counts stay.
    victim = worker_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    alive = []
    for ftp, _index in sessions:
        try:
            ftp.voidcmd("NOOP")
            alive.append(ftp)
        except (OSError, EOFError, ftplib.Error):
            ftp.close()
    assert 0 < len(alive) < len(sessions)

    def after() -> dict | None:
        s = scrape(metrics_port)
        dropped = (value(s, "fsftpd_active_sessions", user="alice") == len(alive)
                   and value(s, "fsftpd_active_connections") == len(alive))
        return s if dropped else None

    s = wait_for(after)
    assert value(s, "fsftpd_received_bytes_total", user="alice") == total
    assert value(s, "fsftpd_sessions_total", user="alice") == len(sessions)
    wait_for(lambda: http_get(metrics_port, "/healthz")[0] == 200)
    for ftp in alive:
        ftp.quit()
