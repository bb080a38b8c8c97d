"""Volume: a 100 MiB file both ways with bounded server memory, and 50 concurrent clients
each uploading and downloading their own file. Everything checked by sha256."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fsftpd
from tests.conftest import sha256, sha256_file
from tests.harness import ServerThread, running_server
from tests.server.rawftp import RandomFile, expected_sha256

pytestmark = pytest.mark.slow

BIG = 100 * 1024 * 1024


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples this process's resident memory while a transfer runs."""

    def __init__(self) -> None:
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_100_mib_both_ways(server: ServerThread, home: Path, passive: bool) -> None:
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc to watch memory")
    ftp = server.ftp("alice", "secret", timeout=120)
    ftp.set_pasv(passive)
    source = RandomFile(BIG)
    with PeakRss() as upload_mem:
        assert ftp.storbinary("STOR big.bin", source, blocksize=1 << 20).startswith("226")
    want = source.hexdigest()
    assert want == expected_sha256(BIG, source.seed)
    assert (home / "big.bin").stat().st_size == BIG
    assert sha256_file(home / "big.bin") == want
    got = hashlib.sha256()
    size = 0

    def sink(block: bytes) -> None:
        nonlocal size
        got.update(block)
        size += len(block)

    with PeakRss() as download_mem:
        assert ftp.retrbinary("RETR big.bin", sink, blocksize=1 << 20).startswith("226")
    assert size == BIG and got.hexdigest() == want
    ftp.quit()
    # The server streams in blocks: neither direction holds the file in memory.
    for mem in (upload_mem, download_mem):
        assert mem.peak - mem.base < 48 * 1024 * 1024, (mem.base, mem.peak)


def test_100_mib_in_memory_home_is_streamed_back(tmp_path: Path) -> None:
    users = [fsftpd.User("alice", "secret", base_path="memory://big")]
    with running_server(users) as srv:
        ftp = srv.ftp("alice", "secret", timeout=120)
        source = RandomFile(BIG)
        ftp.storbinary("STOR big.bin", source, blocksize=1 << 20)
        got = hashlib.sha256()
        ftp.retrbinary("RETR big.bin", got.update, blocksize=1 << 20)
        assert got.hexdigest() == source.hexdigest()
        assert ftp.size("big.bin") == BIG
        ftp.delete("big.bin")
        ftp.quit()


def test_50_concurrent_clients(server: ServerThread, home: Path) -> None:
    clients = 50
    start = threading.Barrier(clients, timeout=60)
    payloads = {i: os.urandom(64 * 1024 + i * 9973) for i in range(clients)}

    def one(i: int) -> tuple[str, str]:
        ftp = server.ftp("alice", "secret", timeout=60)
        try:
            ftp.set_pasv(i % 3 != 0)  # a third of them in active mode
            start.wait()  # all logged in before anyone transfers
            name = f"client {i:02d}.bin"
            ftp.storbinary(f"STOR {name}", io.BytesIO(payloads[i]))
            got = hashlib.sha256()
            ftp.retrbinary(f"RETR {name}", got.update)
            ftp.quit()
            return name, got.hexdigest()
        finally:
            ftp.close()

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    for i, (name, digest) in enumerate(results):
        assert digest == sha256(payloads[i]), name
        assert sha256_file(home / name) == sha256(payloads[i]), name
    assert len(list(home.iterdir())) == clients
