"""A real fsftpd process serving real clients: the generated user, hashed passwords with
ftplib and curl, secrets from _FILE and a secrets directory, anonymous read-only, JSON and
text logs, workers, passive address and replica slices."""

from __future__ import annotations

import ftplib
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.appliance.proc import Fsftpd, base_env
from tests.s3.endpoints import free_port, free_port_block

ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$"  # prefix of argon2-cffi's default hashes


def argon2_hash(password: str) -> str:
    import argon2

    return str(argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(password))


def bcrypt_hash(password: str) -> str:
    import bcrypt

    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())


def curl(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args, url], capture_output=True, timeout=60,
                          check=False)


def test_generated_user_and_json_logs(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_LOG_FORMAT="json")
    with Fsftpd(env) as proc:
        line = proc.wait_for(r"no password configured")
        match = re.search(r"log in as (\S+) with the password: (\S+)", line)
        assert match is not None and match.group(1) == "ftp"
        password = match.group(2)
        ftp = proc.ftp("ftp", password)
        ftp.storbinary("STOR hello.txt", io.BytesIO(b"hello world\n"))
        assert (tmp_path / "home" / "hello.txt").read_bytes() == b"hello world\n"
        ftp.quit()
        assert proc.login_fails("ftp", "wrong-" + password)
        assert proc.login_fails("demo", "demo")  # no fixed default account
        proc.wait_for(r'"event": "session_end"')
        assert proc.stop() == 0
    records = proc.json_lines()
    assert records, proc.output
    assert proc.output.count(password) == 1  # printed once, never logged
    logins = [r for r in records if r.get("event") == "login"]
    expected = {("ftp", "ok"), ("ftp", "failed"), ("demo", "failed")}
    assert {(r["user"], r["result"]) for r in logins} == expected
    assert all(r["address"].startswith("127.0.0.1:") for r in logins)
    (transfer,) = [r for r in records if r.get("event") == "transfer"]
    assert (transfer["user"], transfer["command"], transfer["path"], transfer["bytes"], transfer["result"]) \
        == ("ftp", "STOR", "/hello.txt", 12, "ok")
    assert transfer["address"].startswith("127.0.0.1:") and transfer["seconds"] >= 0
    assert {"session_start", "session_end", "ready", "stopped"} <= {r.get("event") for r in records}
    assert all({"time", "level", "logger", "message", "worker"} <= set(r) for r in records)


def test_hashed_passwords_with_ftplib_and_curl(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_bytes(b"argon2 data")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f.txt").write_bytes(b"bcrypt data")
    users = [
        {"login": "ann", "password": argon2_hash("ann pw"), "home": str(tmp_path / "a")},
        {"login": "ben", "password": bcrypt_hash("ben-pw"), "base_path": str(tmp_path / "b"),
         "permissions": [{"path": "/", "readable": True, "writable": False}]},
        {"login": "cat", "password": "plain-pw", "home": str(tmp_path / "a"), "home_path": "/",
         "maximum_connections": 2},
    ]
    env = base_env(tmp_path, FSFTPD_USERS=json.dumps(users))
    with Fsftpd(env) as proc:
        ftp = proc.ftp("ann", "ann pw")
        assert ftp.nlst() == ["f.txt"]
        ftp.quit()
        ftp = proc.ftp("ben", "ben-pw")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.storbinary("STOR new.txt", io.BytesIO(b"x"))  # read-only permission
        ftp.quit()
        assert proc.login_fails("ann", "ann-pw")
        assert proc.login_fails("ben", "ben pw")
        base = f"ftp://127.0.0.1:{proc.port}/f.txt"
        assert curl(base, "--user", "ann:ann pw").stdout == b"argon2 data"
        assert curl(base, "--user", "ben:ben-pw").stdout == b"bcrypt data"
        assert curl(base, "--user", "ben:wrong").returncode != 0
        assert proc.ftp("cat", "plain-pw").quit().startswith("221")
        proc.wait_for("plain-text passwords for cat")
        assert proc.stop() == 0
    assert "ann pw" not in proc.output and "ben-pw" not in proc.output and "plain-pw" not in proc.output
    assert proc.output.count("plain-text passwords") == 1


def test_secrets_from_a_file_and_from_the_secrets_dir(tmp_path: Path) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text("file-secret\n")
    env = base_env(tmp_path, FSFTPD_USER="fu", FSFTPD_PASSWORD_FILE=str(secret))
    with Fsftpd(env) as proc:
        assert proc.ftp("fu", "file-secret").quit().startswith("221")
        assert proc.stop() == 0
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "FSFTPD_PASSWORD").write_text(argon2_hash("dir-secret"))
    (directory / "FSFTPD_USER").write_text("du")
    env = base_env(tmp_path, FSFTPD_SECRETS_DIR=str(directory))
    with Fsftpd(env) as proc:
        assert proc.ftp("du", "dir-secret").quit().startswith("221")
        assert proc.stop() == 0
    assert "file-secret" not in proc.output and "dir-secret" not in proc.output


def test_anonymous_is_read_only_unless_asked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "pub.txt").write_bytes(b"public")
    env = base_env(tmp_path, FSFTPD_ANONYMOUS="true")
    with Fsftpd(env) as proc:
        ftp = proc.ftp("anonymous", "me@example.org")
        assert ftp.nlst() == ["pub.txt"]
        for command in ("STOR x.txt", "APPE pub.txt"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.storbinary(command, io.BytesIO(b"x"))
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.delete("pub.txt")
        ftp.quit()
        proc.ftp("ftp", "x").quit()  # the other conventional name
        proc.wait_for(r"login ok for 'ftp'")
        assert proc.stop() == 0
    assert "login ok for 'anonymous'" in proc.output  # the name each client typed
    assert sorted(p.name for p in home.iterdir()) == ["pub.txt"]
    env = base_env(tmp_path, FSFTPD_ANONYMOUS="true", FSFTPD_ANONYMOUS_WRITE="true")
    with Fsftpd(env) as proc:
        ftp = proc.ftp("anonymous", "x")
        ftp.storbinary("STOR up.txt", io.BytesIO(b"up"))
        ftp.quit()
        assert proc.stop() == 0
    assert (home / "up.txt").read_bytes() == b"up"


def test_workers_name_themselves_and_number_sessions_uniquely(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_USER="w", FSFTPD_PASSWORD="pw", FSFTPD_WORKERS="2",
                   FSFTPD_PORT=str(free_port()))
    with Fsftpd(env) as proc:
        for _ in range(12):
            proc.ftp("w", "pw").quit()
        proc.wait_for(r"session \d+ ended")
        assert proc.stop() == 0
    starts = [line for line in proc.lines if "fsftpd.access" in line and "started" in line]
    assert len(starts) == 12
    workers = {re.search(r"\[w(\d)\]", line).group(1) for line in starts}  # type: ignore[union-attr]
    assert workers <= {"0", "1"} and workers
    keys = [re.search(r"session=(\d+)", line).group(1) for line in starts]  # type: ignore[union-attr]
    assert len(set(keys)) == len(keys), keys  # unique across the workers
    assert "Traceback" not in proc.output


def test_passive_address_and_replica_block(tmp_path: Path) -> None:
    low = free_port_block(8)
    env = base_env(tmp_path, FSFTPD_USER="p", FSFTPD_PASSWORD="pw", FSFTPD_PASSIVE_PORTS=f"{low}-{low + 7}",
                   FSFTPD_REPLICAS="2", FSFTPD_REPLICA_INDEX="fsftpd-1",
                   FSFTPD_PASSIVE_ADDRESS="127.0.0.{index}")
    with Fsftpd(env) as proc:
        ftp = proc.ftp("p", "pw")
        for _ in range(6):
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))
            assert host == "127.0.0.1"  # {index} is 1
            assert low + 4 <= port <= low + 7  # the second block of four
        ftp.quit()
        assert proc.stop() == 0
    # a DNS name is resolved (and re-resolved at most every 30 s)
    env = base_env(tmp_path, FSFTPD_USER="p", FSFTPD_PASSWORD="pw", FSFTPD_PASSIVE_ADDRESS="localhost")
    with Fsftpd(env) as proc:
        ftp = proc.ftp("p", "pw")
        host, _ = ftplib.parse227(ftp.sendcmd("PASV"))
        assert host == "127.0.0.1"
        ftp.retrlines("LIST", lambda line: None)
        ftp.quit()
        assert proc.stop() == 0
