"""RNFR/RNTO on S3: copy, then delete.

S3 has no rename. A file is copied server-side (CopyObject up to 5 GiB, UploadPartCopy
beyond) pinned to the ETag that was stat'ed, then the source is deleted. A directory is
every object under its prefix, so it is renamed only up to ``max_rename_objects``
objects; beyond that the command is refused (EPERM -> 550) before anything is copied.

Failure guarantees: while copying, the source is untouched; if a copy fails, the copies
already made are deleted again and the error is raised. Once every copy exists the target
is complete; a failure while deleting the source leaves the remaining source objects
in place (reported as an error) -- never a half-copied target with a deleted source.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from typing import TYPE_CHECKING, Any

from .s3_upload import MAX_PART

if TYPE_CHECKING:
    from .s3 import S3PathIO

DELETE_BATCH = 1000
#: copied in one CopyObject up to this size (the S3 limit)
MAX_COPY = MAX_PART
#: part size of a multipart server-side copy
COPY_PART = 512 * 1024 * 1024


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "/"


async def rename(io: S3PathIO, source: str, target: str) -> None:
    entry = await io.stat(source)
    if source == target:
        return
    await io._require_dir(_parent(target))
    if entry.is_dir:
        await _rename_dir(io, source, target)
    else:
        await _rename_file(io, source, target)


async def _rename_file(io: S3PathIO, source: str, target: str) -> None:
    if await io._dir_probe(target) is not None:
        raise IsADirectoryError(errno.EISDIR, "Target is a directory")
    head = await io._head(source)
    if head is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    src_key, dst_key = io.key(source), io.key(target)
    ident = io.ident(dst_key)
    io.registry.claim(ident)  # no upload may be writing the target meanwhile
    try:
        await copy_object(io, src_key, dst_key, int(head.get("ContentLength") or 0),
                          str(head.get("ETag") or ""))
        try:
            await io._call("delete_object", Key=src_key)
        except BaseException:
            with contextlib.suppress(Exception):
                await io._call("delete_object", Key=dst_key)
            raise
    finally:
        io.registry.release(ident)


async def copy_object(io: S3PathIO, src_key: str, dst_key: str, size: int, etag: str) -> None:
    """Server-side copy of one object, refusing a source that changed since ``etag``."""
    source = {"Bucket": io.bucket, "Key": src_key}
    pin = {"CopySourceIfMatch": etag} if etag else {}
    if size <= MAX_COPY:
        await io._call("copy_object", Key=dst_key, CopySource=source, **pin)
        return
    reply = await io._call("create_multipart_upload", Key=dst_key)
    upload_id = reply["UploadId"]
    try:
        parts: list[dict[str, Any]] = []
        for number, start in enumerate(range(0, size, COPY_PART), start=1):
            end = min(size, start + COPY_PART) - 1
            part = await io._call("upload_part_copy", Key=dst_key, UploadId=upload_id, PartNumber=number,
                                  CopySource=source, CopySourceRange=f"bytes={start}-{end}", **pin)
            parts.append({"PartNumber": number, "ETag": part["CopyPartResult"]["ETag"]})
        await io._call("complete_multipart_upload", Key=dst_key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
    except BaseException:
        with contextlib.suppress(Exception):
            await io._call("abort_multipart_upload", Key=dst_key, UploadId=upload_id)
        raise


async def _objects(io: S3PathIO, prefix: str, limit: int | None) -> list[dict[str, Any]]:
    """Every object under ``prefix``; EPERM as soon as there are more than ``limit``."""
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = await io._call("list_objects_v2", Prefix=prefix, **extra)
        found.extend(page.get("Contents") or [])
        if limit is not None and len(found) > limit:
            raise OSError(errno.EPERM, f"Directory holds more than {limit} objects; on S3 a rename "
                                       "copies every object, so it is refused")
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return found


async def _delete(io: S3PathIO, keys: list[str]) -> None:
    for start in range(0, len(keys), DELETE_BATCH):
        batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
        reply = await io._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
        errors = reply.get("Errors") or []
        if errors:
            first = errors[0]
            raise OSError(errno.EIO, f"S3 could not delete {len(errors)} object(s): "
                                     f"{first.get('Key')}: {first.get('Message') or first.get('Code')}")


async def _rename_dir(io: S3PathIO, source: str, target: str) -> None:
    src_prefix, dst_prefix = io.dir_key(source), io.dir_key(target)
    if await io._head(target) is not None:
        raise NotADirectoryError(errno.ENOTDIR, "Target is a file")
    probe = await io._dir_probe(target, 2) or []
    if any(item["Key"] != dst_prefix for item in probe):
        raise OSError(errno.ENOTEMPTY, "Target directory is not empty")
    busy = io.registry.writing_under((io.client.endpoint, io.bucket, src_prefix))
    if busy:
        raise OSError(errno.EBUSY, "An upload into this directory is in progress")
    objects = await _objects(io, src_prefix, io.max_rename_objects)
    copied: list[str] = []
    gate = asyncio.Semaphore(io.settings.copy_concurrency)

    async def copy(item: dict[str, Any]) -> None:
        dst_key = dst_prefix + str(item["Key"])[len(src_prefix):]
        async with gate:
            if dst_key.endswith("/"):
                # A directory marker: rewrite it (some servers, e.g. SeaweedFS, store
                # markers as real directories that CopyObject cannot read).
                await io._call("put_object", Key=dst_key, Body=b"")
                copied.append(dst_key)
                return
            await copy_object(io, str(item["Key"]), dst_key, int(item.get("Size") or 0),
                              str(item.get("ETag") or ""))
        copied.append(dst_key)

    try:
        async with asyncio.TaskGroup() as group:
            for item in objects:
                group.create_task(copy(item))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await _delete(io, copied)
        if isinstance(exc, BaseExceptionGroup):
            first = exc.exceptions[0]
            raise first from exc
        raise
    # Deepest keys first, so a marker goes after its children (SeaweedFS keeps a
    # directory whose marker is deleted while it still has children).
    await _delete(io, sorted((str(item["Key"]) for item in objects), reverse=True))
