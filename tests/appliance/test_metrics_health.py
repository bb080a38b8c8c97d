"""/readyz on a real server: 503 before the listener accepts, while draining, and while
the S3 endpoint of an s3:// home is gone (moto behind a stoppable TCP relay); 200
otherwise. Probes are cached and never run twice at once."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fsftpd
from fsftpd.appliance import sidecar
from tests.appliance.metrics_helpers import http_get, sidecar_server, value, wait_for
from tests.s3.endpoints import FaultProxy, S3Endpoint
from tests.s3.fixtures import fault_proxy, moto_bucket, moto_endpoint

__all__ = ["fault_proxy", "moto_bucket", "moto_endpoint"]


def test_readyz_before_listening_then_ready(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    server = fsftpd.Server([fsftpd.User("alice", "pw", base_path=str(tmp_path))])

    async def setup() -> sidecar.Installed:
        return await sidecar.install(server, host="127.0.0.1", port=0)

    installed = on_loop(setup())
    try:
        status, body, _ = http_get(installed.port, "/readyz")
        assert status == 503 and "starting" in body
        assert http_get(installed.port, "/healthz")[0] == 200
        on_loop(server.start("127.0.0.1", 0))
        assert http_get(installed.port, "/readyz")[:2] == (200, "ok\n")
    finally:
        on_loop(server.close(timeout=5))
        installed.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_readyz_follows_the_lifecycle_state(tmp_path: Path) -> None:
    state = {"value": "starting"}
    users = [fsftpd.User("a", "b", base_path=str(tmp_path))]
    with sidecar_server(users, lifecycle=lambda: state["value"]) as srv:
        status, body, _ = srv.get("/readyz")
        assert status == 503 and "starting" in body
        state["value"] = "ready"
        assert srv.get("/readyz")[0] == 200
        state["value"] = "draining"
        status, body, _ = srv.get("/readyz")
        assert status == 503 and "draining" in body


def test_readyz_503_while_draining(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(1_000_000))
    user = fsftpd.User("alice", "pw", base_path=str(tmp_path), write_speed_limit=100_000)
    with sidecar_server([user]) as srv:
        ftp = srv.ftp("alice", "pw")
        conn = ftp.transfercmd("RETR big")
        conn.recv(1000)
        assert srv.get("/readyz")[0] == 200
        closing = asyncio.run_coroutine_threadsafe(srv.server.close(timeout=30), srv.loop)  # type: ignore[union-attr]
        _, body, _ = wait_for(lambda: (r := srv.get("/readyz")) and r[0] == 503 and r)
        assert "draining" in body
        assert srv.get("/healthz")[0] == 200  # draining is not dead
        conn.close()
        closing.result(timeout=60)


def test_readyz_follows_the_s3_endpoint(fault_proxy: FaultProxy, moto_endpoint: S3Endpoint,
                                        moto_bucket: str, tmp_path: Path) -> None:
    options = moto_endpoint.options(endpoint_url=fault_proxy.url)
    users = [
        fsftpd.User("alice", "pw", base_path=f"s3://{moto_bucket}/homes/alice/", storage_options=options),
        fsftpd.User("bob", "pw", base_path=f"s3://{moto_bucket}/homes/bob/", storage_options=options),
        fsftpd.User("carol", "pw", base_path=str(tmp_path)),
    ]
    with sidecar_server(users) as srv:
        ftp = srv.ftp("alice", "pw")
        ftp.storbinary("STOR a.txt", io.BytesIO(b"hello"))
        ftp.quit()
        assert srv.get("/readyz")[:2] == (200, "ok\n")
        probes = srv.installed.probes  # type: ignore[union-attr]
        # two S3 homes in one bucket of one endpoint, one local home: two distinct backends
        assert len(probes.targets()) == 2

        # Many readiness checks at once: one probe per backend at most, then cached.
        started = probes.started
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: srv.get("/readyz")[0], range(16)))
        assert answers == [200] * 16
        assert probes.started - started <= 2

        fault_proxy.stop()
        try:
            _, body, _ = wait_for(lambda: (r := srv.get("/readyz")) and r[0] == 503 and r, timeout=60,
                                  interval=0.5)
            assert f"s3://{moto_bucket}" in body
            assert str(tmp_path) not in body  # the local home is fine
            assert srv.get("/healthz")[0] == 200  # storage trouble is not a dead process
        finally:
            fault_proxy.start()
        wait_for(lambda: srv.get("/readyz")[0] == 200, timeout=60, interval=0.5)
        s = srv.scrape()
        assert value(s, "fsftpd_storage_errors_total", backend="s3", operation="stat") >= 1
        assert value(s, "fsftpd_storage_operation_duration_seconds_count", backend="s3",
                     operation="commit") == 1


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_head_and_bad_method(tmp_path: Path, path: str) -> None:
    import http.client

    with sidecar_server([fsftpd.User("a", "b", base_path=str(tmp_path))]) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
        conn.request("HEAD", path)
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        conn.request("POST", path, body=b"x")
        response = conn.getresponse()
        assert response.status == 405
        conn.close()
