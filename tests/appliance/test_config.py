"""The settings through the real command: every variable and alias parsed (read back with
--print-config), flags over the environment, secrets from _FILE and a secrets directory,
masking, --help, and every invalid configuration: exit 2, one line naming the variable, no
traceback."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import socket
from pathlib import Path

import fsftpd
from fsftpd.appliance import settings as appliance_settings
from tests.appliance.proc import base_env, run


def printed(env: dict[str, str], *args: str) -> dict[str, str]:
    result = run(env, "--print-config", *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if not line.startswith("#"))


def test_every_server_config_field_has_its_variable() -> None:
    """Derived from the dataclass: a field added to ServerConfig gets FSFTPD_<FIELD>."""
    fields = {f.name for f in dataclasses.fields(fsftpd.ServerConfig)}
    model = set(appliance_settings.Settings.model_fields)
    assert fields - appliance_settings.SPECIAL <= model
    # the special ones have their contract names
    assert {"passive_ports", "storage_options", "passive_address"} <= model
    aliases = appliance_settings.Settings.ALIASES["passive_address"]
    assert "FSFTPD_MASQUERADE_ADDRESS" in aliases


def test_every_variable_is_read(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    users_file = tmp_path / "users.json"
    users_file.write_text('[{"login": "f", "password": "p"}]')
    values = {
        "FSFTPD_MAXIMUM_CONNECTIONS": "50", "FSFTPD_MAXIMUM_CONNECTIONS_PER_IP": "5",
        "FSFTPD_SOCKET_TIMEOUT": "30", "FSFTPD_PATH_TIMEOUT": "20", "FSFTPD_IDLE_TIMEOUT": "300",
        "FSFTPD_WAIT_FUTURE_TIMEOUT": "2", "FSFTPD_READ_SPEED_LIMIT": "1000000",
        "FSFTPD_WRITE_SPEED_LIMIT": "2000000", "FSFTPD_READ_SPEED_LIMIT_PER_CONNECTION": "300000",
        "FSFTPD_WRITE_SPEED_LIMIT_PER_CONNECTION": "400000", "FSFTPD_BANNER": "hello there",
        "FSFTPD_SHUTDOWN_TIMEOUT": "7", "FSFTPD_MAX_LOGIN_ATTEMPTS": "4",
        "FSFTPD_FAILED_LOGIN_DELAY": "0.25", "FSFTPD_HOST": "127.0.0.1,::1", "FSFTPD_PORT": "2200",
        "FSFTPD_PASSIVE_PORTS": "31000-31019", "FSFTPD_PASSIVE_ADDRESS": "ftp-{index}.example.org",
        "FSFTPD_REPLICAS": "2", "FSFTPD_REPLICA_INDEX": "fsftpd-1", "FSFTPD_WORKERS": "2",
        "FSFTPD_METRICS_PORT": "9200", "FSFTPD_METRICS_HOST": "127.0.0.1",
        "FSFTPD_METRICS_PER_USER": "false", "FSFTPD_LOG_LEVEL": "debug", "FSFTPD_LOG_FORMAT": "JSON",
        "FSFTPD_HOME": "memory://data", "FSFTPD_STORAGE_OPTIONS": '{"endpoint_url": "http://127.0.0.1:1"}',
        "FSFTPD_USERS_FILE": str(users_file), "FSFTPD_USER": "u", "FSFTPD_ANONYMOUS": "true",
        "FSFTPD_ANONYMOUS_WRITE": "true", "FSFTPD_READ_ONLY": "true",
        "FSFTPD_TLS_CERT": str(cert), "FSFTPD_TLS_KEY": str(key),
    }
    out = printed(base_env(tmp_path, **values))
    expected = {**values, "FSFTPD_LOG_LEVEL": "DEBUG", "FSFTPD_LOG_FORMAT": "json",
                "FSFTPD_STORAGE_OPTIONS": '{"endpoint_url":"http://127.0.0.1:1"}'}
    for name, value in expected.items():
        assert out[name] == value, name
    # every variable of the model is printed, and the output fed back gives the same
    for name, *_ in appliance_settings_rows():
        assert name in out, name
    again = printed({**base_env(tmp_path), **out})
    assert again == out


def appliance_settings_rows() -> list[tuple[str, tuple[str, ...], str, str]]:
    from fsftpd.appliance.cli import variables

    return [row for row in variables() if row[0] not in appliance_settings.SECRETS]


def test_aliases_of_the_popular_images(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n")
    env = base_env(tmp_path, PASV_ADDRESS="10.1.2.3", PASV_MIN_PORT="32000", PASV_MAX_PORT="32004",
                   FTP_USER="olduser", FTP_PASS="oldpass", TLS_CERT=str(cert), TLS_KEY=str(key))
    del env["FSFTPD_PASSIVE_PORTS"]
    out = printed(env)
    assert out["FSFTPD_PASSIVE_ADDRESS"] == "10.1.2.3"
    assert out["FSFTPD_PASSIVE_PORTS"] == "32000-32004"
    assert out["FSFTPD_USER"] == "olduser"
    assert out["FSFTPD_TLS_CERT"] == str(cert) and out["FSFTPD_TLS_KEY"] == str(key)
    env = base_env(tmp_path, PUBLICHOST="ftp.example.org")
    assert printed(env)["FSFTPD_PASSIVE_ADDRESS"] == "ftp.example.org"
    # the FSFTPD_ name wins over an alias
    env = base_env(tmp_path, PUBLICHOST="1.1.1.1", FSFTPD_PASSIVE_ADDRESS="2.2.2.2")
    assert printed(env)["FSFTPD_PASSIVE_ADDRESS"] == "2.2.2.2"


def test_old_flags_override_the_environment(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_PORT="2300", FSFTPD_WORKERS="3", FSFTPD_USER="envuser")
    out = printed(env, str(tmp_path / "root"), "--host", "::1", "--port", "2400", "--user", "flaguser",
                  "--password", "pw", "--anonymous", "--read-only", "--passive-ports", "33000-33009",
                  "--workers", "2", "--log-level", "warning")
    assert out["FSFTPD_HOME"] == str(tmp_path / "root")
    assert (out["FSFTPD_HOST"], out["FSFTPD_PORT"], out["FSFTPD_USER"]) == ("::1", "2400", "flaguser")
    assert (out["FSFTPD_ANONYMOUS"], out["FSFTPD_READ_ONLY"]) == ("true", "true")
    assert (out["FSFTPD_PASSIVE_PORTS"], out["FSFTPD_WORKERS"], out["FSFTPD_LOG_LEVEL"]) == \
        ("33000-33009", "2", "WARNING")


def test_secrets_are_masked_and_files_are_named(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-a-file\n")
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD_FILE=str(secret_file),
                   FSFTPD_STORAGE_OPTIONS='{"key": "AKIAVISIBLE", "secret": "s3cr3t-value"}')
    result = run(env, "--print-config")
    assert result.returncode == 0, result.stderr
    assert "from-a-file" not in result.stdout + result.stderr
    assert "s3cr3t-value" not in result.stdout and "AKIAVISIBLE" not in result.stdout
    assert f"FSFTPD_PASSWORD_FILE={secret_file}" in result.stdout.splitlines()
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD="typed-secret")
    result = run(env, "--print-config")
    assert "typed-secret" not in result.stdout
    assert "# FSFTPD_PASSWORD=********" in result.stdout


def test_help_lists_every_variable_with_its_default(tmp_path: Path) -> None:
    from fsftpd.appliance.cli import variables

    result = run(base_env(tmp_path), "--help")
    assert result.returncode == 0
    for name, aliases, default, _ in variables():
        assert f"{name}=" in result.stdout or f"{name}*=" in result.stdout, name
        assert f"={default}" in result.stdout, (name, default)
        for alias in aliases:
            assert alias in result.stdout
    assert "hash-password" in result.stdout


def test_check_config_passes_and_creates_nothing_but_the_home(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD="p")
    result = run(env, "--check-config")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr


def _occupied_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


# Runs of invalid configurations: (variables, expected lines as (start, fragment)). Each run
# must exit 2 with exactly these lines (one per problem, each naming its variable) and no
# traceback. Problems of one kind are grouped in one run: every one is reported at once.
INVALID: dict[str, tuple[dict[str, str], list[tuple[str, str]]]] = {
    "values": ({
        "FSFTPD_PORT": "99999", "FSFTPD_HOST": "999.1.1.1", "FSFTPD_PASSIVE_PORTS": "70000-70002",
        "FSFTPD_WORKERS": "0", "FSFTPD_LOG_LEVEL": "LOUD", "FSFTPD_LOG_FORMAT": "xml",
        "FSFTPD_IDLE_TIMEOUT": "-5", "FSFTPD_MAXIMUM_CONNECTIONS": "many",
        "FSFTPD_STORAGE_OPTIONS": "{bad", "FSFTPD_REPLICA_INDEX": "pod", "FSFTPD_HOME": "nosuch://bucket",
        "FSFTPD_METRICS_PORT": "-1",
    }, [("FSFTPD_PORT:", "65535"), ("FSFTPD_HOST:", "999.1.1.1"),
        ("FSFTPD_PASSIVE_PORTS:", "70000 is out of range"), ("FSFTPD_WORKERS:", "greater than or equal to 1"),
        ("FSFTPD_LOG_LEVEL:", "DEBUG, INFO"), ("FSFTPD_LOG_FORMAT:", "text or json"),
        ("FSFTPD_IDLE_TIMEOUT:", "greater than or equal to 0"), ("FSFTPD_MAXIMUM_CONNECTIONS:", "integer"),
        ("FSFTPD_STORAGE_OPTIONS:", "not valid JSON"), ("FSFTPD_REPLICA_INDEX:", "pod"),
        ("FSFTPD_HOME:", "nosuch://"), ("FSFTPD_METRICS_PORT:", "greater than or equal to 0")]),
    "more values": ({
        "FSFTPD_PORT": "-1", "FSFTPD_PASSIVE_PORTS": "30009-30000", "FSFTPD_WORKERS": "-2",
        "FSFTPD_PASSWORD_FILE": "/nonexistent/pw", "FSFTPD_USER": "u",
    }, [("FSFTPD_PORT:", "greater than or equal to 0"), ("FSFTPD_PASSIVE_PORTS:", "reversed"),
        ("FSFTPD_WORKERS:", "greater than or equal to 1"), ("FSFTPD_PASSWORD_FILE:", "cannot read")]),
    "text ports": ({"FSFTPD_PASSIVE_PORTS": "abc", "FSFTPD_PORT": "abc"},
                   [("FSFTPD_PASSIVE_PORTS:", "LOW-HIGH"), ("FSFTPD_PORT:", "integer")]),
    "combinations": ({
        "PASV_MIN_PORT": "30009", "PASV_MAX_PORT": "30000", "FSFTPD_PASSIVE_PORTS": "",
        "FSFTPD_TLS_CERT": "/nonexistent/cert.pem", "FSFTPD_TLS_KEY": "/etc/hostname",
        "FSFTPD_USERS_FILE": "/nonexistent/users.json",
    }, [("PASV_MAX_PORT:", "below PASV_MIN_PORT"), ("FSFTPD_TLS_CERT:", "cannot read"),
        ("FSFTPD_TLS_KEY:", "no PEM private key"), ("FSFTPD_USERS_FILE:", "/nonexistent/users.json")]),
    "workers and replicas": ({
        "FSFTPD_WORKERS": "4", "FSFTPD_PASSIVE_PORTS": "30000-30002", "TLS_CERT": "/etc/hostname",
    }, [("FSFTPD_PASSIVE_PORTS:", "each worker"), ("FSFTPD_TLS_CERT:", "no PEM certificate"),
        ("FSFTPD_TLS_CERT/FSFTPD_TLS_KEY:", "set both")]),
    "replicas": ({"FSFTPD_REPLICAS": "4", "FSFTPD_PASSIVE_PORTS": "30000-30002"},
                 [("FSFTPD_PASSIVE_PORTS:", "replicas")]),
    "replica index": ({"FSFTPD_REPLICAS": "2", "FSFTPD_REPLICA_INDEX": "fsftpd-2"},
                      [("FSFTPD_REPLICA_INDEX:", "not below FSFTPD_REPLICAS")]),
    "users": ({"FSFTPD_USERS": json.dumps([
        {"login": "a", "pasword": "x"},
        {"login": "b", "password": "x", "permissions": [{"path": "/", "write": True}]},
        {"login": "c", "password": "$argon2id$v=19$broken"},
        {"login": "d", "password": "$2b$12$short"},
        {"login": "e", "password": "x", "home": "nosuch://x"},
        {"login": "f"},
        {"login": "g", "password": "x"},
        {"login": "g", "password": "y"},
    ])}, [("FSFTPD_USERS:", "login 'g' appears more than once"),
          ("FSFTPD_USERS[0]:", "unknown user field 'pasword'"),
          ("FSFTPD_USERS[1]:", "unknown permission key 'write'"),
          ("FSFTPD_USERS[2] (c).password:", "not a valid argon2 hash"),
          ("FSFTPD_USERS[3] (d).password:", "not a valid bcrypt hash"),
          ("FSFTPD_USERS[4] (e).home:", "nosuch://"), ("FSFTPD_USERS[5] (f):", "no password")]),
    "users json": ({"FSFTPD_USERS": "[{"}, [("FSFTPD_USERS:", "not valid JSON")]),
    "password alone": ({"FSFTPD_PASSWORD": "x"}, [("FSFTPD_PASSWORD:", "FSFTPD_USER")]),
    "missing parent": ({"FSFTPD_HOME": "/nonexistent/parent/home"},
                       [("FSFTPD_HOME:", "parent directory /nonexistent/parent does not exist")]),
}


def test_invalid_configurations_are_one_line_per_problem(tmp_path: Path) -> None:
    def check(name: str) -> str | None:
        variables, expected = INVALID[name]
        env = base_env(tmp_path, **variables)
        result = run(env, "--check-config")
        lines = result.stderr.strip().splitlines()
        problems = []
        if result.returncode != 2 or "Traceback" in result.stderr:
            problems.append(f"exit {result.returncode}")
        if len(lines) != len(expected):
            problems.append(f"{len(lines)} lines for {len(expected)} problems")
        for start, fragment in expected:
            if not any(line.startswith("fsftpd: " + start) and fragment in line for line in lines):
                problems.append(f"no line {start} ...{fragment}")
        if "$argon2id$v=19$broken" in result.stderr:
            problems.append("a password was shown")
        return f"{name}: {problems}\n{result.stderr}" if problems else None

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        failures = [f for f in pool.map(check, INVALID) if f is not None]
    assert not failures, "\n".join(failures)


def test_many_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_PORT="99999", FSFTPD_LOG_LEVEL="LOUD", FSFTPD_WORKERS="0",
                   FSFTPD_PASSIVE_PORTS="abc")
    result = run(env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    named = [line.split(":")[1].strip() for line in result.stderr.strip().splitlines()]
    assert sorted(named) == ["FSFTPD_LOG_LEVEL", "FSFTPD_PASSIVE_PORTS", "FSFTPD_PORT", "FSFTPD_WORKERS"]


def test_bad_flags_name_the_flag(tmp_path: Path) -> None:
    result = run(base_env(tmp_path), "--port", "-1", "--passive-ports", "abc", "--log-level", "LOUD",
                 "--host", "999.1.1.1", "--workers", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for flag in ("--port", "--passive-ports", "--log-level", "--host", "--workers"):
        assert f"fsftpd: {flag}:" in result.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with _occupied_port() as sock:
        port = str(sock.getsockname()[1])
        for workers in ("1", "2"):
            env = base_env(tmp_path, FSFTPD_PORT=port, FSFTPD_WORKERS=workers, FSFTPD_USER="u",
                           FSFTPD_PASSWORD="p")
            result = run(env)
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            assert result.stderr.count("FSFTPD_PORT: cannot listen") == 1, result.stderr
            assert "Address already in use" in result.stderr


def test_s3_home_without_credentials_stops_the_start(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_HOME="s3://bucket/prefix", FSFTPD_USER="u", FSFTPD_PASSWORD="p",
                   FSFTPD_STORAGE_OPTIONS='{"endpoint_url": "http://127.0.0.1:9"}')
    result = run(env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "FSFTPD_HOME: s3://bucket/prefix: No usable S3 credentials" in result.stderr


def test_missing_credentials_later_are_a_server_fault() -> None:
    """After the start, a home whose credentials fail answers 451, not 550."""
    from botocore.exceptions import NoCredentialsError

    from fsftpd.protocol.errors import reply_for_exception
    from fsftpd.storage.s3_client import translate

    assert reply_for_exception(translate(NoCredentialsError())).code == 451


def test_hash_password_command(tmp_path: Path) -> None:
    result = run(base_env(tmp_path), "hash-password", stdin="s3cret\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("$argon2id$")
    import argon2

    assert argon2.PasswordHasher().verify(result.stdout.strip(), "s3cret")
    result = run(base_env(tmp_path), "hash-password", "--bcrypt", stdin="s3cret\n")
    import bcrypt

    assert bcrypt.checkpw(b"s3cret", result.stdout.strip().encode())
