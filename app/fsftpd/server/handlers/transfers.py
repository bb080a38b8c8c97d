"""Data transfers and listings: RETR STOR APPE STOU LIST NLST MLSD MLST ABOR.

Each handler does everything that can fail cheaply (path, permission, stat, open) before
replying 150, then hands the data phase to :meth:`Connection.start_transfer`.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable

from ...auth.users import User
from ...protocol import listing, paths
from ...protocol.errors import FtpError
from ...protocol.listing import Entry
from ...protocol.replies import Reply
from ...transfer.copy import receive_stream, send_stream, send_text
from ..connection import Connection, Request, handler
from .files import entry_batches, list_arg


@handler("retr")
async def retr(conn: Connection, req: Request) -> Reply | None:
    target = conn.path(req)
    offset = conn.session.take_rest("RETR")
    conn.require_data_channel()
    io = conn.storage_io
    reader, size = await conn.storage(io.open_read_sized(target, offset))
    if offset > size:
        await reader.close()
        raise FtpError(554, f"Restart offset {offset} is beyond the end of the file ({size})")
    ascii_mode = conn.set_type_ascii()
    throttle = conn.throttle("download")
    progress = conn.progress("download")

    async def phase(sock: socket.socket) -> int:
        return await send_stream(sock, reader, throttle=throttle, ascii_mode=ascii_mode,
                                 deadlines=conn.deadlines, progress=progress, offset=offset,
                                 expected=size - offset)

    mode = "ASCII" if ascii_mode else "BINARY"
    try:
        conn.start_transfer("RETR", target, "download", phase, release=reader.close, meter=progress,
                            preliminary=Reply(150, f"Opening {mode} data connection for {paths.name(target)}"
                                              f" ({size - offset} bytes)"))
    except BaseException:
        await reader.close()
        raise
    return None


async def _store(conn: Connection, req: Request, verb: str, target: str, *, append: bool,
                 preliminary: Reply, success: Reply | None = None) -> None:
    offset = conn.session.take_rest(verb)
    conn.require_data_channel()
    io = conn.storage_io
    if offset:
        held = await conn.storage(io.size(target))  # S3: includes an interrupted upload
        if offset > held:
            raise FtpError(554, f"Restart offset {offset} is beyond the end of the file ({held})")
    writer = await conn.storage(io.open_write(target, offset=offset, append=append))
    ascii_mode = conn.set_type_ascii()
    throttle = conn.throttle("upload")
    progress = conn.progress("upload")

    async def phase(sock: socket.socket) -> int:
        return await receive_stream(sock, writer, throttle=throttle, ascii_mode=ascii_mode,
                                    deadlines=conn.deadlines, progress=progress)

    try:
        conn.start_transfer(verb, target, "upload", phase, finish=writer.commit, fail=writer.abort,
                            preliminary=preliminary, success=success, meter=progress)
    except BaseException:
        await writer.abort()
        raise


@handler("stor")
async def stor(conn: Connection, req: Request) -> Reply | None:
    target = conn.path(req)
    await _store(conn, req, "STOR", target, append=False,
                 preliminary=Reply(150, f"Ready to receive {paths.name(target)}"))
    return None


@handler("appe")
async def appe(conn: Connection, req: Request) -> Reply | None:
    target = conn.path(req)
    await _store(conn, req, "APPE", target, append=True,
                 preliminary=Reply(150, f"Ready to append to {paths.name(target)}"))
    return None


@handler("stou")
async def stou(conn: Connection, req: Request) -> Reply | None:
    io = conn.storage_io
    stem = (paths.name(paths.resolve("/", req.arg)) if req.arg.strip() else "") or "ftp"
    for _ in range(20):
        candidate = paths.join(conn.session.cwd, f"{stem}.{secrets.token_hex(4)}")
        if not await conn.storage(io.exists(candidate)):
            break
    else:
        raise FtpError(450, "Could not find a unique file name")
    conn.check_access(candidate, req.spec.access)
    name = paths.name(candidate)
    # RFC 1123 4.1.2.9: the 150 reply carries the chosen name.
    await _store(conn, req, "STOU", candidate, append=False, preliminary=Reply(150, f"FILE: {name}"),
                 success=Reply(226, f"Transfer complete (unique file name: {name})"))
    return None


#: makes the fast-path renderer of a listing of directory ``base`` (None: no fast path)
FastRenderer = Callable[[str], listing.StatRenderer | None]


async def _listing(conn: Connection, req: Request, verb: str, render: Callable[[Entry, str], str],
                   fast: FastRenderer) -> None:
    """Resolve and stat the target once, fail before 150 when it is missing (550) or, for
    MLSD, not a directory (501), then send the rendered lines over the data connection.

    A directory on local disk is read, stat'ed and rendered in worker threads straight
    into bytes (``list_text`` with the verb's ``fast`` renderer); any other listing
    renders the storage's Entry batches line by line with ``render``."""
    target = conn.path(req, list_arg(req.arg, options=verb in ("LIST", "NLST")) or ".")
    io = conn.storage_io
    entry = await conn.storage(io.stat(target))
    if verb == "MLSD" and not entry.is_dir:
        raise FtpError(501, "MLSD needs a directory; use MLST for a file")
    conn.require_data_channel()

    async def chunks() -> AsyncIterator[str | bytes]:
        text = None
        if entry.is_dir:
            renderer = fast(target)
            if renderer is not None:
                text = io.list_text(target, renderer)
        if text is not None:
            async with contextlib.aclosing(conn.storage_each(text)) as pieces:
                async for data in pieces:
                    yield data
            return
        async for batch in entry_batches(conn, target, entry):
            yield "".join([render(item, target) + "\r\n" for item in batch])

    async def phase(sock: socket.socket) -> int:
        return await send_text(sock, chunks(), conn.deadlines)

    conn.start_transfer(verb, target, "listing", phase,
                        preliminary=Reply(150, f"Here comes the listing of {target}"),
                        success=Reply(226, "Listing complete"))


@handler("list")
async def list_(conn: Connection, req: Request) -> Reply | None:
    now = time.time()

    def render(entry: Entry, base: str) -> str:
        return listing.list_line(entry, now, writable=True)

    await _listing(conn, req, "LIST", render, lambda base: listing.LsLines(now, writable=True))
    return None


@handler("nlst")
async def nlst(conn: Connection, req: Request) -> Reply | None:
    await _listing(conn, req, "NLST", lambda entry, base: entry.name, lambda base: listing.NameLines())
    return None


def _shared_rights(user: User, base: str) -> tuple[bool, bool] | None:
    """(readable, writable) for every child of ``base``: its own deciding permission,
    unless a permission names a path below it (then each child needs its own lookup)."""
    if any(p.path != base and paths.is_within(p.path, base) for p in user.permissions):
        return None
    return user.can_read(base), user.can_write(base)


def _mlsx_renderer(conn: Connection, *, child: bool) -> Callable[[Entry, str], str]:
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
    await _listing(conn, req, "MLSD", _mlsx_renderer(conn, child=True), _mlsd_fast(conn))
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


@handler("abor")
async def abor(conn: Connection, req: Request) -> Reply:
    if await conn.abort_transfer():
        return Reply(226, "ABOR command successful")
    if conn.passive is not None or conn.active_target is not None:
        conn.close_data_channel()
        return Reply(225, "ABOR command successful; data channel closed")
    return Reply(225, "No transfer to abort")
