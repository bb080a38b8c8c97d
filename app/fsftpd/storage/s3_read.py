"""Downloads from S3: one ranged GET from the start offset, read in small blocks.

Invariants:
- memory is flat whatever the object size: the stream holds one block, and aiohttp's
  flow control stops reading the socket while the FTP client is slower;
- REST n is one ``Range: bytes=n-`` request; a connection that breaks mid-object is
  resumed with a new ranged GET from the current position, pinned with ``If-Match`` to
  the ETag seen at open, so a replaced object is never spliced into the download.
"""

from __future__ import annotations

import errno
from typing import Any

from .base import ReadStream
from .s3_client import S3Client, translate

#: new ranged GETs after a broken connection before giving up
MAX_REOPEN = 2


class S3ReadStream(ReadStream):
    def __init__(self, client: S3Client, bucket: str, key: str, *, size: int, etag: str,
                 offset: int = 0, block_size: int = 256 * 1024) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._size = size
        self._etag = etag
        self._pos = offset
        self.block_size = block_size
        self._body: Any = None
        self._reopened = 0

    async def _open(self, position: int) -> None:
        extra = {"IfMatch": self._etag} if self._etag else {}
        try:
            reply = await self._client.call("get_object", Bucket=self._bucket, Key=self._key,
                                            Range=f"bytes={position}-", **extra)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "File was deleted during the download") from None
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                raise OSError(errno.ESTALE, "File was replaced during the download") from None
            raise
        self._body = reply["Body"]

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()

    async def read(self, size: int) -> bytes:
        want = min(size, self._size - self._pos)
        if want <= 0:
            return b""
        if self._body is None:
            await self._open(self._pos)
        out = bytearray()
        while len(out) < want:
            try:
                chunk = await self._body.read(want - len(out))
            except Exception as exc:
                error = translate(exc)
                self._drop_body()
                if not isinstance(error, (ConnectionError, TimeoutError)) or self._reopened >= MAX_REOPEN:
                    raise error from exc
                # A broken connection mid-object: continue with a new ranged GET.
                self._reopened += 1
                await self._open(self._pos + len(out))
                continue
            if not chunk:
                self._drop_body()
                raise OSError(errno.EIO, "S3 object ended before its announced size")
            out += chunk
        self._pos += len(out)
        return bytes(out)

    async def close(self) -> None:
        self._drop_body()
