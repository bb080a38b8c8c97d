"""The sidecar through a real ``fsftpd`` process configured by FSFTPD_METRICS_*: served by
the runner's per-worker seam, one process and two workers, per-user labels on and off,
port 0 switching it off, a port in use stopping the start (exit 2, one line)."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.appliance.metrics_helpers import http_get, raw_metrics, scrape, value, wait_for
from tests.appliance.proc import Fsftpd, base_env, run
from tests.s3.endpoints import free_port


def env_for(tmp_path: Path, metrics_port: int, **extra: str) -> dict[str, str]:
    return base_env(tmp_path, FSFTPD_USER="alice", FSFTPD_PASSWORD="secret-pw",
                    FSFTPD_METRICS_PORT=str(metrics_port), FSFTPD_METRICS_HOST="127.0.0.1", **extra)


def test_single_process_serves_metrics_health_and_readiness(tmp_path: Path) -> None:
    port = free_port()
    with Fsftpd(env_for(tmp_path, port)) as proc:
        proc.wait_for(rf"metrics and health on port {port}")
        assert http_get(port, "/readyz")[:2] == (200, "ok\n")
        assert http_get(port, "/healthz")[:2] == (200, "ok\n")
        ftp = proc.ftp("alice", "secret-pw")
        data = os.urandom(300_000)
        ftp.storbinary("STOR a.bin", io.BytesIO(data))
        got = io.BytesIO()
        ftp.retrbinary("RETR a.bin", got.write)
        assert got.getvalue() == data
        ftp.quit()
        assert proc.login_fails("mallory", "x")
        s = scrape(port)
        assert value(s, "fsftpd_received_bytes_total", user="alice") == len(data)
        assert value(s, "fsftpd_sent_bytes_total", user="alice") == len(data)
        assert value(s, "fsftpd_logins_total", user="(unknown)", result="failure") == 1
        assert "mallory" not in raw_metrics(port)
        loops = [dict(labels)["event_loop"] for name, labels in s if name == "fsftpd_server_info"]
        assert loops and loops[0].startswith(("uvloop", "asyncio"))
        assert proc.stop() == 0


def test_two_workers_one_scrape_without_user_labels(tmp_path: Path) -> None:
    port, ftp_port = free_port(), free_port()
    env = env_for(tmp_path, port, FSFTPD_WORKERS="2", FSFTPD_PORT=str(ftp_port),
                  FSFTPD_METRICS_PER_USER="false")
    with Fsftpd(env) as proc:
        clients = []
        total = 0
        for i in range(8):
            ftp = proc.ftp("alice", "secret-pw")
            size = 10_000 + i
            ftp.storbinary(f"STOR f{i}", io.BytesIO(os.urandom(size)))
            total += size
            clients.append(ftp)

        def summed() -> dict | None:
            s = scrape(port)
            done = (value(s, "fsftpd_received_bytes_total") == total
                    and value(s, "fsftpd_active_sessions") == len(clients))
            return s if done else None

        wait_for(summed)
        text = raw_metrics(port)
        assert 'user="' not in text
        families = {f.name for f in text_string_to_metric_families(text)}
        assert "fsftpd_transfer_duration_seconds" in families
        assert http_get(port, "/readyz")[0] == 200
        assert http_get(port, "/healthz")[0] == 200
        for ftp in clients:
            ftp.quit()
        assert proc.stop() == 0


def test_port_zero_switches_the_sidecar_off(tmp_path: Path) -> None:
    with Fsftpd(env_for(tmp_path, 0)) as proc:
        ftp = proc.ftp("alice", "secret-pw")
        ftp.quit()
        assert proc.stop() == 0
    assert "metrics and health on port" not in proc.output


def test_metrics_port_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(env_for(tmp_path, port))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "FSFTPD_METRICS_PORT" in line]
    assert lines and "cannot listen" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
