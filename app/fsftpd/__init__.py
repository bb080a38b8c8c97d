"""fsftpd: an asyncio FTP server whose homes live on any fsspec filesystem.

The engine's public API::

    server = fsftpd.Server([fsftpd.User("alice", "secret", base_path="/srv/alice")])
    await server.start("127.0.0.1", 2121)
    await server.serve_forever()
"""

from .auth.users import Permission, User, UserManager
from .protocol.commands import COMMANDS as _COMMANDS
from .server import events
from .server.config import ServerConfig
from .server.events import (
    CommandDone,
    ConnectionRefused,
    Event,
    LoginAttempt,
    SessionEnded,
    SessionStarted,
    ThrottleWait,
    TransferFinished,
    TransferProgress,
)
from .server.server import Server
from .server.workers import run_workers
from .storage import (
    AbstractPathIO,
    AsyncPathIO,
    FsspecPathIO,
    MemoryPathIO,
    PathIO,
    S3PathIO,
    StorageContext,
    open_home,
)

__version__ = "0.1.0"

#: every command verb the server knows (a metrics label is one of these or "other")
COMMAND_VERBS: frozenset[str] = frozenset(_COMMANDS)


__all__ = [
    "COMMAND_VERBS",
    "AbstractPathIO",
    "AsyncPathIO",
    "CommandDone",
    "ConnectionRefused",
    "Event",
    "FsspecPathIO",
    "LoginAttempt",
    "MemoryPathIO",
    "PathIO",
    "Permission",
    "S3PathIO",
    "Server",
    "ServerConfig",
    "SessionEnded",
    "SessionStarted",
    "StorageContext",
    "ThrottleWait",
    "TransferFinished",
    "TransferProgress",
    "User",
    "UserManager",
    "__version__",
    "events",
    "open_home",
    "run_workers",
]
