"""Listings: LIST NLST MLSD MLST.

Each listing stats its target before replying 150 (a missing path is 550 at once), then
streams the directory over the data connection: one storage batch (local disk: one
worker-thread call; S3: one ListObjectsV2 page) at a time, never the whole directory.

Invariants:
- LIST and NLST take a pattern (``*``, ``?``, ``[...]``) in the last path component when
  no entry of that exact name exists: an existing name always wins, so a file called
  ``a*b`` is still listed (and RETR, DELE, MLSD... never glob: RFC 3659 2.2.2 makes MLSx
  pathnames literal). The pattern is matched while the parent directory streams; only
  matches are kept, and a pattern that matches nothing is 550 before any 150.
- A directory (or a pattern's matches) of at most ``listing_sort_limit`` entries is sent
  sorted by name; a larger one in directory order (:class:`SortWindow`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from ...auth.users import User
from ...protocol import listing, paths
from ...protocol.commands import Access
from ...protocol.errors import FtpError
from ...protocol.listing import Entry
from ...protocol.replies import Reply
from ...protocol.selection import NameMatch, SortWindow, by_name, entry_prefix, is_pattern, name_matcher
from ...transfer.copy import send_text
from ..connection import Connection, Request, handler
from .files import entry_batches, list_arg

#: renders one entry of directory ``base`` as a line (without CRLF)
Render = Callable[[Entry, str], str]
#: makes the fast-path renderer of a listing of directory ``base`` (None: no fast path)
FastRenderer = Callable[[str], listing.StatRenderer | None]


@dataclass(frozen=True, slots=True)
class Target:
    """What a listing command names: a path that exists, or a pattern's directory."""

    path: str  # the entry listed, or the directory a pattern is matched in
    entry: Entry  # its stat
    pattern: str = ""  # the last component, when it is a pattern
    prefix: str = ""  # the argument's directory part, as the client wrote it

    @property
    def match(self) -> NameMatch | None:
        return name_matcher(self.pattern) if self.pattern else None


async def find_target(conn: Connection, req: Request, *, options: bool, glob: bool) -> Target:
    """Resolve and stat a listing's argument. With ``glob``, a missing last component that
    holds a wildcard becomes a pattern over its (existing, readable) parent directory."""
    arg = list_arg(req.arg, options=options) or "."
    path = conn.path(req, arg)
    io = conn.storage_io
    try:
        return Target(path, await conn.storage(io.stat(path)))
    except FileNotFoundError:
        pattern = paths.name(path)
        if not glob or not is_pattern(pattern):
            raise
    directory = paths.parent(path)
    conn.check_access(directory, Access.READ)
    entry = await conn.storage(io.stat(directory))
    if not entry.is_dir:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    return Target(directory, entry, pattern, entry_prefix(arg))


def _prepend(first: str | bytes, rest: AsyncIterator[str | bytes]) -> AsyncIterator[str | bytes]:
    async def chained() -> AsyncIterator[str | bytes]:
        yield first
        async for chunk in rest:
            yield chunk

    return chained()


async def _listing(conn: Connection, verb: str, target: Target, render: Render, fast: FastRenderer) -> None:
    """Send the rendered lines of ``target`` over the data connection.

    A directory on local disk is read, filtered, stat'ed and rendered in worker threads
    straight into bytes (``list_text`` with the verb's ``fast`` renderer); any other
    listing filters and orders the storage's Entry batches here and renders them line by
    line with ``render``. Only non-empty chunks come out."""
    io = conn.storage_io
    path, entry, match = target.path, target.entry, target.match
    sort_limit = conn.config.listing_sort_limit
    conn.require_data_channel()

    async def chunks() -> AsyncGenerator[str | bytes, None]:
        text = None
        if entry.is_dir:
            renderer = fast(path)
            if renderer is not None:
                text = io.list_text(path, renderer, match=match, sort_limit=sort_limit)
        if text is not None:
            async with contextlib.aclosing(conn.storage_each(text)) as pieces:
                async for data in pieces:
                    if data:
                        yield data
            return
        window: SortWindow[Entry] = SortWindow(sort_limit if entry.is_dir else 0, by_name)
        async for batch in entry_batches(conn, path, entry):
            if match is not None:
                batch = [item for item in batch if match(item.name)]
            ready = window.add(batch)
            if ready:
                yield "".join([render(item, path) + "\r\n" for item in ready])
        ready = window.finish()
        if ready:
            yield "".join([render(item, path) + "\r\n" for item in ready])

    source = chunks()
    body: AsyncIterator[str | bytes] = source
    if match is not None:
        # A pattern that matches nothing is refused like a missing name, so before 150:
        # the directory is read up to its first match (or its end) first.
        try:
            first = await anext(source, None)
        except BaseException:
            await source.aclose()
            raise
        if first is None:
            await source.aclose()
            raise FtpError(550, f"No files found matching {target.pattern}")
        body = _prepend(first, source)

    async def phase(sock: socket.socket) -> int:
        return await send_text(sock, body, conn.deadlines)

    try:
        conn.start_transfer(verb, path, "listing", phase, release=source.aclose,
                            preliminary=Reply(150, f"Here comes the listing of {path}"),
                            success=Reply(226, "Listing complete"))
    except BaseException:
        await source.aclose()
        raise


@handler("list")
async def list_(conn: Connection, req: Request) -> Reply | None:
    target = await find_target(conn, req, options=True, glob=True)
    now = time.time()

    def render(entry: Entry, base: str) -> str:
        return listing.list_line(entry, now, writable=True)

    await _listing(conn, "LIST", target, render, lambda base: listing.LsLines(now, writable=True))
    return None


@handler("nlst")
async def nlst(conn: Connection, req: Request) -> Reply | None:
    target = await find_target(conn, req, options=True, glob=True)
    # A pattern's matches keep the argument's directory part ("dir/*.txt" -> "dir/a.txt"):
    # classic clients hand each name straight back to RETR or DELE (mget, mdelete).
    prefix = target.prefix
    await _listing(conn, "NLST", target, lambda entry, base: prefix + entry.name,
                   lambda base: listing.NameLines(prefix))
    return None


def _shared_rights(user: User, base: str) -> tuple[bool, bool] | None:
    """(readable, writable) for every child of ``base``: its own deciding permission,
    unless a permission names a path below it (then each child needs its own lookup)."""
    if any(p.path != base and paths.is_within(p.path, base) for p in user.permissions):
        return None
    return user.can_read(base), user.can_write(base)


def _mlsx_renderer(conn: Connection, *, child: bool) -> Render:
    user = conn.user
    assert user is not None
    facts = conn.session.mlst_facts

    # Children of ``base`` share its deciding permission unless a permission names a path
    # below it: then the per-entry longest-prefix lookup is skipped (10,000-entry MLSD).
    shared: dict[str, tuple[bool, bool] | None] = {}

    def render(entry: Entry, base: str) -> str:
        if child:
            if base not in shared:
                shared[base] = _shared_rights(user, base)
            rights = shared[base]
            if rights is not None:
                return listing.mlsx_line(entry, facts, readable=rights[0], writable=rights[1])
        path = paths.join(base, entry.name) if child else base
        return listing.mlsx_line(entry, facts, readable=user.can_read(path), writable=user.can_write(path))

    return render


def _mlsd_fast(conn: Connection) -> FastRenderer:
    user = conn.user
    assert user is not None
    facts = conn.session.mlst_facts

    def make(base: str) -> listing.StatRenderer | None:
        rights = _shared_rights(user, base)
        if rights is None:
            return None
        return listing.MlsdLines(facts, readable=rights[0], writable=rights[1])

    return make


@handler("mlsd")
async def mlsd(conn: Connection, req: Request) -> Reply | None:
    target = await find_target(conn, req, options=False, glob=False)  # RFC 3659: no globbing
    if not target.entry.is_dir:
        raise FtpError(501, "MLSD needs a directory; use MLST for a file")
    await _listing(conn, "MLSD", target, _mlsx_renderer(conn, child=True), _mlsd_fast(conn))
    return None


@handler("mlst")
async def mlst(conn: Connection, req: Request) -> Reply:
    target = conn.path(req, list_arg(req.arg, options=False) or ".")
    entry = await conn.storage(conn.storage_io.stat(target))
    user = conn.user
    assert user is not None
    facts = listing.mlsx_facts(entry, conn.session.mlst_facts,
                               readable=user.can_read(target), writable=user.can_write(target))
    # RFC 3659 7.2: the entry line starts with a single space.
    return Reply(250, f"Listing {target}", f" {facts} {target}", "End")
