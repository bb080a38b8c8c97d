"""Interrupted uploads kept in the bucket itself, so that any fsftpd process on the bucket
(a replica, or the same server after a restart) can resume or expire them.

An interrupted multipart upload is *kept* by writing a small marker object
``.fsftpd-uploads/<sha256(key, upload id)>`` at the bucket root, holding the key and the
upload id as JSON. The marker is what makes an upload fsftpd's and resumable:

- uploads of other tools (and uploads still running on some process) have no marker, so
  fsftpd never adopts, resumes or aborts them;
- the marker's LastModified is when the upload was kept: ``resume_ttl`` seconds later any
  process that sees it (SIZE, STOR, APPE, DELE of the key, or the periodic sweep) aborts
  the multipart upload and deletes the marker;
- a process that resumes an upload first deletes the marker (it is running again, so no
  other process may adopt it); should two processes still adopt it at the same moment,
  CompleteMultipartUpload names every part by its ETag, so the one whose parts were
  overwritten fails (``InvalidPart``) and no object ever mixes two uploads' parts.

The state itself (parts and sizes) is read with ListMultipartUploads and ListParts; nothing
about kept uploads lives in the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime
from typing import Any

from .s3_client import S3Client
from .s3_upload import MIN_PART, Part, PendingUpload, abort_upload

#: bucket-root prefix of the markers of kept uploads (hidden from homes at the bucket root)
MARKER_PREFIX = ".fsftpd-uploads/"
#: at most this many markers are examined by one sweep
SWEEP_BATCH = 1000
#: ListParts pages read for one upload (1,000 parts each: S3's 10,000-part limit)
MAX_PART_PAGES = 10


def marker_key(key: str, upload_id: str) -> str:
    digest = hashlib.sha256(f"{key}\0{upload_id}".encode("utf-8", "surrogateescape")).hexdigest()
    return MARKER_PREFIX + digest


def _time(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


async def mark(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    """Keep the upload for resumption by any process."""
    body = json.dumps({"key": key, "upload_id": upload_id}).encode("utf-8", "surrogateescape")
    await client.call("put_object", Bucket=bucket, Key=marker_key(key, upload_id), Body=body,
                      ContentType="application/json")


async def unmark(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        await client.call("delete_object", Bucket=bucket, Key=marker_key(key, upload_id))


async def discard(upload: PendingUpload) -> None:
    """Abort a kept upload and delete its marker (the upload first: a marker without an
    upload is harmless, the reverse would be an orphan no process adopts)."""
    await abort_upload(upload)
    await unmark(upload.client, upload.bucket, upload.key, upload.upload_id)


async def _kept_at(client: S3Client, bucket: str, key: str, upload_id: str) -> float | None:
    """When the upload was kept (its marker's LastModified), None if it is not fsftpd's
    kept upload."""
    try:
        head = await client.call("head_object", Bucket=bucket, Key=marker_key(key, upload_id))
    except FileNotFoundError:
        return None
    return _time(head.get("LastModified"))


async def _parts(client: S3Client, bucket: str, key: str, upload_id: str) -> list[Part]:
    """The parts that can be continued: 1, 2, 3... without a gap, each a full part."""
    found: list[Part] = []
    marker = 0
    for _ in range(MAX_PART_PAGES):
        reply = await client.call("list_parts", Bucket=bucket, Key=key, UploadId=upload_id,
                                  PartNumberMarker=marker)
        for item in reply.get("Parts") or []:
            found.append(Part(int(item["PartNumber"]), int(item["Size"]), str(item["ETag"])))
        marker = int(reply.get("NextPartNumberMarker") or 0)
        if not reply.get("IsTruncated") or not marker:
            break
    found.sort(key=lambda part: part.number)
    usable: list[Part] = []
    for part in found:
        # Only full parts can be followed by more data; a short last part is dropped.
        if part.number != len(usable) + 1 or part.size < MIN_PART:
            break
        usable.append(part)
    return usable


async def find(client: S3Client, bucket: str, key: str, ttl: float, now: float) -> PendingUpload | None:
    """The kept upload of ``key`` (the newest, if several), from the bucket. Expired kept
    uploads met on the way are aborted, as are older kept uploads superseded by a newer
    one; uploads without a marker (other tools', or running) are left alone."""
    reply = await client.call("list_multipart_uploads", Bucket=bucket, Prefix=key)
    # Keys sort after their own prefix, so the uploads of ``key`` itself come first.
    mine = [u for u in reply.get("Uploads") or [] if u.get("Key") == key]
    mine.sort(key=lambda u: _time(u.get("Initiated")), reverse=True)
    chosen: PendingUpload | None = None
    for item in mine:
        upload_id = str(item["UploadId"])
        kept = await _kept_at(client, bucket, key, upload_id)
        if kept is None:
            continue
        upload = PendingUpload(client, bucket, key, upload_id, [], kept + ttl)
        if upload.expires <= now or chosen is not None:
            await discard(upload)
            continue
        upload.parts = await _parts(client, bucket, key, upload_id)
        if not upload.parts:
            await discard(upload)
            continue
        chosen = upload
    return chosen


async def sweep(client: S3Client, bucket: str, ttl: float, now: float) -> int:
    """Abort the kept uploads of the bucket whose resume time is over (whoever kept
    them); return how many."""
    reply = await client.call("list_objects_v2", Bucket=bucket, Prefix=MARKER_PREFIX,
                              MaxKeys=SWEEP_BATCH)
    done = 0
    for item in reply.get("Contents") or []:
        if _time(item.get("LastModified")) + ttl > now:
            continue
        name = str(item["Key"])
        try:
            got = await client.call("get_object", Bucket=bucket, Key=name)
            body = got["Body"]
            try:
                record = json.loads(await body.read())
            finally:
                body.close()
            upload = PendingUpload(client, bucket, str(record["key"]), str(record["upload_id"]), [], 0.0)
        except FileNotFoundError:
            continue  # another process swept it meanwhile
        except (ValueError, KeyError, TypeError):
            # Not a marker fsftpd wrote: leave it alone.
            continue
        if marker_key(upload.key, upload.upload_id) != name:
            continue
        await discard(upload)
        done += 1
    return done
