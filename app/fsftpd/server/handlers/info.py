"""NOOP, SYST, FEAT, OPTS, HELP, SITE, STAT (RFC 959, RFC 2389, RFC 2640, RFC 3659)."""

from __future__ import annotations

import time

from ...protocol import listing
from ...protocol.commands import COMMANDS, SITE_COMMANDS, feature_lines, help_lines, site_help_lines
from ...protocol.errors import FtpError
from ...protocol.listing import Entry
from ...protocol.replies import Reply
from ...protocol.selection import SortWindow, by_name
from ..connection import Connection, Request, handler
from .files import entry_batches, list_arg


@handler("noop")
def noop(conn: Connection, req: Request) -> Reply:
    return Reply(200, "NOOP ok")


@handler("syst")
def syst(conn: Connection, req: Request) -> Reply:
    return Reply(215, "UNIX Type: L8")


@handler("feat")
def feat(conn: Connection, req: Request) -> Reply:
    lines = feature_lines(conn.session.mlst_facts)
    return Reply(211, "Features:", *[f" {line}" for line in lines], "End")


@handler("opts")
def opts(conn: Connection, req: Request) -> Reply:
    option, _, value = req.arg.strip().partition(" ")
    option = option.upper()
    if option == "UTF8":
        if value.strip().upper() in ("ON", ""):
            conn.session.utf8 = True
            return Reply(200, "UTF8 mode is always on")
        if value.strip().upper() == "OFF":
            raise FtpError(504, "UTF8 cannot be turned off")
        raise FtpError(501, "OPTS UTF8 takes ON or OFF")
    if option == "MLST":
        wanted = [f.lower() for f in value.strip().split(";") if f]
        facts = tuple(f for f in listing.MLST_FACTS if f in wanted)
        conn.session.mlst_facts = facts
        return Reply(200, "MLST OPTS " + "".join(f"{f};" for f in facts))
    raise FtpError(501, f"Option {option!r} not understood")


@handler("help")
def help_(conn: Connection, req: Request) -> Reply:
    verb, _, sub = req.arg.strip().upper().partition(" ")
    if verb == "SITE":
        # ncftp asks at every login; the answer lists the SITE commands there are
        return _site_help(sub.strip())
    if verb:
        spec = COMMANDS.get(verb)
        if spec is None:
            raise FtpError(501, f"Unknown command {verb[:16]!r}")
        return Reply(214, spec.help)
    return Reply(214, *help_lines())


def _site_help(sub: str) -> Reply:
    if not sub:
        return Reply(214, *site_help_lines())
    text = SITE_COMMANDS.get(sub)
    if text is None:
        raise FtpError(501, f"Unknown SITE command {sub[:16]!r}")
    return Reply(214, text)


@handler("site")
def site(conn: Connection, req: Request) -> Reply:
    sub, _, rest = req.arg.strip().partition(" ")
    sub = sub.upper()
    if sub == "HELP":
        return _site_help(rest.strip().upper())
    # RFC 959 4.2: 502 for a command this server does not implement (SITE CHMOD, ...)
    raise FtpError(502, f"SITE {sub[:16]} not implemented (SITE HELP lists the SITE commands)")


@handler("stat")
async def stat(conn: Connection, req: Request) -> Reply:
    if not req.arg.strip():
        running = conn.transfer is not None and not conn.transfer.done()
        return Reply(
            211,
            "fsftpd status:",
            f" Connected from {conn.peer_host}",
            f" Logged in as {conn.user_name}",
            f" TYPE: {conn.session.transfer_type.name}, STRU: File, MODE: Stream",
            f" Data connection: {conn.session.data_mode.value}",
            f" Transfer in progress: {'yes' if running else 'no'}",
            "End of status",
        )
    if conn.transfer is not None and not conn.transfer.done():
        raise FtpError(450, "STAT with a path is not available during a transfer")
    path = conn.path(req, list_arg(req.arg, options=True) or ".")
    entry = await conn.storage(conn.storage_io.stat(path))
    now = time.time()
    # sorted like LIST; the reply holds every line anyway
    window: SortWindow[Entry] = SortWindow(conn.config.listing_sort_limit, by_name)
    entries = [e async for batch in entry_batches(conn, path, entry) for e in window.add(batch)]
    lines = [listing.list_line(e, now) for e in entries + window.finish()]
    return Reply(213, f"Status of {path}:", *lines, "End of status")

