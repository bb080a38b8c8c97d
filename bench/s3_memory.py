"""Memory of fsftpd serving S3 homes: a 1 GiB STOR and RETR through FTP, then 20
concurrent 100 MiB uploads, with the server process's peak RSS for each phase.

    .venv/bin/python -m bench.s3_memory [--endpoint seaweedfs|moto] [--size-mib 1024]
        [--clients 20] [--client-mib 100] [--json bench/results/s3_memory.json]

The S3 endpoint (SeaweedFS's ``weed mini`` by default, or moto's server) and the FTP
server each run in their own process on loopback, so the RSS measured is fsftpd's alone.
Peak RSS is the kernel's high-water mark (VmHWM), reset before each phase by writing 5 to
/proc/PID/clear_refs. Data is generated on the fly; contents are checked by sha256.
"""

from __future__ import annotations

import argparse
import ftplib
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

MiB = 1024 * 1024
USER, PASSWORD = "bench", "bench"


# -- the server process ------------------------------------------------------------------
def serve(port: int, base_path: str, options_json: str) -> None:
    import asyncio
    import logging

    import fsftpd

    logging.basicConfig(level=logging.WARNING)
    users = [fsftpd.User(USER, PASSWORD, base_path=base_path, storage_options=json.loads(options_json))]

    async def main() -> None:
        server = fsftpd.Server(users)
        await server.start("127.0.0.1", port)
        print("READY", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# -- measuring ------------------------------------------------------------------------------
def status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS


class Phase:
    def __init__(self, pid: int, name: str) -> None:
        self.pid, self.name = pid, name

    def __enter__(self) -> Phase:
        reset_peak(self.pid)
        self.before = status(self.pid)["VmRSS"]
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.peak = status(self.pid)["VmHWM"]


def blocks(size: int, seed: int, block: int = MiB) -> Iterator[bytes]:
    rng = random.Random(seed)
    remaining = size
    while remaining > 0:
        chunk = rng.randbytes(min(block, remaining))
        yield chunk
        remaining -= len(chunk)


class Source:
    """File-like reader over generated data, hashing what it hands out."""

    def __init__(self, size: int, seed: int) -> None:
        self._blocks = blocks(size, seed)
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = next(self._blocks, b"")
        self.digest.update(chunk)
        return chunk


def ftp(port: int) -> ftplib.FTP:
    client = ftplib.FTP()
    client.connect("127.0.0.1", port, timeout=120)
    client.login(USER, PASSWORD)
    return client


def upload(port: int, name: str, size: int, seed: int) -> str:
    client = ftp(port)
    source = Source(size, seed)
    client.storbinary(f"STOR {name}", source, blocksize=MiB)  # type: ignore[arg-type]
    assert client.size(name) == size, f"{name}: wrong size on the server"
    client.quit()
    return source.digest.hexdigest()


def download(port: int, name: str) -> str:
    client = ftp(port)
    digest = hashlib.sha256()
    client.retrbinary(f"RETR {name}", digest.update, blocksize=MiB)
    client.quit()
    return digest.hexdigest()


# -- endpoints ------------------------------------------------------------------------------
def start_endpoint(kind: str) -> tuple[str, Any]:
    from tests.s3.endpoints import WeedProcess, free_port

    if kind == "seaweedfs":
        binary = os.path.join(os.path.dirname(sys.executable), "weed")
        weed = WeedProcess(binary)
        weed.start()
        return weed.url, weed.cleanup
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", (
        "import logging,time;from moto.server import ThreadedMotoServer;"
        "logging.getLogger('werkzeug').setLevel(logging.ERROR);"
        f"s=ThreadedMotoServer(ip_address='127.0.0.1',port={port},verbose=False);s.start();"
        "time.sleep(10**6)")])
    url = f"http://127.0.0.1:{port}"
    time.sleep(2)
    return url, lambda: (proc.terminate(), proc.wait())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", choices=("seaweedfs", "moto"), default="seaweedfs")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--client-mib", type=int, default=100)
    parser.add_argument("--json", default="")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "BASE", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return

    from tests.s3.endpoints import KEY, REGION, SECRET, S3Endpoint, free_port

    url, stop_endpoint = start_endpoint(args.endpoint)
    endpoint = S3Endpoint(args.endpoint, url)
    bucket = endpoint.new_bucket()
    options = {"key": KEY, "secret": SECRET, "endpoint_url": url, "region": REGION}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.s3_memory", "--serve", str(port),
                               f"s3://{bucket}/bench", json.dumps(options)],
                              stdout=subprocess.PIPE, text=True)
    results: dict[str, Any] = {"endpoint": args.endpoint, "python": sys.version.split()[0]}
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "READY"
        results["idle_rss_mib"] = round(status(server.pid)["VmRSS"] / MiB, 1)
        upload(port, "warm.bin", MiB, 1)  # the S3 client and its models are loaded
        results["s3_ready_rss_mib"] = round(status(server.pid)["VmRSS"] / MiB, 1)
        size = args.size_mib * MiB
        seed = int.from_bytes(os.urandom(4), "big")
        with Phase(server.pid, "stor") as stor:
            sent = upload(port, "big.bin", size, seed)
        with Phase(server.pid, "retr") as retr:
            got = download(port, "big.bin")
        assert got == sent, "RETR returned different bytes"
        each = args.client_mib * MiB
        digests: dict[str, str] = {}
        with Phase(server.pid, "concurrent") as many:
            def run(i: int) -> None:
                digests[f"c{i}.bin"] = upload(port, f"c{i}.bin", each, seed + i + 1)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(digests) == args.clients, "some concurrent uploads failed"
        assert download(port, "c0.bin") == digests["c0.bin"]
        for label, phase, moved in (("stor_1gib", stor, size), ("retr_1gib", retr, size),
                                    ("concurrent_uploads", many, each * args.clients)):
            results[label] = {"seconds": round(phase.seconds, 1),
                              "mib_per_s": round(moved / MiB / phase.seconds, 1),
                              "peak_rss_mib": round(phase.peak / MiB, 1)}
        results["concurrent_uploads"]["clients"] = args.clients
        results["concurrent_uploads"]["mib_each"] = args.client_mib
    finally:
        server.terminate()
        server.wait()
        stop_endpoint()
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
