"""The metrics sidecar on a real server: ftplib drives transfers, /metrics is scraped over
HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

import ftplib
import io
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import fsftpd
from tests.appliance.metrics_helpers import http_get, raw_metrics, sidecar_server, value, wait_for


def users(tmp_path: Path, **limits: float) -> list[fsftpd.User]:
    made = []
    for name in ("alice", "bob"):
        home = tmp_path / name
        home.mkdir()
        made.append(fsftpd.User(name, "pw-" + name, base_path=str(home), **limits))
    return made


def test_byte_counters_equal_bytes_moved(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path)) as srv:
        moved = {"alice": [0, 0], "bob": [0, 0]}  # received, sent
        for name, sizes in (("alice", [0, 1, 70_000, 1_500_000]), ("bob", [12_345, 3 * 1024 * 1024 + 7])):
            ftp = srv.ftp(name, "pw-" + name)
            for i, size in enumerate(sizes):
                data = os.urandom(size)
                assert ftp.storbinary(f"STOR f{i}", io.BytesIO(data)).startswith("226")
                moved[name][0] += size
                out = io.BytesIO()
                assert ftp.retrbinary(f"RETR f{i}", out.write).startswith("226")
                assert out.getvalue() == data
                moved[name][1] += size
            # Listings move bytes too, but they are not file data: not in the byte counters.
            assert ftp.nlst()
            ftp.retrlines("LIST", lambda line: None)
            ftp.quit()

        def settled() -> dict | None:
            s = srv.scrape()
            done = all(value(s, "fsftpd_active_sessions", user=u) == 0 for u in moved)
            return s if done else None

        s = wait_for(settled)
        for name, (received, sent) in moved.items():
            assert value(s, "fsftpd_received_bytes_total", user=name) == received
            assert value(s, "fsftpd_sent_bytes_total", user=name) == sent
            count = 4 if name == "alice" else 2
            for direction in ("upload", "download"):
                assert value(s, "fsftpd_transfers_total", user=name, direction=direction,
                             result="ok") == count
                assert value(s, "fsftpd_transfer_duration_seconds_count", user=name,
                             direction=direction) == count
            assert value(s, "fsftpd_sessions_total", user=name) == 1
            assert value(s, "fsftpd_transfers_total", user=name, direction="listing", result="ok") == 2
            assert value(s, "fsftpd_logins_total", user=name, result="success") == 1
        assert value(s, "fsftpd_commands_total", command="RETR", reply_class="2xx") == 6
        assert value(s, "fsftpd_commands_total", command="STOR", reply_class="2xx") == 6
        assert value(s, "fsftpd_storage_operation_duration_seconds_count", backend="file",
                     operation="open_write") == 6
        assert value(s, "fsftpd_storage_operation_duration_seconds_count", backend="file",
                     operation="open_read") == 6


def test_active_sessions_and_connections(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path)) as srv:
        a1, a2, b = srv.ftp("alice", "pw-alice"), srv.ftp("alice", "pw-alice"), srv.ftp("bob", "pw-bob")
        idle = srv.ftp()  # connected, not logged in
        s = wait_for(lambda: (x := srv.scrape()) and value(x, "fsftpd_active_connections") == 4 and x)
        assert value(s, "fsftpd_active_sessions", user="alice") == 2
        assert value(s, "fsftpd_active_sessions", user="bob") == 1
        for ftp in (a1, b, idle):
            ftp.quit()
        s = wait_for(lambda: (x := srv.scrape()) and value(x, "fsftpd_active_connections") == 1 and x)
        assert value(s, "fsftpd_active_sessions", user="alice") == 1
        assert value(s, "fsftpd_active_sessions", user="bob") == 0
        a2.quit()


def test_failed_logins_never_label_the_typed_name(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path), failed_login_delay=0) as srv:
        for name, password in (("mallory", "x"), ("eve-typed-this", "y"), ("alice", "wrong")):
            ftp = srv.ftp()
            with pytest.raises(ftplib.error_perm, match="530"):
                ftp.login(name, password)
            ftp.close()
        text = raw_metrics(srv.http_port)
        assert "mallory" not in text and "eve-typed-this" not in text
        s = srv.scrape()
        assert value(s, "fsftpd_logins_total", user="(unknown)", result="failure") == 2
        assert value(s, "fsftpd_logins_total", user="alice", result="failure") == 1
        assert value(s, "fsftpd_logins_total", user="alice", result="success") == 0


def test_anonymous_user_label(tmp_path: Path) -> None:
    with sidecar_server([fsftpd.User(base_path=str(tmp_path))]) as srv:
        ftp = srv.ftp("anonymous", "guest@")
        ftp.storbinary("STOR a", io.BytesIO(b"12345"))
        ftp.quit()
        s = srv.scrape()
        assert value(s, "fsftpd_received_bytes_total", user="anonymous") == 5
        assert value(s, "fsftpd_logins_total", user="anonymous", result="success") == 1


def _refused_421(srv: object) -> None:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)  # type: ignore[attr-defined]
    with sock:
        assert sock.recv(1024).startswith(b"421")


def test_each_refusal_reason_counts(tmp_path: Path) -> None:
    made = users(tmp_path)
    made[1].maximum_connections = 1
    with sidecar_server(made) as srv:
        keep = srv.ftp("alice", "pw-alice")
        srv.call(lambda s: s.set_limits(maximum_connections_per_ip=1))
        _refused_421(srv)
        srv.call(lambda s: s.set_limits(maximum_connections_per_ip=None, maximum_connections=1))
        _refused_421(srv)
        _refused_421(srv)
        srv.call(lambda s: s.set_limits(maximum_connections=None))
        keep.quit()
        b1 = srv.ftp("bob", "pw-bob")
        with pytest.raises(ftplib.error_perm, match="530"):
            srv.ftp("bob", "pw-bob")
        b1.quit()
        s = srv.scrape()
        assert value(s, "fsftpd_connections_refused_total", reason="ip-limit") == 1
        assert value(s, "fsftpd_connections_refused_total", reason="server-limit") == 2
        assert value(s, "fsftpd_connections_refused_total", reason="user-limit") == 1
        # the refused login is not a session
        assert value(s, "fsftpd_sessions_total", user="bob") == 1
        assert value(s, "fsftpd_logins_total", user="bob", result="success") == 1


def test_counters_move_during_a_throttled_transfer(tmp_path: Path) -> None:
    rate = 200_000
    size = 1_600_000  # about 8 s at the limit
    made = users(tmp_path, write_speed_limit=rate)
    (tmp_path / "alice" / "big").write_bytes(os.urandom(size))
    with sidecar_server(made) as srv:
        ftp = srv.ftp("alice", "pw-alice")
        got = io.BytesIO()
        done = threading.Event()

        def download() -> None:
            ftp.retrbinary("RETR big", got.write)
            done.set()

        worker = threading.Thread(target=download, daemon=True)
        worker.start()
        seen: list[float] = []
        while not done.is_set() and len(seen) < 5:
            s = srv.scrape()
            seen.append(value(s, "fsftpd_sent_bytes_total", user="alice"))
            time.sleep(1.0)
        worker.join(timeout=60)
        assert got.getvalue() == (tmp_path / "alice" / "big").read_bytes()
        # Scraped a second apart while the transfer ran, the counter grew every time.
        assert len(seen) >= 4, seen
        assert all(b > a for a, b in itertools.pairwise(seen)), seen
        assert seen[-1] < size
        s = srv.scrape()
        assert value(s, "fsftpd_sent_bytes_total", user="alice") == size
        assert value(s, "fsftpd_throttle_wait_seconds_total", user="alice", direction="download") > 1
        ftp.quit()


def test_per_user_false_drops_the_label(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path), per_user=False) as srv:
        for name in ("alice", "bob"):
            ftp = srv.ftp(name, "pw-" + name)
            ftp.storbinary("STOR x", io.BytesIO(b"x" * 1000))
            ftp.quit()
        text = raw_metrics(srv.http_port)
        assert 'user="' not in text
        s = srv.scrape()
        assert value(s, "fsftpd_received_bytes_total") == 2000
        assert value(s, "fsftpd_logins_total", result="success") == 2
        assert value(s, "fsftpd_transfers_total", direction="upload", result="ok") == 2


def test_commands_by_reply_class_and_unknown_verbs(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path)) as srv:
        ftp = srv.ftp("alice", "pw-alice")
        for verb in ("XYZZY", "FOO1", "NOOP"):
            try:
                ftp.sendcmd(verb)
            except ftplib.error_perm:
                pass
        with pytest.raises(ftplib.error_perm):
            ftp.retrbinary("RETR missing", lambda b: None)
        text = raw_metrics(srv.http_port)
        assert "XYZZY" not in text
        s = srv.scrape()
        assert value(s, "fsftpd_commands_total", command="other", reply_class="5xx") == 2
        assert value(s, "fsftpd_commands_total", command="NOOP", reply_class="2xx") == 1
        assert value(s, "fsftpd_commands_total", command="RETR", reply_class="5xx") == 1
        assert value(s, "fsftpd_commands_total", command="PASS", reply_class="2xx") == 1
        ftp.quit()


def test_passive_ports_in_use_and_available(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    ports = list(range(base, base + 10))
    with sidecar_server(users(tmp_path), passive_ports=ports) as srv:
        ftp = srv.ftp("alice", "pw-alice")
        ftp.sendcmd("PASV")

        def seen() -> dict | None:
            s = srv.scrape()
            return s if value(s, "fsftpd_passive_ports_in_use") == 1 else None

        s = wait_for(seen)
        assert value(s, "fsftpd_passive_ports_available") == 9
        ftp.quit()


def test_info_formats_and_routes(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path)) as srv:
        s = srv.scrape()
        loops = [dict(labels)["event_loop"] for name, labels in s if name == "fsftpd_server_info"]
        assert loops and loops[0].split()[0] in ("asyncio", "uvloop")
        status, body, headers = srv.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith("# EOF")
        status, _, headers = srv.get("/metrics")
        assert headers["content-type"].startswith("text/plain")
        assert srv.get("/nope")[0] == 404
        assert srv.get("/healthz")[:2] == (200, "ok\n")


def test_promtool_check_metrics(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (apt-get install prometheus; tests/run.sh installs it)")
    made = users(tmp_path, write_speed_limit=5_000_000)
    with sidecar_server(made, failed_login_delay=0) as srv:
        ftp = srv.ftp("alice", "pw-alice")
        ftp.storbinary("STOR a", io.BytesIO(os.urandom(300_000)))
        ftp.retrbinary("RETR a", lambda b: None)
        ftp.nlst()
        try:
            ftp.sendcmd("BOGUS")
        except ftplib.error_perm:
            pass
        ftp.quit()
        bad = srv.ftp()
        with pytest.raises(ftplib.error_perm):
            bad.login("nobody", "x")
        bad.close()
        text = raw_metrics(srv.http_port)
    assert "fsftpd_throttle_wait_seconds_total" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_healthz_turns_503_while_the_loop_is_blocked(tmp_path: Path) -> None:
    with sidecar_server(users(tmp_path)) as srv:
        assert http_get(srv.http_port, "/healthz")[0] == 200
        released = threading.Event()
        srv.loop.call_soon_threadsafe(lambda: released.wait(30))  # blocks the server's loop
        try:
            status, body, _ = wait_for(
                lambda: (r := http_get(srv.http_port, "/healthz")) and r[0] == 503 and r,
                timeout=20, interval=0.5)
            assert "blocked" in body
            status, body, _ = http_get(srv.http_port, "/readyz")
            assert status == 503 and "blocked" in body
        finally:
            released.set()
        wait_for(lambda: http_get(srv.http_port, "/healthz")[0] == 200, timeout=20)
