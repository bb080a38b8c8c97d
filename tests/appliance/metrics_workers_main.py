"""Two fsftpd workers (``run_workers``) with the metrics sidecar on one shared port, for
tests/appliance/test_metrics_workers.py.

    python -m tests.appliance.metrics_workers_main ROOT PASSIVE_BASE

Prints ``READY <ftp port> <metrics port> <metrics dir>`` once both workers listen."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile

import fsftpd
from fsftpd.appliance import sidecar


def reserve() -> socket.socket:
    """A free loopback port, held bound (not listening) with SO_REUSEPORT so the workers
    can all bind it and nobody else takes it meanwhile."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def main() -> None:
    root, passive_base = sys.argv[1], int(sys.argv[2])
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    directory = tempfile.mkdtemp(prefix="fsftpd-metrics-", dir=shm)
    ftp_sock, metrics_sock = reserve(), reserve()
    ftp_port, metrics_port = ftp_sock.getsockname()[1], metrics_sock.getsockname()[1]

    async def setup(server: fsftpd.Server, index: int) -> None:
        await sidecar.install(server, host="127.0.0.1", port=metrics_port, multiprocess_dir=directory,
                              reuse_port=True)

    users = [fsftpd.User("alice", "pw", base_path=root)]
    try:
        fsftpd.run_workers(users, host="127.0.0.1", port=ftp_port, workers=2, setup=setup,
                           passive_ports=range(passive_base, passive_base + 10),
                           ready=lambda: print(f"READY {ftp_port} {metrics_port} {directory}", flush=True))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
