"""Uploads to S3: streaming multipart uploads with bounded memory, visible only on commit,
resumable after an interruption, one writer per key.

Invariants:
- an upload holds at most two parts in memory: the one being filled and the one in flight;
  ``write`` copies the caller's bytes into the part buffer and keeps no reference to them;
- part sizes start at ``part_size`` (>= 5 MiB) and double every 1,000 parts, so the
  10,000-part limit is only reached near S3's 5 TiB object limit;
- nothing appears at the key before :meth:`S3WriteStream.commit` completes the multipart
  upload (or, for an upload smaller than one part, PUTs it in one request);
- :meth:`S3WriteStream.abort` keeps the completed full parts of an interrupted upload in
  the bucket (a marker object, :mod:`.s3_resume`) for ``resume_ttl`` seconds, so REST n +
  STOR or APPE continue it on any process, and otherwise aborts the multipart upload;
- one process never runs two uploads to the same key at once (``OSError(EBUSY)`` -> 450);
  across processes the completion names every part by its ETag, so two uploads' parts
  are never mixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .base import WriteStream
from .s3_client import MiB, S3Client, translate

MIN_PART = 5 * MiB
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000
GROWTH_EVERY = 1000
#: seconds an aborted upload waits for its part in flight before cancelling it
INFLIGHT_GRACE = 30.0

#: (endpoint, bucket, key): one object on one S3 service
Ident = tuple[str, str, str]


def part_size(number: int, base: int, every: int = GROWTH_EVERY) -> int:
    """Size of part ``number`` (1-based): ``base`` doubled every ``every`` parts."""
    return min(MAX_PART, base << ((number - 1) // every))


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    size: int
    etag: str


@dataclass
class PendingUpload:
    """An interrupted multipart upload kept for resumption: ``parts`` hold bytes
    ``[0, size)`` of the object the client was uploading."""

    client: S3Client
    bucket: str
    key: str
    upload_id: str
    parts: list[Part]
    expires: float

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def prefix_parts(self, offset: int) -> list[Part] | None:
        """The parts holding exactly bytes ``[0, offset)``, or None if ``offset`` is not a
        part boundary (the bytes of a part cannot be read back before completion)."""
        total = 0
        for index, part in enumerate(self.parts):
            if total == offset:
                return self.parts[:index]
            total += part.size
        return list(self.parts) if total == offset else None


class UploadRegistry:
    """Per-process state of S3 uploads: the keys this process is writing (one writer per
    key), uploads it failed to abort (retried later), and when each bucket was last swept.
    Kept uploads themselves live in the bucket (:mod:`.s3_resume`). The clock (wall time,
    compared with S3's timestamps) is injectable for tests."""

    #: seconds between two sweeps of one bucket's expired kept uploads by one process
    sweep_every = 60.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._writers: set[Ident] = set()
        self._orphans: dict[Ident, PendingUpload] = {}
        self._swept: dict[tuple[str, str], float] = {}

    def claim(self, ident: Ident) -> None:
        if ident in self._writers:
            raise OSError(errno.EBUSY, "Another upload to this file is in progress")
        self._writers.add(ident)

    def release(self, ident: Ident) -> None:
        self._writers.discard(ident)

    def is_writing(self, ident: Ident) -> bool:
        return ident in self._writers

    def writing_under(self, prefix: Ident) -> bool:
        """Is any upload running to a key that starts with ``prefix[2]``?"""
        return any(w[:2] == prefix[:2] and w[2].startswith(prefix[2]) for w in self._writers)

    def orphan(self, upload: PendingUpload) -> None:
        """An upload that could be neither kept nor aborted (endpoint unreachable)."""
        self._orphans[(upload.client.endpoint, upload.bucket, upload.key + "\0" + upload.upload_id)] = upload

    def orphans(self) -> list[PendingUpload]:
        found = list(self._orphans.values())
        self._orphans.clear()
        return found

    def sweep_due(self, endpoint: str, bucket: str) -> bool:
        """True at most once per ``sweep_every`` seconds per bucket."""
        now = self.clock()
        last = self._swept.get((endpoint, bucket))
        if last is not None and now - last < self.sweep_every:
            return False
        self._swept[(endpoint, bucket)] = now
        return True

    def __len__(self) -> int:
        return len(self._orphans)


async def abort_upload(upload: PendingUpload) -> None:
    """AbortMultipartUpload; an upload S3 no longer knows counts as aborted."""
    with contextlib.suppress(FileNotFoundError):
        await upload.client.call("abort_multipart_upload", Bucket=upload.bucket, Key=upload.key,
                                 UploadId=upload.upload_id)


@dataclass
class UploadTarget:
    """Where an upload goes and the policy it follows."""

    client: S3Client
    registry: UploadRegistry
    ident: Ident
    bucket: str
    key: str
    part_size: int
    resume_ttl: float
    #: run just before the object is made visible (e.g. refuse if a directory appeared)
    precheck: Callable[[], Awaitable[None]] | None = None
    parts: list[Part] = field(default_factory=list)
    upload_id: str | None = None
    #: parts between two doublings of the part size
    growth_every: int = GROWTH_EVERY
    #: conditional completion: {"IfNoneMatch": "*"} (there was no object when the upload
    #: started) or {"IfMatch": etag} (the object the upload started from); empty: none
    condition: dict[str, str] = field(default_factory=dict)


class S3WriteStream(WriteStream):
    """One STOR/APPE in progress. The caller has claimed ``target.ident``; the stream
    releases it when it is committed or aborted."""

    block_size = 1 * MiB

    def __init__(self, target: UploadTarget) -> None:
        self._t = target
        self._parts: list[Part] = list(target.parts)
        self._upload_id = target.upload_id
        self._buffer = bytearray()
        self._fill = 0  # bytes of _buffer holding data
        self._number = len(self._parts) + 1  # the part being filled
        self._inflight: asyncio.Task[None] | None = None
        self._written = 0
        self._done = False

    # -- data ------------------------------------------------------------------------
    @property
    def bytes_written(self) -> int:
        return self._written

    @property
    def stored(self) -> int:
        """Bytes in completed parts (what a resumed upload would start from)."""
        return sum(part.size for part in self._parts)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise OSError(errno.EIO, "Upload already finished")
        view = memoryview(data).cast("B")
        self._written += len(view)
        while view:
            limit = part_size(self._number, self._t.part_size, self._t.growth_every)
            if self._upload_id is None:
                # Until the upload is multipart it may stay small: grow as data comes.
                room = limit - len(self._buffer)
                self._buffer += view[:room]  # a copy: no reference to the caller's buffer
                self._fill = len(self._buffer)
            else:
                # Multipart: fill an exact-size part buffer (no over-allocation).
                if self._fill == 0 and len(self._buffer) != limit:
                    self._buffer = bytearray(limit)
                room = limit - self._fill
                take = min(room, len(view))
                self._buffer[self._fill : self._fill + take] = view[:take]
                self._fill += take
            view = view[room:]
            if self._fill >= limit:
                await self._flush_part()

    async def _start(self) -> str:
        if self._upload_id is None:
            reply = await self._t.client.call("create_multipart_upload", Bucket=self._t.bucket,
                                              Key=self._t.key)
            self._upload_id = str(reply["UploadId"])
        return self._upload_id

    async def _wait_inflight(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def _flush_part(self) -> None:
        await self._wait_inflight()
        number = self._number
        if number > MAX_PARTS:
            raise OSError(errno.EFBIG, "File too large for one S3 object (10,000 parts)")
        upload_id = await self._start()
        body, self._buffer, self._fill = self._buffer, bytearray(), 0
        self._number += 1
        # One part uploads while the next one fills: at most two parts in memory.
        self._inflight = asyncio.ensure_future(self._upload_part(upload_id, number, body))

    async def _upload_part(self, upload_id: str, number: int, body: bytearray | memoryview) -> None:
        reply = await self._t.client.call_with_body("upload_part", body, Bucket=self._t.bucket,
                                                    Key=self._t.key, UploadId=upload_id,
                                                    PartNumber=number)
        self._parts.append(Part(number, len(body), str(reply["ETag"])))

    async def copy_prefix(self, source_key: str, etag: str, length: int) -> None:
        """Start the upload with the first ``length`` bytes of the object ``source_key``
        (APPE, REST + STOR): server-side UploadPartCopy from 5 MiB on, a ranged read of the
        small rest otherwise. ``etag`` pins the version that was stat'ed."""
        if length <= 0:
            return
        if length < MIN_PART:
            await self._read_into_buffer(source_key, etag, length)
            return
        upload_id = await self._start()
        count = -(-length // MAX_PART)
        step = -(-length // count)
        start = 0
        while start < length:
            end = min(length, start + step)
            number = len(self._parts) + 1
            reply = await self._t.client.call(
                "upload_part_copy", Bucket=self._t.bucket, Key=self._t.key, UploadId=upload_id,
                PartNumber=number, CopySource={"Bucket": self._t.bucket, "Key": source_key},
                CopySourceRange=f"bytes={start}-{end - 1}", CopySourceIfMatch=etag)
            self._parts.append(Part(number, end - start, str(reply["CopyPartResult"]["ETag"])))
            self._number = len(self._parts) + 1
            start = end

    async def _read_into_buffer(self, source_key: str, etag: str, length: int) -> None:
        reply = await self._t.client.call("get_object", Bucket=self._t.bucket, Key=source_key,
                                          Range=f"bytes=0-{length - 1}", IfMatch=etag)
        body = reply["Body"]
        try:
            while len(self._buffer) < length:
                try:
                    chunk = await body.read(length - len(self._buffer))
                except Exception as exc:
                    raise translate(exc) from exc
                if not chunk:
                    raise OSError(errno.EIO, "S3 object shorter than expected")
                self._buffer += chunk
                self._fill = len(self._buffer)
        finally:
            body.close()

    # -- finishing -------------------------------------------------------------------
    async def commit(self) -> None:
        if self._done:
            return
        await self._wait_inflight()
        if self._t.precheck is not None:
            await self._t.precheck()
        condition = self._t.condition
        try:
            if self._upload_id is None:
                await self._t.client.call("put_object", Bucket=self._t.bucket, Key=self._t.key,
                                          Body=bytes(self._buffer[: self._fill]), **condition)
            else:
                if self._fill or not self._parts:
                    body = memoryview(self._buffer)[: self._fill]  # the last part: no copy
                    self._buffer, self._fill = bytearray(), 0
                    await self._upload_part(self._upload_id, self._number, body)
                parts = [{"PartNumber": p.number, "ETag": p.etag} for p in self._parts]
                await self._t.client.call("complete_multipart_upload", Bucket=self._t.bucket,
                                          Key=self._t.key, UploadId=self._upload_id,
                                          MultipartUpload={"Parts": parts}, **condition)
        except OSError as exc:
            if condition and exc.errno in (errno.ESTALE, errno.EAGAIN):
                # 412 PreconditionFailed, or AWS's 409 ConditionalRequestConflict: another
                # writer completed first. This upload is lost, not resumable.
                self._t.resume_ttl = 0
                raise OSError(errno.EBUSY, "Another upload to this file completed first") from exc
            raise
        self._done = True
        self._buffer = bytearray()
        self._t.registry.release(self._t.ident)

    async def discard(self) -> None:
        """Abort without keeping anything for resumption."""
        self._t.resume_ttl = 0
        await self.abort()

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        task, self._inflight = self._inflight, None
        if task is not None:
            # Let the part in flight land (it is resumable data); a dead endpoint fails
            # it within the client's timeouts, and INFLIGHT_GRACE bounds the rest.
            try:
                async with asyncio.timeout(INFLIGHT_GRACE):
                    await asyncio.shield(task)
            except BaseException:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        try:
            if self._upload_id is None:
                return
            # Only full parts can be followed by more data; a short last part is dropped.
            full = [p for p in self._parts if p.size >= MIN_PART]
            full = full[: next((i for i, p in enumerate(full) if p.number != i + 1), len(full))]
            upload = PendingUpload(self._t.client, self._t.bucket, self._t.key, self._upload_id,
                                   full, self._t.registry.clock() + self._t.resume_ttl)
            if self._t.resume_ttl > 0 and full:
                from .s3_resume import mark  # s3_resume builds on this module

                with contextlib.suppress(OSError):
                    # In the bucket, so any process can resume it (and expire it).
                    await mark(self._t.client, self._t.bucket, self._t.key, self._upload_id)
                    return
            try:
                await abort_upload(upload)
            except OSError:
                # Endpoint unreachable: remember it so a later sweep aborts it.
                self._t.registry.orphan(upload)
        finally:
            self._t.registry.release(self._t.ident)
