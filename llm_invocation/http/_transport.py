"""A lean HTTP/1.1 transport for httpx on trio: `FastHTTPTransport`.

``httpx.AsyncClient(transport=FastHTTPTransport())`` keeps httpx's API (requests, responses,
timeouts, exceptions) while the wire work is done here, because httpcore's costs dominate a
streaming client: its pool rescans every connection for every request and several times per
body chunk, it wraps every read in ``contextlib``-based exception mapping, and h11 parses
each chunk as a general event. Here:

* **Pool.** Per origin (scheme, host, port) a LIFO stack of idle connections: checkout pops
  the freshest, return pushes, both O(1). An idle connection that is past
  ``keepalive_expiry``, or whose socket is readable while idle (the peer closed it or sent
  something unasked), is discarded at checkout, never reused. Admission is FIFO: at most
  ``max_connections`` requests hold a connection at once (from checkout until the response
  body is done or closed); others wait in order, up to httpx's ``pool`` timeout.
* **Plain http** runs on a non-blocking stdlib socket: ``recv`` straight into the decoder and
  ``trio.lowlevel.wait_readable`` only when the kernel has nothing; ``send`` and
  ``wait_writable`` only when the kernel buffer is full. Every call that can block
  checkpoints, and every wait is cancellable.
* **https** wraps the same socket in `trio.SSLStream` (ALPN ``http/1.1``): correct, but
  without the raw fast path.
* **Parsing.** The response head is split at ``CRLF CRLF`` (at most 64 KiB); bodies are
  framed by ``Content-Length``, ``Transfer-Encoding: chunked`` (a small decoder that hands out
  data as soon as any arrives, partial chunks included) or the connection's end. Interim
  ``1xx`` responses are skipped; HEAD, 204 and 304 responses have no body.
* **Response bodies** are a class (`httpx.AsyncByteStream`) whose ``__anext__`` is a plain
  coroutine, not an async generator, so an abandoned body leaves no generator for trio's
  finalizer. A body read to its end returns its connection to the pool at once; one closed
  (or abandoned) before its end closes the socket. A body dropped without being closed
  hands its connection back through the trio token (from ``__del__``), without warnings.

Timeouts are httpx's, per request: ``connect`` covers DNS, TCP and the TLS handshake;
``read`` each wait for response bytes; ``write`` each wait for send-buffer space; ``pool``
the wait for admission. A trio cancel scope with a deadline costs about as much as the wait
and the read it guards (7 us here), so on plain http a waiting read only records its
deadline and one system task per transport (`_Watchdog`, started at the first read
deadline of a trio run) sleeps until the soonest one and wakes an expired reader, which
raises `httpx.ReadTimeout` and closes its connection. Everything else uses cancel scopes.
A transport belongs to one trio run at a time.

Retry: a request sent on a *reused* keep-alive connection that fails before any byte of the
response arrived (the send fails with EPIPE/ECONNRESET, or the connection ends or resets
before the status line) is sent again, once, on a new connection: the server closed the
idle connection as the request went out, so it did not process it. Only requests whose body
is in memory (bytes) are retried; a streamed body cannot be replayed.

Errors: every OS, TLS and trio error becomes an httpx exception in this module (`_io_error`
and the timeout checks), so an ``httpx.AsyncClient`` over this transport raises exactly what
it raises over httpcore: `httpx.ConnectError` / `httpx.ConnectTimeout` (DNS, refused, TLS
handshake), `httpx.WriteError` / `httpx.WriteTimeout`, `httpx.ReadError` /
`httpx.ReadTimeout`, `httpx.RemoteProtocolError` (malformed or truncated responses),
`httpx.PoolTimeout`, `httpx.LocalProtocolError` (a header with CR, LF or NUL) and
`httpx.UnsupportedProtocol` (a scheme other than http and https).

Not supported: proxies (the transport connects to the URL's host itself; ``HTTP(S)_PROXY``
is ignored), HTTP/2, Unix sockets, happy eyeballs (addresses are tried in order), a DNS
cache, ``Expect: 100-continue`` waiting (the body is sent at once; interim responses are
skipped), protocol upgrades (a 101 response is returned with no body and its connection is
not reused), pipelining, and the ``network_stream`` response extension.
"""

from __future__ import annotations

import errno
import math
import os
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterable, Mapping
from typing import Final, final

import httpx
import msgspec
import trio

__all__ = ["FastHTTPTransport", "ResponseBody", "TransportStatistics"]

_MAX_HEAD: Final = 64 * 1024
_MAX_CHUNK_LINE: Final = 8 * 1024
_MAX_TRAILERS: Final = 64 * 1024
_JOIN_BODY_LIMIT: Final = 256 * 1024
_HEX: Final = b"0123456789abcdefABCDEF"
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS: Final = b"0123456789"
_IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
_NO_TIMEOUTS: Final[Mapping[str, float | None]] = {}

# Body framing of a response.
_NONE: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3

# States of the chunked decoder.
_SIZE: Final = 0
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3
_DONE: Final = 4

_Origin = tuple[str, str, int]


class TransportStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """How a `FastHTTPTransport` is used, now and since it was made."""

    connections_open: int
    """Open connections, idle or in use."""
    idle: int
    """Open connections waiting in the pool."""
    in_use: int
    """Connections checked out for a request whose response body is not yet done."""
    created: int
    """Connections opened since the transport was made."""
    reused: int
    """Requests sent on a connection from the pool."""
    discarded: int
    """Idle connections thrown away: expired, closed or written to by the peer, or evicted."""
    waiting: int
    """Requests waiting for admission (``max_connections`` reached)."""
    max_connections: int


def _io_error(kind: type[httpx.TransportError], exc: BaseException) -> httpx.TransportError:
    """The httpx exception for an OS, TLS or trio error: the one translation in this module."""
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError) and exc.__cause__:
        exc = exc.__cause__
    text = str(exc) or type(exc).__name__
    return kind(text)


def _close_socket(sock: socket.socket) -> None:
    """Close ``sock`` at once, waking any task waiting on it (it gets ClosedResourceError)."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def _open_socket(host: str, port: int, *, nodelay: bool) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``, trying each address in order.

    Raises:
        OSError: name resolution failed, or no address accepted the connection.
    """
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(0.0)  # non-blocking
            if nodelay and family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code in _IN_PROGRESS:
                await trio.lowlevel.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"{os.strerror(code)} (connecting to {address[0]}:{port})")
        except OSError as exc:
            _close_socket(sock)
            last = exc
            continue
        except BaseException:
            _close_socket(sock)
            raise
        return sock
    raise last if last is not None else OSError(f"no address found for {host}")


@final
class _Watchdog:
    """Read deadlines of raw-socket waits, enforced by one system task.

    A trio cancel scope with a deadline costs about as much as the wait and the read it
    would guard, so a waiting connection only stores its deadline; this task sleeps until
    the soonest one and wakes an expired waiter with `trio.lowlevel.notify_closing` (the
    waiter raises `httpx.ReadTimeout`, and its connection is closed). Started at the first
    deadline of a trio run; it ends with the run or when the transport closes.
    """

    __slots__ = ("closed", "connections", "scope", "spawned", "wake_at")

    def __init__(self, connections: set[_Connection]) -> None:
        self.connections = connections
        self.wake_at = math.inf  # when the task looks next; inf: not before it is woken
        self.scope: trio.CancelScope | None = None
        self.spawned = False
        self.closed = False

    def wake(self, deadline: float) -> None:
        """Make sure the task looks again no later than ``deadline``."""
        self.wake_at = deadline
        if self.scope is not None:
            self.scope.deadline = deadline
        elif not self.spawned and not self.closed:
            self.spawned = True
            trio.lowlevel.spawn_system_task(self._run, name="FastHTTPTransport read deadlines")

    def close(self) -> None:
        self.closed = True
        if self.scope is not None:
            self.scope.cancel()

    async def _run(self) -> None:
        try:
            while not self.closed:
                now = trio.current_time()
                soonest = math.inf
                for conn in self.connections:
                    deadline = conn.deadline
                    if deadline <= now:
                        if not conn.closed:
                            trio.lowlevel.notify_closing(conn.sock)
                    elif deadline < soonest:
                        soonest = deadline
                self.wake_at = soonest
                with trio.CancelScope(deadline=soonest) as self.scope:
                    await trio.sleep_forever()
                self.scope = None
        finally:
            self.scope = None
            self.spawned = False
            self.wake_at = math.inf


@final
class _Connection:
    """One HTTP/1.1 connection: a non-blocking socket, maybe wrapped in TLS."""

    __slots__ = (
        "closed",
        "deadline",
        "eager",
        "idle_since",
        "origin",
        "responded",
        "reused",
        "sock",
        "tls",
        "watchdog",
    )

    def __init__(
        self,
        origin: _Origin,
        sock: socket.socket,
        tls: trio.SSLStream[trio.SocketStream] | None,
        watchdog: _Watchdog,
    ) -> None:
        self.origin = origin
        self.sock = sock
        self.tls = tls
        self.watchdog = watchdog
        self.closed = False
        self.deadline = math.inf  # while waiting to read: when the wait times out
        self.eager = False  # the last read filled the buffer: more is likely waiting
        self.reused = False
        self.responded = False  # a byte of the current response arrived
        self.idle_since = 0.0

    def close(self) -> None:
        """Close the socket at once (idempotent); a task waiting on it gets a ReadError."""
        if not self.closed:
            self.closed = True
            _close_socket(self.sock)

    def is_stale(self) -> bool:
        """Whether the idle socket is readable: the peer closed it, reset it or sent bytes."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True

    async def recv(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the stream.

        Raises:
            httpx.ReadTimeout: nothing arrived within ``timeout`` seconds.
            httpx.ReadError: the connection failed or was closed.
        """
        if self.tls is not None:
            return await self._recv_tls(size, timeout)
        sock = self.sock
        if self.eager:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = sock.recv(size)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _io_error(httpx.ReadError, exc) from exc
            else:
                self.eager = len(data) == size
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        if timeout is None:
            deadline = math.inf
        else:
            deadline = trio.current_time() + timeout
            if deadline < self.watchdog.wake_at:
                self.watchdog.wake(deadline)
        while True:
            self.deadline = deadline
            try:
                await trio.lowlevel.wait_readable(sock)
                data = sock.recv(size)
            except BlockingIOError:
                continue
            except trio.ClosedResourceError as exc:
                if not self.closed and self.deadline <= trio.current_time():
                    raise httpx.ReadTimeout(f"no data within {timeout:g}s") from None
                raise _io_error(httpx.ReadError, exc) from exc
            except OSError as exc:
                raise _io_error(httpx.ReadError, exc) from exc
            finally:
                self.deadline = math.inf
            self.eager = len(data) == size
            return data

    async def _recv_tls(self, size: int, timeout: float | None) -> bytes:
        assert self.tls is not None
        try:
            if timeout is None:
                return bytes(await self.tls.receive_some(size))
            with trio.move_on_after(timeout):
                return bytes(await self.tls.receive_some(size))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _io_error(httpx.ReadError, exc) from exc
        raise httpx.ReadTimeout(f"no data within {timeout:g}s")

    async def send(self, data: bytes, timeout: float | None) -> None:
        """Send all of ``data``, waiting only while the kernel's buffer is full.

        Raises:
            httpx.WriteTimeout: the buffer stayed full for ``timeout`` seconds.
            httpx.WriteError: the connection failed or was closed.
        """
        if self.tls is not None:
            await self._send_tls(data, timeout)
            return
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _io_error(httpx.WriteError, exc) from exc
        if sent == len(data):
            return
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with memoryview(data) as view:
            while sent < len(data):
                try:
                    with trio.CancelScope(deadline=deadline) as scope:
                        await trio.lowlevel.wait_writable(sock)
                    if scope.cancelled_caught:
                        raise httpx.WriteTimeout(f"could not send within {timeout:g}s")
                    sent += sock.send(view[sent:])
                except BlockingIOError:
                    continue
                except (OSError, trio.ClosedResourceError) as exc:
                    raise _io_error(httpx.WriteError, exc) from exc

    async def _send_tls(self, data: bytes, timeout: float | None) -> None:
        assert self.tls is not None
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                await self.tls.send_all(data)
                return
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _io_error(httpx.WriteError, exc) from exc
        raise httpx.WriteTimeout(f"could not send within {timeout:g}s")


class _Head(msgspec.Struct):
    """A parsed response head and what it says about the body and the connection."""

    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    length: int | None
    chunked: bool
    keep_alive: bool


def _parse_head(head: bytes) -> _Head:
    """Parse a response head (without its final empty line).

    Raises:
        httpx.RemoteProtocolError: the status line or a header line is malformed.
    """
    lines = head.split(b"\r\n")
    if b"\n" in head and any(b"\n" in line for line in lines):
        lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(code) != 3
        or code.translate(None, _DIGITS)
        or rest[3:4] not in (b"", b" ")
    ):
        raise httpx.RemoteProtocolError(f"malformed status line: {lines[0][:100]!r}")
    status = int(code)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):  # obsolete line folding: continues the previous value
            if not headers:
                raise httpx.RemoteProtocolError("malformed header: continuation line first")
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise httpx.RemoteProtocolError(f"malformed header line: {line[:100]!r}")
        headers.append((name, value.strip(b" \t")))
    length: int | None = None
    chunked = False
    coded = False
    keep_alive = version == b"HTTP/1.1"
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            for item in value.split(b","):
                item = item.strip(b" \t")
                if not item or item.translate(None, _DIGITS) or len(item) > 18:
                    raise httpx.RemoteProtocolError(f"malformed Content-Length: {value[:40]!r}")
                if length is not None and int(item) != length:
                    raise httpx.RemoteProtocolError("conflicting Content-Length headers")
                length = int(item)
        elif lower == b"transfer-encoding":
            coded = True
            chunked = value.rsplit(b",", 1)[-1].strip(b" \t").lower() == b"chunked"
        elif lower == b"connection":
            tokens = {token.strip(b" \t").lower() for token in value.split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                keep_alive = True
    if coded:
        # RFC 9112 6.1: Transfer-Encoding overrides Content-Length, and a response coded with
        # anything but chunked last is delimited by the connection's end.
        if length is not None:
            keep_alive = False
        length = None
    return _Head(status, rest[4:], version, headers, length, chunked, keep_alive)


def _chunk_size(data: bytes, start: int, end: int) -> int:
    """The size on a chunk-size line, extensions ignored.

    Raises:
        httpx.RemoteProtocolError: the line is not a hexadecimal size.
    """
    line = data[start:end]
    semicolon = line.find(b";")
    if semicolon >= 0:
        line = line[:semicolon]
    line = line.strip(b" \t")
    if not line or len(line) > 16 or line.translate(None, _HEX):
        raise httpx.RemoteProtocolError(f"malformed chunk size line: {data[start:end][:40]!r}")
    return int(line, 16)


@final
class ResponseBody(httpx.AsyncByteStream):
    """A response body read straight from its connection (an iterator, not a generator)."""

    __slots__ = (
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
        pool: _Pool,
        conn: _Connection,
        *,
        mode: int,
        length: int,
        initial: bytes,
        keep_alive: bool,
        timeout: float | None,
        read_buffer: int,
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._mode: int = mode
        self._left: int = length  # body bytes (Content-Length) or chunk bytes still to come
        self._keep_alive: bool = keep_alive and mode != _UNTIL_CLOSE
        self._timeout = timeout
        self._size = read_buffer
        self._state: int = _SIZE
        self._tail: bytes = b""  # undecoded chunked framing kept for the next read
        self._ready: bytes = b""  # body bytes that came with the head, not yet handed out
        try:
            self._start(initial)
        except BaseException:
            self._release(reuse=False)
            raise

    def _start(self, initial: bytes) -> None:
        """Take the body bytes that came with the head; release the connection if done."""
        mode = self._mode
        length = self._left
        if mode == _NONE:
            self._keep_alive = self._keep_alive and not initial
            self._release(reuse=True)
        elif mode == _LENGTH:
            if initial:
                self._ready = initial[:length]
                self._left -= len(self._ready)
                self._keep_alive = self._keep_alive and len(initial) <= length
            if not self._left:
                self._release(reuse=True)
        elif mode == _CHUNKED:
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
            httpx.ReadError: the connection failed.
            httpx.RemoteProtocolError: the body is malformed or ended early.
        """
        if self._ready:
            await trio.lowlevel.checkpoint()
            data, self._ready = self._ready, b""
            return data
        conn = self._conn
        if conn is None:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        try:
            mode = self._mode
            if mode == _CHUNKED:
                while True:
                    data = await conn.recv(self._size, self._timeout)
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
            if mode == _LENGTH:
                left = self._left
                data = await conn.recv(left if left < self._size else self._size, self._timeout)
                if not data:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body: "
                        f"{left} bytes missing"
                    )
                self._left = left = left - len(data)
                if not left:
                    self._release(reuse=True)
                return data
            data = await conn.recv(self._size, self._timeout)
            if not data:
                self._release(reuse=False)
                raise StopAsyncIteration
            return data
        except BaseException:
            self._release(reuse=False)
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
                    if end - pos > _MAX_CHUNK_LINE:
                        raise httpx.RemoteProtocolError("chunk size line too long")
                    break
                left = _chunk_size(data, pos, eol)
                pos = eol + 2
                state = _DATA if left else _TRAILER
            elif state == _DATA_END:
                if end - pos < 2:
                    break
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise httpx.RemoteProtocolError("chunk data not followed by CRLF")
                pos += 2
                state = _SIZE
            elif state == _TRAILER:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_TRAILERS:
                        raise httpx.RemoteProtocolError("chunked trailers too long")
                    break
                if eol == pos:  # the empty line after the trailers: the body is done
                    pos += 2
                    state = _DONE
                else:
                    pos = eol + 2  # a trailer field: skipped
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


@final
class _Pool:
    """Idle connections per origin (LIFO), the open set, admission and the counters."""

    __slots__ = (
        "admission",
        "closed",
        "connections",
        "created",
        "discarded",
        "idle",
        "idle_count",
        "in_use",
        "keepalive_expiry",
        "max_connections",
        "max_idle",
        "reused",
        "token",
        "watchdog",
    )

    def __init__(self, *, max_connections: int, max_idle: int, keepalive_expiry: float) -> None:
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.admission = trio.Semaphore(max_connections)
        self.idle: dict[_Origin, deque[_Connection]] = {}
        self.connections: set[_Connection] = set()
        self.watchdog = _Watchdog(self.connections)
        self.idle_count = 0
        self.in_use = 0
        self.created = 0
        self.reused = 0
        self.discarded = 0
        self.closed = False
        self.token: trio.lowlevel.TrioToken | None = None

    async def admit(self, timeout: float | None) -> None:
        """Wait for a slot, first come first served.

        Raises:
            httpx.PoolTimeout: none came within ``timeout`` seconds.
        """
        try:
            self.admission.acquire_nowait()
        except trio.WouldBlock:
            pass
        else:
            return
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self.admission.acquire()
            return
        raise httpx.PoolTimeout(f"no connection available within {timeout:g}s")

    def check_out(self, origin: _Origin) -> _Connection | None:
        """A healthy idle connection to ``origin`` (marked in use), or None."""
        idle = self.idle.get(origin)
        if not idle:
            return None
        expired = trio.current_time() - self.keepalive_expiry
        while idle:
            conn = idle.pop()
            self.idle_count -= 1
            if conn.idle_since < expired or conn.is_stale():
                self.discard(conn)
                continue
            conn.reused = True
            self.reused += 1
            self.in_use += 1
            return conn
        return None

    def add(self, conn: _Connection) -> None:
        """Count a new connection (in use), evicting an idle one if the total is at its cap."""
        if len(self.connections) >= self.max_connections:
            for idle in self.idle.values():
                if idle:
                    self.idle_count -= 1
                    self.discard(idle.popleft())
                    break
        self.connections.add(conn)
        self.created += 1
        self.in_use += 1

    def check_in(self, conn: _Connection, *, reuse: bool, release: bool = True) -> None:
        """Take back a connection in use: to the pool if ``reuse``, else close it.

        ``release`` frees the request's admission slot too. Never blocks.
        """
        self.in_use -= 1
        if reuse and not conn.closed and not self.closed and self.max_idle:
            idle = self.idle.get(conn.origin)
            if idle is None:
                idle = self.idle[conn.origin] = deque()
            now = trio.current_time()
            if len(idle) >= self.max_idle:
                self.idle_count -= 1
                self.discard(idle.popleft())
            while idle and idle[0].idle_since < now - self.keepalive_expiry:
                self.idle_count -= 1
                self.discard(idle.popleft())
            conn.idle_since = now
            conn.eager = False
            idle.append(conn)
            self.idle_count += 1
        else:
            conn.close()
            self.connections.discard(conn)
        if release:
            self.admission.release()

    def abandon(self, conn: _Connection) -> None:
        """Take back the connection of a body dropped unclosed; safe from ``__del__``."""
        token = self.token
        try:
            if token is None:
                raise trio.RunFinishedError
            # The garbage collector may run this anywhere, even inside trio's own code:
            # only hand the work to the run loop here.
            token.run_sync_soon(self.close_abandoned, conn)
        except trio.RunFinishedError:
            conn.closed = True
            conn.sock.close()

    def close_abandoned(self, conn: _Connection) -> None:
        self.check_in(conn, reuse=False)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        self.connections.discard(conn)
        self.discarded += 1

    def close(self) -> None:
        self.closed = True
        self.watchdog.close()
        for idle in self.idle.values():
            idle.clear()
        self.idle_count = 0
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()


@final
class FastHTTPTransport(httpx.AsyncBaseTransport):
    """A lean HTTP/1.1 transport for `httpx.AsyncClient` on trio; see the module docstring.

    ``httpx.AsyncClient(transport=FastHTTPTransport())`` sends requests over pooled keep-alive
    connections with httpx's per-request timeouts: ``connect`` (DNS, TCP and TLS), ``read``
    (each wait for response bytes), ``write`` (each wait for send buffer space) and ``pool``
    (waiting for admission while ``max_connections`` requests are in flight).

    Args:
        max_connections: requests holding a connection at once, over all origins; more wait
            in FIFO order. Idle connections are evicted to keep the open total within it.
        keepalive_expiry: seconds an idle connection may wait in the pool.
        max_idle_per_origin: idle connections kept per (scheme, host, port); 0 disables
            keep-alive.
        connect_timeout: the connect timeout for a request that carries no ``connect``
            timeout of its own (httpx's clients always give one).
        ssl_context: the TLS settings for https; default: ``httpx.create_ssl_context()``
            (certifi's CA bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``, as httpx's own
            transport) with ALPN ``http/1.1``. A context given here is used as is; a server
            that picks another protocol through it is refused.
        tcp_nodelay: set ``TCP_NODELAY`` on new sockets.
        read_buffer: the most bytes read from a socket at once.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        *,
        max_connections: int = 1024,
        keepalive_expiry: float = 30.0,
        max_idle_per_origin: int = 256,
        connect_timeout: float | None = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        tcp_nodelay: bool = True,
        read_buffer: int = 65536,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if max_idle_per_origin < 0:
            raise ValueError("max_idle_per_origin must be >= 0")
        if keepalive_expiry < 0 or (connect_timeout is not None and connect_timeout < 0):
            raise ValueError("keepalive_expiry and connect_timeout must be >= 0")
        if read_buffer < 1024:
            raise ValueError("read_buffer must be >= 1024")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self.connect_timeout = connect_timeout
        self.tcp_nodelay = tcp_nodelay
        self.read_buffer = read_buffer
        self._ssl_context = ssl_context
        self._pool = _Pool(
            max_connections=max_connections,
            max_idle=max_idle_per_origin,
            keepalive_expiry=keepalive_expiry,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<FastHTTPTransport open={stats.connections_open} idle={stats.idle} "
            f"in_use={stats.in_use} waiting={stats.waiting}>"
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return the response with its body unread (a stream).

        Raises:
            httpx.UnsupportedProtocol: the URL's scheme is not http or https.
            httpx.LocalProtocolError: a request header contains CR, LF or NUL.
            httpx.PoolTimeout: no admission within the ``pool`` timeout.
            httpx.ConnectError: name resolution, the TCP connection or the TLS handshake
                failed.
            httpx.ConnectTimeout: connecting took longer than the ``connect`` timeout.
            httpx.WriteError: sending failed.
            httpx.WriteTimeout: sending stalled for the ``write`` timeout.
            httpx.ReadError: receiving failed.
            httpx.ReadTimeout: the response stalled for the ``read`` timeout.
            httpx.RemoteProtocolError: the response is malformed, or none came.
            RuntimeError: the transport is closed, or the body is a sync stream.
        """
        pool = self._pool
        if pool.closed:
            raise RuntimeError("the transport is closed")
        pool.token = trio.lowlevel.current_trio_token()
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'."
            )
        origin = (scheme, url.raw_host.decode("ascii"), url.port or _default_port(scheme))
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or _NO_TIMEOUTS
        message = _encode_request(request)
        await trio.lowlevel.checkpoint_if_cancelled()
        await pool.admit(timeouts.get("pool"))
        try:
            conn, head, initial = await self._exchange(request, origin, timeouts, message)
        except BaseException:
            pool.admission.release()
            raise
        # From here on the body owns the connection and the admission slot.
        status = head.status
        if request.method == "HEAD" or status in (204, 304) or status < 200:
            mode = _NONE
        elif head.chunked:
            mode = _CHUNKED
        elif head.length is not None:
            mode = _LENGTH
        else:
            mode = _UNTIL_CLOSE
        body = ResponseBody(
            pool,
            conn,
            mode=mode,
            length=head.length or 0,
            initial=initial,
            keep_alive=head.keep_alive and not message.close and status != 101,
            timeout=timeouts.get("read"),
            read_buffer=self.read_buffer,
        )
        return httpx.Response(
            status,
            headers=head.headers,
            stream=body,
            extensions={"http_version": head.version, "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later requests raise RuntimeError.

        A response still being read then fails with `httpx.ReadError`. Never blocks.
        """
        self._pool.close()

    def statistics(self) -> TransportStatistics:
        """The pool's counters now."""
        pool = self._pool
        return TransportStatistics(
            connections_open=len(pool.connections),
            idle=pool.idle_count,
            in_use=pool.in_use,
            created=pool.created,
            reused=pool.reused,
            discarded=pool.discarded,
            waiting=pool.admission.statistics().tasks_waiting,
            max_connections=self.max_connections,
        )

    async def _exchange(
        self,
        request: httpx.Request,
        origin: _Origin,
        timeouts: Mapping[str, float | None],
        message: _Message,
    ) -> tuple[_Connection, _Head, bytes]:
        """Send the request on a pooled or new connection and read the final response head.

        Returns the connection (in use), the head and the body bytes read with it. A request
        that fails on a reused connection before any response byte arrived is sent again,
        once, on a new connection (see the module docstring).

        Raises:
            httpx.TransportError: as `handle_async_request`.
        """
        pool = self._pool
        read_timeout = timeouts.get("read")
        write_timeout = timeouts.get("write")
        retry = message.stream is None  # a body in memory can be sent again
        while True:
            conn = pool.check_out(origin) if retry else None
            if conn is None:
                conn = await self._connect(
                    origin,
                    timeouts.get("connect", self.connect_timeout),
                    request.extensions.get("sni_hostname"),
                )
                pool.add(conn)
            conn.responded = False
            try:
                await conn.send(message.first, write_timeout)
                if message.rest:
                    await conn.send(message.rest, write_timeout)
                if message.stream is not None:
                    await _send_stream(conn, message.stream, message.chunked, write_timeout)
                head, initial = await self._read_head(conn, read_timeout)
            except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
                pool.check_in(conn, reuse=False, release=False)
                if retry and conn.reused and not conn.responded:
                    # The server closed the idle connection as the request went out, so it
                    # never saw it: send it again, once, on a new connection.
                    retry = False
                    continue
                raise
            except BaseException:
                pool.check_in(conn, reuse=False, release=False)
                raise
            return conn, head, initial

    async def _read_head(self, conn: _Connection, timeout: float | None) -> tuple[_Head, bytes]:
        """The final response head and the bytes after it; interim 1xx responses skipped.

        Raises:
            httpx.RemoteProtocolError: malformed or oversized head, or no response at all.
            httpx.ReadError: receiving failed.
            httpx.ReadTimeout: the response stalled for ``timeout`` seconds.
        """
        size = self.read_buffer
        buffer = bytearray()
        searched = 0  # the head's end is not before this offset
        while True:
            data = await conn.recv(size, timeout)
            if not data:
                if conn.responded:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending a complete response head"
                    )
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            conn.responded = True
            buffer += data
            while True:
                end = buffer.find(b"\r\n\r\n", searched)
                skip = 4
                if end < 0:
                    end = buffer.find(b"\n\n", searched)  # bare LF line ends, as h11 allows
                    skip = 2
                if end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise httpx.RemoteProtocolError("response head larger than 64 KiB")
                    searched = max(0, len(buffer) - 3)
                    break
                if end > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head larger than 64 KiB")
                head = _parse_head(bytes(buffer[:end]))
                del buffer[: end + skip]
                searched = 0
                if 100 <= head.status < 200 and head.status != 101:
                    continue  # an interim response: the final one follows
                return head, bytes(buffer)

    async def _connect(
        self, origin: _Origin, timeout: float | None, sni_hostname: str | None
    ) -> _Connection:
        """A new connection to ``origin``, not yet counted in the pool.

        Raises:
            httpx.ConnectError: resolution, connection or TLS handshake failed.
            httpx.ConnectTimeout: it took longer than ``timeout`` seconds.
        """
        scheme, host, port = origin
        tls: trio.SSLStream[trio.SocketStream] | None = None
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                sock = await _open_socket(host, port, nodelay=self.tcp_nodelay)
            except OSError as exc:
                raise _io_error(httpx.ConnectError, exc) from exc
            if scheme == "https":
                try:
                    tls = await self._handshake(sock, sni_hostname or host)
                except BaseException:
                    _close_socket(sock)
                    raise
            return _Connection(origin, sock, tls, self._pool.watchdog)
        raise httpx.ConnectTimeout(f"could not connect to {host}:{port} within {timeout:g}s")

    async def _handshake(
        self, sock: socket.socket, server_hostname: str
    ) -> trio.SSLStream[trio.SocketStream]:
        """Wrap ``sock`` in TLS and shake hands.

        Raises:
            httpx.ConnectError: the handshake failed (certificate, protocol, connection).
        """
        context = self._ssl_context
        if context is None:
            context = self._ssl_context = httpx.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
        tls = trio.SSLStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
            context,
            server_hostname=server_hostname,
            https_compatible=True,
        )
        try:
            await tls.do_handshake()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _io_error(httpx.ConnectError, exc) from exc
        chosen = tls.selected_alpn_protocol()
        if chosen not in (None, "http/1.1"):
            raise httpx.ConnectError(f"the server chose {chosen!r}: only http/1.1 is supported")
        return tls


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class _Message(msgspec.Struct, kw_only=True):
    """An encoded request, ready to send."""

    first: bytes
    """The head, with the body joined to it when that is bytes of at most 256 KiB."""
    rest: bytes
    """A larger bytes body, sent on its own after the head."""
    stream: AsyncIterable[bytes] | None
    """A streamed body (never replayed)."""
    chunked: bool
    """Whether ``stream`` is sent with chunked framing."""
    close: bool
    """Whether the request asked for ``Connection: close``."""


def _encode_request(request: httpx.Request) -> _Message:
    """The bytes to send for ``request``.

    Raises:
        httpx.LocalProtocolError: a header name or value contains CR, LF or NUL.
        RuntimeError: the body is a sync stream.
    """
    url = request.url
    method = request.method.encode("ascii", "replace")
    if not _TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError(f"illegal request method {request.method!r}")
    parts = [method, b" ", url.raw_path, b" HTTP/1.1\r\n"]
    has_host = has_connection = has_length = has_coding = close = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"host":
            has_host = True
        elif lower == b"connection":
            has_connection = True
            close = close or b"close" in value.lower()
        elif lower == b"content-length":
            has_length = True
        elif lower == b"transfer-encoding":
            has_coding = True
        if b"\n" in value or b"\r" in value or b"\0" in value or b"\n" in name or b"\r" in name:
            raise httpx.LocalProtocolError(f"illegal header {name!r}: CR, LF or NUL")
        parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts += (b"Host: ", url.netloc, b"\r\n")
    if not has_connection:
        parts.append(b"Connection: keep-alive\r\n")
    try:
        body: bytes | None = request.content
    except httpx.RequestNotRead:
        body = None
    if body is not None:
        parts.append(b"\r\n")
        if len(body) <= _JOIN_BODY_LIMIT:
            parts.append(body)
            return _Message(
                first=b"".join(parts), rest=b"", stream=None, chunked=False, close=close
            )
        return _Message(first=b"".join(parts), rest=body, stream=None, chunked=False, close=close)
    stream = request.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise RuntimeError("Attempted to send a sync request with an AsyncClient instance.")
    chunked = not has_length
    if chunked and not has_coding:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return _Message(first=b"".join(parts), rest=b"", stream=stream, chunked=chunked, close=close)


async def _send_stream(
    conn: _Connection, stream: AsyncIterable[bytes], chunked: bool, timeout: float | None
) -> None:
    """Send a streamed request body, chunked if asked.

    Raises:
        httpx.WriteError, httpx.WriteTimeout: see `_Connection.send`.
    """
    async for piece in stream:
        if not piece:
            continue
        if chunked:
            piece = b"%x\r\n%b\r\n" % (len(piece), piece)
        await conn.send(piece, timeout)
    if chunked:
        await conn.send(b"0\r\n\r\n", timeout)
