"""The S3 client behind :class:`~fsftpd.storage.s3.S3PathIO`: options, AWS environment
defaults, one shared s3fs instance per option set, and the translation of every S3 or
transport error into a builtin ``OSError`` subclass.

Invariants:
- s3fs always runs with ``asynchronous=True``, ``skip_instance_cache=True`` and
  ``use_listings_cache=False``: no listing is ever served from a cache, so two servers on
  one bucket see each other's writes at once;
- every call goes through :meth:`S3Client.call`, which raises only builtin exceptions
  (``FileNotFoundError``, ``PermissionError``, ``ConnectionError``, ``TimeoutError``,
  ``OSError(errno)``), so the one errno table in :mod:`fsftpd.protocol.errors` applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol.errors import ECREDENTIALS

MiB = 1024 * 1024

#: fsftpd's own S3 options; everything else in ``storage_options`` goes to s3fs.
OWN_OPTIONS = ("part_size", "resume_ttl", "max_rename_objects", "read_block_size",
               "copy_concurrency", "list_page_size", "region", "path_style", "conditional_writes")


@dataclass(frozen=True)
class S3Settings:
    """Options of one S3 home after defaults from the environment are applied."""

    #: first part size of a multipart upload (>= 5 MiB); it doubles every 1,000 parts
    part_size: int = 5 * MiB
    #: seconds an interrupted upload's parts are kept for REST/APPE resumption (0: never)
    resume_ttl: float = 3600.0
    #: a directory with more objects than this cannot be renamed (copy + delete each)
    max_rename_objects: int = 1000
    #: size of the blocks a download reads from its ranged GET
    read_block_size: int = 256 * 1024
    #: concurrent CopyObject calls while renaming a directory
    copy_concurrency: int = 8
    #: keys per ListObjectsV2 page (S3 caps it at 1,000); one page is in memory at a time
    list_page_size: int = 1000
    #: complete uploads with If-None-Match / If-Match (the object as the upload found it):
    #: of two writers of one key on different processes the later one fails with 450
    conditional_writes: bool = False
    #: keyword arguments for ``s3fs.S3FileSystem``
    fs_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any],
                     environ: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if environ is None else environ
        opts = dict(options)
        own = {name: opts.pop(name) for name in OWN_OPTIONS if name in opts}
        fs_opts: dict[str, Any] = opts
        client_kwargs = dict(fs_opts.get("client_kwargs") or {})
        config_kwargs = dict(fs_opts.get("config_kwargs") or {})
        # Standard AWS variables, as every AWS tool reads them (explicit options win).
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint and not fs_opts.get("endpoint_url") and "endpoint_url" not in client_kwargs:
            fs_opts["endpoint_url"] = endpoint
        region = own.pop("region", None) or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region and "region_name" not in client_kwargs:
            client_kwargs["region_name"] = region
        explicit_auth = any(fs_opts.get(k) for k in ("key", "secret", "token", "anon", "profile"))
        if not explicit_auth and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            fs_opts["key"] = env["AWS_ACCESS_KEY_ID"]
            fs_opts["secret"] = env["AWS_SECRET_ACCESS_KEY"]
            if env.get("AWS_SESSION_TOKEN"):
                fs_opts["token"] = env["AWS_SESSION_TOKEN"]
        if own.pop("path_style", False):
            s3_config = dict(config_kwargs.get("s3") or {})
            s3_config.setdefault("addressing_style", "path")
            config_kwargs["s3"] = s3_config
        # Fail over in seconds, not minutes, when the endpoint is down (standard mode
        # backs off exponentially with jitter); callers may override.
        config_kwargs.setdefault("retries", {"max_attempts": 3, "mode": "standard"})
        fs_opts["client_kwargs"] = client_kwargs
        fs_opts["config_kwargs"] = config_kwargs
        # Never negotiable: see the module invariants.
        fs_opts.update(asynchronous=True, skip_instance_cache=True, use_listings_cache=False)
        part_size = int(own.get("part_size", cls.part_size))
        if part_size < 5 * MiB:
            raise ValueError("part_size must be at least 5 MiB (the S3 minimum part size)")
        return cls(
            part_size=part_size,
            resume_ttl=float(own.get("resume_ttl", cls.resume_ttl)),
            max_rename_objects=int(own.get("max_rename_objects", cls.max_rename_objects)),
            read_block_size=max(4096, int(own.get("read_block_size", cls.read_block_size))),
            copy_concurrency=max(1, int(own.get("copy_concurrency", cls.copy_concurrency))),
            list_page_size=min(1000, max(1, int(own.get("list_page_size", cls.list_page_size)))),
            conditional_writes=_flag(own.get("conditional_writes", cls.conditional_writes)),
            fs_options=fs_opts,
        )

    @property
    def client_key(self) -> str:
        """Identifies the s3fs instance: path-IOs with equal options share one client."""
        return repr(sorted((k, repr(v)) for k, v in self.fs_options.items()))

    @property
    def endpoint(self) -> str:
        return str(self.fs_options.get("endpoint_url")
                   or self.fs_options["client_kwargs"].get("endpoint_url") or "aws")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


#: options s3fs hands to fsspec rather than to the botocore session
FSSPEC_OPTIONS = frozenset({"use_listings_cache", "listings_expiry_time", "max_paths",
                            "skip_instance_cache"})


def _loaded_session(kwargs: dict[str, Any]) -> Any:
    """An aiobotocore session (``profile=``... as s3fs would make it) with the S3 models
    already parsed. Runs in a worker thread."""
    from aiobotocore.session import AioSession

    session = AioSession(**kwargs)
    loader = session.get_component("data_loader")
    for kind in ("service-2", "endpoint-rule-set-1", "paginators-1"):
        with contextlib.suppress(Exception):
            loader.load_service_model("s3", kind)
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        with contextlib.suppress(Exception):
            loader.load_data(name)
    return session


class S3Client:
    """One lazily created s3fs instance, shared by the path-IOs of one server that use the
    same options (so they share a connection pool)."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self._fs: Any = None
        self._lock: asyncio.Lock | None = None
        self.users = 0

    async def filesystem(self) -> Any:
        if self._fs is not None:
            return self._fs
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._fs is None:
                import s3fs

                options = dict(self.settings.fs_options)
                try:
                    if "session" not in options:
                        # botocore parses ~1 MB of JSON models when the first client is
                        # made: do that in a thread, not on the event loop.
                        known = set(inspect.signature(s3fs.S3FileSystem.__init__).parameters)
                        known |= FSSPEC_OPTIONS
                        session_kwargs = {k: options.pop(k) for k in list(options) if k not in known}
                        options["session"] = await asyncio.to_thread(_loaded_session, session_kwargs)
                    fs = s3fs.S3FileSystem(**options)
                    await fs.set_session()
                except Exception as exc:
                    raise translate(exc) from exc
                self._fs = fs
        return self._fs

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Run one S3 API call; raise only builtin exceptions."""
        fs = await self.filesystem()
        try:
            result: dict[str, Any] = await fs._call_s3(operation, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        return result

    async def call_with_body(self, operation: str, body: bytearray | memoryview,
                             **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`call` for an operation that uploads ``body``: the body is streamed
        from the buffer without copies, and every retry gets a fresh, rewound reader."""
        fs = await self.filesystem()
        from s3fs.core import _error_wrapper

        s3 = await fs.get_s3(kwargs.get("Bucket"))
        method = getattr(s3, operation)
        merged = fs._get_s3_method_kwargs(method, **kwargs)

        async def attempt(**kw: Any) -> dict[str, Any]:
            result: dict[str, Any] = await method(Body=PartBody(body), ContentLength=len(body), **kw)
            return result

        try:
            result: dict[str, Any] = await _error_wrapper(attempt, kwargs=merged, retries=fs.retries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        return result

    async def close(self) -> None:
        fs, self._fs = self._fs, None
        creator = getattr(fs, "_s3creator", None)
        if creator is not None and hasattr(creator, "__aexit__"):
            try:
                await creator.__aexit__(None, None, None)
            except Exception:  # closing a broken session must not fail shutdown
                pass


class PartBody(io.BytesIO):
    """A part's bytes as a seekable in-memory file over the upload's own buffer (no copy).

    It is a ``BytesIO`` so that aiohttp streams it in 64 KiB chunks on the event loop
    (a generic file would be read in worker threads, and a ``bytes`` body gets sliced and
    copied whole); every method aiohttp and botocore use reads the shared buffer."""

    def __init__(self, data: bytearray | memoryview) -> None:
        super().__init__()
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, min(len(self._data), base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else min(len(self._data), self._pos + size)
        with memoryview(self._data) as view:
            chunk = bytes(view[self._pos : end])
        self._pos = max(self._pos, end)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(chunk)] = chunk
        return len(chunk)

    def getbuffer(self) -> memoryview:
        return memoryview(self._data)

    def getvalue(self) -> bytes:
        return bytes(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        # The HTTP client must not end the part: a retry seeks back to 0.
        pass


# Transport failures: the endpoint is down, unreachable, or too slow.
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                "ResponseStreamingError", "ProxyConnectionError", "SSLError", "HTTPClientError",
                "ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
                "ClientPayloadError", "IncompleteReadError")
_TIMEOUTS = ("ReadTimeoutError", "AioReadTimeoutError", "ServerTimeoutError", "FSTimeoutError")
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                   "NoAuthTokenError", "TokenRetrievalError")


# Codes that say the server's keys are wrong, not that this object is off limits.
_REJECTED_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 180 else text[:177] + "..."


# S3 (and S3-compatible) error codes that mean "no room": 552 replies.
_SPACE_CODES = {
    "EntityTooLarge": (errno.EFBIG, "File too large for S3 (5 TiB per object)"),
    "QuotaExceeded": (errno.EDQUOT, "Storage quota exceeded"),  # Ceph RGW
    "XMinioStorageFull": (errno.ENOSPC, "Storage full"),  # MinIO
    "XMinioAdminBucketQuotaExceeded": (errno.EDQUOT, "Bucket quota exceeded"),
}


def _s3_code(exc: BaseException | None) -> str:
    """The S3 error code of ``exc`` or of the ClientError it was translated from."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code") or "")
        exc, seen = exc.__cause__, seen + 1
    return ""


def translate(exc: BaseException) -> BaseException:
    """Map an exception from s3fs, botocore or aiohttp to a builtin one."""
    # Transport messages name the endpoint URL with bucket and key: keep them out of
    # replies (the cause stays chained for logs).
    names = _names(exc)
    if names & set(_TIMEOUTS):
        return TimeoutError(errno.ETIMEDOUT, "S3 endpoint did not answer in time")
    if names & set(_UNREACHABLE):
        what = "could not connect" if "EndpointConnectionError" in names else "connection broken"
        return ConnectionError(errno.ECONNREFUSED, f"S3 endpoint unreachable: {what}")
    if names & set(_NO_CREDENTIALS):
        # The server's configuration is at fault, not the client: 451, not 550.
        return PermissionError(ECREDENTIALS, f"No usable S3 credentials: {_message(exc)}")
    code = _s3_code(exc)
    if code in ("PreconditionFailed", "412"):
        # If-Match / CopySourceIfMatch: the object is not the version that was stat'ed.
        return OSError(errno.ESTALE, "The file changed while it was being used")
    if code in _REJECTED_CREDENTIALS:
        return PermissionError(ECREDENTIALS, f"S3 rejected the server's credentials ({code})")
    if code in _SPACE_CODES:
        number, text = _SPACE_CODES[code]
        return OSError(number, text)
    if isinstance(exc, FileNotFoundError):
        text = str(exc.strerror or (exc.args[0] if exc.args else "") or "")
        if "bucket" in text.lower():
            return FileNotFoundError(errno.ENOENT, f"S3 bucket does not exist: {text}")
        return FileNotFoundError(errno.ENOENT, "No such file or directory")
    if isinstance(exc, PermissionError):
        return PermissionError(errno.EACCES, f"S3 denied access: {_message(exc)}")
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return exc
    if isinstance(exc, OSError):
        if exc.errno == errno.EBUSY:  # 409 / 503 SlowDown from the endpoint: retry later
            return OSError(errno.EAGAIN, f"S3 busy: {exc.strerror or _message(exc)}")
        if exc.errno in (errno.EINVAL, errno.EREMOTEIO, errno.EIO, None):
            return OSError(errno.EIO, f"S3 error: {exc.strerror or _message(exc)}")
        return exc
    if "ClientError" in names:
        return OSError(errno.EIO, f"S3 error: {_message(exc)}")
    return OSError(errno.EIO, f"S3 request failed: {_message(exc)}")
