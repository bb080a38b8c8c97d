"""Navigation and namespace commands: PWD CWD CDUP MKD RMD DELE RNFR RNTO SIZE MDTM MFMT."""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import AsyncIterator

from ...protocol import listing, paths
from ...protocol.commands import Access
from ...protocol.errors import FtpError
from ...protocol.listing import Entry
from ...protocol.replies import Reply, quote_path
from ..connection import Connection, Request, handler

# "LIST -la dir": leading ls options that clients send; stripped before resolving.
LIST_OPTIONS = re.compile(r"^(\s*-[a-zA-Z1]+)+(\s+|$)")


def list_arg(arg: str, *, options: bool) -> str:
    """The path of a listing command: ls-style options dropped (LIST, NLST, STAT), the
    rest kept verbatim, since names may begin or end with spaces; "" when none is given."""
    if options:
        arg = LIST_OPTIONS.sub("", arg)
    return arg if arg.strip() else ""


async def entry_batches(conn: Connection, path: str, entry: Entry) -> AsyncIterator[list[Entry]]:
    """What a listing of ``path`` shows, in batches (one await per batch, for directories of
    thousands): a directory's children, or the file itself. ``entry`` is ``path``'s stat."""
    if not entry.is_dir:
        yield [entry]
        return
    async with contextlib.aclosing(conn.storage_each(conn.storage_io.list_batches(path))) as batches:
        async for batch in batches:
            yield batch


@handler("pwd")
def pwd(conn: Connection, req: Request) -> Reply:
    return Reply(257, f"{quote_path(conn.session.cwd)} is the current directory")


async def _change_dir(conn: Connection, req: Request, target: str) -> Reply:
    conn.check_access(target, Access.READ)
    entry = await conn.storage(conn.storage_io.stat(target))
    if not entry.is_dir:
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
    conn.session.cwd = target
    return Reply(250, f"Directory changed to {target}")


@handler("cwd")
async def cwd(conn: Connection, req: Request) -> Reply:
    return await _change_dir(conn, req, paths.resolve(conn.session.cwd, req.arg))


@handler("cdup")
async def cdup(conn: Connection, req: Request) -> Reply:
    return await _change_dir(conn, req, paths.parent(conn.session.cwd))


@handler("mkd")
async def mkd(conn: Connection, req: Request) -> Reply:
    target = conn.path(req)
    if target == "/":
        raise FileExistsError(errno.EEXIST, "File exists")
    await conn.storage(conn.storage_io.mkdir(target))
    return Reply(257, f"{quote_path(target)} created")


@handler("rmd")
async def rmd(conn: Connection, req: Request) -> Reply:
    target = conn.path(req)
    if target == "/":
        raise FtpError(550, "Cannot remove the root directory")
    if paths.is_within(conn.session.cwd, target):
        raise FtpError(550, "Cannot remove the current directory or one of its parents")
    await conn.storage(conn.storage_io.rmdir(target))
    return Reply(250, f"Directory {target} removed")


@handler("dele")
async def dele(conn: Connection, req: Request) -> Reply:
    target = conn.path(req)
    await conn.storage(conn.storage_io.unlink(target))
    return Reply(250, f"File {target} deleted")


@handler("rnfr")
async def rnfr(conn: Connection, req: Request) -> Reply:
    source = conn.path(req)
    if source == "/":
        raise FtpError(550, "Cannot rename the root directory")
    await conn.storage(conn.storage_io.stat(source))
    conn.session.rename_from = source
    return Reply(350, "Ready for RNTO")


@handler("rnto")
async def rnto(conn: Connection, req: Request) -> Reply:
    source = conn.session.rename_from
    conn.session.rename_from = None
    if source is None:
        raise FtpError(503, "RNFR required first")
    target = conn.path(req)
    if target == "/":
        raise FtpError(553, "Cannot rename onto the root directory")
    if paths.is_within(target, source) and target != source:
        raise FtpError(553, "Cannot move a directory inside itself")
    await conn.storage(conn.storage_io.rename(source, target))
    return Reply(250, f"Renamed {source} to {target}")


@handler("size")
async def size(conn: Connection, req: Request) -> Reply:
    # The path-IO's size(): on S3 an interrupted upload kept for resumption reports the
    # bytes held of it, which is what a client resumes from (REST n + STOR, or APPE).
    held = await conn.storage(conn.storage_io.size(conn.path(req)))
    return Reply(213, str(held))


@handler("mdtm")
async def mdtm(conn: Connection, req: Request) -> Reply:
    entry = await conn.storage(conn.storage_io.stat(conn.path(req)))
    return Reply(213, listing.mdtm_time(entry.mtime))


@handler("mfmt")
async def mfmt(conn: Connection, req: Request) -> Reply:
    stamp, _, name = req.arg.partition(" ")
    if not name.strip():
        raise FtpError(501, "MFMT needs a time and a path")
    try:
        mtime = listing.parse_time_val(stamp)
    except ValueError:
        raise FtpError(501, f"Bad time value {stamp[:20]!r}: use YYYYMMDDHHMMSS") from None
    target = conn.path(req, name)
    await conn.storage(conn.storage_io.set_mtime(target, mtime))
    return Reply(213, f"Modify={listing.mdtm_time(mtime)}; {paths.name(target) or '/'}")
