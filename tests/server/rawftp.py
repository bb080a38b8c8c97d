"""A tiny line-level FTP client over a plain socket, for tests that need exact bytes on the
wire (bad input, pipelining, ABOR timing, RST) where ftplib would get in the way."""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import struct
import time
from collections.abc import Iterator

DEFAULT_TIMEOUT = 20.0


class Raw:
    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.read()

    # -- replies -----------------------------------------------------------------------
    def read(self) -> tuple[int, str]:
        """One whole reply: (code, text with lines joined by \\n)."""
        first = self.file.readline()
        if not first:
            raise ConnectionError("control connection closed")
        line = first.decode("utf-8", "surrogateescape").rstrip("\r\n")
        code = int(line[:3])
        lines = [line[4:]]
        if line[3:4] == "-":
            while True:
                nxt = self.file.readline()
                if not nxt:
                    raise ConnectionError("control connection closed inside a reply")
                text = nxt.decode("utf-8", "surrogateescape").rstrip("\r\n")
                if text.startswith(f"{code} "):
                    lines.append(text[4:])
                    break
                lines.append(text)
        return code, "\n".join(lines)

    def send(self, line: str | bytes) -> None:
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send(line)
        return self.read()

    def code(self, line: str | bytes) -> int:
        return self.cmd(line)[0]

    def login(self, user: str, password: str) -> None:
        assert self.code(f"USER {user}") == 331
        code, text = self.cmd(f"PASS {password}")
        assert code == 230, text

    # -- data connections -----------------------------------------------------------
    def epsv(self) -> socket.socket:
        code, text = self.cmd("EPSV")
        assert code == 229, text
        m = re.search(r"\(\|\|\|(\d+)\|\)", text)
        assert m, text
        return socket.create_connection((self.host, int(m.group(1))), timeout=DEFAULT_TIMEOUT)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.file.close()

    def reset(self) -> None:
        """Vanish: close with an RST instead of a FIN."""
        rst(self.sock)
        self.file.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rst(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0, so the peer sees a TCP reset, not a clean close."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        chunks.append(data)
    sock.close()
    return b"".join(chunks)


def random_blocks(size: int, seed: int, block: int = 1 << 20) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in blocks from a generator seeded once (from os.urandom
    by the callers): a large file never exists whole in memory, and the same seed gives the
    same stream again for checking."""
    rng = random.Random(seed)
    remaining = size
    while remaining > 0:
        chunk = rng.randbytes(min(block, remaining))
        yield chunk
        remaining -= len(chunk)


class RandomFile:
    """A file-like reader over :func:`random_blocks`, hashing what it hands out."""

    def __init__(self, size: int, seed: int | None = None) -> None:
        self.size = size
        self.seed = int.from_bytes(os.urandom(8), "big") if seed is None else seed
        self._blocks = random_blocks(size, self.seed)
        self._buf = b""
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            nxt = next(self._blocks, None)
            if nxt is None:
                break
            self._buf += nxt
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        self.digest.update(out)
        return out

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def expected_sha256(size: int, seed: int) -> str:
    digest = hashlib.sha256()
    for chunk in random_blocks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(predicate())  # type: ignore[operator]
