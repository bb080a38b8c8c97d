"""Virtual path algebra: every path a client names becomes an absolute, normalised,
POSIX-style virtual path inside the user's root ("/").

Invariant: :func:`resolve` never returns a path containing ``..``, ``.``, a backslash,
an empty segment or a NUL byte, and always starts with "/". It never touches storage;
symlinks are the storage layer's business.
"""

from __future__ import annotations

from .errors import FtpError


def resolve(cwd: str, arg: str) -> str:
    """Resolve ``arg`` (absolute or relative to ``cwd``) to a clamped virtual path.

    ``..`` at the root stays at the root, like ``cd ..`` in ``/``. Backslashes are
    treated as separators, so ``..\\..\\etc`` cannot slip past a POSIX-only check.
    """
    if "\x00" in arg:
        raise FtpError(501, "NUL character in path")
    arg = arg.replace("\\", "/")
    base = "" if arg.startswith("/") else cwd
    parts: list[str] = []
    for segment in f"{base}/{arg}".split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    return "/" + "/".join(parts)


def parent(path: str) -> str:
    head, _, _ = path.rpartition("/")
    return head or "/"


def name(path: str) -> str:
    return path.rpartition("/")[2]


def join(directory: str, child: str) -> str:
    return f"{directory.rstrip('/')}/{child}"


def is_within(path: str, prefix: str) -> bool:
    """True when ``path`` is ``prefix`` or below it (both virtual, normalised)."""
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")

