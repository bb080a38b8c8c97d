"""What the metrics cost per small transfer, counted in instructions rather than timed.

CPU time per transfer on a shared machine varies by +-20% between runs of (b) (see
docs/benchmarks.md), far more than the few percent being measured. So the same server runs
under valgrind's callgrind, once without and once with the metrics sidecar, and one client
does RETR and STOR of a 64 KiB file in turn; after a warm-up the instruction counter is
zeroed, ``--ops`` transfers run, and the server's instructions per transfer are compared.

    .venv/bin/python -m bench.metrics_cost [--ops 200]

The count covers user space only (the kernel's share of a transfer, sendfile, accept,
close..., is the same in both), so the percentage printed is an upper bound of the share
of the whole CPU. The sidecar's twice-a-second timer is turned off in the measured server:
under valgrind a second lasts 50 times as many transfers, which would count its work 50
times over (at full speed it runs once per hundreds of transfers).
"""

from __future__ import annotations

import argparse
import ftplib
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def serve(mode: str, port: int, root: str) -> None:
    """The measured server (in the valgrind'ed process): ``off``, ``observed`` (an observer
    that ignores every event, as the appliance's access log does below its log level:
    the engine builds its events) or ``on`` (the metrics sidecar)."""
    import uvloop

    import fsftpd

    async def main() -> None:
        server = fsftpd.Server([fsftpd.User("bench", "bench", base_path=root)])
        if mode == "observed":
            server.events.subscribe(lambda event: None)
        if mode == "on":
            from fsftpd.appliance import health, sidecar

            health.BEAT_INTERVAL = 3600.0  # see the module docstring
            await sidecar.install(server, host="127.0.0.1", port=0)
        await server.start("127.0.0.1", port)
        print("READY", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def _summary(path: str) -> int:
    with open(path) as f:
        match = re.search(r"^(?:summary|totals):\s*(\d+)", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction count in {path}")
    return int(match.group(1))


def measure(mode: str, root: str, ops: int, warmup: int = 60) -> float:
    """Instructions per transfer of the server in ``mode``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mkdtemp(prefix="fsftpd-callgrind-")
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", sys.executable,
               "-m", "bench.metrics_cost", "--serve", mode, "--port", str(port), "--root", root]
    # A fixed hash seed: string hashes (dict layouts) otherwise move the count by about 1%.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("READY"):
            raise RuntimeError("the server did not start under valgrind")
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=300)
        ftp.login("bench", "bench")
        ftp.voidcmd("TYPE I")
        data = os.urandom(64 * 1024)

        def transfer(i: int) -> None:
            if i & 1:
                conn = ftp.transfercmd("STOR up.bin")
                conn.sendall(data)
                conn.close()
            else:
                conn = ftp.transfercmd("RETR small.bin")
                while conn.recv(1 << 18):
                    pass
                conn.close()
            ftp.voidresp()

        for i in range(warmup):
            transfer(i)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], capture_output=True, check=True)
        for i in range(ops):
            transfer(i)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], capture_output=True, check=True)
        deadline = time.monotonic() + 60
        while not glob.glob(f"{out}/cg.out.*") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        ftp.close()
        dumps = glob.glob(f"{out}/cg.out.*")
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        return _summary(dumps[0]) / ops
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200, help="measured transfers per server")
    parser.add_argument("--reps", type=int, default=2, help="off/on pairs")
    parser.add_argument("--serve", choices=["off", "observed", "on"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.root)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    root = tempfile.mkdtemp(prefix="fsftpd-metrics-cost-")
    try:
        with open(os.path.join(root, "small.bin"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        for rep in range(args.reps):
            off = measure("off", root, args.ops)
            observed = measure("observed", root, args.ops)
            on = measure("on", root, args.ops)
            print(f"run {rep + 1}, instructions per transfer: off {off:,.0f}, observed {observed:,.0f} "
                  f"(+{(observed - off) / off:.1%}), metrics on {on:,.0f} (+{(on - off) / off:.1%}; "
                  f"+{(on - observed) / observed:.1%} over observed)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
