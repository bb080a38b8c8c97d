"""The appliance's users: from ``FSFTPD_USERS`` (a JSON list), ``FSFTPD_USERS_FILE`` (a JSON
file), ``FSFTPD_USER`` + ``FSFTPD_PASSWORD`` (one user), the first that is set; plus the
anonymous user with ``FSFTPD_ANONYMOUS``. With none of them: one user ``ftp`` with a random
password, printed once on stderr (there is no fixed default password).

Passwords are plain text (accepted, with one warning) or hashes: argon2 (``$argon2id$...``,
argon2-cffi) and bcrypt (``$2b$...``). A hash is checked through the library's
``User.password_check``, which the server runs in a worker thread, never on the loop.

Invariants: a bad entry is reported as one line naming the variable, the user's position
and the field; a password or hash is never part of a message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import fsftpd

from .settings import Settings
from .values import check_home_scheme

log = logging.getLogger("fsftpd.appliance")

_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


class PermissionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = "/"
    readable: bool = True
    writable: bool = True


class UserEntry(BaseModel):
    """One user as written in FSFTPD_USERS: the library's field names (``home`` or
    ``base_path`` for the home URL)."""

    model_config = ConfigDict(extra="forbid")
    login: str = Field(min_length=1)
    password: str | None = None
    home: str | None = None
    base_path: str | None = None
    home_path: str = "/"
    permissions: list[PermissionEntry] | None = None
    maximum_connections: int | None = Field(None, ge=0)
    read_speed_limit: float | None = Field(None, ge=0)
    write_speed_limit: float | None = Field(None, ge=0)
    read_speed_limit_per_connection: float | None = Field(None, ge=0)
    write_speed_limit_per_connection: float | None = Field(None, ge=0)
    storage_options: dict[str, Any] = Field(default_factory=dict)


@dataclass
class UserSet:
    """What a load produced: the library users, and facts for the start-up log."""

    users: list[fsftpd.User] = field(default_factory=list)
    source: str = ""
    plain: list[str] = field(default_factory=list)  # logins with plain-text passwords
    generated: str | None = None  # the random password of the generated user, if any


# -- passwords ---------------------------------------------------------------------------
def hash_kind(password: str) -> str:
    """"argon2", "bcrypt" or "plain"."""
    if password.startswith("$argon2"):
        return "argon2"
    if password.startswith(("$2a$", "$2b$", "$2y$")):
        return "bcrypt"
    return "plain"


def check_hash(password: str) -> str | None:
    """Why a stored hash is unusable (None: usable). Plain text is always usable."""
    kind = hash_kind(password)
    if kind == "argon2":
        try:
            import argon2
        except ImportError:
            return "is an argon2 hash but argon2-cffi is not installed (pip install 'fsftpd[appliance]')"
        try:
            argon2.extract_parameters(password)
        except Exception:
            return "is not a valid argon2 hash"
    elif kind == "bcrypt":
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            return "is a bcrypt hash but bcrypt is not installed (pip install 'fsftpd[appliance]')"
        if not _BCRYPT.match(password):
            return "is not a valid bcrypt hash"
    return None


def _verify_argon2(stored: str, typed: str) -> bool:
    import argon2

    try:
        return bool(argon2.PasswordHasher().verify(stored, typed))
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


def _verify_bcrypt(stored: str, typed: str) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(typed.encode(), stored.encode()))
    except ValueError:  # over 72 bytes (bcrypt 5 refuses them) or a damaged hash
        return False


def checker_for(password: str | None) -> Callable[[str, str], bool] | None:
    """The ``User.password_check`` for a stored password (None: plain comparison)."""
    if password is None:
        return None
    kind = hash_kind(password)
    if kind == "argon2":
        return _verify_argon2
    if kind == "bcrypt":
        return _verify_bcrypt
    return None


def hash_password(password: str, kind: str = "argon2") -> str:
    """A new hash of ``password`` (argon2id with argon2-cffi's defaults, or bcrypt)."""
    if kind == "bcrypt":
        import bcrypt

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
    import argon2

    return str(argon2.PasswordHasher().hash(password))


# -- loading -----------------------------------------------------------------------------
def load_users(s: Settings) -> tuple[UserSet, list[str]]:
    """The users the settings describe, and the problems found (one line each)."""
    problems: list[str] = []
    result = UserSet()
    entries: list[Any] | None = None
    if s.users is not None:
        result.source = "FSFTPD_USERS"
        entries = _parse_json_list("FSFTPD_USERS", s.users, problems)
    elif s.users_file is not None:
        result.source = "FSFTPD_USERS_FILE"
        try:
            with open(s.users_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"FSFTPD_USERS_FILE: cannot read {s.users_file}: "
                            f"{getattr(exc, 'strerror', None) or exc}")
        else:
            entries = _parse_json_list("FSFTPD_USERS_FILE", text, problems)
    elif s.user is not None:
        result.source = "FSFTPD_USER"
        password = s.password.get_secret_value() if s.password is not None else None
        if password is None:
            password = result.generated = secrets.token_urlsafe(12)
        entries = [{"login": s.user, "password": password}]
        if s.read_only:
            entries[0]["permissions"] = [{"path": "/", "readable": True, "writable": False}]
    elif s.password is not None:
        problems.append("FSFTPD_PASSWORD: set FSFTPD_USER too (the login this password is for)")
    for index, raw in enumerate(entries or []):
        name = result.source if result.source == "FSFTPD_USER" else f"{result.source}[{index}]"
        user = _make_user(name, raw, s, problems)
        if user is not None:
            result.users.append(user)
    logins = [u.login for u in result.users]
    for login in sorted({x for x in logins if logins.count(x) > 1 and x is not None}):
        problems.append(f"{result.source}: login {login!r} appears more than once")
    if s.anonymous:
        writable = s.anonymous_write and not s.read_only
        result.users.append(fsftpd.User(None, None, base_path=_home(s.home),
                                        permissions=[fsftpd.Permission("/", True, writable)]))
    if not result.source and not s.anonymous and not problems:
        result.source = "generated"
        result.generated = secrets.token_urlsafe(12)
        result.users.append(fsftpd.User(
            "ftp", result.generated, base_path=_home(s.home),
            permissions=[fsftpd.Permission("/", True, not s.read_only)]))
    result.plain = [u.name for u in result.users
                    if u.login is not None and u.password is not None and u.password_check is None
                    and u.password != result.generated]
    return result, problems


def _parse_json_list(name: str, text: str, problems: list[str]) -> list[Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        problems.append(f"{name}: must be a JSON list of user objects")
        return None
    return value


def _make_user(name: str, raw: Any, s: Settings, problems: list[str]) -> fsftpd.User | None:
    if not isinstance(raw, dict):
        problems.append(f"{name}: must be a JSON object with login, password, home...")
        return None
    try:
        entry = UserEntry.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                what = "permission key" if "permissions" in where else "user field"
                problems.append(f"{name}: unknown {what} {where.rsplit('.', 1)[-1]!r} (at {where})")
            else:
                problems.append(f"{name}.{where}: {error['msg']}")
        return None
    where = f"{name} ({entry.login})"
    if entry.home is not None and entry.base_path is not None:
        problems.append(f"{where}: give home or base_path, not both")
        return None
    home = entry.home or entry.base_path or s.home
    try:
        check_home_scheme(home)
    except ValueError as exc:
        problems.append(f"{where}.home: {exc}")
        return None
    if entry.password is not None:
        why = check_hash(entry.password)
        if why is not None:
            problems.append(f"{where}.password: {why}")
            return None
    elif name != "FSFTPD_USER":
        problems.append(f"{where}: no password (every named user needs one; see FSFTPD_ANONYMOUS)")
        return None
    permissions = ([fsftpd.Permission(p.path, p.readable, p.writable) for p in entry.permissions]
                   if entry.permissions is not None else [fsftpd.Permission("/")])
    return fsftpd.User(
        entry.login, entry.password, base_path=_home(home), home_path=entry.home_path,
        permissions=permissions, maximum_connections=entry.maximum_connections,
        read_speed_limit=entry.read_speed_limit, write_speed_limit=entry.write_speed_limit,
        read_speed_limit_per_connection=entry.read_speed_limit_per_connection,
        write_speed_limit_per_connection=entry.write_speed_limit_per_connection,
        storage_options=dict(entry.storage_options), password_check=checker_for(entry.password))


def _home(url: str) -> str:
    """A local home as an absolute path (the process may change directory later)."""
    if "://" in url:
        return url
    return os.path.abspath(url)
