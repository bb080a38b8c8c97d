"""``python -m fsftpd`` / ``fsftpd``: serve a directory over FTP.

With no options it serves ``./ftp-data`` on port 2121 to a demo user (``demo``/``demo``)
and to nobody else. The full environment-variable configuration lives in
:mod:`fsftpd.appliance`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import Permission, Server, User, run_workers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fsftpd", description="Serve a directory (or any fsspec URL) over FTP"
    )
    parser.add_argument("root", nargs="?", default="./ftp-data",
                        help="home directory or URL (file://, memory://, s3://); default ./ftp-data")
    parser.add_argument("--host", default=None, help="address to listen on (default: all, IPv4 and IPv6)")
    parser.add_argument("--port", type=int, default=2121, help="control port (default 2121)")
    parser.add_argument("--user", default="demo", help="login name (default demo)")
    parser.add_argument("--password", default="demo", help="password (default demo)")
    parser.add_argument("--anonymous", action="store_true", help="allow anonymous logins instead of a user")
    parser.add_argument("--read-only", action="store_true", help="no uploads, deletes or renames")
    parser.add_argument("--passive-ports", default=None, help="passive port range, e.g. 30000-30009")
    parser.add_argument("--workers", type=int, default=1,
                        help="event-loop worker processes sharing the port (Linux; default 1)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build_user(args: argparse.Namespace) -> User:
    perms = [Permission("/", readable=True, writable=not args.read_only)]
    login = None if args.anonymous else args.user
    if "://" not in args.root:
        os.makedirs(args.root, exist_ok=True)
    return User(login, None if args.anonymous else args.password, base_path=args.root, permissions=perms)


def passive_ports(args: argparse.Namespace) -> range | None:
    if not args.passive_ports:
        return None
    low, _, high = args.passive_ports.partition("-")
    return range(int(low), int(high or low) + 1)


def build_server(args: argparse.Namespace) -> Server:
    return Server([build_user(args)], passive_ports=passive_ports(args))


async def serve(args: argparse.Namespace) -> None:
    server = build_server(args)
    await server.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = server.address[1]
    logging.getLogger("fsftpd").info("serving %s on port %d", args.root, port)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers > 1:
        try:
            run_workers([build_user(args)], host=args.host, port=args.port, workers=args.workers,
                        passive_ports=passive_ports(args))
        except (ValueError, RuntimeError) as exc:
            print(f"fsftpd: {exc}", file=sys.stderr)
            return 2
        return 0
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
