"""The measurements (a)-(f) against one running server; (g) lives in ``limits.py``.

Every function returns a flat dict of numbers for one sample. Server CPU comes from
/proc (the server's whole process tree) over exactly the measured window; client CPU
from ``os.times`` of the load processes over the same window.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import procstat
from .ftpclient import RECV_BUFFER, Control
from .servers import Running

SMALL = "data/small.bin"
BIG = "data/big.bin"
MANY = "data/many"
UPLOADS = "data/up"


@dataclass(frozen=True)
class Layout:
    root: str
    big_size: int
    small_size: int
    many: int


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- (a) one big file, single stream ------------------------------------------------------
def big_retr(srv: Running, layout: Layout) -> dict[str, float]:
    buffer = memoryview(bytearray(RECV_BUFFER))
    ctl = Control(srv.host, srv.port)
    ctl.login(srv.user, srv.password)
    cpu0, mine0, t0 = procstat.tree_cpu(srv.pid), procstat.self_cpu(), time.perf_counter()
    got = ctl.retr(BIG, buffer)
    elapsed = time.perf_counter() - t0
    cpu1, mine1 = procstat.tree_cpu(srv.pid), procstat.self_cpu()
    ctl.quit()
    if got != layout.big_size:
        raise RuntimeError(f"RETR returned {got} bytes, expected {layout.big_size}")
    gib = got / 2**30
    return {
        "seconds": elapsed,
        "gib_per_s": gib / elapsed,
        "server_cpu_per_gib": (cpu1 - cpu0) / gib,
        "client_cpu_per_gib": (mine1 - mine0) / gib,
    }


def big_stor(srv: Running, layout: Layout) -> dict[str, float]:
    payload = memoryview(os.urandom(RECV_BUFFER))
    target = f"{UPLOADS}/{srv.kind}/big.bin"
    ctl = Control(srv.host, srv.port)
    ctl.login(srv.user, srv.password)
    cpu0, mine0, t0 = procstat.tree_cpu(srv.pid), procstat.self_cpu(), time.perf_counter()
    ctl.stor(target, payload, layout.big_size)
    elapsed = time.perf_counter() - t0
    cpu1, mine1 = procstat.tree_cpu(srv.pid), procstat.self_cpu()
    ctl.quit()
    real = os.path.join(layout.root, target)
    size = os.path.getsize(real)
    os.unlink(real)  # frees the dirty pages before they are written back
    if size != layout.big_size:
        raise RuntimeError(f"STOR stored {size} bytes, expected {layout.big_size}")
    gib = size / 2**30
    return {
        "seconds": elapsed,
        "gib_per_s": gib / elapsed,
        "server_cpu_per_gib": (cpu1 - cpu0) / gib,
        "client_cpu_per_gib": (mine1 - mine0) / gib,
    }


# -- (b)/(c)/(d) many clients, fixed time ---------------------------------------------------
def _load_process(
    kind: str,
    srv: Running,
    layout: Layout,
    index: int,
    sessions: int,
    cores: set[int],
    barrier: Any,
    duration: float,
    warmup: float,
    queue: Any,
) -> None:
    os.sched_setaffinity(0, cores)
    latencies: list[float] = []
    counts = [0, 0]  # ops, errors
    lock = threading.Lock()
    end_box = [0.0, 0.0]  # end, start of the measured window
    start_evt = threading.Event()
    controls: list[Control | None] = [None] * sessions
    first_error: list[str] = []

    if kind == "transfers":
        for i in range(sessions):
            ctl = Control(srv.host, srv.port)
            ctl.login(srv.user, srv.password)
            controls[i] = ctl

    def transfers(i: int) -> None:
        ctl = controls[i]
        assert ctl is not None
        buffer = memoryview(bytearray(layout.small_size + 65536))
        payload = memoryview(bytes(layout.small_size))
        target = f"{UPLOADS}/{srv.kind}/c{index}-{i}.bin"
        mine: list[float] = []
        ops = errors = 0
        start_evt.wait()
        end, measured = end_box
        flip = False
        while True:
            t0 = time.perf_counter()
            if time.monotonic() >= end:
                break
            try:
                if flip:
                    ctl.stor(target, payload, layout.small_size)
                else:
                    ctl.retr(SMALL, buffer)
            except Exception as exc:
                errors += 1
                if not first_error:
                    first_error.append(repr(exc))
                break
            flip = not flip
            t1 = time.perf_counter()
            if measured <= time.monotonic() <= end:  # finished inside the measured window
                mine.append(t1 - t0)
                ops += 1
        with lock:
            latencies.extend(mine)
            counts[0] += ops
            counts[1] += errors

    def churn(i: int) -> None:
        mine: list[float] = []
        ops = errors = 0
        start_evt.wait()
        end, measured = end_box
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                ctl = Control(srv.host, srv.port)
                ctl.send(f"USER {srv.user}")
                if ctl.reply()[0] == 331:
                    ctl.cmd(f"PASS {srv.password}", 230)
                ctl.quit()
            except Exception as exc:
                errors += 1
                if not first_error:
                    first_error.append(repr(exc))
                time.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if measured <= time.monotonic() <= end:  # finished inside the measured window
                mine.append(t1 - t0)
                ops += 1
        with lock:
            latencies.extend(mine)
            counts[0] += ops
            counts[1] += errors

    target_fn = transfers if kind == "transfers" else churn
    threads = [threading.Thread(target=target_fn, args=(i,), daemon=True) for i in range(sessions)]
    for t in threads:
        t.start()
    barrier.wait()
    end_box[1] = time.monotonic() + warmup
    end_box[0] = end_box[1] + duration
    start_evt.set()
    time.sleep(max(0.0, end_box[1] - time.monotonic()))
    cpu0 = procstat.self_cpu()
    time.sleep(max(0.0, end_box[0] - time.monotonic()))
    cpu1 = procstat.self_cpu()
    for t in threads:
        t.join(60)
    # Sessions stay open until the harness has read the server's CPU: vsftpd's session
    # processes are reaped without their times reaching the listener.
    barrier.wait()
    for ctl in controls:
        if ctl is not None:
            try:
                ctl.quit()
            except Exception:
                ctl.close()
    if first_error:
        print(f"load process {index}: first error {first_error[0]}", file=sys.stderr)
    queue.put((counts[0], counts[1], cpu1 - cpu0, latencies))


def load(
    srv: Running,
    layout: Layout,
    *,
    kind: str,
    clients: int,
    duration: float,
    client_cores: set[int],
    procs_per_core: int = 4,
    server_cores: set[int] | None = None,
    warmup: float = 0.0,
) -> dict[str, float]:
    """``kind`` "transfers" (RETR+STOR of the small file) or "churn" (connect, login, QUIT).
    The load runs for ``warmup + duration`` seconds; only the last ``duration`` is measured
    (operations, latencies, CPU of both sides)."""
    ctx = mp.get_context("fork")
    procs = max(1, min(clients, procs_per_core * len(client_cores)))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    barrier = ctx.Barrier(procs + 1)
    queue = ctx.Queue()
    workers = [
        ctx.Process(
            target=_load_process,
            args=(kind, srv, layout, i, shares[i], client_cores, barrier, duration, warmup, queue),
            daemon=True,
        )
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait(timeout=300)
    time.sleep(warmup)
    cores = server_cores or set()
    busy0, cpu0, t0 = procstat.cores_busy(cores), procstat.tree_cpu(srv.pid), time.monotonic()
    time.sleep(duration)
    busy1, cpu1, t1 = procstat.cores_busy(cores), procstat.tree_cpu(srv.pid), time.monotonic()
    barrier.wait(timeout=120)
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    ops = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    client_cpu = sum(r[2] for r in results)
    latencies = [x for r in results for x in r[3]]
    elapsed = t1 - t0
    server_cpu = cpu1 - cpu0
    per = max(ops, 1)
    return {
        "ops": ops,
        "errors": errors,
        "ops_per_s": ops / elapsed,
        "p50_ms": _percentile(latencies, 0.5) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "server_cpu_per_op_ms": server_cpu / per * 1e3,
        "client_cpu_per_op_ms": client_cpu / per * 1e3,
        "server_cpu_util": server_cpu / elapsed,
        # everything the server's cores did (see procstat.cores_busy); 0 if not given
        "server_core_per_op_ms": (busy1 - busy0) / per * 1e3,
    }


# -- (e) listings ------------------------------------------------------------------------
def listing(srv: Running, layout: Layout, *, verb: str, repeats: int) -> dict[str, float] | None:
    buffer = memoryview(bytearray(RECV_BUFFER))
    ctl = Control(srv.host, srv.port)
    ctl.login(srv.user, srv.password)
    times: list[float] = []
    sizes = 0
    cpu0 = procstat.tree_cpu(srv.pid)
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            sizes = ctl.download(verb, MANY, buffer)
            times.append(time.perf_counter() - t0)
    except Exception:
        if verb == "MLSD":
            ctl.close()
            return None  # not supported (vsftpd)
        raise
    cpu1 = procstat.tree_cpu(srv.pid)
    ctl.quit()
    return {
        "seconds": statistics.median(times),
        "entries_per_s": layout.many / statistics.median(times),
        "server_cpu_ms": (cpu1 - cpu0) / repeats * 1e3,
        "bytes": sizes,
    }


# -- (f) idle memory ---------------------------------------------------------------------
def memory(srv: Running, layout: Layout, *, low: int, high: int) -> dict[str, float]:
    sessions: list[Control] = []

    def grow(n: int) -> int:
        while len(sessions) < n:
            ctl = Control(srv.host, srv.port)
            ctl.login(srv.user, srv.password)
            ctl.cmd("PWD", 257)
            sessions.append(ctl)
        time.sleep(1.0)
        return procstat.tree_pss(srv.pid)

    try:
        base = procstat.tree_pss(srv.pid)
        p_low = grow(low)
        p_high = grow(high)
    finally:
        for ctl in sessions:
            ctl.close()
    return {
        "pss_base_mib": base / 2**20,
        "pss_low_mib": p_low / 2**20,
        "pss_high_mib": p_high / 2**20,
        "kib_per_session": (p_high - p_low) / (high - low) / 1024,
    }
