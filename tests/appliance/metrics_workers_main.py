"""Two fsftpd workers (``run_workers``) with the metrics sidecar on one shared port, set up
the way the appliance does it (:class:`fsftpd.appliance.sidecar.SidecarPlan`), for
tests/appliance/test_metrics_workers.py.

    python -m tests.appliance.metrics_workers_main ROOT PASSIVE_BASE

Prints ``READY <ftp port> <metrics port>`` once both workers listen."""

from __future__ import annotations

import socket
import sys

import fsftpd
from fsftpd.appliance import sidecar


def main() -> None:
    root, passive_base = sys.argv[1], int(sys.argv[2])
    # The FTP port: reserved like the metrics port (bound with SO_REUSEPORT, not listening).
    ftp_sock = socket.socket()
    ftp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    ftp_sock.bind(("127.0.0.1", 0))
    ftp_port = ftp_sock.getsockname()[1]
    plan = sidecar.SidecarPlan(host="127.0.0.1", port=0, workers=2)
    users = [fsftpd.User("alice", "pw", base_path=root)]
    try:
        fsftpd.run_workers(users, host="127.0.0.1", port=ftp_port, workers=2, setup=plan.setup,
                           passive_ports=range(passive_base, passive_base + 10),
                           ready=lambda: print(f"READY {ftp_port} {plan.port}", flush=True))
    finally:
        plan.close()


if __name__ == "__main__":
    main()
