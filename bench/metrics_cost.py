"""The CPU the metrics add to one small transfer, measured without the noise of a loaded
machine: the events one operation of workload (b) emits (EPSV answered, the transfer's
progress and end, its storage calls) go through a real server's event bus into the
metrics observer, and a storage call goes through the timing wrapper, N times each.

    .venv/bin/python -m bench.metrics_cost [--n 200000]

Prints microseconds per operation (the average of RETR and STOR): the observer's share
and the timing wrapper's share. Compare with ``server_cpu_per_op_ms`` of workload (b).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from prometheus_client import CollectorRegistry

import fsftpd
from fsftpd import events as ev
from fsftpd.appliance import metrics
from fsftpd.storage.timed import TimedPathIO


def observer_cost(n: int) -> float:
    """Seconds of CPU per operation spent building events and updating metrics."""
    server = fsftpd.Server([fsftpd.User("bench", "bench", base_path="memory://bench")])
    observer = metrics.MetricsObserver(server, registry=CollectorRegistry())
    server.events.subscribe(observer, storage=True)
    emit, emit_storage = server.events.emit, server.events.emit_storage
    started = time.process_time()
    for i in range(n):
        emit(ev.CommandDone(1, "bench", "EPSV", 229, 0.0001))
        if i & 1:
            emit(ev.TransferProgress("bench", "upload", 4096))
            emit_storage(ev.StorageOperation("file", "open_write", 0.0001, None))
            emit_storage(ev.StorageOperation("file", "commit", 0.0001, None))
            emit(ev.TransferFinished(1, "bench", "STOR", "/x", "upload", 4096, 0.001, True, 226))
        else:
            emit(ev.TransferProgress("bench", "download", 4096))
            emit_storage(ev.StorageOperation("file", "open_read", 0.0001, None))
            emit(ev.TransferFinished(1, "bench", "RETR", "/x", "download", 4096, 0.001, True, 226))
    return (time.process_time() - started) / n


async def _wrapper_cost(n: int) -> float:
    """Seconds of CPU the timing wrapper adds per storage call (memory backend, whose stat
    is pure Python: the difference is the wrapper alone)."""
    server = fsftpd.Server([fsftpd.User("bench", "bench", base_path="memory://bench")])
    plain = await server.path_io_for(server.users.users[0])
    timed = TimedPathIO(plain, lambda op, s, e: None)
    results = []
    for io in (plain, timed, plain, timed):
        started = time.process_time()
        for _ in range(n):
            await io.stat("/")
        results.append((time.process_time() - started) / n)
    return min(results[1], results[3]) - min(results[0], results[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    per_op = min(observer_cost(args.n) for _ in range(3))
    per_call = asyncio.run(_wrapper_cost(args.n))
    storage_calls = 1.5  # RETR: open_read; STOR: open_write, commit
    print(f"observer: {per_op * 1e6:.2f} us per operation")
    print(f"timing wrapper: {per_call * 1e6:.2f} us per storage call, "
          f"{per_call * storage_calls * 1e6:.2f} us per operation")
    print(f"total: {(per_op + per_call * storage_calls) * 1e6:.2f} us per operation")


if __name__ == "__main__":
    main()
