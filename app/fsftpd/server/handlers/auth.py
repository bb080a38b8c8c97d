"""USER, PASS, REIN, QUIT (RFC 959 4.1.1)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from ...auth.users import User
from ...protocol.errors import FtpError
from ...protocol.replies import Reply
from ...protocol.session import Login
from ..connection import Connection, Request, handler
from ..events import ConnectionRefused, LoginAttempt

log = logging.getLogger("fsftpd.auth")


@handler("user")
def user(conn: Connection, req: Request) -> Reply:
    if conn.session.logged_in:
        raise FtpError(503, "Already logged in; use REIN to change user")
    if conn.config.tls_required in ("control", "both") and not conn.session.tls:
        # RFC 4217 section 11: the server's policy needs a protected control connection.
        raise FtpError(530, "TLS required on the control connection: use AUTH TLS first")
    name = req.arg.strip()
    conn.pending_user = conn.server.users.find(name)
    conn.session.user_name = name
    conn.session.login = Login.AWAITING_PASS
    if conn.pending_user is not None and conn.pending_user.login is None:
        return Reply(331, "Anonymous login okay, send any password")
    return Reply(331, f"Password required for {name}")


@handler("pass")
def password(conn: Connection, req: Request) -> Reply | Awaitable[Reply]:
    if conn.session.logged_in:
        raise FtpError(503, "Already logged in")
    if conn.session.login is not Login.AWAITING_PASS:
        raise FtpError(503, "Login with USER first")
    bans = conn.server.bans
    if bans.enabled and bans.banned(conn.peer_host) is not None:
        # Banned while this session was open (by its own or another session's failures).
        conn.closing = True
        return Reply(421, "Too many failed logins from your address, closing connection")
    candidate = conn.pending_user
    if (candidate is None or conn.server.ready_path_io(candidate) is None
            or candidate.slow_password or not candidate.check_password(req.arg)):
        # A failed login waits (failed_login_delay); a first login readies the storage.
        return _password(conn, req)
    return _logged_in(conn, candidate)


async def _password(conn: Connection, req: Request) -> Reply:
    candidate = conn.pending_user
    name = conn.session.user_name or ""
    started = time.monotonic()
    # A hashed password is verified in a thread: never on the event loop. An unknown user
    # costs a check of the same kind, so the time taken does not tell which names exist.
    if candidate is None:
        ok = await conn.server.users.verify_unknown(req.arg)
    else:
        ok = await candidate.verify_password(req.arg)
    if candidate is None or not ok:
        conn.server.events.emit(LoginAttempt(conn.id, conn.peer, name, False))
        conn.login_failures += 1
        conn.session.login = Login.AWAITING_USER
        log.warning("session %d: failed login for %r from %s", conn.id, name, conn.peer_host)
        banned = conn.server.bans.failed(conn.peer_host)
        # Every failure is answered failed_login_delay after PASS, whatever was wrong.
        await asyncio.sleep(max(0.0, conn.config.failed_login_delay - (time.monotonic() - started)))
        if banned is not None:
            log.warning("banning %s for %g s: %d failed logins within %g s", conn.peer_host, banned,
                        conn.config.ban_threshold, conn.config.ban_window,
                        extra={"event": "ban", "peer": conn.peer_host, "ban_seconds": banned})
            conn.closing = True
            return Reply(421, "Too many failed logins from your address, closing connection")
        if conn.login_failures >= conn.config.max_login_attempts:
            conn.closing = True
            return Reply(421, "Too many failed logins, closing connection")
        raise FtpError(530, "Login incorrect")
    await conn.storage(conn.server.path_io_for(candidate))
    return _logged_in(conn, candidate)


def _logged_in(conn: Connection, candidate: User) -> Reply:
    """The password was right and the user's storage is ready: take a session slot. The
    successful LoginAttempt is emitted once the slot is taken (a login refused for the
    user's connection limit is a refused connection, not a session)."""
    if candidate.require_tls in ("control", "both") and not conn.session.tls:
        # Checked only after a right password, so the reply tells nobody else which
        # users need TLS (RFC 4217 section 11: 534, denied for policy reasons).
        conn.session.login = Login.AWAITING_USER
        conn.pending_user = None
        raise FtpError(534, f"TLS required for user {candidate.name}: use AUTH TLS, then log in")
    events = conn.server.events
    io = conn.server.ready_path_io(candidate)
    assert io is not None
    if not conn.server.acquire_user(candidate):
        events.emit(ConnectionRefused(conn.peer, "user-limit"))
        conn.closing = True
        conn.session.login = Login.AWAITING_USER
        return Reply(530, f"Too many connections for user {candidate.name}, closing")
    if events.observers:
        events.emit(LoginAttempt(conn.id, conn.peer, conn.session.user_name or "", True))
    conn.io = io
    conn.user = candidate
    conn.pending_user = None
    conn.session.login = Login.LOGGED_IN
    conn.session.cwd = candidate.home_path
    if log.isEnabledFor(logging.INFO):
        log.info("session %d: %s logged in", conn.id, candidate.name)
    return Reply(230, f"User {candidate.name} logged in")


@handler("rein")
async def rein(conn: Connection, req: Request) -> Reply:
    await conn.abort_transfer()
    conn.close_data_channel()
    if conn.user is not None:
        conn.server.release_user(conn.user)
    conn.user = None
    conn.io = None
    conn.pending_user = None
    conn.session.reset_login()
    return Reply(220, "Session reset, log in again")


@handler("quit")
def quit_(conn: Connection, req: Request) -> Reply | Awaitable[Reply]:
    if conn.transfer is not None and not conn.transfer.done():
        return _quit_after_transfer(conn)
    conn.closing = True
    return Reply(221, "Goodbye")


async def _quit_after_transfer(conn: Connection) -> Reply:
    # RFC 959: QUIT during a transfer closes after the transfer's reply.
    if conn.transfer is not None:
        await asyncio.shield(conn.transfer)
    conn.closing = True
    return Reply(221, "Goodbye")
