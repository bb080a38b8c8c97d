"""The benchmark's single entry point.

    .venv/bin/python -m bench.run            # full run (about 15 minutes on 2 cores)
    .venv/bin/python -m bench.run --quick    # about 2 minutes
    .venv/bin/python -m bench.run --servers fsftpd --workloads b,e --reps 1

Each measurement starts a fresh server on a fresh loopback address (127.0.0.x, so
TIME_WAIT sockets of earlier runs do not interfere), pinned to the server cores; the load
runs on the client cores. Servers alternate within every repetition (the order rotates
from one repetition to the next) and the report shows medians. Raw samples go to
``bench/results/*.json``; ``--docs`` (default for a full run) rewrites the generated part
of ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from . import limits, servers, workloads
from .workloads import Layout

ALL_WORKLOADS = ("a", "b", "c", "d", "e", "f", "g", "h")


@dataclass
class Profile:
    name: str
    big_size: int
    small_size: int = 64 * 1024
    many: int = 10_000
    reps: int = 5
    load_seconds: float = 8.0
    main_clients: int = 100
    other_clients: tuple[int, ...] = (10, 500)
    churn_workers: int = 50
    churn_seconds: float = 6.0
    list_repeats: int = 5
    memory_sessions: tuple[int, int] = (100, 1000)
    memory_reps: int = 1
    # (h) sustained load: (b) run long enough for a minute's downloads to sit in TIME_WAIT
    sustained_warmup: float = 15.0
    sustained_seconds: float = 30.0
    sustained_reps: int = 1


PROFILES = {
    "full": Profile("full", big_size=2**30),
    "quick": Profile(
        "quick",
        big_size=256 * 2**20,
        reps=1,
        load_seconds=2.5,
        churn_seconds=2.5,
        list_repeats=3,
        memory_sessions=(50, 300),
        sustained_warmup=5.0,
        sustained_seconds=5.0,
    ),
    "tiny": Profile(
        "tiny",
        big_size=4 * 2**20,
        small_size=16 * 1024,
        many=200,
        reps=1,
        load_seconds=0.5,
        main_clients=4,
        other_clients=(),
        churn_workers=2,
        churn_seconds=0.5,
        list_repeats=1,
        memory_sessions=(2, 6),
        sustained_warmup=0.5,
        sustained_seconds=0.5,
    ),
}


class Addresses:
    """Fresh loopback addresses 127.0.0.2 .. 127.0.0.254, starting at a random point."""

    def __init__(self) -> None:
        start = random.randrange(253)
        self._it = (f"127.0.0.{2 + (start + i) % 253}" for i in itertools.count())

    def __next__(self) -> str:
        return next(self._it)

    def __iter__(self) -> Iterator[str]:
        return self


def prepare(root: str, profile: Profile, with_vsftpd: bool) -> Layout:
    data = os.path.join(root, "data")
    # one upload dir each: vsftpd's must belong to "ftp"
    for kind in (*servers.ALL_SERVERS, *servers.VARIANTS):
        os.makedirs(os.path.join(data, "up", kind), exist_ok=True)
    many = os.path.join(data, "many")
    os.makedirs(many, exist_ok=True)
    block = os.urandom(1024 * 1024)
    with open(os.path.join(data, "big.bin"), "wb") as f:
        left = profile.big_size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    with open(os.path.join(data, "small.bin"), "wb") as f:
        f.write(block[: profile.small_size])
    for i in range(profile.many):
        with open(os.path.join(many, f"file-{i:05d}.txt"), "wb") as f:
            f.write(block[: i % 4096])
    if with_vsftpd:
        servers.prepare_vsftpd_root(root)
    # warm the page cache: RETR is measured from memory, as the limit is
    with open(os.path.join(data, "big.bin"), "rb") as f:
        while f.read(8 * 1024 * 1024):
            pass
    return Layout(root=root, big_size=profile.big_size, small_size=profile.small_size, many=profile.many)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class Plan:
    profile: Profile
    servers: list[str]
    workloads: list[str]
    server_cores: set[int]
    client_cores: set[int]
    workers: int
    samples: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)

    def add(self, key: str, server: str, sample: dict[str, float] | None) -> None:
        if sample is None:
            return
        self.samples.setdefault(key, {}).setdefault(server, []).append(sample)


def _measurements(plan: Plan, layout: Layout) -> list[tuple[str, str, Callable[[servers.Running], Any]]]:
    p = plan.profile
    cc = plan.client_cores
    sc = plan.server_cores
    out: list[tuple[str, str, Callable[[servers.Running], Any]]] = []
    if "a" in plan.workloads:
        out.append(("a", "retr_big", lambda s: workloads.big_retr(s, layout)))
        out.append(("a", "stor_big", lambda s: workloads.big_stor(s, layout)))
    if "b" in plan.workloads:
        out.append(
            (
                "b",
                f"small_{p.main_clients}",
                lambda s: workloads.load(
                    s,
                    layout,
                    kind="transfers",
                    clients=p.main_clients,
                    duration=p.load_seconds,
                    client_cores=cc,
                    server_cores=sc,
                ),
            )
        )
    if "c" in plan.workloads:
        for n in p.other_clients:
            out.append(
                (
                    "c",
                    f"small_{n}",
                    lambda s, n=n: workloads.load(
                        s,
                        layout,
                        kind="transfers",
                        clients=n,
                        duration=p.load_seconds,
                        client_cores=cc,
                        server_cores=sc,
                    ),
                )
            )
    if "d" in plan.workloads:
        out.append(
            (
                "d",
                "churn",
                lambda s: workloads.load(
                    s,
                    layout,
                    kind="churn",
                    clients=p.churn_workers,
                    duration=p.churn_seconds,
                    client_cores=cc,
                    server_cores=sc,
                ),
            )
        )
    if "e" in plan.workloads:
        out.append(("e", "list", lambda s: workloads.listing(s, layout, verb="LIST", repeats=p.list_repeats)))
        out.append(("e", "mlsd", lambda s: workloads.listing(s, layout, verb="MLSD", repeats=p.list_repeats)))
    return out


def run(plan: Plan, root: str, log: Callable[[str], None]) -> Layout:
    layout = prepare(root, plan.profile, "vsftpd" in plan.servers)
    addresses = Addresses()
    items = _measurements(plan, layout)
    for rep in range(plan.profile.reps):
        order = _rotated(plan.servers, rep)
        if "g" in plan.workloads:  # first, next to (a), which is compared with them
            _settle()
            big = os.path.join(root, "data", "big.bin")
            tries = [
                limits.download_limit(next(addresses), big, plan.server_cores, plan.client_cores)
                for _ in range(2)
            ]
            speeds = ", ".join(f"{t['gib_per_s']:.2f}" for t in tries)
            log(f"rep {rep + 1} download limit, GiB/s per try: {speeds}")
            dl = max(tries, key=lambda t: t["gib_per_s"])
            plan.add("limit_download", "limit", dl)
            uploads = {}
            for key, method in (("limit_upload", "write"), ("limit_upload_splice", "splice")):
                _settle()
                uploads[method] = limits.upload_limit(
                    next(addresses),
                    os.path.join(root, "data", "up"),
                    plan.profile.big_size,
                    plan.server_cores,
                    plan.client_cores,
                    method=method,
                )
                plan.add(key, "limit", uploads[method])
            log(f"rep {rep + 1} limits     download {_brief(dl)} upload {_brief(uploads['write'])} "
                f"splice {_brief(uploads['splice'])}")
        for _, key, fn in items:
            for kind in order:
                host = next(addresses)
                _settle()
                t0 = time.monotonic()
                with servers.start(
                    kind, host, root, plan.server_cores,
                    workers=plan.workers if servers.base_kind(kind) == "fsftpd" else 1
                ) as srv:
                    sample = fn(srv)
                plan.add(key, kind, sample)
                log(f"rep {rep + 1} {key:<10} {kind:<10} {_brief(sample)} ({time.monotonic() - t0:.1f}s)")
    if "h" in plan.workloads:
        p = plan.profile
        for rep in range(p.sustained_reps):
            for kind in _rotated(plan.servers, rep):
                _settle()
                workers = plan.workers if servers.base_kind(kind) == "fsftpd" else 1
                with servers.start(kind, next(addresses), root, plan.server_cores, workers=workers) as srv:
                    sample = workloads.load(
                        srv,
                        layout,
                        kind="transfers",
                        clients=p.main_clients,
                        duration=p.sustained_seconds,
                        warmup=p.sustained_warmup,
                        client_cores=plan.client_cores,
                        server_cores=plan.server_cores,
                    )
                plan.add("sustained", kind, sample)
                log(f"rep {rep + 1} sustained  {kind:<10} {_brief(sample)}")
    if "f" in plan.workloads:
        low, high = plan.profile.memory_sessions
        for rep in range(plan.profile.memory_reps):
            for kind in plan.servers:
                with servers.start(kind, next(addresses), root, plan.server_cores) as srv:
                    sample = workloads.memory(srv, layout, low=low, high=high)
                plan.add("memory", kind, sample)
                log(f"rep {rep + 1} memory     {kind:<10} {_brief(sample)}")
    return layout


def _rotated(kinds: list[str], rep: int) -> list[str]:
    """The servers in the order of repetition ``rep``: each starts one place later."""
    shift = rep % len(kinds)
    return kinds[shift:] + kinds[:shift]


def _settle() -> None:
    """Write back what earlier measurements left dirty (thousands of small uploads, a
    1 GiB one) before the next starts: the kernel's writeback threads are not pinned
    and would otherwise take CPU from whichever measurement follows."""
    os.sync()


def _brief(sample: dict[str, float] | None) -> str:
    if sample is None:
        return "n/a"
    return " ".join(f"{k}={v:.4g}" for k, v in sample.items())


def medians(samples: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, per_server in samples.items():
        for kind, rows in per_server.items():
            out.setdefault(key, {})[kind] = {m: statistics.median(r[m] for r in rows) for m in rows[0]}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_const", const="quick", dest="profile")
    parser.add_argument(
        "--tiny",
        action="store_const",
        const="tiny",
        dest="profile",
        help="seconds-long smoke run (used by the test suite)",
    )
    parser.add_argument("--servers", default=",".join(servers.ALL_SERVERS))
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    parser.add_argument("--reps", type=int, help="repetitions (default: 5 full, 1 quick)")
    parser.add_argument("--server-cores", type=int, default=1, help="cores for the server (default 1)")
    parser.add_argument("--client-cores", type=int, default=1, help="cores for the load client (default 1)")
    parser.add_argument(
        "--workers", type=int, default=0, help="fsftpd worker processes (default: one per server core)"
    )
    parser.add_argument("--workdir", help="where the test tree lives (default: a temp dir under /var/tmp)")
    parser.add_argument("--out", help="JSON file (default bench/results/<time>-<profile>.json)")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite docs/benchmarks.md and .png (default: only for a full run)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or "full"]
    if args.reps:
        profile.reps = args.reps
    cpus = sorted(os.sched_getaffinity(0))
    server_cores = set(cpus[: args.server_cores])
    client_cores = set(cpus[args.server_cores : args.server_cores + args.client_cores]) or set(cpus[-1:])
    wanted = [s for s in args.servers.split(",") if s]
    chosen = [s for s in wanted if servers.available(s)]
    for s in set(wanted) - set(chosen):
        print(f"skipping {s}: not available here", file=sys.stderr)
    plan = Plan(
        profile,
        chosen,
        [w for w in args.workloads.split(",") if w],
        server_cores,
        client_cores,
        args.workers or len(server_cores),
    )
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, client_cores)
    base = args.workdir or tempfile.mkdtemp(prefix="fsftpd-bench-", dir="/var/tmp")
    root = os.path.join(base, "root")
    os.makedirs(root, exist_ok=True)
    started = time.time()
    try:
        run(plan, root, lambda line: print(line, flush=True))
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    result = {
        "profile": asdict(profile),
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        "server_cores": sorted(server_cores),
        "client_cores": sorted(client_cores),
        "fsftpd_workers": plan.workers,
        "versions": {s: servers.version(s) for s in chosen} | {"uvloop": _uvloop_version()},
        "samples": plan.samples,
        "medians": medians(plan.samples),
    }
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}.json"
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results: {out} ({result['seconds']} s)")
    if args.docs or (args.docs is None and profile.name == "full"):
        from . import report

        report.write(result)
    return result


def _uvloop_version() -> str:
    try:
        import uvloop
    except ImportError:
        return "-"
    return str(uvloop.__version__)


if __name__ == "__main__":
    main()
