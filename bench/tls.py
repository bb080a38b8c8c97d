"""PROT P against plain FTP: download speed of one large file from fsftpd.

    .venv/bin/python -m bench.tls                 # 256 MiB file, 5 rounds each
    .venv/bin/python -m bench.tls --size-mib 64 --reps 3 --tls 1.2

A fresh fsftpd (uvloop, as the appliance runs) serves a file from local disk; the
client downloads it over a plain data connection (sendfile) and over PROT P (TLS, the
copy loop of 1 MiB blocks), alternating, and reports the median speed of each, the
ratio PROT P / plain, and the server's CPU seconds per GiB. With two cores or more the
server is pinned to core 0 and the client to the others. On a shared machine the numbers
move from run to run: compare the ratio, not the absolute speeds.
"""

from __future__ import annotations

import argparse
import contextlib
import ftplib
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from .servers import free_port

RECV = 1024 * 1024


def make_cert(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "bench.crt"), os.path.join(directory, "bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(root: str, cert: str, key: str) -> Iterator[tuple[int, int]]:
    port = free_port("127.0.0.1")
    cmd = [sys.executable, "-m", "bench.server_main", "fsftpd", "--port", str(port), "--root", root,
           "--tls-cert", cert, "--tls-key", key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            os.sched_setaffinity(proc.pid, {cores[0]})
            os.sched_setaffinity(0, set(cores[1:]))
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            raise RuntimeError("fsftpd did not start")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def download(port: int, protected: bool, version: str, size: int) -> float:
    """Seconds for one RETR of the file: curl (C, so the client is not what limits the
    speed: Python's ssl reads one 16 KiB record per call), else ftplib."""
    if shutil.which("curl"):
        tls = ["--tlsv1.3"] if version == "1.3" else ["--tlsv1.2", "--tls-max", "1.2"]
        cmd = ["curl", "--silent", "--show-error", "-k", "-u", "bench:bench", "-o", "/dev/null",
               "-w", "%{time_total} %{time_pretransfer} %{size_download}",
               *(["--ssl-reqd", *tls] if protected else []), f"ftp://127.0.0.1:{port}/big.bin"]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=300).stdout.split()
        if int(float(out[2])) != size:
            raise RuntimeError(f"downloaded {out[2]!r} bytes of {size}")
        return float(out[0]) - float(out[1])  # the data phase, without login and AUTH
    return _download_ftplib(port, protected, version, size)


def _download_ftplib(port: int, protected: bool, version: str, size: int) -> float:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a throw-away self-signed certificate on loopback
    context.minimum_version = context.maximum_version = (
        ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2)
    ftp = ftplib.FTP_TLS(context=context, timeout=120)
    ftp.connect("127.0.0.1", port)
    ftp.login("bench", "bench")
    if protected:
        ftp.prot_p()
    ftp.voidcmd("TYPE I")
    buffer = bytearray(RECV)
    started = time.perf_counter()
    conn = ftp.transfercmd("RETR big.bin")
    got = 0
    while True:
        n = conn.recv_into(buffer)
        if not n:
            break
        got += n
    if isinstance(conn, ssl.SSLSocket):
        conn.unwrap()
    conn.close()
    ftp.voidresp()
    elapsed = time.perf_counter() - started
    ftp.quit()
    if got != size:
        raise RuntimeError(f"downloaded {got} bytes of {size}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tls", choices=["1.2", "1.3"], default="1.3")
    args = parser.parse_args(argv)
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="fsftpd-bench-tls-") as work:
        root = os.path.join(work, "root")
        os.mkdir(root)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1024 * 1024))
        cert, key = make_cert(work)
        times: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        with server(root, cert, key) as (port, pid):
            download(port, False, args.tls, size)  # warm the page cache and the server
            for rep in range(args.reps):
                for protected in ((False, True) if rep % 2 == 0 else (True, False)):
                    before = cpu_seconds(pid)
                    times[protected].append(download(port, protected, args.tls, size))
                    cpu[protected].append(cpu_seconds(pid) - before)
    gib = size / 2**30
    rows = {}
    for protected, label in ((False, "plain"), (True, f"PROT P (TLS {args.tls})")):
        speed = size / statistics.median(times[protected]) / 1e6
        rows[label] = (speed, statistics.median(cpu[protected]) / gib)
    plain_speed = rows["plain"][0]
    client = "curl" if shutil.which("curl") else "ftplib"
    print(f"RETR of {args.size_mib} MiB from fsftpd by {client}, median of {args.reps} "
          "(shared machine: noisy)")
    for label, (speed, cpu_per_gib) in rows.items():
        print(f"  {label:<20} {speed:8.0f} MB/s   server CPU {cpu_per_gib:5.2f} s/GiB   "
              f"ratio {speed / plain_speed:4.2f}")


if __name__ == "__main__":
    main()
