"""Response bodies of `FastHTTPTransport`, read straight from their connection.

`ResponseBody` is an `httpx.AsyncByteStream` whose ``__anext__`` is a plain coroutine, not an
async generator, so an abandoned body leaves no generator for trio's finalizer. It frames the
body by ``Content-Length``, chunked framing (decoded here, partial chunks handed out as soon
as they arrive; the chunk-size lines and trailers are checked by ``_wire.py``) or the end of
the connection. A body read to its end returns its connection to the pool at once; one
closed (or abandoned) before its end closes the socket. A body dropped without being closed
hands its connection back through the trio token (from ``__del__``), without warnings.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Final, final

import httpx
import trio

from ._connection import Connection, ConnectionPool
from ._wire import (
    HEAD_END,
    HEX_DIGITS,
    MAX_CHUNK_LINE,
    MAX_TRAILERS,
    chunk_size,
    parse_trailers,
)

__all__ = ["CHUNKED", "LENGTH", "NONE", "UNTIL_CLOSE", "ResponseBody"]

# Body framing of a response.
NONE: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2
UNTIL_CLOSE: Final = 3

# States of the chunked decoder.
_SIZE: Final = 0
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3
_DONE: Final = 4


@final
class ResponseBody(httpx.AsyncByteStream):
    """A response body read straight from its connection (an iterator, not a generator)."""

    __slots__ = (
        "_closed",
        "_conn",
        "_keep_alive",
        "_left",
        "_mode",
        "_pool",
        "_ready",
        "_size",
        "_state",
        "_tail",
        "_timeout",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        conn: Connection,
        *,
        mode: int,
        length: int,
        initial: bytes,
        keep_alive: bool,
        timeout: float | None,
        read_buffer: int,
    ) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._mode: int = mode
        self._left: int = length  # body bytes (Content-Length) or chunk bytes still to come
        self._keep_alive: bool = keep_alive and mode != UNTIL_CLOSE
        self._timeout = timeout
        self._size = read_buffer
        self._state: int = _SIZE
        self._tail: bytes = b""  # undecoded chunked framing kept for the next read
        self._ready: bytes = b""  # body bytes that came with the head, not yet handed out
        self._closed = False  # closed by `close` before its end: reads fail
        try:
            self._start(initial)
        except BaseException:
            self._release(reuse=False)
            raise

    def _start(self, initial: bytes) -> None:
        """Take the body bytes that came with the head; release the connection if done."""
        mode = self._mode
        length = self._left
        if mode == NONE:
            self._keep_alive = self._keep_alive and not initial
            self._release(reuse=True)
        elif mode == LENGTH:
            if initial:
                self._ready = initial[:length]
                self._left -= len(self._ready)
                self._keep_alive = self._keep_alive and len(initial) <= length
            if not self._left:
                self._release(reuse=True)
        elif mode == CHUNKED:
            if initial:
                self._ready = self.decode(initial)
                if self.done():
                    self._release(reuse=True)
        else:
            self._ready = initial

    def __aiter__(self) -> ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        """The next piece of the body, as soon as any has arrived.

        Raises:
            StopAsyncIteration: the body is done.
            httpx.ReadTimeout: no data within the request's ``read`` timeout.
            httpx.ReadError: the connection failed, or the body was closed.
            httpx.RemoteProtocolError: the body is malformed or ended early.
        """
        return await self._read(self._timeout)

    def receive(self, timeout: float) -> Coroutine[Any, Any, bytes]:
        """The next piece of the body, waiting at most ``timeout`` seconds for it (or the
        request's ``read`` timeout, when that is shorter).

        The wait is the transport's own read deadline, not a cancel scope: it costs nothing
        more than the read. This returns the read itself, to be awaited: no coroutine of its
        own stands between the caller and the socket (a stream's wait builds one object fewer
        that lives as long as the wait).

        Raises:
            trio.TooSlowError: nothing arrived within ``timeout`` (the connection is closed).
            StopAsyncIteration, httpx.ReadTimeout, httpx.ReadError,
                httpx.RemoteProtocolError: as `__anext__`.
        """
        limit = self._timeout
        if limit is not None and limit < timeout:
            return self._read(limit)
        return self._read(timeout, slow=True)

    def whole_nowait(self) -> bytes | None:
        """The rest of the body when all of it is here already (it came with the head and
        nothing more is to come), handed over at once: the body is then done. None when more
        is to be read (nothing is taken)."""
        if self._conn is None and self._ready and not self._closed:
            data, self._ready = self._ready, b""
            return data
        return None

    def close(self) -> None:
        """Close the body now, from any task: a read waiting on it, and every later one, fails
        with `httpx.ReadError`. The connection goes back to the pool only if the body was
        done."""
        if self._conn is not None or self._ready:
            self._closed = True
            self._ready = b""
            self._release(reuse=False)

    async def _read(self, timeout: float | None, *, slow: bool = False) -> bytes:
        # ``slow``: ``timeout`` is the caller's limit (`receive`), not the request's own, so
        # running out of it is `trio.TooSlowError`, not `httpx.ReadTimeout`.
        # What is already here (bytes that came with the head, the end of the body) is
        # handed over without a trip through the scheduler: a cancellation still lands.
        if self._ready:
            await trio.lowlevel.checkpoint_if_cancelled()
            data, self._ready = self._ready, b""
            return data
        conn = self._conn
        if conn is None:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise httpx.ReadError("the response was closed")
            raise StopAsyncIteration
        try:
            mode = self._mode
            if mode == CHUNKED:
                while True:
                    data = await conn.recv(self._size, timeout)
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body: "
                            "incomplete chunked read"
                        )
                    data = self.decode(data)
                    if self._state == _DONE:
                        self._release(reuse=True)
                        if not data:
                            raise StopAsyncIteration
                    if data:
                        return data
            if mode == LENGTH:
                left = self._left
                data = await conn.recv(left if left < self._size else self._size, timeout)
                if not data:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body: "
                        f"{left} bytes missing"
                    )
                self._left = left = left - len(data)
                if not left:
                    self._release(reuse=True)
                return data
            data = await conn.recv(self._size, timeout)
            if not data:
                self._release(reuse=False)
                raise StopAsyncIteration
            return data
        except BaseException as exc:
            self._release(reuse=False)
            if slow and isinstance(exc, httpx.ReadTimeout):
                raise trio.TooSlowError(f"nothing arrived within {timeout:g}s") from None
            raise

    def decode(self, data: bytes) -> bytes:
        """Decode chunked framing: the data in ``data`` (after any kept tail), at once.

        Raises:
            httpx.RemoteProtocolError: the framing is malformed.
        """
        if self._tail:
            data = self._tail + data
            self._tail = b""
        out: list[bytes] = []
        pos = 0
        end = len(data)
        state = self._state
        left = self._left
        while pos < end:
            if state == _DATA:
                stop = pos + left
                if stop <= end:
                    out.append(data[pos:stop])
                    pos = stop
                    left = 0
                    state = _DATA_END
                else:
                    out.append(data[pos:])
                    left -= end - pos
                    pos = end
            elif state == _SIZE:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > MAX_CHUNK_LINE:
                        raise httpx.RemoteProtocolError("chunk size line too long")
                    break
                line = data[pos:eol]
                if 0 < len(line) <= 20 and not line.translate(None, HEX_DIGITS):
                    left = int(line, 16)  # the usual bare size: no need for the full rule
                else:
                    left = chunk_size(line)  # extensions, blanks, or an error
                pos = eol + 2
                state = _DATA if left else _TRAILER
            elif state == _DATA_END:
                if end - pos < 2:
                    if data[pos] != 13:
                        raise httpx.RemoteProtocolError("chunk data not followed by CRLF")
                    break
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise httpx.RemoteProtocolError("chunk data not followed by CRLF")
                pos += 2
                state = _SIZE
            elif state == _TRAILER:
                first = data[pos]
                if first == 10:  # a bare LF: no trailer fields
                    pos += 1
                    state = _DONE
                    continue
                if first == 13:
                    if end - pos < 2:
                        break
                    if data[pos + 1] == 10:  # CRLF: no trailer fields
                        pos += 2
                        state = _DONE
                        continue
                match = HEAD_END.search(data, pos)
                if match is None:
                    if end - pos > MAX_TRAILERS:
                        raise httpx.RemoteProtocolError("chunked trailers too long")
                    break
                parse_trailers(data[pos : match.start()])  # checked, then dropped
                pos = match.end()
                state = _DONE
            else:  # _DONE: anything after the body makes the connection unusable
                self._keep_alive = False
                break
        self._state = state
        self._left = left
        if pos < end and state != _DONE:
            self._tail = data[pos:]
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def done(self) -> bool:
        return self._state == _DONE

    def _release(self, *, reuse: bool) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool.check_in(conn, reuse=reuse and self._keep_alive)

    async def aclose(self) -> None:
        """Close the body: its connection goes back to the pool only if the body was done."""
        self._release(reuse=False)

    def __del__(self) -> None:
        # A body dropped without aclose: hand its connection back from inside trio.
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool.abandon(conn)
