"""(g) The machine's limits for the two bulk data paths, measured with the same pinning
as the servers: the "server" side runs on the server cores, the "client" side on the
client cores.

- download limit: ``os.sendfile`` of the big file into a loopback TCP socket, received
  with ``recv_into`` a preallocated 1 MiB buffer (what a zero-copy RETR can reach);
- upload limit: ``recv_into`` a preallocated 1 MiB buffer, then ``write`` to a new file
  in the same directory the servers store into (what a STOR can reach);
- the same upload with ``splice(2)``, socket -> pipe -> file, no user-space buffer (an idea
  the performance issue asked to measure; fsftpd's STOR does not use it).
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import select
import socket
import time
from typing import Any

from . import procstat
from .ftpclient import RECV_BUFFER


def _sendfile_side(sock: socket.socket, path: str, cores: set[int], queue: Any) -> None:
    os.sched_setaffinity(0, cores)
    conn, _ = sock.accept()
    cpu0 = procstat.self_cpu()
    # non-blocking and driven by writability, as an event-loop server sends (measured
    # here to be at least as fast as a blocking sendfile)
    conn.setblocking(False)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLOUT)
    with open(path, "rb") as f:
        fd, offset = f.fileno(), 0
        size = os.fstat(fd).st_size
        while offset < size:
            try:
                sent = os.sendfile(conn.fileno(), fd, offset, 8 * 1024 * 1024)
            except BlockingIOError:
                poller.poll()
                continue
            if not sent:
                break
            offset += sent
    conn.close()
    queue.put(procstat.self_cpu() - cpu0)


def _writer_side(sock: socket.socket, path: str, cores: set[int], queue: Any, method: str) -> None:
    os.sched_setaffinity(0, cores)
    conn, _ = sock.accept()
    cpu0 = procstat.self_cpu()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if method == "splice":
        _splice_into(conn, fd)
    else:
        view = memoryview(bytearray(RECV_BUFFER))
        while True:
            n = conn.recv_into(view)
            if not n:
                break
            chunk = view[:n]
            while chunk:
                w = os.write(fd, chunk)
                chunk = chunk[w:]
    os.close(fd)
    conn.sendall(b"k")
    conn.close()
    queue.put(procstat.self_cpu() - cpu0)


def _splice_into(conn: socket.socket, fd: int) -> None:
    """Socket -> pipe -> file with splice(2), the pipe grown to the receive block size."""
    pipe_r, pipe_w = os.pipe()
    try:
        try:
            size = fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, RECV_BUFFER)
        except OSError:  # above /proc/sys/fs/pipe-max-size: keep the default
            size = fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ)
        sock_fd = conn.fileno()
        while True:
            n = os.splice(sock_fd, pipe_w, size, flags=os.SPLICE_F_MOVE)
            if not n:
                break
            while n:
                n -= os.splice(pipe_r, fd, n, flags=os.SPLICE_F_MOVE)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


def download_limit(host: str, path: str, server_cores: set[int], client_cores: set[int]) -> dict[str, float]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(1)
        proc = ctx.Process(target=_sendfile_side, args=(listener, path, server_cores, queue), daemon=True)
        proc.start()
        buffer = memoryview(bytearray(RECV_BUFFER))
        cpu0 = procstat.self_cpu()
        t0 = time.perf_counter()
        total = 0
        with socket.create_connection(listener.getsockname()) as sock:
            while True:
                n = sock.recv_into(buffer)
                if not n:
                    break
                total += n
        elapsed = time.perf_counter() - t0
        client_cpu = procstat.self_cpu() - cpu0
        server_cpu = queue.get(timeout=60)
        proc.join(10)
    gib = total / 2**30
    return {
        "gib_per_s": gib / elapsed,
        "server_cpu_per_gib": server_cpu / gib,
        "client_cpu_per_gib": client_cpu / gib,
    }


def upload_limit(
    host: str, directory: str, size: int, server_cores: set[int], client_cores: set[int],
    method: str = "write",
) -> dict[str, float]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    target = os.path.join(directory, "limit-upload.bin")
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(1)
        args = (listener, target, server_cores, queue, method)
        proc = ctx.Process(target=_writer_side, args=args, daemon=True)
        proc.start()
        payload = memoryview(os.urandom(RECV_BUFFER))
        cpu0 = procstat.self_cpu()
        t0 = time.perf_counter()
        with socket.create_connection(listener.getsockname()) as sock:
            sent = 0
            while sent < size:
                n = min(len(payload), size - sent)
                sock.sendall(payload[:n])
                sent += n
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)
        elapsed = time.perf_counter() - t0
        client_cpu = procstat.self_cpu() - cpu0
        server_cpu = queue.get(timeout=60)
        proc.join(10)
    written = os.path.getsize(target)
    os.unlink(target)
    if written != size:
        raise RuntimeError(f"upload limit ({method}): {written} bytes on disk, {size} sent")
    gib = size / 2**30
    return {
        "gib_per_s": gib / elapsed,
        "server_cpu_per_gib": server_cpu / gib,
        "client_cpu_per_gib": client_cpu / gib,
    }
