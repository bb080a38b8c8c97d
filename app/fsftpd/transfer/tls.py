"""TLS for FTPS (RFC 4217): the server's context, and the TLS end of a protected data
connection (PROT P).

The data end is an :class:`ssl.SSLObject` over memory buffers, driven by the raw
non-blocking socket: the same code on asyncio's loop and on uvloop, and full control of
three things the copy loops and the upload verdict need:

- how the peer closed: ``close_notify`` (a TLS close), a bare TCP FIN at a record
  boundary, a FIN in the middle of a record, or a reset; only the first two end an
  upload, and :attr:`TlsDataSocket.closed_by` says which one it was;
- no session tickets on data connections (see :func:`data_object`): a client that never
  reads them (lftp) would otherwise leave them unread in its receive buffer, and its
  kernel answers its own close with a reset that drops the last bytes of an upload;
- large writes: one :meth:`TlsDataSocket.send` encrypts up to :data:`SEND_PLAINTEXT` bytes
  and hands the records to the kernel in as few ``send`` calls as the socket takes.

Invariant: :class:`TlsDataSocket` offers the subset of the socket API the copy loops of
:mod:`fsftpd.transfer.copy` call (``send``, ``recv_into``, ``fileno``, ``setsockopt``,
``getsockopt``, ``gettimeout``), raising ``BlockingIOError`` exactly when the caller
must wait for the raw socket: when it is readable (``recv_into``) or writable (``send``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

#: plaintext taken by one ``send``: 64 TLS records, one pass through the kernel
SEND_PLAINTEXT = 1024 * 1024
#: ciphertext read from the socket at once
RECV_CIPHERTEXT = 256 * 1024

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
#: the number of TLS 1.3 session tickets sent on a control connection (OpenSSL's default):
#: they let the client resume the session on its data connections
CONTROL_TICKETS = 2


def make_context(cert: str, key: str, min_version: str = "1.2") -> ssl.SSLContext:
    """A server context with the certificate chain ``cert`` and private key ``key`` (PEM
    files). Raises ``OSError`` or ``ssl.SSLError`` with the reason for a bad file."""
    if min_version not in VERSIONS:
        raise ValueError(f"tls_min_version must be one of {', '.join(VERSIONS)}, not {min_version!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[min_version]
    context.load_cert_chain(cert, key)
    # Client-initiated renegotiation (TLS 1.2) only costs the server CPU.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.num_tickets = CONTROL_TICKETS
    return context


def reload_context(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load a new certificate chain and key into ``context``, in place: connections made
    from now on present it, connections already made keep theirs, and sessions issued
    before stay resumable (the session cache and ticket keys belong to the context).
    The files are first checked in a scratch context, so a bad pair changes nothing."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    scratch.load_cert_chain(cert, key)
    context.load_cert_chain(cert, key)


def data_object(context: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A server-side TLS object for a data connection: the control connection's context
    (so the client can resume the control connection's session), but no TLS 1.3 session
    tickets. OpenSSL copies the ticket count into each connection when it is made, so the
    count is set to 0 for this one call and restored at once; nothing else runs between
    the two assignments (no await)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tickets = context.num_tickets
    context.num_tickets = 0
    try:
        obj = context.wrap_bio(incoming, outgoing, server_side=True)
    finally:
        context.num_tickets = tickets
    return obj, incoming, outgoing


async def _wait(sock: Any, writing: bool, timeout: float | None) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    add, remove = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    add(fd, ready)
    try:
        async with asyncio.timeout(timeout):
            await fut
    finally:
        remove(fd)


class TlsDataSocket:
    """The TLS end of one data connection (see the module docstring)."""

    def __init__(self, sock: Any, context: ssl.SSLContext) -> None:
        self.sock = sock
        self.ssl, self._in, self._out = data_object(context)
        self._pending = memoryview(b"")  # ciphertext the kernel has not taken yet
        self._recv = bytearray(RECV_CIPHERTEXT)
        #: how the client ended its side: "close_notify", "eof" (TCP FIN at a record
        #: boundary, no close_notify) or None (not yet)
        self.closed_by: str | None = None
        # Where the received ciphertext stands in its TLS records (RFC 8446 5.1: a
        # 5-byte header whose last two bytes are the length): OpenSSL takes a partial
        # record out of the memory buffer, so only this says whether a FIN cut one.
        self._header = b""
        self._record_left = 0

    # -- set-up and shut-down ---------------------------------------------------------
    async def handshake(self, timeout: float | None) -> None:
        """The server side of the handshake, bounded by ``timeout`` as a whole."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self.ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._drain(None)
                    await self._fill()
            await self._drain(None)

    @property
    def session_reused(self) -> bool:
        return bool(self.ssl.session_reused)

    @property
    def version(self) -> str | None:
        return self.ssl.version()

    async def shutdown(self, timeout: float | None) -> None:
        """Send close_notify and everything still buffered (a download's or listing's end)."""
        try:
            self.ssl.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLError):
            pass  # our close_notify is queued; the client's is not waited for
        await self._drain(timeout)

    def close(self) -> None:
        self.sock.close()

    # -- the socket API of the copy loops --------------------------------------------
    def fileno(self) -> int:
        return int(self.sock.fileno())

    def gettimeout(self) -> float | None:
        return 0.0

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self.sock.getsockopt(*args)

    def send(self, data: bytes | memoryview) -> int:
        """Encrypt up to :data:`SEND_PLAINTEXT` bytes of ``data``; BlockingIOError while
        earlier records still wait for room in the socket."""
        if not self._flush():
            raise BlockingIOError
        size = min(len(data), SEND_PLAINTEXT)
        written = self.ssl.write(data[:size]) if size else 0
        self._flush()
        return int(written)

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Decrypted bytes into ``buffer``; 0 at a clean end (:attr:`closed_by`);
        BlockingIOError when the socket has nothing more yet; ConnectionResetError for a
        TCP close inside a record or a broken record."""
        size = nbytes or len(buffer)
        while True:
            try:
                n = int(self.ssl.read(size, buffer))
                if n == 0:  # Python's answer to close_notify (SSL_ERROR_ZERO_RETURN)
                    self.closed_by = "close_notify"
                elif self._out.pending:  # a post-handshake message to answer (key update)
                    self._flush()
                return n
            except ssl.SSLWantReadError:
                if self._in.eof:
                    raise ConnectionResetError("TLS connection closed inside a record") from None
                n = self.sock.recv_into(self._recv)  # BlockingIOError: the caller waits
                if n == 0:
                    self._in.write_eof()
                else:
                    view = memoryview(self._recv)[:n]
                    self._track(view)
                    self._in.write(view)
            except ssl.SSLZeroReturnError:
                self.closed_by = "close_notify"
                return 0
            except ssl.SSLEOFError:
                # A FIN without close_notify: clean only at a record boundary.
                if self._header or self._record_left or self._in.pending:
                    raise ConnectionResetError("TLS connection closed inside a record") from None
                self.closed_by = "eof"
                return 0
            except ssl.SSLError as exc:
                raise ConnectionResetError(f"TLS error: {exc.reason or exc}") from None
            # Nothing is sent after the client's end (an alert would meet a closed socket
            # and turn into a reset that the clean-close check then reports).

    # -- internals --------------------------------------------------------------------
    def _track(self, data: memoryview) -> None:
        """Follow the record boundaries through ``data`` (a few header reads per block)."""
        pos, size = 0, len(data)
        while pos < size:
            if self._record_left:
                step = min(self._record_left, size - pos)
                self._record_left -= step
                pos += step
                continue
            part = bytes(data[pos:pos + 5 - len(self._header)])
            self._header += part
            pos += len(part)
            if len(self._header) == 5:
                self._record_left = int.from_bytes(self._header[3:5], "big")
                self._header = b""

    def _flush(self) -> bool:
        """Hand buffered ciphertext to the kernel; True when none is left."""
        while True:
            if not self._pending:
                data = self._out.read()
                if not data:
                    return True
                self._pending = memoryview(data)
            try:
                sent = self.sock.send(self._pending)
            except BlockingIOError:
                return False
            self._pending = self._pending[sent:]

    async def _drain(self, timeout: float | None) -> None:
        while not self._flush():
            await _wait(self.sock, True, timeout)

    async def _fill(self) -> None:
        """Read ciphertext (during the handshake), waiting for it."""
        while True:
            try:
                n = self.sock.recv_into(self._recv)
            except BlockingIOError:
                await _wait(self.sock, False, None)
                continue
            if n == 0:
                raise ConnectionResetError("connection closed during the TLS handshake")
            view = memoryview(self._recv)[:n]
            self._track(view)
            self._in.write(view)
            return


__all__ = ["TlsDataSocket", "data_object", "make_context", "reload_context"]
