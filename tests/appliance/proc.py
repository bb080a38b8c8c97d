"""A real ``fsftpd`` process for the appliance tests: started with an environment of our
choosing (never the test runner's own FSFTPD_*/AWS_* variables), its stderr collected line
by line, waited on with bounds (never fixed sleeps)."""

from __future__ import annotations

import contextlib
import ftplib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: the console script of this virtualenv (the command users run)
FSFTPD = str(Path(sys.executable).with_name("fsftpd"))
START_TIMEOUT = 30.0


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment: loopback, any free port, short drains, no secrets directory."""
    secrets = tmp / "no-secrets"
    secrets.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "FSFTPD_HOST": "127.0.0.1",
        "FSFTPD_PORT": "0",
        "FSFTPD_PASSIVE_PORTS": "any",
        "FSFTPD_METRICS_PORT": "0",  # off unless a test asks (never the fixed 9100 here)
        "FSFTPD_SHUTDOWN_TIMEOUT": "5",
        "FSFTPD_FAILED_LOGIN_DELAY": "0",
        "FSFTPD_SECRETS_DIR": str(secrets),
        "FSFTPD_HOME": str(tmp / "home"),
        # S3 credentials must come from the test, never from this machine
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return env


def run(env: Mapping[str, str], *args: str, cwd: Path | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``fsftpd ARGS`` to completion (checks, --print-config, hash-password)."""
    return subprocess.run([FSFTPD, *args], env=dict(env), cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout, check=False)


class Fsftpd:
    """``with Fsftpd(env) as proc:`` a serving fsftpd; ``proc.port`` once it is ready."""

    def __init__(self, env: Mapping[str, str], *args: str, cwd: Path | None = None) -> None:
        self.env = dict(env)
        self.args = args
        self.cwd = cwd
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> Fsftpd:
        self.proc = subprocess.Popen([FSFTPD, *self.args], env=self.env, cwd=self.cwd, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for(r"fsftpd ready on port (\d+)")
        match = re.search(r"fsftpd ready on port (\d+)", line)
        assert match is not None
        self.port = int(match.group(1)) or int(self.env.get("FSFTPD_PORT", "0"))
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT, start: int = 0) -> str:
        """The first stderr line (from line ``start`` on) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                assert self.proc is not None
                if left <= 0 or (self.proc.poll() is not None and not self._more_coming()):
                    raise AssertionError(f"no line matching {pattern!r}; stderr:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.2))

    def _more_coming(self) -> bool:
        return False

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.send(sig)
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def ftp(self, user: str, password: str) -> ftplib.FTP:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=15)
        ftp.login(user, password)
        return ftp

    def login_fails(self, user: str, password: str) -> bool:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=15)
        try:
            ftp.login(user, password)
        except ftplib.error_perm as exc:
            return str(exc).startswith("530")
        finally:
            with contextlib.suppress(Exception):
                ftp.close()
        return False


def wait_until(check: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def serving(env: Mapping[str, str], *args: str, cwd: Path | None = None) -> Iterator[Fsftpd]:
    with Fsftpd(env, *args, cwd=cwd) as proc:
        yield proc
