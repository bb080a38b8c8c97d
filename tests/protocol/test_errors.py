"""reply_for_exception: the one errno -> reply table. Every entry is checked here as a pure
table; tests/server/test_error_replies.py provokes each code through a real client."""

from __future__ import annotations

import errno

import pytest

from fsftpd.protocol import errors
from fsftpd.protocol.errors import DataConnectionError, FtpError, TransferAborted, reply_for_exception

EXPECTED = {
    errno.ENOENT: 550,
    errno.ENOTDIR: 550,
    errno.EISDIR: 550,
    errno.EEXIST: 550,
    errno.ENOTEMPTY: 550,
    errno.EACCES: 550,
    errno.EPERM: 550,
    errno.EROFS: 550,
    errno.ELOOP: 550,
    errno.ENAMETOOLONG: 553,
    errno.EINVAL: 553,
    errno.EXDEV: 553,
    errno.ENOSPC: 552,
    errno.EDQUOT: 552,
    errno.EFBIG: 552,
    errno.EBUSY: 450,
    errno.EAGAIN: 450,
    errno.ETIMEDOUT: 451,
    errno.ECONNREFUSED: 451,
    errno.ECONNRESET: 451,
    errno.EHOSTUNREACH: 451,
    errno.ENETUNREACH: 451,
    errno.EIO: 451,
    errors.ECREDENTIALS: 451,  # the server's storage credentials: a server-side fault
    errno.ENOTSUP: 502,
    errno.ESPIPE: 554,  # RFC 959: invalid REST parameter
}


def test_table_is_what_we_expect() -> None:
    assert {k: v[0] for k, v in errors._ERRNO_TABLE.items()} == EXPECTED


@pytest.mark.parametrize(("number", "code"), sorted(EXPECTED.items()))
def test_errno(number: int, code: int) -> None:
    reply = reply_for_exception(OSError(number, "detail text"))
    assert reply.code == code
    assert "detail text" in reply.text


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (FileNotFoundError("gone"), 550),
        (FileExistsError("there"), 550),
        (IsADirectoryError("dir"), 550),
        (NotADirectoryError("file"), 550),
        (PermissionError("nope"), 550),
        (PermissionError(errors.ECREDENTIALS, "No usable S3 credentials"), 451),
        (TimeoutError(), 451),
        (ConnectionResetError(), 451),
        (NotImplementedError("no mtime here"), 502),
        (OSError("something odd"), 451),
        (OSError(12345, "unknown errno"), 451),
        (ValueError("bug"), 451),
        (RuntimeError(), 451),
        (TransferAborted(), 426),
        (DataConnectionError("reset"), 426),
        (DataConnectionError(), 426),
        (FtpError(553, "custom"), 553),
    ],
)
def test_exception_classes(exc: BaseException, code: int) -> None:
    assert reply_for_exception(exc).code == code


def test_messages_are_useful() -> None:
    assert reply_for_exception(FileNotFoundError(errno.ENOENT, "No such file or directory")).text == (
        "No such file or directory"
    )
    assert "(gone)" in reply_for_exception(FileNotFoundError("gone")).text
    assert reply_for_exception(DataConnectionError("reset")).text == "Data connection failed: reset"
    assert reply_for_exception(OSError(errno.ENOSPC, "x" * 300)).text == "No space left on device"
    # An internal bug never leaks its repr to the client.
    assert reply_for_exception(ValueError("secret internals")).text == "Local error in processing"
