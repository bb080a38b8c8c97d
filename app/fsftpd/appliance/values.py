"""Parsing and checking single values of the settings: addresses, port ranges, replica
indexes, home URLs. Each raises ValueError with the reason (the caller names the variable)."""

from __future__ import annotations

import ipaddress
import re
import socket


def split_hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def check_address(host: str) -> None:
    """An IP address, or a name that resolves now."""
    try:
        ipaddress.ip_address(host.split("%")[0])
        return
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9._-]+", host) or re.fullmatch(r"[0-9.]+", host):
        raise ValueError(f"{host!r} is not an IP address or host name")
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"{host!r} does not resolve ({exc.strerror or exc})") from None


def parse_port_range(text: str) -> list[int] | None:
    """``30000-30009`` or ``30000`` -> the ports; ``any`` -> None (the OS picks)."""
    text = text.strip()
    if text.lower() in ("any", "0"):
        return None
    match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", text)
    if match is None:
        raise ValueError(f"{text!r} is not a port range LOW-HIGH (e.g. 30000-30009) or one port")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    for port in (low, high):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range (1-65535)")
    if high < low:
        raise ValueError(f"range {low}-{high} is reversed (write {high}-{low})")
    return list(range(low, high + 1))


def replica_number(text: str) -> int:
    """``2`` or a pod name ``fsftpd-2`` -> 2."""
    match = re.search(r"(\d+)$", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is neither a number nor a name ending in one (like fsftpd-2)")
    return int(match.group(1))


def check_home_scheme(url: str) -> None:
    """Refuse a URL whose scheme no installed fsspec backend serves."""
    head, sep, _ = url.partition("://")
    if not sep or head.lower() in ("file", "local", "memory", "s3", "s3a"):
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(head.lower())
    except (ValueError, ImportError) as exc:
        raise ValueError(f"no installed fsspec backend serves {head}:// ({exc})") from None


def replica_ports(ports: list[int], replicas: int, index: int) -> list[int]:
    """Replica ``index`` of ``replicas`` offers the contiguous block ``index`` of ``ports``."""
    size = len(ports) // replicas
    return ports[index * size:(index + 1) * size]
