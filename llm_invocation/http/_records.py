"""`TLS`: the TLS state of one connection, records in and out, without I/O.

An `ssl.SSLObject` between two memory BIOs, as asyncio drives TLS: the connection
(``_connection.py``) feeds it what its socket received and sends what it produced, on the
same raw-socket loop as plain http. As in `trio.SSLStream` (``https_compatible``), the end
of the connection without ``close_notify`` is an end of stream, and an error met after some
plaintext is raised at the next read. Unlike it, one read hands out every whole record
already received (trio hands out one record per read).
"""

from __future__ import annotations

import ssl
from typing import Final, final

__all__ = ["TLS", "TLS_READ"]

TLS_READ: Final = 65536
"""The most encrypted bytes read from a socket at once (four full TLS records)."""


def _is_eof(exc: ssl.SSLError) -> bool:
    """Whether ``exc`` is the end of the stream without ``close_notify`` (a ragged EOF)."""
    return isinstance(exc, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(exc)


def _server_name(host: str) -> bytes:
    """``host`` for SNI and the certificate check, encoded as trio encodes it (IDNA 2008)."""
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        import idna  # only for a non-ASCII server name given in the request's extensions

        return idna.encode(host, uts46=True)


@final
class TLS:
    """The TLS state of a connection: an `ssl.SSLObject` between two memory BIOs.

    No I/O here: the connection feeds what its socket received (`feed`), takes the
    plaintext out (`decrypt`) and sends what `encrypt` returns.
    """

    __slots__ = ("ended", "failure", "incoming", "obj", "outgoing", "usable")

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Raises: ValueError: ``server_hostname`` is empty or starts with a dot."""
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(
            self.incoming, self.outgoing, server_hostname=_server_name(server_hostname)
        )
        self.usable = False  # the handshake is done and nothing failed: close_notify may go
        self.ended = False  # the peer's end was read (close_notify, or EOF without it)
        self.failure: ssl.SSLError | None = None  # met after plaintext that was handed out

    def pending(self) -> bool:
        """Whether `decrypt` has something to say before more bytes come from the socket:
        received bytes wait (in the BIO, or decrypted in the TLS object), or the end of the
        stream or a failure is still to be reported."""
        return bool(
            self.incoming.pending or self.obj.pending() or self.ended or self.failure is not None
        )

    def feed(self, data: bytes) -> None:
        """Take bytes read from the socket; ``b""`` is the end of the stream."""
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def decrypt(self, size: int) -> bytes | None:
        """Up to ``size`` bytes of plaintext from every whole record received.

        Returns None when a record is incomplete (more bytes are needed from the socket),
        ``b""`` at the end of the stream: ``close_notify``, or the end of the connection
        without it (as `trio.SSLStream` with ``https_compatible=True``).

        Raises:
            ssl.SSLError: the records are corrupt, or the peer sent an alert.
        """
        if self.failure is not None:
            raise self.failure
        if self.ended:
            return b""
        obj = self.obj
        try:
            data = obj.read(size)
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLError as exc:
            self.usable = False
            if isinstance(exc, ssl.SSLZeroReturnError) or _is_eof(exc):
                self.ended = True
                return b""
            raise
        if not data:  # close_notify
            self.ended = True
            self.usable = False
            return data
        got = len(data)
        if got >= size or not (self.incoming.pending or obj.pending()):
            return data
        # More whole records may be here already: hand them out in the same read.
        pieces = [data]
        while got < size and (self.incoming.pending or obj.pending()):
            try:
                more = obj.read(size - got)
            except ssl.SSLWantReadError:
                break  # the rest of a record is still on its way
            except ssl.SSLError as exc:
                self.usable = False
                if isinstance(exc, ssl.SSLZeroReturnError) or _is_eof(exc):
                    self.ended = True
                else:
                    self.failure = exc  # raised at the next read, after this plaintext
                break
            if not more:
                self.ended = True
                self.usable = False
                break
            pieces.append(more)
            got += len(more)
        return b"".join(pieces)

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """The records carrying ``data``, to be sent as they are.

        Raises:
            ssl.SSLWantReadError: the peer must say something first (a renegotiation).
            ssl.SSLError: the TLS session failed.
        """
        obj = self.obj
        written = obj.write(data)
        while written < len(data):  # a memory BIO takes everything: only in case
            written += obj.write(data[written:])
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """The ``close_notify`` alert to send, or ``b""`` when the session is not healthy."""
        if not self.usable:
            return b""
        self.usable = False
        try:
            self.obj.unwrap()
        except ssl.SSLError:
            pass  # it waits for the peer's close_notify: we do not
        return self.outgoing.read()
