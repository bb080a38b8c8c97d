"""Start and stop the servers under test, each pinned to the server cores.

Python servers run as ``python -m bench.server_main KIND`` subprocesses. vsftpd runs
standalone (``listen=YES``, ``background=NO``) from a config generated into a temp dir;
it serves the anonymous user with uploads enabled (no PAM, so a login costs what a
local-user login costs minus password hashing), with ``isolate``/``isolate_network``
off and ``seccomp_sandbox`` off (namespaces per session are slow and unavailable in
some containers). Every server sees the same tree: ``ROOT/data`` holds the files.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import procstat

PYTHON_SERVERS = ("fsftpd", "pyftpdlib", "aioftp")
ALL_SERVERS = ("fsftpd", "pyftpdlib", "aioftp", "vsftpd")
#: variants of a server, chosen by name like a server: (the server, its extra arguments).
#: "fsftpd-metrics" is fsftpd with the metrics sidecar installed (docs/metrics.md), so
#: ``--servers fsftpd,fsftpd-metrics`` measures the cost of metrics in one run.
VARIANTS = {"fsftpd-metrics": ("fsftpd", ["--metrics"])}


def base_kind(kind: str) -> str:
    """The server a kind runs: ``kind`` itself, or the server of a variant."""
    return VARIANTS[kind][0] if kind in VARIANTS else kind
VSFTPD = "/usr/sbin/vsftpd"


@dataclass
class Running:
    kind: str
    host: str
    port: int
    pid: int
    user: str
    password: str


def available(kind: str) -> bool:
    if kind in VARIANTS:
        return available(VARIANTS[kind][0])
    if kind == "vsftpd":
        return os.path.exists(VSFTPD) and os.geteuid() == 0
    mod = {"fsftpd": "fsftpd", "pyftpdlib": "pyftpdlib", "aioftp": "aioftp"}[kind]
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {host}:{port} did not come up")


def prepare_vsftpd_root(root: str) -> None:
    """vsftpd refuses a writable chroot: ROOT is root-owned 0755, ROOT/data belongs to ftp."""
    ftp = pwd.getpwnam("ftp")
    os.chown(root, 0, 0)
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    for dirpath, _dirs, filenames in os.walk(data):
        os.chown(dirpath, ftp.pw_uid, ftp.pw_gid)
        os.chmod(dirpath, 0o777)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chown(path, ftp.pw_uid, ftp.pw_gid)
            os.chmod(path, 0o666)


def vsftpd_config(host: str, port: int, root: str) -> str:
    return "\n".join(
        [
            "listen=YES",
            "listen_ipv6=NO",
            "background=NO",
            f"listen_address={host}",
            f"listen_port={port}",
            "anonymous_enable=YES",
            "local_enable=NO",
            "no_anon_password=YES",
            f"anon_root={root}",
            "write_enable=YES",
            "anon_upload_enable=YES",
            "anon_mkdir_write_enable=YES",
            "anon_other_write_enable=YES",
            "anon_umask=022",
            "anon_world_readable_only=NO",
            "max_clients=0",
            "max_per_ip=0",
            "idle_session_timeout=600",
            "data_connection_timeout=600",
            "pasv_enable=YES",
            "port_enable=YES",
            "connect_from_port_20=NO",
            "xferlog_enable=NO",
            "dirmessage_enable=NO",
            "use_localtime=NO",
            "seccomp_sandbox=NO",
            "isolate=NO",
            "isolate_network=NO",
            "secure_chroot_dir=/var/run/vsftpd/empty",
            "ftpd_banner=vsftpd ready",
            "",
        ]
    )


@contextlib.contextmanager
def start(kind: str, host: str, root: str, cores: set[int], *, workers: int = 1) -> Iterator[Running]:
    """Run server ``kind`` on ``host`` (a fresh 127.0.0.x) serving ``root``."""
    port = free_port(host)
    tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    if kind == "vsftpd":
        if not os.path.isdir("/var/run/vsftpd/empty"):
            os.makedirs("/var/run/vsftpd/empty", exist_ok=True)
        conf = os.path.join(tmp, "vsftpd.conf")
        with open(conf, "w") as f:
            f.write(vsftpd_config(host, port, root))
        cmd = [VSFTPD, conf]
        user, password = "anonymous", "bench@"
    else:
        cmd = [
            sys.executable,
            "-m",
            "bench.server_main",
            base_kind(kind),
            *(VARIANTS[kind][1] if kind in VARIANTS else []),
            "--host",
            host,
            "--port",
            str(port),
            "--root",
            root,
            "--workers",
            str(workers),
        ]
        user, password = "bench", "bench"
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # so "-m bench..." imports
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    try:
        _wait_listening(host, port, proc)
        yield Running(kind, host, port, proc.pid, user, password)
    finally:
        # vsftpd's session processes outlive the listener: end the whole tree, by pid
        family = procstat.tree(proc.pid) if kind == "vsftpd" else [proc.pid]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if kind != "vsftpd" else signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def version(kind: str) -> str:
    if kind in VARIANTS:
        return version(VARIANTS[kind][0])
    if kind == "fsftpd":
        import fsftpd

        return str(fsftpd.__version__)
    if kind == "pyftpdlib":
        import pyftpdlib

        return str(pyftpdlib.__ver__)
    if kind == "aioftp":
        import aioftp

        return str(aioftp.__version__)
    if kind == "vsftpd":
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], capture_output=True, text=True
        )
        return out.stdout.strip() or "?"
    return "?"
