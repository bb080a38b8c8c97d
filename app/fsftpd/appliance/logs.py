"""The appliance's logs: text or JSON lines on stderr, and the access log.

- ``FSFTPD_LOG_FORMAT=text``: ``time level [wN] logger: message key=value...``;
  ``json``: one object per line, written by :func:`json.dumps` (never by hand), with
  ``time``, ``level``, ``logger``, ``worker``, ``message`` and the record's fields.
- Every line says which worker wrote it (``worker``: its index; the supervisor and a
  single process are worker 0... see :func:`set_worker`).
- The access log is an observer of ``server.events`` (:class:`AccessLog`): one line per
  session start and end, login (user as typed, address, result) and transfer (user,
  address, command, path, bytes, seconds, result). It never sees a password: the
  engine's events carry none.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, ClassVar

import fsftpd

_WORKER: int | None = None
#: attributes every LogRecord has: anything else on a record is a field of the line
_STANDARD = frozenset(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {
    "message", "asctime", "worker", "taskName"}

access = logging.getLogger("fsftpd.access")


def set_worker(index: int | None) -> None:
    """Name the worker of this process in every following log line (None: no worker)."""
    global _WORKER
    _WORKER = index


class _WorkerFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__["worker"] = _WORKER
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s%(where)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        worker = getattr(record, "worker", None)
        record.where = "" if worker is None else f" [w{worker}]"
        line = super().format(record)
        extra = _fields(record)
        extra.pop("where", None)
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        return line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "worker": getattr(record, "worker", None),
            "message": record.getMessage(),
        }
        data.update(_fields(record))
        data.pop("where", None)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


JsonFormatter.converter = time.gmtime
TextFormatter.converter = time.gmtime


def configure(level: str, fmt: str) -> None:
    """Send every log line of the process to stderr in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_WorkerFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # botocore and friends are chatty at DEBUG and may print request details.
    for noisy in ("botocore", "aiobotocore", "s3fs", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))


class AccessLog:
    """The access log, built from the server's events::

        server.events.subscribe(AccessLog())
    """

    EVENTS: ClassVar[tuple[type, ...]] = (
        fsftpd.SessionStarted, fsftpd.SessionEnded, fsftpd.LoginAttempt, fsftpd.TransferFinished)

    def __init__(self) -> None:
        self.peers: dict[int, str] = {}  # session id -> client address (for transfer lines)

    def __call__(self, event: fsftpd.Event) -> None:
        if isinstance(event, fsftpd.SessionStarted):
            self.peers[event.session_id] = event.peer
            access.info("session %d started", event.session_id,
                        extra={"event": "session_start", "session": event.session_id, "address": event.peer})
        elif isinstance(event, fsftpd.SessionEnded):
            self.peers.pop(event.session_id, None)
            access.info("session %d ended", event.session_id,
                        extra={"event": "session_end", "session": event.session_id, "address": event.peer,
                               "user": event.user, "seconds": round(event.duration, 3)})
        elif isinstance(event, fsftpd.LoginAttempt):
            result = "ok" if event.success else "failed"
            access.log(logging.INFO if event.success else logging.WARNING,
                       "login %s for %r", result, event.user,
                       extra={"event": "login", "session": event.session_id, "user": event.user,
                              "address": event.peer, "result": result})
        elif isinstance(event, fsftpd.TransferFinished):
            result = "ok" if event.ok else "failed"
            access.info("%s %s %s", event.verb, event.path, result,
                        extra={"event": "transfer", "session": event.session_id, "user": event.user,
                               "address": self.peers.get(event.session_id), "command": event.verb,
                               "path": event.path, "bytes": event.bytes,
                               "seconds": round(event.duration, 3), "result": result, "code": event.code})
