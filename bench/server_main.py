"""Run one Python FTP server in this process (the benchmark starts it as a subprocess).

    python -m bench.server_main fsftpd|pyftpdlib|aioftp --host H --port P --root DIR
        [--user bench --password bench] [--workers N] [--metrics]

Each server runs with its defaults except logging (warnings only, for every server) and
the connection limits (raised so 1,000 idle sessions fit). Prints ``READY`` when listening.
``--metrics`` (fsftpd, one worker): the metrics sidecar of the appliance is installed, on a
free loopback port, so its cost can be measured against the same server without it.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_fsftpd(args: argparse.Namespace) -> None:
    import asyncio

    import uvloop

    import fsftpd

    users = [fsftpd.User(args.user, args.password, base_path=args.root)]
    options: dict[str, object] = {}
    if args.workers > 1:
        options["workers"] = args.workers
    if args.tls_cert:  # bench/tls.py: FTPS (AUTH TLS, PROT P)
        options.update(tls_cert=args.tls_cert, tls_key=args.tls_key)

    async def main() -> None:
        server = fsftpd.Server(users, **{k: v for k, v in options.items() if k != "workers"})
        if args.metrics:
            from fsftpd.appliance import sidecar

            await sidecar.install(server, host="127.0.0.1", port=0)
        await server.start(args.host, args.port)
        print("READY", flush=True)
        await server.serve_forever()

    if args.metrics and args.workers > 1:
        raise SystemExit("--metrics is measured with one worker")
    if args.workers > 1 and hasattr(fsftpd, "run_workers"):
        fsftpd.run_workers(
            users,
            host=args.host,
            port=args.port,
            workers=args.workers,
            ready=lambda: print("READY", flush=True),
        )
        return
    del asyncio
    uvloop.run(main())


def run_pyftpdlib(args: argparse.Namespace) -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm="elradfmwMT")

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    server = FTPServer((args.host, args.port), Handler, backlog=1024)
    server.max_cons = 0
    server.max_cons_per_ip = 0
    print("READY", flush=True)
    server.serve_forever(handle_exit=True)


def run_aioftp(args: argparse.Namespace) -> None:
    import aioftp
    import uvloop

    users = [
        aioftp.User(
            args.user,
            args.password,
            base_path=args.root,
            permissions=[aioftp.Permission("/", readable=True, writable=True)],
        )
    ]

    async def main() -> None:
        server = aioftp.Server(users)
        await server.start(args.host, args.port, backlog=1024)
        print("READY", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["fsftpd", "pyftpdlib", "aioftp"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--metrics", action="store_true", help="fsftpd with the metrics sidecar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("fsftpd", "aioftp", "pyftpdlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _raise_nofile()
    {"fsftpd": run_fsftpd, "pyftpdlib": run_pyftpdlib, "aioftp": run_aioftp}[args.kind](args)


if __name__ == "__main__":
    main()
