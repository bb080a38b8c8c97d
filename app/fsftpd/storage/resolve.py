"""Resolving local paths the way ``os.path.realpath`` does, faster where the path exists."""

from __future__ import annotations

import os

#: Linux: a descriptor opened with O_PATH names, in /proc/self/fd, the path the kernel
#: resolved (every symlink followed), for the price of three system calls
_PROC_FD = "/proc/self/fd/"
_O_PATH = getattr(os, "O_PATH", 0)


def resolved_path(path: str) -> str:
    """``os.path.realpath(path)`` for an absolute ``path``. When it exists, the kernel's own
    resolution is read back from an O_PATH descriptor (about a quarter of realpath's cost,
    which lstat()s and joins every component in Python); a missing path, a symlink loop, a
    path not searchable, a system without O_PATH or /proc, or a link that does not read back
    as an absolute path take ``os.path.realpath`` itself, so the result is always the same."""
    if _O_PATH:
        try:
            fd = os.open(path, _O_PATH | os.O_CLOEXEC)
        except OSError:
            return os.path.realpath(path)
        try:
            resolved = os.readlink(_PROC_FD + str(fd))
        except OSError:
            resolved = ""
        finally:
            os.close(fd)
        if resolved.startswith("/") and not resolved.endswith(" (deleted)"):
            return resolved
    return os.path.realpath(path)


def descriptor_path(fd: int) -> str | None:
    """The path of the object open on ``fd``, as the kernel resolved it when it was opened
    (Linux's /proc/self/fd); None where that cannot be known (no /proc, a deleted file)."""
    try:
        resolved = os.readlink(_PROC_FD + str(fd))
    except OSError:
        return None
    if resolved.startswith("/") and not resolved.endswith(" (deleted)"):
        return resolved
    return None
