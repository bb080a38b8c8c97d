"""AUTH, PBSZ, PROT, CCC: FTPS (RFC 4217, on RFC 2228's commands).

Sequencing (RFC 4217 sections 4, 8, 9): AUTH TLS before USER (AUTH while logged in is
503: a login must not change its protection underneath), PBSZ 0 after AUTH, PROT after
PBSZ. A server without a certificate answers all four with 502, as before this existed.
"""

from __future__ import annotations

from ...protocol.errors import FtpError
from ...protocol.replies import Reply
from ...protocol.session import Login
from ..connection import Connection, Request, handler


def _tls_configured(conn: Connection) -> None:
    if conn.server.tls_context is None:
        raise FtpError(502, "TLS is not configured on this server")


@handler("auth")
async def auth(conn: Connection, req: Request) -> Reply | None:
    _tls_configured(conn)
    mechanism = req.arg.strip().upper()
    if mechanism not in ("TLS", "TLS-C", "SSL", "TLS-P"):
        raise FtpError(504, f"AUTH {mechanism[:16]} not supported; use AUTH TLS")
    if conn.session.tls:
        raise FtpError(503, "The control connection is already protected")
    if conn.session.logged_in:
        raise FtpError(503, "Already logged in; AUTH TLS comes before USER")
    # A USER sent in the clear is forgotten: the client logs in again, protected
    # (RFC 4217 section 4: the security state is reset by AUTH).
    conn.pending_user = None
    conn.session.user_name = None
    conn.session.login = Login.AWAITING_USER
    await conn.start_tls(Reply(234, f"AUTH {mechanism} ok, start the TLS handshake"))
    if mechanism in ("SSL", "TLS-P"):
        # The old drafts' AUTH SSL implied a protected data channel (what clients of
        # that era expect without sending PROT).
        conn.session.pbsz = conn.session.protect_data = True
    return None  # the reply was sent before the handshake; nothing after it


@handler("pbsz")
def pbsz(conn: Connection, req: Request) -> Reply:
    _tls_configured(conn)
    if not conn.session.tls:
        raise FtpError(503, "PBSZ needs AUTH TLS first")
    arg = req.arg.strip()
    if not arg.isdigit():
        raise FtpError(501, "PBSZ needs a number (0 for TLS)")
    conn.session.pbsz = True
    # RFC 4217 section 8: TLS has no protection buffer; any size is answered with 0.
    return Reply(200, "PBSZ=0")


@handler("prot")
def prot(conn: Connection, req: Request) -> Reply:
    _tls_configured(conn)
    if not conn.session.tls:
        raise FtpError(503, "PROT needs AUTH TLS first")
    if not conn.session.pbsz:
        raise FtpError(503, "PROT needs PBSZ first")
    level = req.arg.strip().upper()
    if level == "P":
        conn.session.protect_data = True
        return Reply(200, "Protection level set to Private")
    if level == "C":
        # Accepted even when a policy requires protected data: the data command that
        # follows gets 521 (RFC 4217 section 9), which names the problem precisely.
        conn.session.protect_data = False
        return Reply(200, "Protection level set to Clear")
    if level in ("S", "E"):
        raise FtpError(536, f"Protection level {level} not supported with TLS; use P or C")
    raise FtpError(504, f"Unknown protection level {level[:16]!r}")


@handler("ccc")
def ccc(conn: Connection, req: Request) -> Reply:
    _tls_configured(conn)
    if not conn.session.tls:
        raise FtpError(503, "The control connection is not protected")
    # RFC 2228's "533 Command protection level denied for policy reasons": a cleared
    # control connection would let anyone on the path inject commands and read replies.
    raise FtpError(533, "CCC refused: the control connection stays protected")
