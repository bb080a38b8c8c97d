"""FTPS (RFC 4217) with ftplib's FTP_TLS over loopback: AUTH TLS, PBSZ, PROT, CCC, FEAT,
the TLS policies (530/534/521/522), session reuse, clean-close verdicts on uploads,
implicit FTPS and the certificate reload."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.tlsfixtures import Pki, ReusingFTP_TLS, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server(pki: Pki, home: Path, users: list[fsftpd.User] | None = None, **options: Any) -> Any:
    users = users or [fsftpd.User("u", "p", base_path=str(home))]
    return running_server(users=users, tls_cert=pki.cert, tls_key=pki.key, **options)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def srv(pki: Pki, home: Path) -> Iterator[ServerThread]:
    with _server(pki, home) as server:
        yield server


def tls_client(pki: Pki, srv: ServerThread, version: str | None = None,
               cls: type[ftplib.FTP_TLS] = ftplib.FTP_TLS) -> ftplib.FTP_TLS:
    ftp = cls(context=pki.client_context(version), timeout=30)
    ftp.connect(srv.host, srv.port)
    return ftp


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_protected_upload_download_listing(pki: Pki, srv: ServerThread, home: Path, version: str) -> None:
    ftp = tls_client(pki, srv, version)
    assert ftp.auth().startswith("234")
    assert isinstance(ftp.sock, ssl.SSLSocket) and ftp.sock.version() == f"TLSv{version}"
    ftp.login("u", "p")
    assert ftp.sendcmd("PBSZ 0") == "200 PBSZ=0"
    assert ftp.sendcmd("PROT P").startswith("200")
    ftp._prot_p = True  # type: ignore[attr-defined]
    data = os.urandom(5 * 1024 * 1024 + 7)
    for i in range(3):
        assert ftp.storbinary(f"STOR f{i}.bin", io.BytesIO(data)).startswith("226")
        assert sha((home / f"f{i}.bin").read_bytes()) == sha(data)
    out = io.BytesIO()
    assert ftp.retrbinary("RETR f1.bin", out.write).startswith("226")
    assert sha(out.getvalue()) == sha(data)
    assert sorted(ftp.nlst()) == ["f0.bin", "f1.bin", "f2.bin"]
    # PROT C: the same session goes on in the clear.
    ftp.prot_c()
    out = io.BytesIO()
    assert ftp.retrbinary("RETR f0.bin", out.write).startswith("226")
    assert sha(out.getvalue()) == sha(data)
    ftp.quit()


def test_feat_and_reply_codes(pki: Pki, srv: ServerThread) -> None:
    ftp = tls_client(pki, srv)
    feat = ftp.sendcmd("FEAT").splitlines()
    assert {" AUTH TLS", " PBSZ", " PROT"} <= set(feat)
    for command, code in (("PBSZ 0", "503"), ("PROT P", "503"), ("CCC", "503"), ("AUTH KERBEROS_V4", "504")):
        with pytest.raises(ftplib.error_perm, match=f"^{code}"):
            ftp.sendcmd(command)
    ftp.auth()
    with pytest.raises(ftplib.error_perm, match=r"^503"):
        ftp.sendcmd("PROT P")  # PBSZ first
    assert ftp.sendcmd("PBSZ 1024") == "200 PBSZ=0"
    for command, code in (("PROT S", "536"), ("PROT E", "536"), ("PROT Q", "504"), ("CCC", "533"),
                          ("AUTH TLS", "503")):
        with pytest.raises(ftplib.error_perm, match=f"^{code}"):
            ftp.sendcmd(command)
    ftp.login("u", "p")
    assert ftp.sendcmd("NOOP").startswith("200")  # CCC refused: still protected and serving
    ftp.quit()


def test_auth_after_login_is_refused_and_user_before_auth_is_forgotten(pki: Pki, srv: ServerThread) -> None:
    ftp = tls_client(pki, srv)
    assert ftp.sendcmd("USER u").startswith("331")
    ftp.auth()
    with pytest.raises(ftplib.error_perm, match=r"^503"):
        ftp.sendcmd("PASS p")  # AUTH reset the login: USER again, protected
    ftp.login("u", "p")
    with pytest.raises(ftplib.error_perm, match=r"^503"):
        ftp.sendcmd("AUTH TLS")
    ftp.quit()
    plain = ftplib.FTP(timeout=30)
    plain.connect(srv.host, srv.port)
    plain.login("u", "p")
    with pytest.raises(ftplib.error_perm, match=r"^503"):
        plain.sendcmd("AUTH TLS")
    plain.quit()


def test_rein_keeps_tls_and_resets_prot(pki: Pki, srv: ServerThread) -> None:
    ftp = tls_client(pki, srv)
    ftp.auth()
    ftp.login("u", "p")
    ftp.prot_p()
    assert ftp.sendcmd("REIN").startswith("220")
    with pytest.raises(ftplib.error_perm, match=r"^503"):
        ftp.sendcmd("PROT P")  # PBSZ again after REIN
    ftp.login("u", "p")
    assert ftp.sock.version() is not None  # type: ignore[union-attr]
    ftp.quit()


def test_plaintext_after_auth_is_never_executed(pki: Pki, srv: ServerThread, home: Path) -> None:
    with socket.create_connection((srv.host, srv.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"AUTH TLS\r\nMKD injected\r\n")
        assert f.readline().startswith(b"234")
        tls = pki.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
        tf = tls.makefile("rb")
        tls.sendall(b"USER u\r\n")
        assert tf.readline().startswith(b"331")
        tls.sendall(b"PASS p\r\n")
        assert tf.readline().startswith(b"230")
        tls.sendall(b"QUIT\r\n")
        assert tf.readline().startswith(b"221")
    assert not (home / "injected").exists()


def test_no_tls_configured_means_502(home: Path) -> None:
    with running_server(users=[fsftpd.User("u", "p", base_path=str(home))]) as server:
        plain = server.ftp()
        assert "AUTH" not in plain.sendcmd("FEAT")
        for command in ("AUTH TLS", "PBSZ 0", "PROT P", "CCC"):
            with pytest.raises(ftplib.error_perm, match=r"^502"):
                plain.sendcmd(command)
        plain.quit()


def test_policy_control_530_then_tls_works(pki: Pki, home: Path) -> None:
    with _server(pki, home, tls_required="control") as server:
        plain = server.ftp()
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            plain.sendcmd("USER u")
        plain.quit()
        ftp = tls_client(pki, server)
        ftp.login("u", "p")  # ftplib's login does AUTH TLS first
        ftp.quit()


def test_policy_per_user_534_only_after_the_right_password(pki: Pki, home: Path) -> None:
    users = [fsftpd.User("strict", "s", base_path=str(home), require_tls="control"),
             fsftpd.User("lax", "l", base_path=str(home))]
    with _server(pki, home, users) as server:
        plain = server.ftp()
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            plain.login("strict", "wrong")  # same answer as any wrong password
        with pytest.raises(ftplib.error_perm, match=r"^534"):
            plain.login("strict", "s")
        plain.login("lax", "l")
        plain.quit()
        ftp = tls_client(pki, server)
        ftp.login("strict", "s")
        ftp.quit()


def test_policy_data_522_without_tls_521_with_prot_c(pki: Pki, home: Path) -> None:
    (home / "f").write_bytes(b"x" * 1000)
    with _server(pki, home, tls_required="data") as server:
        plain = server.ftp("u", "p")
        with pytest.raises(ftplib.error_perm, match=r"^522"):
            plain.retrbinary("RETR f", lambda b: None)
        with pytest.raises(ftplib.error_perm, match=r"^522"):
            plain.nlst()
        plain.quit()
        ftp = tls_client(pki, server)
        ftp.login("u", "p")
        ftp.prot_p()  # PBSZ 0 and PROT P (RFC 4217: PBSZ before PROT)
        ftp.prot_c()
        with pytest.raises(ftplib.error_perm, match=r"^521"):
            ftp.storbinary("STOR g", io.BytesIO(b"y"))
        assert not (home / "g").exists()
        ftp.prot_p()
        out = io.BytesIO()
        ftp.retrbinary("RETR f", out.write)
        assert out.getvalue() == b"x" * 1000
        ftp.quit()


def test_per_user_data_policy(pki: Pki, home: Path) -> None:
    (home / "f").write_bytes(b"z")
    users = [fsftpd.User("d", "p", base_path=str(home), require_tls="data")]
    with _server(pki, home, users) as server:
        ftp = tls_client(pki, server)
        ftp.login("d", "p")
        ftp.prot_p()
        ftp.prot_c()
        with pytest.raises(ftplib.error_perm, match=r"^521"):
            ftp.retrbinary("RETR f", lambda b: None)
        ftp.quit()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_session_reuse_required(pki: Pki, home: Path, version: str) -> None:
    (home / "f").write_bytes(b"abc" * 1000)
    with _server(pki, home, tls_require_session_reuse=True) as server:
        fresh = tls_client(pki, server, version)
        fresh.login("u", "p")
        fresh.prot_p()
        try:
            fresh.retrbinary("RETR f", lambda b: None)
        except ftplib.Error as exc:
            reply = str(exc)
        except OSError:  # the server closed the data connection right after the handshake
            reply = _next_reply(fresh)
        else:
            pytest.fail("a data connection without session reuse was accepted")
        assert reply.startswith("522"), reply
        fresh.close()
        reusing = tls_client(pki, server, version, cls=ReusingFTP_TLS)
        reusing.login("u", "p")
        reusing.prot_p()
        out = io.BytesIO()
        assert reusing.retrbinary("RETR f", out.write).startswith("226")
        assert out.getvalue() == b"abc" * 1000
        reusing.quit()


def _next_reply(ftp: ftplib.FTP) -> str:
    try:
        return ftp.getresp()
    except ftplib.Error as exc:
        return str(exc)


def _raw_protected_upload(pki: Pki, server: ServerThread, name: str, payload: bytes,
                          close_notify: bool) -> str:
    """STOR over a hand-driven TLS data connection: ``close_notify`` False ends it with a
    bare TCP FIN (at a record boundary). Returns the final reply."""
    ftp = tls_client(pki, server, cls=ReusingFTP_TLS)
    ftp.login("u", "p")
    ftp.prot_p()
    ftp._prot_p = False  # type: ignore[attr-defined]  # wrap the data connection by hand
    raw, _ = ftp.ntransfercmd(f"STOR {name}")
    assert isinstance(raw, socket.socket)
    assert isinstance(ftp.sock, ssl.SSLSocket)
    data = ftp.context.wrap_socket(raw, server_hostname="127.0.0.1", session=ftp.sock.session)
    data.sendall(payload)
    if close_notify:
        data.unwrap().close()
    else:
        plain = socket.socket(fileno=data.detach())
        plain.shutdown(socket.SHUT_WR)
        plain.close()
    try:
        return ftp.voidresp()
    except ftplib.Error as exc:
        return str(exc)
    finally:
        ftp.close()


def test_upload_end_without_close_notify(pki: Pki, home: Path) -> None:
    payload = os.urandom(300_000)
    with _server(pki, home) as server:
        # Default: a FIN at a record boundary is a clean end.
        assert _raw_protected_upload(pki, server, "fin.bin", payload, close_notify=False).startswith("226")
        assert sha((home / "fin.bin").read_bytes()) == sha(payload)
    with _server(pki, home, tls_require_close_notify=True) as server:
        reply = _raw_protected_upload(pki, server, "strict.bin", payload, close_notify=False)
        assert reply.startswith("426"), reply
        assert not (home / "strict.bin").exists()
        reply = _raw_protected_upload(pki, server, "ok.bin", payload, close_notify=True)
        assert reply.startswith("226"), reply
        assert sha((home / "ok.bin").read_bytes()) == sha(payload)


def test_upload_cut_inside_a_record_is_426_and_leaves_nothing(
        pki: Pki, srv: ServerThread, home: Path) -> None:
    ftp = tls_client(pki, srv, cls=ReusingFTP_TLS)
    ftp.login("u", "p")
    ftp.prot_p()
    ftp._prot_p = False  # type: ignore[attr-defined]
    raw, _ = ftp.ntransfercmd("STOR cut.bin")
    assert isinstance(ftp.sock, ssl.SSLSocket)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ftp.context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1", session=ftp.sock.session)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    raw.sendall(outgoing.read())
    obj.write(os.urandom(100_000))
    records = outgoing.read()
    raw.sendall(records[: len(records) - 1000])  # the last record is cut short
    raw.shutdown(socket.SHUT_WR)
    with pytest.raises(ftplib.Error, match=r"^426"):
        ftp.voidresp()
    raw.close()
    ftp.close()
    assert not (home / "cut.bin").exists()


def test_implicit_ftps(pki: Pki, home: Path) -> None:
    with _server(pki, home, implicit_tls_port=0) as server:
        assert server.server is not None
        address = server.server.implicit_tls_address
        assert address is not None
        ctx = pki.client_context()
        sock = ctx.wrap_socket(socket.create_connection(address[:2], timeout=30), server_hostname="127.0.0.1")
        ftp = ReusingFTP_TLS(context=ctx, timeout=30)
        ftp.sock, ftp.af, ftp.host = sock, sock.family, "127.0.0.1"
        ftp.file = sock.makefile("r", encoding="utf-8")
        assert ftp.getresp().startswith("220")
        ftp.login("u", "p")  # already secure: ftplib sends no AUTH
        ftp._prot_p = True  # type: ignore[attr-defined]  # implicit: PROT P is the default
        assert ftp.storbinary("STOR i.bin", io.BytesIO(b"implicit" * 1000)).startswith("226")
        assert (home / "i.bin").read_bytes() == b"implicit" * 1000
        ftp.quit()


def test_reload_tls_keeps_sessions_and_serves_the_new_certificate(
        pki: Pki, home: Path, tmp_path: Path) -> None:
    work = tmp_path / "live"
    work.mkdir()
    cert, key = work / "tls.crt", work / "tls.key"
    cert.write_bytes(Path(pki.cert).read_bytes())
    key.write_bytes(Path(pki.key).read_bytes())
    other = make_pki(tmp_path, "renewed")
    with running_server(users=[fsftpd.User("u", "p", base_path=str(home))],
                        tls_cert=str(cert), tls_key=str(key)) as server:
        old = tls_client(pki, server, cls=ReusingFTP_TLS)
        old.login("u", "p")
        old.prot_p()
        # A broken pair is refused and changes nothing.
        key.write_text("not a key")
        with pytest.raises((OSError, ssl.SSLError)):
            server.call(lambda s: s.reload_tls())
        tls_client(pki, server).login("u", "p")
        cert.write_bytes(Path(other.cert).read_bytes())
        key.write_bytes(Path(other.key).read_bytes())
        server.call(lambda s: s.reload_tls())
        with pytest.raises(ssl.SSLError):
            tls_client(pki, server).auth()  # the old CA no longer verifies the server
        fresh = tls_client(other, server)
        fresh.login("u", "p")
        fresh.quit()
        # The session from before the reload goes on, data connections included.
        assert old.storbinary("STOR after.bin", io.BytesIO(b"still here")).startswith("226")
        assert (home / "after.bin").read_bytes() == b"still here"
        old.quit()
