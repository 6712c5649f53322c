"""Content codings of response bodies: ``gzip`` (``x-gzip``), ``deflate`` and ``identity``.

`decode_body` wraps a body's pieces so that every coding the response names is undone, piece
by piece: a stream's text comes out as soon as it decompresses. Each piece is at most 256 KiB
(a small compressed piece may expand a lot). A body without ``Content-Encoding`` is not
wrapped at all, so it costs nothing. A coding we cannot undo (``br``, ``zstd``...) or a corrupt
or truncated one is a `ProviderError` ("malformed response"), never raw bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Final, Protocol, final

from ..errors import ProviderError

__all__ = ["KNOWN_CODINGS", "decode_body"]

KNOWN_CODINGS: Final = frozenset({"gzip", "x-gzip", "deflate", "identity"})
_MAX_PIECE: Final = 256 * 1024
_MALFORMED: Final = "malformed response"


def decode_body(
    body: AsyncIterator[bytes], coding_header: str, *, provider: str, status: int
) -> AsyncIterator[bytes]:
    """``body`` with the codings of a ``Content-Encoding`` header undone (last one first).

    Reading the result raises `ProviderError` when a coding is unknown or its data corrupt.
    """
    codings = [c.strip().lower() for c in coding_header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    unknown = [c for c in codings if c not in KNOWN_CODINGS]
    if unknown:
        return _Refused(unknown[0], provider=provider, status=status)
    for coding in reversed(codings):
        body = _Decoded(body, coding, provider=provider, status=status)
    return body


class _Decompressor(Protocol):
    """What `zlib.decompressobj` returns."""

    @property
    def unconsumed_tail(self) -> bytes: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...
    def flush(self, length: int = ..., /) -> bytes: ...


def _malformed(
    text: str, coding: str, *, provider: str, status: int, retryable: bool
) -> ProviderError:
    return ProviderError(
        f"{_MALFORMED}: {text}",
        provider=provider,
        status=status,
        retryable=retryable,
        details={"reason": _MALFORMED, "content_encoding": coding},
    )


@final
class _Refused:
    """The body of a response in a content coding we cannot undo."""

    __slots__ = ("_coding", "_provider", "_status")

    def __init__(self, coding: str, *, provider: str, status: int) -> None:
        self._coding = coding
        self._provider = provider
        self._status = status

    def __aiter__(self) -> _Refused:
        return self

    async def __anext__(self) -> bytes:
        """Never a piece.

        Raises:
            ProviderError: always: the coding is not supported.
        """
        raise _malformed(
            f"unsupported Content-Encoding {self._coding[:40]!r} (gzip, deflate and identity are)",
            self._coding,
            provider=self._provider,
            status=self._status,
            retryable=False,
        )


@final
class _Decoded:
    """Body pieces with one coding undone, as they arrive (a plain async iterator)."""

    __slots__ = (
        "_coding",
        "_decoder",
        "_ended",
        "_head",
        "_provider",
        "_source",
        "_status",
        "_tail",
    )

    def __init__(
        self, source: AsyncIterator[bytes], coding: str, *, provider: str, status: int
    ) -> None:
        self._source = source
        self._coding = coding
        self._provider = provider
        self._status = status
        self._decoder: _Decompressor | None = None
        self._head = b""  # the first bytes of a deflate body, until its framing is known
        self._tail = b""  # input the decoder has not taken yet (the piece size bound)
        self._ended = False

    def __aiter__(self) -> _Decoded:
        return self

    async def __anext__(self) -> bytes:
        """The next decoded piece.

        Raises:
            StopAsyncIteration: the body is done.
            ProviderError: the data is corrupt or truncated.
        """
        while True:
            if self._tail:
                out = self._decode(self._tail)
            elif self._ended:
                raise StopAsyncIteration
            else:
                try:
                    piece = await self._source.__anext__()
                except StopAsyncIteration:
                    self._ended = True
                    out = self._finish()
                else:
                    out = self._decode(piece)
            if out:
                return out

    def _fail(self, text: str) -> ProviderError:
        return _malformed(
            f"corrupt {self._coding} content ({text})",
            self._coding,
            provider=self._provider,
            status=self._status,
            retryable=True,
        )

    def _start(self, data: bytes) -> bytes:
        """Make the decoder for the data starting with ``data``; return what it still needs."""
        if self._coding == "deflate":
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            # RFC 9110 says zlib-wrapped; some servers send raw deflate: tell them apart by the
            # zlib header (method 8, and a check that makes the first 16 bits a multiple of 31).
            wrapped = data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        else:
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        return data

    def _decode(self, data: bytes) -> bytes:
        """Decode ``data`` (at most one bounded piece; the rest waits in the tail).

        Raises:
            ProviderError: the data is corrupt.
        """
        decoder = self._decoder
        if decoder is None:
            data = self._start(data)
            decoder = self._decoder
            if decoder is None:
                return b""
        try:
            out = decoder.decompress(data, _MAX_PIECE)
        except zlib.error as exc:
            raise self._fail(str(exc)) from exc
        self._tail = decoder.unconsumed_tail
        if decoder.eof:
            rest = decoder.unused_data
            if rest:
                if self._coding == "deflate":
                    raise self._fail("data after the end of the compressed stream")
                # Another gzip member follows (its header is checked): the same body goes on.
                self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
                self._tail = rest + self._tail
        return out

    def _finish(self) -> bytes:
        """The last output at the end of the body.

        Raises:
            ProviderError: the compressed stream is truncated.
        """
        decoder = self._decoder
        if decoder is None:
            if self._head:
                raise self._fail("truncated")
            return b""  # an empty body
        try:
            out = decoder.flush()
        except zlib.error as exc:
            raise self._fail(str(exc)) from exc
        if not decoder.eof:
            raise self._fail("truncated")
        return out
