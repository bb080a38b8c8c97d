"""Errors and the one table that turns exceptions into FTP replies.

Handlers raise; the connection loop calls :func:`reply_for_exception` once. Storage layers
raise builtin ``OSError`` subclasses (or ``TimeoutError``), never FTP codes.
"""

from __future__ import annotations

import errno

from .replies import Reply

#: errno of a storage failure caused by the server's own credentials (missing, rejected):
#: a server-side fault (451), not the client being denied (550). Linux's EKEYREJECTED.
ECREDENTIALS = getattr(errno, "EKEYREJECTED", 129)


class FtpError(Exception):
    """An error that already knows its reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(code, message)


class TransferAborted(Exception):
    """The client sent ABOR while a transfer was running or pending."""


class DataConnectionError(Exception):
    """The data connection failed (reset, closed early, could not be opened)."""


# errno -> (code, message). The ONE place where storage errors become replies.
_ERRNO_TABLE: dict[int, tuple[int, str]] = {
    errno.ENOENT: (550, "No such file or directory"),
    errno.ENOTDIR: (550, "Not a directory"),
    errno.EISDIR: (550, "Is a directory"),
    errno.EEXIST: (550, "File exists"),
    errno.ENOTEMPTY: (550, "Directory not empty"),
    errno.EACCES: (550, "Permission denied"),
    errno.EPERM: (550, "Operation not permitted"),
    errno.EROFS: (550, "Read-only file system"),
    errno.ELOOP: (550, "Too many levels of symbolic links"),
    errno.ENAMETOOLONG: (553, "File name too long"),
    errno.EINVAL: (553, "Invalid file name"),
    errno.EXDEV: (553, "Cannot move across storage backends"),
    errno.ENOSPC: (552, "No space left on device"),
    errno.EDQUOT: (552, "Disk quota exceeded"),
    errno.EFBIG: (552, "File too large"),
    errno.EBUSY: (450, "File busy: another transfer is writing it"),
    errno.EAGAIN: (450, "Resource temporarily unavailable"),
    errno.ETIMEDOUT: (451, "Storage operation timed out"),
    errno.ECONNREFUSED: (451, "Storage backend unreachable"),
    errno.ECONNRESET: (451, "Storage backend connection reset"),
    errno.EHOSTUNREACH: (451, "Storage backend unreachable"),
    errno.ENETUNREACH: (451, "Storage backend unreachable"),
    errno.EIO: (451, "Storage I/O error"),
    ECREDENTIALS: (451, "Storage credentials missing or rejected"),
    errno.ENOTSUP: (502, "Operation not supported by this storage"),
    # RFC 959 reply 554: "Requested action not taken: invalid REST parameter".
    errno.ESPIPE: (554, "Restart offset not usable"),
}

_CLASS_TABLE: tuple[tuple[type[BaseException], tuple[int, str]], ...] = (
    (FileNotFoundError, _ERRNO_TABLE[errno.ENOENT]),
    (FileExistsError, _ERRNO_TABLE[errno.EEXIST]),
    (IsADirectoryError, _ERRNO_TABLE[errno.EISDIR]),
    (NotADirectoryError, _ERRNO_TABLE[errno.ENOTDIR]),
    (PermissionError, _ERRNO_TABLE[errno.EACCES]),
    (TimeoutError, _ERRNO_TABLE[errno.ETIMEDOUT]),
    (ConnectionError, (451, "Storage backend unreachable")),
    (NotImplementedError, _ERRNO_TABLE[errno.ENOTSUP]),
)


def reply_for_exception(exc: BaseException) -> Reply:
    """Translate any exception raised while serving a command into a reply."""
    if isinstance(exc, FtpError):
        return exc.reply
    if isinstance(exc, TransferAborted):
        return Reply(426, "Transfer aborted")
    if isinstance(exc, DataConnectionError):
        return Reply(426, f"Data connection failed: {exc}" if str(exc) else "Data connection failed")
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TABLE:
        code, message = _ERRNO_TABLE[exc.errno]
        return Reply(code, _with_detail(message, exc))
    for cls, (code, message) in _CLASS_TABLE:
        if isinstance(exc, cls):
            return Reply(code, _with_detail(message, exc))
    if isinstance(exc, OSError):
        return Reply(451, _with_detail("Storage error", exc))
    return Reply(451, "Local error in processing")


def _with_detail(message: str, exc: BaseException) -> str:
    detail = getattr(exc, "strerror", None) or ""
    if isinstance(exc, OSError) and exc.strerror is None and exc.args:
        detail = str(exc.args[0])
    detail = str(detail).strip()
    if detail and detail.lower() != message.lower() and len(detail) < 200:
        return f"{message} ({detail})"
    return message
