"""Users and permissions.

Permission rule: among a user's permissions, the one whose virtual path is the longest
prefix of the target path decides (every permission counts, not just the first listed).
No matching permission means no access.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.paths import is_within, resolve

#: the values of ``tls_required`` and ``User.require_tls``
TLS_POLICIES = ("none", "control", "data", "both")


@dataclass(frozen=True)
class Permission:
    """Access to ``path`` and everything below it (a virtual path)."""

    path: str = "/"
    readable: bool = True
    writable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", resolve("/", self.path))


@dataclass
class User:
    """An FTP account. ``login=None`` is the anonymous user (any name, any password).

    ``base_path`` is what "/" maps to: a local path or a URL (``file://``, ``memory://``,
    ``s3://bucket/prefix``). ``home_path`` is the virtual directory a session starts in.
    Speed limits are bytes per second; ``None`` means unlimited.
    """

    login: str | None = None
    password: str | None = None
    base_path: str = "."
    home_path: str = "/"
    permissions: Sequence[Permission] = field(default_factory=lambda: [Permission("/")])
    maximum_connections: int | None = None
    read_speed_limit: float | None = None
    write_speed_limit: float | None = None
    read_speed_limit_per_connection: float | None = None
    write_speed_limit_per_connection: float | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: ``password_check(stored, typed) -> bool`` replaces the plain comparison, e.g. to
    #: verify an argon2 or bcrypt hash stored in ``password``. Such checks are slow by
    #: design, so the server runs them in a worker thread (see :meth:`verify_password`).
    password_check: Callable[[str, str], bool] | None = field(default=None, compare=False)
    #: TLS this user's sessions must use, on top of the server's ``tls_required``:
    #: "none", "control", "data" or "both" (True means "both", False "none")
    require_tls: bool | str = False

    def __post_init__(self) -> None:
        if isinstance(self.require_tls, bool):
            self.require_tls = "both" if self.require_tls else "none"
        if self.require_tls not in TLS_POLICIES:
            raise ValueError(f"require_tls must be one of {', '.join(TLS_POLICIES)} or a bool, "
                             f"not {self.require_tls!r}")
        self.home_path = resolve("/", self.home_path)
        self.base_path = str(self.base_path)
        self.permissions = list(self.permissions)

    @property
    def name(self) -> str:
        return self.login if self.login is not None else "anonymous"

    def check_password(self, password: str) -> bool:
        """True if ``password`` opens this account (blocking when ``password_check`` is set)."""
        if self.login is None or self.password is None:
            return True
        if self.password_check is not None:
            return self.password_check(self.password, password)
        return same_secret(self.password, password)

    @property
    def slow_password(self) -> bool:
        """True when checking a password must not run on the event loop."""
        return self.password_check is not None and self.login is not None and self.password is not None

    async def verify_password(self, password: str) -> bool:
        """:meth:`check_password` without blocking the event loop: a ``password_check``
        (a hash verification) runs in the default thread pool, whose size also bounds how
        many run at once."""
        if not self.slow_password:
            return self.check_password(password)
        return await asyncio.to_thread(self.check_password, password)

    def access(self, path: str) -> Permission | None:
        """The deciding permission for a virtual path (longest matching prefix)."""
        best: Permission | None = None
        for perm in self.permissions:
            if is_within(path, perm.path) and (best is None or len(perm.path) > len(best.path)):
                best = perm
        return best

    def can_read(self, path: str) -> bool:
        perm = self.access(path)
        return perm is not None and perm.readable

    def can_write(self, path: str) -> bool:
        perm = self.access(path)
        return perm is not None and perm.writable


def same_secret(stored: str, typed: str) -> bool:
    """Constant-time comparison that does not even leak the stored password's length (the
    digests compared always have the same size)."""
    return hmac.compare_digest(hashlib.sha256(stored.encode("utf-8", "surrogateescape")).digest(),
                               hashlib.sha256(typed.encode("utf-8", "surrogateescape")).digest())


#: what an unknown user's password is compared with when no user has a slow check
_DECOY = "fsftpd-no-such-user"


class SessionCounter(Protocol):
    """Session counts kept elsewhere (shared by the worker processes of one server)."""

    def try_acquire_user(self, user: User) -> bool: ...

    def release_user(self, user: User) -> None: ...


class UserManager:
    """Looks users up and counts their live sessions.

    With no users configured, one anonymous user reads and writes "/" mapped to the current
    directory. The counters are plain ints guarded by a lock, so acquire/release are safe
    from any thread. With ``shared`` (a multi-worker server) the limit is checked against the
    count of every worker; :attr:`sessions` still counts this process's own sessions.
    """

    def __init__(self, users: Iterable[User] | None, *, shared: SessionCounter | None = None) -> None:
        self._lock = threading.Lock()
        self.shared = shared
        self.sessions: dict[str, int] = {}
        self.replace(users)

    def replace(self, users: Iterable[User] | None) -> None:
        """Serve ``users`` from now on (a reload). Logins look up the new list at once;
        sessions already logged in keep their :class:`User` and their session count."""
        new = list(users or [])
        if not new:
            new = [User()]
        by_login = {u.login: u for u in new if u.login is not None}
        anonymous = next((u for u in new if u.login is None), None)
        # Call on the server's event loop, where every lookup runs: no lookup can see a
        # half-replaced list.
        self.users = new
        self._by_login = by_login
        self._anonymous = anonymous

    def find(self, login: str) -> User | None:
        user = self._by_login.get(login)
        anonymous_name = login.lower() in ("anonymous", "ftp") or not self._by_login
        if user is None and self._anonymous is not None and anonymous_name:
            return self._anonymous
        return user

    async def verify_unknown(self, password: str) -> bool:
        """The cost of checking ``password`` for a user that does not exist: a check like a
        configured user's (a hash verification in a thread if any user has one), whose result
        is ignored. Always False."""
        decoy = next((u for u in self.users if u.slow_password), None)
        if decoy is not None:
            await decoy.verify_password(password)
        else:
            same_secret(_DECOY, password)
        return False

    def needs_password(self, user: User) -> bool:
        return user.login is not None and user.password is not None

    def try_acquire(self, user: User) -> bool:
        with self._lock:
            count = self.sessions.get(user.name, 0)
            if self.shared is not None:
                if not self.shared.try_acquire_user(user):
                    return False
            elif user.maximum_connections is not None and count >= user.maximum_connections:
                return False
            self.sessions[user.name] = count + 1
            return True

    def release(self, user: User) -> None:
        with self._lock:
            if self.shared is not None and user.name in self.sessions:
                self.shared.release_user(user)
            count = self.sessions.get(user.name, 0) - 1
            if count <= 0:
                self.sessions.pop(user.name, None)
            else:
                self.sessions[user.name] = count
