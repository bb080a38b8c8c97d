"""Choosing a path-IO for a home: the URL's scheme picks the backend.

``/srv/ftp`` or ``file:///srv/ftp`` -> local disk; ``memory://name`` -> a per-server memory
store; ``s3://bucket/prefix`` -> S3 through s3fs. Any other fsspec protocol is opened with
``fsspec.filesystem`` and served through :class:`FsspecPathIO`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .base import AbstractPathIO, StorageContext


class PathIOFactory(Protocol):
    def __call__(
        self, base_path: str, *, storage_options: dict[str, Any], context: StorageContext
    ) -> AbstractPathIO: ...


def scheme_of(base_path: str) -> str:
    head, sep, _ = base_path.partition("://")
    return head.lower() if sep else "file"


def open_home(base_path: str, *, storage_options: dict[str, Any], context: StorageContext) -> AbstractPathIO:
    """The default factory: pick a backend by the URL scheme of ``base_path``."""
    scheme = scheme_of(base_path)
    if scheme in ("file", "local"):
        from .local import PathIO

        return PathIO(base_path)
    if scheme == "memory":
        from .fsspec_io import MemoryPathIO

        return MemoryPathIO(base_path, context=context)
    if scheme in ("s3", "s3a"):
        from .s3 import S3PathIO

        return S3PathIO.from_url(base_path, storage_options=storage_options, context=context)
    import fsspec

    from .fsspec_io import FsspecPathIO

    key = ("fsspec", scheme, repr(sorted(storage_options.items())))
    fs = context.cache.get(key)
    if fs is None:
        fs = context.cache[key] = fsspec.filesystem(scheme, **storage_options)
    return FsspecPathIO(fs, base_path.partition("://")[2])


def adapt_factory(factory: Any) -> PathIOFactory:
    """Accept the seed's style too: a path-IO *class* taking just the root path."""
    from .fsspec_io import MemoryPathIO
    from .local import PathIO

    if isinstance(factory, type) and issubclass(factory, MemoryPathIO):
        def make_memory(base_path: str, *, storage_options: dict[str, Any],
                        context: StorageContext) -> AbstractPathIO:
            return factory(base_path, context=context)

        return make_memory
    if isinstance(factory, type) and issubclass(factory, PathIO):
        def make_local(base_path: str, *, storage_options: dict[str, Any],
                       context: StorageContext) -> AbstractPathIO:
            return factory(base_path)

        return make_local
    custom: PathIOFactory = factory
    return custom
