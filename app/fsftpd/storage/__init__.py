"""The path-IO layer: one async interface over local disk and any fsspec filesystem.

Every method takes *virtual* absolute POSIX paths ("/", "/a/b") already normalised and
clamped by :mod:`fsftpd.protocol.paths`; the path-IO maps them below its root. Errors are
builtin ``OSError`` subclasses only, so one table turns them into FTP replies.
"""

from .base import AbstractPathIO, ReadStream, StorageContext, WriteStream
from .factory import PathIOFactory, open_home
from .fsspec_io import FsspecPathIO, MemoryPathIO
from .local import AsyncPathIO, PathIO
from .s3 import S3PathIO

__all__ = [
    "AbstractPathIO",
    "AsyncPathIO",
    "FsspecPathIO",
    "MemoryPathIO",
    "PathIO",
    "PathIOFactory",
    "ReadStream",
    "S3PathIO",
    "StorageContext",
    "WriteStream",
    "open_home",
]
