"""The ``fsftpd`` command (and ``python -m fsftpd``): settings from the environment, the
flags that existed before them (they win over the environment), ``--check-config``,
``--print-config``, and ``fsftpd hash-password``.

Exit codes: 0 served and drained (or a check passed), 2 invalid configuration (one line per
problem on stderr, naming the variable), 1 an unexpected failure (one line; the traceback
only with FSFTPD_LOG_LEVEL=DEBUG).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from . import logs, runner
from .settings import AWS_SECRETS, MASK, SECRETS, Settings, env_name, load, with_file_secrets
from .users import UserSet, hash_password, load_users

#: old flag -> settings field (flags override the environment)
FLAGS = {
    "root": ("home", "ROOT"),
    "host": ("host", "--host"),
    "port": ("port", "--port"),
    "user": ("user", "--user"),
    "password": ("password", "--password"),
    "passive_ports": ("passive_ports", "--passive-ports"),
    "workers": ("workers", "--workers"),
    "log_level": ("log_level", "--log-level"),
}
_SECRET_KEY = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


def variables() -> list[tuple[str, tuple[str, ...], str, str]]:
    """(variable, aliases, default, meaning) for every setting: --help and the docs table."""
    rows = []
    for field, info in Settings.model_fields.items():
        if field in ("pasv_min_port", "pasv_max_port"):
            continue  # aliases, listed with FSFTPD_PASSIVE_PORTS
        aliases = Settings.ALIASES.get(field, ())
        if field == "passive_ports":
            aliases = ("PASV_MIN_PORT+PASV_MAX_PORT",)
        default = info.get_default(call_default_factory=True)
        rows.append((env_name(field), aliases, format_value(default), info.description or ""))
    return rows


def format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    lines = ["environment variables (flags win over them; secrets (*) also from NAME_FILE",
             "or from a file NAME in /run/secrets):"]
    for name, aliases, default, meaning in variables():
        star = "*" if name in SECRETS else ""
        also = f" (alias {', '.join(aliases)})" if aliases else ""
        lines.append(f"  {name}{star}={default}{also}\n      {meaning}")
    lines += ["", "commands:", "  fsftpd hash-password [--bcrypt]   print a hash for FSFTPD_PASSWORD / users"]
    parser = argparse.ArgumentParser(
        prog="fsftpd",
        description="An FTP server for a directory, memory:// or s3:// (see docs/configuration.md)",
        epilog="\n".join(lines), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=None, help="home directory or URL (FSFTPD_HOME)")
    parser.add_argument("--host", help="address(es) to listen on (FSFTPD_HOST)")
    parser.add_argument("--port", help="control port (FSFTPD_PORT)")
    parser.add_argument("--user", help="login name (FSFTPD_USER)")
    parser.add_argument("--password", help="password (FSFTPD_PASSWORD)")
    parser.add_argument("--anonymous", action="store_true", help="allow anonymous logins, read-only "
                        "(FSFTPD_ANONYMOUS; writing needs FSFTPD_ANONYMOUS_WRITE=true)")
    parser.add_argument("--read-only", action="store_true",
                        help="no uploads, deletes or renames (FSFTPD_READ_ONLY)")
    parser.add_argument("--passive-ports", help="passive port range, e.g. 30000-30009 (FSFTPD_PASSIVE_PORTS)")
    parser.add_argument("--workers", help="worker processes, Linux (FSFTPD_WORKERS)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (FSFTPD_LOG_LEVEL)")
    parser.add_argument("--check-config", action="store_true",
                        help="check the configuration and the homes, then exit")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective configuration as FSFTPD_* lines (secrets masked), "
                             "then exit")
    return parser


def overrides_from(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    overrides: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for attr, (field, flag) in FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            overrides[field] = value
            flags[field] = flag
    for attr in ("anonymous", "read_only"):
        if getattr(args, attr):
            overrides[attr] = True
            flags[attr] = "--" + attr.replace("_", "-")
    return overrides, flags


def read_configuration(environ: Mapping[str, str], overrides: dict[str, Any],
                       flags: dict[str, str]) -> tuple[Settings | None, UserSet | None, list[str]]:
    settings, problems = load(environ, overrides, flags)
    if settings is None:
        return None, None, problems
    userset, more = load_users(settings)
    return (settings if not more else None), (userset if not more else None), problems + more


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["hash-password"]:
            return hash_password_command(args_list[1:])
        return _main(args_list)
    except KeyboardInterrupt:  # SIGINT or SIGTERM before serving began: nothing to drain
        print("fsftpd: stopped before serving", file=sys.stderr)
        return 0
    except Exception as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("fsftpd.appliance").exception("unexpected failure")
        print(f"fsftpd: unexpected failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    overrides, flags = overrides_from(args)
    environ = dict(os.environ)
    settings, userset, problems = read_configuration(environ, overrides, flags)
    # botocore reads AWS_* from the environment itself: give it the ones from _FILE.
    loaded = with_file_secrets({n: v for n, v in environ.items() if n.startswith("AWS_")}, [])
    for name in AWS_SECRETS:
        if name in loaded and name not in os.environ:
            os.environ[name] = loaded[name]
    if problems or settings is None or userset is None:
        for line in problems:
            print(f"fsftpd: {line}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(print_config(settings, environ))
        return 0
    if args.check_config:
        more = runner._run(lambda: runner.check_homes(userset.users, settings))
        for line in more:
            print(f"fsftpd: {line}", file=sys.stderr)
        if more:
            return 2
        source = userset.source or "FSFTPD_ANONYMOUS"
        print(f"fsftpd: configuration OK ({len(userset.users)} user(s) from {source})", file=sys.stderr)
        return 0
    logs.configure(settings.log_level, settings.log_format)
    log = logging.getLogger("fsftpd.appliance")
    if userset.generated is not None:
        login = userset.users[0].login if userset.source == "FSFTPD_USER" else "ftp"
        # Printed once, on stderr, never logged: there is no fixed default password.
        print(f"fsftpd: no password configured: log in as {login} with the password: {userset.generated} "
              "(shown once; set FSFTPD_USER and FSFTPD_PASSWORD, or FSFTPD_USERS)",
              file=sys.stderr, flush=True)
    if userset.plain:
        log.warning("plain-text passwords for %s: store hashes instead (fsftpd hash-password)",
                    ", ".join(userset.plain))
    log.info("%d user(s) from %s; home %s; event loop %s", len(userset.users),
             userset.source or "FSFTPD_ANONYMOUS", settings.home, runner.event_loop_kind())

    def reload() -> tuple[UserSet | None, list[str]]:
        _, new, lines = read_configuration(dict(os.environ), overrides, flags)
        return new, lines

    return runner.serve(settings, userset, reload)


def print_config(settings: Settings, environ: Mapping[str, str]) -> str:
    """The effective configuration as ``FSFTPD_*=value`` lines (an env file). A secret is a
    comment: its ``_FILE`` variable when it came from one, else masked."""
    out = []
    for field in Settings.model_fields:
        if field in ("pasv_min_port", "pasv_max_port"):
            continue
        name = env_name(field)
        value: Any = getattr(settings, field)
        if field == "passive_ports":
            ports = settings.port_range()
            value = f"{ports[0]}-{ports[-1]}" if ports else "any"
        if name in SECRETS or isinstance(value, SecretStr):
            source = next((environ[n + "_FILE"] for n in (name, *Settings.ALIASES.get(field, ()))
                           if environ.get(n + "_FILE")), None)
            if value is None or value == {}:
                out.append(f"{name}={format_value(value)}")
            elif source is not None:
                out.append(f"{name}_FILE={source}")
            elif field == "storage_options" and not any(_SECRET_KEY.search(k) for k in value):
                out.append(f"{name}={format_value(value)}")
            else:
                out.append(f"# {name}={MASK} (secret: set it again, or use {name}_FILE)")
            continue
        out.append(f"{name}={format_value(value)}")
    return "\n".join(out) + "\n"


def hash_password_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fsftpd hash-password",
        description="Read a password (prompt, or the first line of stdin) and print its hash for "
                    "FSFTPD_PASSWORD or a user's \"password\" (argon2id by default).")
    parser.add_argument("--bcrypt", action="store_true", help="a bcrypt hash instead of argon2id")
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("fsftpd: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("fsftpd: empty password", file=sys.stderr)
        return 2
    try:
        print(hash_password(password, "bcrypt" if args.bcrypt else "argon2"))
    except ImportError as exc:
        print(f"fsftpd: {exc.name} is not installed (pip install 'fsftpd[appliance]')", file=sys.stderr)
        return 2
    except ValueError as exc:  # bcrypt: over 72 bytes
        print(f"fsftpd: {exc}", file=sys.stderr)
        return 2
    return 0
