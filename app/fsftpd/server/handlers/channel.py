"""Transfer parameters and data-channel setup: TYPE MODE STRU ALLO REST PASV EPSV PORT EPRT."""

from __future__ import annotations

from ...protocol.errors import FtpError
from ...protocol.replies import Reply
from ...protocol.session import DataMode
from ...transfer.data import (
    PassiveListener,
    check_active_target,
    parse_eprt,
    parse_port,
    pasv_reply_address,
)
from ..connection import Connection, Request, handler


@handler("type")
def type_(conn: Connection, req: Request) -> Reply:
    kind = conn.session.set_type(req.arg)
    return Reply(200, f"Type set to {'ASCII' if kind.value == 'A' else 'binary'}")


@handler("mode")
def mode(conn: Connection, req: Request) -> Reply:
    if req.arg.strip().upper() != "S":
        raise FtpError(504, "Only MODE S (stream) is supported")
    return Reply(200, "Mode set to S")


@handler("stru")
def stru(conn: Connection, req: Request) -> Reply:
    if req.arg.strip().upper() != "F":
        raise FtpError(504, "Only STRU F (file) is supported")
    return Reply(200, "Structure set to F")


@handler("allo")
def allo(conn: Connection, req: Request) -> Reply:
    return Reply(202, "No storage allocation necessary")


@handler("rest")
def rest(conn: Connection, req: Request) -> Reply:
    offset = conn.session.set_rest(req.arg.strip())
    return Reply(350, f"Restarting at {offset}. Send STOR, APPE or RETR")


def _listen(conn: Connection) -> PassiveListener:
    conn.close_data_channel()
    config = conn.config
    peer = conn.peer_host if config.passive_peer_check else None
    listener = PassiveListener.open(conn.local_host, peer, config.passive_ports)
    conn.passive = listener
    conn.session.data_mode = DataMode.PASSIVE
    if config.passive_timeout is not None:
        # Unused after passive_timeout: closed, so its port goes back to the range.
        listener.expiry = conn.server.loop.call_later(config.passive_timeout, _expire, conn, listener)
    return listener


def _expire(conn: Connection, listener: PassiveListener) -> None:
    listener.expiry = None
    if conn.passive is listener:  # else a transfer took it (and cancelled this timer)
        conn.close_data_channel()


@handler("pasv")
def pasv(conn: Connection, req: Request) -> Reply:
    announced = pasv_reply_address(conn.server.passive_address.current(conn.local_host))
    listener = _listen(conn)
    h = announced.replace(".", ",")
    return Reply(227, f"Entering Passive Mode ({h},{listener.port >> 8},{listener.port & 0xFF})")


@handler("epsv")
def epsv(conn: Connection, req: Request) -> Reply:
    arg = req.arg.strip().upper()
    if arg == "ALL":
        conn.session.epsv_all = True
        return Reply(200, "EPSV ALL accepted")
    family = "2" if ":" in conn.local_host else "1"
    if arg and arg not in ("1", "2"):
        raise FtpError(522, "Network protocol not supported, use (1,2)")
    if arg and arg != family:
        raise FtpError(522, f"Network protocol not supported, use ({family})")
    listener = _listen(conn)
    return Reply(229, f"Entering Extended Passive Mode (|||{listener.port}|)")


def _check_active_mode(conn: Connection) -> None:
    if not conn.config.active_mode:
        raise FtpError(502, "Active mode (PORT/EPRT) is disabled on this server; use PASV or EPSV")


def _active(conn: Connection, host: str, port: int) -> Reply:
    check_active_target(host, port, conn.peer_host)
    conn.close_data_channel()
    conn.active_target = (host, port)
    conn.session.data_mode = DataMode.ACTIVE
    return Reply(200, "Active data connection set up")


@handler("port")
def port(conn: Connection, req: Request) -> Reply:
    _check_active_mode(conn)
    if ":" in conn.local_host and not conn.local_host.startswith("::ffff:"):
        raise FtpError(522, "PORT is IPv4 only; use EPRT (RFC 2428)")
    host, number = parse_port(req.arg)
    return _active(conn, host, number)


@handler("eprt")
def eprt(conn: Connection, req: Request) -> Reply:
    _check_active_mode(conn)
    host, number = parse_eprt(req.arg)
    return _active(conn, host, number)
