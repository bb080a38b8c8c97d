"""FTPS through a real fsftpd process: the FSFTPD_TLS_* variables, require_tls in the
users' JSON, and the certificate reloaded on SIGHUP without dropping sessions."""

from __future__ import annotations

import ftplib
import io
import json
import signal
import ssl
from pathlib import Path

import pytest

from tests.appliance.proc import Fsftpd, base_env, run
from tests.server.tlsfixtures import Pki, ReusingFTP_TLS, make_pki


def client(pki: Pki, port: int, cls: type[ftplib.FTP_TLS] = ftplib.FTP_TLS) -> ftplib.FTP_TLS:
    ftp = cls(context=pki.client_context(), timeout=30)
    ftp.connect("127.0.0.1", port)
    return ftp


def test_check_config_reports_tls_problems(tmp_path: Path) -> None:
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD="p", FSFTPD_TLS_REQUIRED="always",
                   FSFTPD_IMPLICIT_TLS_PORT="0", FSFTPD_TLS_MIN_VERSION="1.1")
    proc = run(env, "--check-config")
    assert proc.returncode == 2
    assert "FSFTPD_TLS_REQUIRED" in proc.stderr and "FSFTPD_TLS_MIN_VERSION" in proc.stderr
    env = base_env(tmp_path, FSFTPD_USER="u", FSFTPD_PASSWORD="p", FSFTPD_TLS_REQUIRED="both")
    proc = run(env, "--check-config")
    assert proc.returncode == 2
    assert "FSFTPD_TLS_REQUIRED: needs FSFTPD_TLS_CERT and FSFTPD_TLS_KEY" in proc.stderr
    users = json.dumps([{"login": "u", "password": "p", "require_tls": "sometimes"}])
    proc = run(base_env(tmp_path, FSFTPD_USERS=users), "--check-config")
    assert proc.returncode == 2 and "require_tls" in proc.stderr


def test_env_policy_per_user_and_sighup_reload(tmp_path: Path) -> None:
    first = make_pki(tmp_path, "first")
    second = make_pki(tmp_path, "second")
    live = tmp_path / "live"
    live.mkdir()
    (live / "tls.crt").write_bytes(Path(first.cert).read_bytes())
    (live / "tls.key").write_bytes(Path(first.key).read_bytes())
    users = json.dumps([{"login": "strict", "password": "s", "require_tls": True},
                        {"login": "lax", "password": "l"}])
    env = base_env(tmp_path, FSFTPD_USERS=users, TLS_CERT=str(live / "tls.crt"),
                   TLS_KEY=str(live / "tls.key"), FSFTPD_TLS_REQUIRED="data")
    (tmp_path / "home").mkdir()
    with Fsftpd(env) as proc:
        plain = ftplib.FTP(timeout=30)
        plain.connect("127.0.0.1", proc.port)
        with pytest.raises(ftplib.error_perm, match=r"^534"):
            plain.login("strict", "s")
        plain.login("lax", "l")
        with pytest.raises(ftplib.error_perm, match=r"^522"):
            plain.nlst()  # FSFTPD_TLS_REQUIRED=data
        plain.quit()
        # Resuming its TLS session, a running session's data connections need no new
        # handshake with the server's certificate: they go on across the reload.
        before = client(first, proc.port, ReusingFTP_TLS)
        before.login("strict", "s")
        before.prot_p()
        before.storbinary("STOR a.bin", io.BytesIO(b"a" * 100_000))
        (live / "tls.crt").write_bytes(Path(second.cert).read_bytes())
        (live / "tls.key").write_bytes(Path(second.key).read_bytes())
        mark = proc.mark()
        proc.send(signal.SIGHUP)
        proc.wait_for(r"TLS certificate reloaded", start=mark)
        with pytest.raises(ssl.SSLError):
            client(first, proc.port).auth()
        after = client(second, proc.port)
        after.login("strict", "s")
        after.prot_p()
        assert after.nlst() == ["a.bin"]
        after.quit()
        # The session from before the reload is still served, data connections included.
        out = io.BytesIO()
        before.retrbinary("RETR a.bin", out.write)
        assert out.getvalue() == b"a" * 100_000
        before.quit()
        # A broken key: refused, logged, the current certificate stays.
        (live / "tls.key").write_text("broken")
        mark = proc.mark()
        proc.send(signal.SIGHUP)
        proc.wait_for(r"reload refused, keeping the current TLS certificate", start=mark)
        client(second, proc.port).login("lax", "l")
        assert proc.stop() == 0
    assert "Traceback" not in proc.output
