"""Data connections: passive listeners (PASV/EPSV) and active connects (PORT/EPRT).

Invariants:
- a passive listener accepts exactly one connection, and only from the control
  connection's peer address (no data theft by a third host);
- an active connection only goes to the control connection's peer address and to an
  unprivileged port (RFC 2577: no FTP bounce);
- every socket handed out is non-blocking and closed by whoever holds it last.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import random
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from ..protocol.errors import FtpError

SOCKET_BUFFER = 4 * 1024 * 1024


def tune(sock: socket.socket) -> None:
    """Large socket buffers and no Nagle: bulk transfers stay at loopback speed."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


_LINUX = sys.platform.startswith("linux")
#: Linux gives an accepted socket the listener's buffer sizes and TCP_NODELAY: tuning the
#: listener once is enough (three system calls fewer per data connection).
_INHERITS_OPTIONS = _LINUX


def parse_reserved_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``ip_local_reserved_ports``: "8080,30000-30010" -> ((8080, 8080), (30000, 30010))."""
    spans = []
    for item in text.replace("\n", ",").split(","):
        low, _, high = item.strip().partition("-")
        if not low:
            continue
        try:
            spans.append((int(low), int(high or low)))
        except ValueError:
            continue
    return tuple(spans)


def _read_dynamic() -> tuple[range, tuple[tuple[int, int], ...]]:
    """The ports the OS hands out by its own choice, and those the administrator reserved
    out of them (Linux's ip_local_port_range and ip_local_reserved_ports; the IANA
    dynamic range elsewhere). No service listens in that range by convention, except on a
    reserved port, so a passive listener never takes a port that a service starting later
    needs."""
    ports = range(49152, 65536)
    reserved: tuple[tuple[int, int], ...] = ()
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        if 1024 <= low <= high <= 65535:
            ports = range(low, high + 1)
        with open("/proc/sys/net/ipv4/ip_local_reserved_ports") as f:
            reserved = parse_reserved_ports(f.read())
    except (OSError, ValueError):
        pass
    return ports, reserved


class DynamicPorts:
    """Random ports of the dynamic range, never a reserved one; the settings are read
    again once a minute, so a change by the administrator is seen without a restart."""

    REFRESH = 60.0

    def __init__(self, read: Callable[[], tuple[range, tuple[tuple[int, int], ...]]] = _read_dynamic) -> None:
        self._read = read
        self._ports = range(0)
        self._reserved: tuple[tuple[int, int], ...] = ()
        self._read_at = -math.inf

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at > self.REFRESH:
            self._ports, self._reserved = self._read()
            self._read_at = now

    def count(self) -> int:
        """How many ports of the dynamic range are not reserved."""
        self._refresh()
        reserved = sum(max(0, min(high, self._ports.stop - 1) - max(low, self._ports.start) + 1)
                       for low, high in self._reserved) if self._ports else 0
        return max(0, len(self._ports) - reserved)

    def pick(self) -> int | None:
        """A random port, or None when the one drawn is reserved (the caller tries again)."""
        self._refresh()
        if not self._ports:
            return None
        port = random.choice(self._ports)
        for low, high in self._reserved:
            if low <= port <= high:
                return None
        return port


_DYNAMIC = DynamicPorts()


def dynamic_port_count() -> int:
    """The ports a passive listener may take when no range is configured."""
    return _DYNAMIC.count()

#: Random ports tried before the OS is asked for one (bind to port 0).
_OWN_TRIES = 8


def _candidates(ports: Sequence[int] | None) -> Iterator[int]:
    """The passive ports to try: each of ``ports`` once, from a random starting point (so
    a port is hard to guess and consecutive data connections rarely share one). The range
    is not copied or shuffled: a 10,000-port range costs no more per PASV than a 10-port
    one.

    With no range configured, a few random ports of the dynamic range (never a reserved
    one) come first and the OS's choice (port 0) last. A busy server's downloads leave
    their passive ports in TIME_WAIT (the server closes a download's connection first) for
    a minute, and Linux's search for a port 0 skips every port with such a socket on the
    address: at a few hundred downloads a second the search grows to thousands of ports
    per PASV (4 ms measured with 9,000 of them; docs/benchmarks.md) until the range runs
    out. A port named explicitly is taken over from TIME_WAIT by SO_REUSEADDR at once."""
    if not ports:
        for _ in range(_OWN_TRIES):
            port = _DYNAMIC.pick()
            if port is not None:
                yield port
        yield 0
        return
    count = len(ports)
    start = random.randrange(count)
    for i in range(count):
        yield ports[(start + i) % count]


def same_host(a: str, b: str) -> bool:
    if a == b:
        return True  # the usual case, without parsing two addresses per data connection
    try:
        ia, ib = ipaddress.ip_address(a.split("%")[0]), ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return a == b
    if isinstance(ia, ipaddress.IPv6Address) and ia.ipv4_mapped:
        ia = ia.ipv4_mapped
    if isinstance(ib, ipaddress.IPv6Address) and ib.ipv4_mapped:
        ib = ib.ipv4_mapped
    return ia == ib


class PassiveListener:
    """A listening socket for one data connection."""

    def __init__(self, sock: socket.socket, peer_host: str | None) -> None:
        self.sock = sock
        #: the only address allowed to connect; None: any (the peer check is off)
        self.peer_host = peer_host
        self.port: int = sock.getsockname()[1]
        #: the timer that closes this listener if no transfer command uses it in time
        self.expiry: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, local_host: str, peer_host: str | None, ports: Sequence[int] | None) -> PassiveListener:
        """A listener on the first free port of ``ports`` (every one is tried, from a random
        start), or 425 when none is free."""
        family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
        last: OSError | None = None
        busy = 0
        for port in _candidates(ports):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tune(sock)
                sock.bind((local_host, port))
                sock.listen(4)
                sock.setblocking(False)
                return cls(sock, peer_host)
            except OSError as exc:
                sock.close()
                last = exc
                busy += exc.errno == errno.EADDRINUSE
        if ports and busy == len(ports):
            raise FtpError(425, f"Cannot open passive connection: all {busy} passive ports are busy, "
                                "try again later")
        raise FtpError(425, f"Cannot open passive connection: {last.strerror if last else 'no port'}")

    def accept_ready(self) -> socket.socket | None:
        """The client's connection if it is queued already (it usually is: clients
        connect before they send RETR or STOR), without a wait on the loop."""
        while True:
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return None
            if self._admit(conn, addr[0]):
                return conn

    async def accept(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        while True:
            conn, addr = await loop.sock_accept(self.sock)
            if self._admit(conn, addr[0]):
                return conn

    def _admit(self, conn: socket.socket, host: str) -> bool:
        if self.peer_host is None or same_host(host, self.peer_host):
            conn.setblocking(False)
            if not _INHERITS_OPTIONS:
                tune(conn)
            return True
        # A connection from another host: refuse it and keep waiting for the client.
        conn.close()
        return False

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.sock.close()


def parse_port(arg: str) -> tuple[str, int]:
    """PORT h1,h2,h3,h4,p1,p2 (RFC 959 4.1.2)."""
    parts = arg.strip().split(",")
    if len(parts) != 6:
        raise FtpError(501, "PORT needs h1,h2,h3,h4,p1,p2")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise FtpError(501, "PORT needs numbers") from None
    if any(not 0 <= n <= 255 for n in nums):
        raise FtpError(501, "PORT numbers must be 0-255")
    return ".".join(map(str, nums[:4])), nums[4] * 256 + nums[5]


def parse_eprt(arg: str) -> tuple[str, int]:
    """EPRT |af|addr|port| (RFC 2428 section 2)."""
    arg = arg.strip()
    if len(arg) < 7:
        raise FtpError(501, "Bad EPRT argument")
    delim = arg[0]
    fields = arg.split(delim)
    if len(fields) != 5 or fields[0] or fields[4]:
        raise FtpError(501, "Bad EPRT argument")
    af, host, port_text = fields[1:4]
    if af not in ("1", "2"):
        raise FtpError(522, "Network protocol not supported, use (1,2)")
    try:
        addr = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise FtpError(501, "Bad EPRT address or port") from None
    if (af == "1") != (addr.version == 4) or not 0 < port < 65536:
        raise FtpError(501, "Bad EPRT address or port")
    return host, port


def check_active_target(host: str, port: int, peer_host: str) -> None:
    if not same_host(host, peer_host):
        raise FtpError(501, "Active mode only to the client's own address (RFC 2577)")
    if port < 1024:
        raise FtpError(501, "Active mode to a privileged port is refused (RFC 2577)")


#: Linux >= 4.2; Python names it from 3.12 on.
_BIND_ADDRESS_NO_PORT: int | None = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24) if _LINUX else None


async def connect_active(host: str, port: int, local_host: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        tune(sock)
        if (":" in local_host) == (family == socket.AF_INET6):
            if _BIND_ADDRESS_NO_PORT is not None:
                try:
                    # The port is chosen at connect time, for the whole address pair: a bare
                    # bind() to port 0 skips every port left in TIME_WAIT by earlier active
                    # downloads, 2-10 ms per connection after 10,000 of them (measured).
                    sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
                except OSError:
                    pass
            try:
                sock.bind((local_host, 0))
            except OSError:
                pass
        await loop.sock_connect(sock, (host, port))
    except OSError as exc:
        sock.close()
        raise FtpError(425, f"Cannot open data connection: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def pasv_reply_address(host: str) -> str:
    """The dotted quad for a 227 reply; IPv4-mapped IPv6 is unwrapped."""
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        raise FtpError(425, "Cannot use PASV with a host name") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is None:
            raise FtpError(522, "PASV is IPv4 only; use EPSV (RFC 2428)")
        addr = addr.ipv4_mapped
    return str(addr)


__all__ = [
    "PassiveListener",
    "check_active_target",
    "connect_active",
    "parse_eprt",
    "parse_port",
    "pasv_reply_address",
    "same_host",
    "tune",
]
