"""Data transfers: RETR STOR APPE STOU ABOR (listings are in :mod:`.listings`).

Each handler does everything that can fail cheaply (path, permission, stat, open) before
replying 150, then hands the data phase to :meth:`Connection.start_transfer`.
"""

from __future__ import annotations

import secrets
import socket

from ...protocol import paths
from ...protocol.errors import FtpError
from ...protocol.replies import Reply
from ...transfer.copy import receive_stream, send_stream
from ..connection import Connection, Request, handler


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


@handler("abor")
async def abor(conn: Connection, req: Request) -> Reply:
    if await conn.abort_transfer():
        return Reply(226, "ABOR command successful")
    if conn.passive is not None or conn.active_target is not None:
        conn.close_data_channel()
        return Reply(225, "ABOR command successful; data channel closed")
    return Reply(225, "No transfer to abort")
