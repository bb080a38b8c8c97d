"""Homes on S3 (AWS or any S3-compatible endpoint) through s3fs's asynchronous client.

``s3://bucket/prefix/alice`` maps virtual "/a/b" to the key ``prefix/alice/a/b``. The
semantics (documented for users in docs/storage.md):

- a directory is a key prefix; MKD writes a zero-byte ``dir/`` marker object so an empty
  directory exists, and the marker never appears in listings; a prefix without a marker
  (objects written by other tools) is listed and enterable like any directory;
- a file and a directory of one name are never created through FTP (MKD over a file,
  STOR over a directory fail 550); if other tools made both, the file wins for commands
  naming it and listings show both;
- RMD refuses a directory that holds anything (ENOTEMPTY -> 550);
- uploads are multipart and invisible until commit (see :mod:`.s3_upload`); downloads are
  one ranged GET read in small blocks (see :mod:`.s3_read`);
- rename is copy + delete: files any size, directories up to ``max_rename_objects``
  objects; if copying fails the source is left intact and the copies are removed;
- listings stream one page (<= 1,000 keys) at a time and are never cached;
- modification times come from LastModified and cannot be set (MFMT -> 502).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ..protocol.errors import ECREDENTIALS
from ..protocol.listing import Entry
from .base import AbstractPathIO, ReadStream, StorageContext, WriteStream
from .s3_client import S3Client, S3Settings
from .s3_read import S3ReadStream
from .s3_resume import MARKER_PREFIX, discard, find, sweep, unmark
from .s3_upload import (
    GROWTH_EVERY,
    Ident,
    Part,
    PendingUpload,
    S3WriteStream,
    UploadRegistry,
    UploadTarget,
    abort_upload,
)

REGISTRY_KEY = "s3-upload-registry"
#: S3 keys are at most 1,024 bytes of UTF-8
MAX_KEY_BYTES = 1024
#: module-level aliases: inside the class, ``list`` is the LIST method
Parts = list[Part]
Objects = list[dict[str, Any]]
Entries = list[Entry]


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return 0.0


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "/"


def _name(path: str) -> str:
    return path.rpartition("/")[2]


class S3PathIO(AbstractPathIO):
    """A home under ``s3://bucket/prefix``. Build it with :meth:`from_url`."""

    #: parts between two doublings of the part size (tests lower it)
    part_growth_every = GROWTH_EVERY

    def __init__(self, client: S3Client, bucket: str, prefix: str, *, settings: S3Settings,
                 registry: UploadRegistry) -> None:
        if not bucket:
            raise ValueError("an S3 home needs a bucket: s3://bucket[/prefix]")
        self.client = client
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.settings = settings
        self.registry = registry
        self.max_rename_objects = settings.max_rename_objects
        self.root = f"s3://{bucket}/{self.prefix}"
        self._closed = False
        client.users += 1

    @classmethod
    def from_url(cls, url: str, *, storage_options: dict[str, Any], context: StorageContext,
                 environ: dict[str, str] | None = None) -> S3PathIO:
        """The path-IO for ``s3://bucket/prefix``. ``storage_options`` are fsftpd's S3
        options (part_size, resume_ttl, max_rename_objects, read_block_size, region,
        path_style, copy_concurrency) plus any s3fs option; unset connection options default
        from the AWS environment variables."""
        settings = S3Settings.from_options(storage_options, os.environ if environ is None else environ)
        key = ("s3-client", settings.client_key)
        client = context.cache.get(key)
        if client is None:
            client = context.cache[key] = S3Client(settings)
        registry = context.cache.get(REGISTRY_KEY)
        if registry is None:
            registry = context.cache[REGISTRY_KEY] = UploadRegistry()
        bucket, _, prefix = url.partition("://")[2].partition("/")
        return cls(client, bucket, prefix, settings=settings, registry=registry)

    # -- path mapping ------------------------------------------------------------------
    def key(self, path: str) -> str:
        key = self.prefix + path.lstrip("/")
        if not self.prefix and (key + "/").startswith(MARKER_PREFIX):
            raise PermissionError(errno.EACCES, "Reserved name (fsftpd's interrupted uploads)")
        if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES - 1:
            raise OSError(errno.ENAMETOOLONG, "Path too long for an S3 key")
        return key

    def dir_key(self, path: str) -> str:
        return self.prefix if path == "/" else self.key(path) + "/"

    def ident(self, key: str) -> Ident:
        return (self.client.endpoint, self.bucket, key)

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        return await self.client.call(operation, Bucket=self.bucket, **kwargs)

    # -- metadata ----------------------------------------------------------------------
    async def _head(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._call("head_object", Key=self.key(path))
        except FileNotFoundError:
            return None

    async def _dir_probe(self, path: str, count: int = 1) -> Objects | None:
        """The first ``count`` objects under ``path/`` (the marker first), None if none."""
        reply = await self._call("list_objects_v2", Prefix=self.dir_key(path), MaxKeys=count)
        contents: Objects = reply.get("Contents") or []
        return contents or None

    async def stat(self, path: str) -> Entry:
        if path == "/":
            return Entry("/", True, 0, 0.0)
        head = await self._head(path)
        if head is not None:
            return Entry(_name(path), False, int(head.get("ContentLength") or 0),
                         _timestamp(head.get("LastModified")), unique=_etag(head.get("ETag"))[:32])
        probe = await self._dir_probe(path)
        if probe is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        first = probe[0]
        mtime = _timestamp(first.get("LastModified")) if first["Key"] == self.dir_key(path) else 0.0
        return Entry(_name(path), True, 0, mtime)

    async def size(self, path: str) -> int:
        """SIZE: an interrupted upload kept for resumption reports the bytes the server
        holds of it (what REST n + STOR or APPE continue from)."""
        pending = await self._pending(self.key(path))
        if pending is not None:
            return pending.size
        return await super().size(path)

    async def list(self, path: str) -> AsyncIterator[Entry]:
        async for batch in self.list_batches(path):
            for entry in batch:
                yield entry

    async def list_batches(self, path: str) -> AsyncIterator[Entries]:
        """One batch per ListObjectsV2 page: only one page is ever held in memory."""
        prefix = self.dir_key(path)
        token: str | None = None
        first = True
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = await self._call("list_objects_v2", Prefix=prefix, Delimiter="/",
                                    MaxKeys=self.settings.list_page_size, **extra)
            if first and path != "/" and not page.get("Contents") and not page.get("CommonPrefixes"):
                # Nothing under "path/", not even a marker: a file, or nothing at all.
                if await self._head(path) is not None:
                    raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
                raise FileNotFoundError(errno.ENOENT, "No such file or directory")
            first = False
            batch: Entries = []
            for common in page.get("CommonPrefixes") or []:
                if common["Prefix"] == MARKER_PREFIX:
                    continue  # the markers of kept uploads (a home at the bucket root)
                name = str(common["Prefix"])[len(prefix):].rstrip("/")
                if name and "/" not in name:
                    batch.append(Entry(name, True, 0, 0.0))
            for item in page.get("Contents") or []:
                name = str(item["Key"])[len(prefix):]
                if not name or "/" in name:
                    continue  # the directory's own marker
                batch.append(Entry(name, False, int(item.get("Size") or 0),
                                   _timestamp(item.get("LastModified")),
                                   unique=_etag(item.get("ETag"))[:32]))
            if batch:
                yield batch
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def _require_dir(self, path: str) -> None:
        """``path`` must be an existing directory (the parent of something new)."""
        if path == "/":
            return
        entry = await self.stat(path)
        if not entry.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "Parent is not a directory")

    # -- namespace changes -------------------------------------------------------------
    async def mkdir(self, path: str) -> None:
        if path == "/" or await self.exists(path):
            raise FileExistsError(errno.EEXIST, "File exists")
        await self._require_dir(_parent(path))
        await self._call("put_object", Key=self.dir_key(path), Body=b"")

    async def rmdir(self, path: str) -> None:
        entry = await self.stat(path)
        if not entry.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
        marker = self.dir_key(path)
        probe = await self._dir_probe(path, 2) or []
        if any(item["Key"] != marker for item in probe):
            raise OSError(errno.ENOTEMPTY, "Directory not empty")
        await self._call("delete_object", Key=marker)

    async def unlink(self, path: str) -> None:
        key = self.key(path)
        pending = await self._pending(key)
        if pending is not None:
            await discard(pending)
        if await self._head(path) is None:
            if pending is not None:
                return  # DELE of an interrupted upload discards it
            if await self._dir_probe(path) is not None:
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        await self._call("delete_object", Key=key)

    async def set_mtime(self, path: str, mtime: float) -> None:
        await self.stat(path)
        raise NotImplementedError("S3 cannot set modification times (LastModified is the upload time)")

    async def rename(self, source: str, target: str) -> None:
        from .s3_rename import rename

        await rename(self, source, target)

    # -- data ----------------------------------------------------------------------------
    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        """One HEAD gives the size and the ETag the download is pinned to; no GET is sent
        before the first read (REST n then costs exactly one ranged GET)."""
        head = await self._head(path)
        if head is None:
            if path == "/" or await self._dir_probe(path) is not None:
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        size = int(head.get("ContentLength") or 0)
        stream = S3ReadStream(self.client, self.bucket, self.key(path), size=size,
                              etag=str(head.get("ETag") or ""), offset=min(offset, size),
                              block_size=self.settings.read_block_size)
        return stream, size

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        stream, size = await self.open_read_sized(path, offset)
        if offset > size:
            await stream.close()
            raise OSError(errno.ESPIPE, f"Restart offset {offset} is beyond the end of the file ({size})")
        return stream

    async def _pending(self, key: str) -> PendingUpload | None:
        """The interrupted upload of ``key`` kept in the bucket (by any process), if its
        resume time is not over; expired ones met on the way are aborted."""
        try:
            return await find(self.client, self.bucket, key, self.settings.resume_ttl, self.registry.clock())
        except PermissionError as exc:
            if exc.errno == ECREDENTIALS:
                raise
            # Credentials without s3:ListBucketMultipartUploads: nothing can be resumed,
            # but SIZE, STOR and DELE must still work.
            return None

    async def _sweep(self) -> None:
        """Abort uploads this process failed to abort, and (at most once a minute per
        bucket) the bucket's kept uploads whose resume time is over."""
        for upload in self.registry.orphans():
            try:
                await abort_upload(upload)
            except OSError:
                self.registry.orphan(upload)
                return
        if self.registry.sweep_due(self.client.endpoint, self.bucket):
            with contextlib.suppress(OSError):
                await sweep(self.client, self.bucket, self.settings.resume_ttl, self.registry.clock())

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        if path == "/":
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        key = self.key(path)
        ident = self.ident(key)
        await self._sweep()
        self.registry.claim(ident)
        try:
            return await self._open_write(path, key, ident, offset, append)
        except BaseException:
            self.registry.release(ident)
            raise

    async def _no_directory(self, path: str) -> None:
        if await self._dir_probe(path) is not None:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")

    async def _open_write(self, path: str, key: str, ident: Ident, offset: int,
                          append: bool) -> WriteStream:
        await self._require_dir(_parent(path))
        await self._no_directory(path)
        target = UploadTarget(self.client, self.registry, ident, self.bucket, key,
                              self.settings.part_size, self.settings.resume_ttl,
                              precheck=lambda: self._no_directory(path),
                              growth_every=self.part_growth_every)
        head: dict[str, Any] | None = None
        if append or offset or self.settings.conditional_writes:
            head = await self._head(path)
        if self.settings.conditional_writes:
            # Complete only over the object this upload found (or over nothing).
            target.condition = ({"IfNoneMatch": "*"} if head is None
                                else {"IfMatch": str(head.get("ETag") or "")})
        pending = await self._pending(key)
        resumed = self._resume(pending, offset, append)
        if pending is not None and resumed is not None:
            # Running again: no other process may adopt it (see s3_resume).
            await unmark(self.client, self.bucket, key, pending.upload_id)
            target.upload_id, target.parts = resumed
            return S3WriteStream(target)
        if append or offset:
            size = int(head.get("ContentLength") or 0) if head is not None else 0
            if offset > size:
                if pending is not None:  # left as it was
                    raise OSError(errno.ESPIPE, f"Restart offset {offset} is not usable: the interrupted "
                                                f"upload can be resumed from {pending.size}")
                raise OSError(errno.ESPIPE, f"Restart offset {offset} is beyond the end of the file ({size})")
        if pending is not None:
            await discard(pending)
        stream = S3WriteStream(target)
        if head is not None and (append or offset):
            keep = int(head.get("ContentLength") or 0) if append else offset
            try:
                await stream.copy_prefix(key, str(head.get("ETag") or ""), keep)
            except BaseException:
                await stream.discard()
                raise
        return stream

    @staticmethod
    def _resume(pending: PendingUpload | None, offset: int,
                append: bool) -> tuple[str, Parts] | None:
        """(upload id, parts) to continue an interrupted upload with, if the command
        asks for it: APPE continues all of it, REST n + STOR continues the first n bytes
        when n is a part boundary."""
        if pending is None or not (append or offset):
            return None
        parts = list(pending.parts) if append else pending.prefix_parts(offset)
        if parts is None:
            return None
        return pending.upload_id, parts

    # -- lifecycle -------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Retry the aborts that failed and close the shared client with its last user.
        Kept uploads stay in the bucket: another process (or this server restarted) may
        resume them until their resume time is over."""
        if self._closed:
            return
        self._closed = True
        for upload in self.registry.orphans():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                async with asyncio.timeout(10):
                    await abort_upload(upload)
        self.client.users -= 1
        if self.client.users <= 0:
            await self.client.close()
