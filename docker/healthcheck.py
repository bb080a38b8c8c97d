"""The image's HEALTHCHECK: exit 0 when fsftpd is alive, 1 when not.

GET ``/healthz`` on the metrics sidecar at 127.0.0.1:``FSFTPD_METRICS_PORT`` (default 9100),
or at ``FSFTPD_METRICS_HOST`` when that names one address rather than a wildcard. With the
sidecar switched off (``FSFTPD_METRICS_PORT=0``) the FTP control port ``FSFTPD_PORT``
(default 2121) must greet with ``220`` instead. Standard library only: the image has no curl.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

TIMEOUT = 4.0
WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def target_host(variable: str) -> str:
    host = os.environ.get(variable, "").strip()
    if host in WILDCARDS or "," in host or " " in host:
        return "127.0.0.1"
    return host.strip("[]")


def check_http(host: str, port: int) -> bool:
    url_host = f"[{host}]" if ":" in host else host
    with urllib.request.urlopen(f"http://{url_host}:{port}/healthz", timeout=TIMEOUT) as reply:
        return 200 <= int(reply.status) < 300


def check_ftp(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        return sock.recv(4).startswith(b"220")


def main() -> int:
    try:
        metrics_port = int(os.environ.get("FSFTPD_METRICS_PORT", "9100") or "9100")
        if metrics_port:
            healthy = check_http(target_host("FSFTPD_METRICS_HOST"), metrics_port)
        else:
            healthy = check_ftp(target_host("FSFTPD_HOST"), int(os.environ.get("FSFTPD_PORT", "2121")))
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
