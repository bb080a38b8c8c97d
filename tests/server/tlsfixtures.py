"""Certificates for the FTPS tests, made with trustme: a CA the clients trust and a
server certificate for 127.0.0.1, written to PEM files."""

from __future__ import annotations

import ftplib
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Pki:
    ca: trustme.CA
    cert: str
    key: str
    ca_file: str

    def client_context(self, version: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if version == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        elif version == "1.3":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx


def make_pki(directory: Path, name: str = "server") -> Pki:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}-ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, str(cert), str(key), str(ca_file))


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib's FTP_TLS resumes nothing on data connections; this one offers the control
    connection's TLS session, as FileZilla, curl and lftp do."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[object, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            assert isinstance(self.sock, ssl.SSLSocket)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
