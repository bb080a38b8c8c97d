"""Scale-out on S3: 1, 2 and 4 fsftpd processes (separate processes, each on its own port,
not ``--workers``) serving one bucket of one SeaweedFS (``weed mini``) started here.

    .venv/bin/python -m bench.s3_scale [--servers 1,2,4] [--clients 8] [--small 64]
        [--large 8] [--json bench/results/s3_scale.json]

For each server count the same load runs: ``--clients`` client threads, spread round-robin
over the servers, upload ``--small`` files of 1 MiB, then ``--large`` files of 64 MiB,
then download all of them again; every download is checked by sha256. Reported per phase:
aggregate throughput, fsftpd CPU seconds per GiB (all fsftpd processes together, from
/proc) and the S3 server's CPU seconds per GiB. The S3 server, the fsftpd processes and the
clients all share this machine's cores, so the ratios matter more than the absolutes; the
load average before and after says how busy the machine was with other work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

from bench.ftpclient import Control
from bench.procstat import self_cpu, tree_cpu

MiB = 1024 * 1024
GiB = 1024 * MiB
USER, PASSWORD = "bench", "bench"
SMALL, LARGE = 1 * MiB, 64 * MiB


def start_servers(count: int, bucket: str, prefix: str, options: dict[str, Any]) -> list[tuple[int, Any]]:
    """``count`` fsftpd processes on free ports, all serving ``s3://bucket/prefix``."""
    from tests.s3.endpoints import free_port

    started: list[tuple[int, Any]] = []
    for _ in range(count):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bench.s3_memory", "--serve", str(port),
                                 f"s3://{bucket}/{prefix}", json.dumps(options)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError("fsftpd did not start")
        started.append((port, proc))
    return started


def run_phase(ports: list[int], clients: int, jobs: list[tuple[str, str, int]],
              payloads: dict[int, memoryview], digests: dict[int, str]) -> float:
    """Run ``jobs`` ((verb, name, size)) on ``clients`` threads; client i talks to
    ``ports[i % len(ports)]``. Returns the wall time."""
    todo: queue.Queue[tuple[str, str, int]] = queue.Queue()
    for job in jobs:
        todo.put(job)
    errors: list[BaseException] = []

    def client(index: int) -> None:
        buffer = memoryview(bytearray(MiB))
        try:
            control = Control("127.0.0.1", ports[index % len(ports)], timeout=300)
            control.login(USER, PASSWORD)
            control.cmd("TYPE I", 200)
            while True:
                try:
                    verb, name, size = todo.get_nowait()
                except queue.Empty:
                    break
                if verb == "STOR":
                    control.stor(name, payloads[size], size)
                else:
                    digest = hashlib.sha256()
                    data = control.data()
                    try:
                        control.cmd(f"RETR {name}", 150, 125)
                        while n := data.recv_into(buffer):
                            digest.update(buffer[:n])
                    finally:
                        data.close()
                    control.expect(226)
                    if digest.hexdigest() != digests[size]:
                        raise AssertionError(f"{name}: downloaded bytes differ")
            control.quit()
        except BaseException as exc:  # reported after the phase
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def measure(count: int, args: argparse.Namespace, bucket: str, options: dict[str, Any], weed_pid: int,
            payloads: dict[int, memoryview], digests: dict[int, str]) -> dict[str, Any]:
    servers = start_servers(count, bucket, f"scale{count}", options)
    ports = [port for port, _ in servers]
    try:
        # Load every server's S3 client (botocore models) before measuring.
        run_phase(ports, count, [("STOR", f"warm{i}", SMALL) for i in range(count)], payloads, digests)
        files = ([(f"s{i}.bin", SMALL) for i in range(args.small)]
                 + [(f"l{i}.bin", LARGE) for i in range(args.large)])
        phases: dict[str, Any] = {}
        for label, verb, size in (("upload 1 MiB", "STOR", SMALL), ("upload 64 MiB", "STOR", LARGE),
                                  ("download 1 MiB", "RETR", SMALL), ("download 64 MiB", "RETR", LARGE)):
            jobs = [(verb, name, s) for name, s in files if s == size]
            fsftpd_before = sum(tree_cpu(proc.pid) for _, proc in servers)
            weed_before, client_before = tree_cpu(weed_pid), self_cpu()
            seconds = run_phase(ports, args.clients, jobs, payloads, digests)
            fsftpd_cpu = sum(tree_cpu(proc.pid) for _, proc in servers) - fsftpd_before
            moved = len(jobs) * size / GiB
            phases[label] = {
                "seconds": round(seconds, 2),
                "mib_per_s": round(moved * 1024 / seconds, 1),
                "fsftpd_cpu_s_per_gib": round(fsftpd_cpu / moved, 2),
                "s3_cpu_s_per_gib": round((tree_cpu(weed_pid) - weed_before) / moved, 2),
                "client_cpu_s_per_gib": round((self_cpu() - client_before) / moved, 2),
            }
        return phases
    finally:
        for _, proc in servers:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="1,2,4")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--small", type=int, default=64, help="1 MiB files per run")
    parser.add_argument("--large", type=int, default=8, help="64 MiB files per run")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    from tests.s3.endpoints import KEY, REGION, SECRET, S3Endpoint, WeedProcess

    weed = WeedProcess(os.path.join(os.path.dirname(sys.executable), "weed"))
    weed.start()
    assert weed.proc is not None
    payloads = {size: memoryview(os.urandom(size)) for size in (SMALL, LARGE)}
    digests = {size: hashlib.sha256(data).hexdigest() for size, data in payloads.items()}
    results: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0],
                               "clients": args.clients, "small_files": args.small,
                               "large_files": args.large, "load_before": os.getloadavg()[0], "runs": {}}
    try:
        bucket = S3Endpoint("seaweedfs", weed.url).new_bucket()
        options = {"key": KEY, "secret": SECRET, "endpoint_url": weed.url, "region": REGION}
        for count in (int(n) for n in args.servers.split(",")):
            results["runs"][str(count)] = measure(count, args, bucket, options, weed.proc.pid,
                                                  payloads, digests)
            print(count, json.dumps(results["runs"][str(count)]), flush=True)
    finally:
        results["load_after"] = os.getloadavg()[0]
        weed.cleanup()
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
