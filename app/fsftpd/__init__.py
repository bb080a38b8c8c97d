"""fsftpd: an asyncio FTP server whose homes live on any fsspec filesystem.

The engine's public API::

    server = fsftpd.Server([fsftpd.User("alice", "secret", base_path="/srv/alice")])
    await server.start("127.0.0.1", 2121)
    await server.serve_forever()
"""

from .auth.users import Permission, User, UserManager
from .server.config import ServerConfig
from .server.events import (
    CommandDone,
    ConnectionRefused,
    Event,
    LoginAttempt,
    SessionEnded,
    SessionStarted,
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


__all__ = [
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
    "TransferFinished",
    "TransferProgress",
    "User",
    "UserManager",
    "__version__",
    "open_home",
    "run_workers",
]
