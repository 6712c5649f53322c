"""A lean HTTP/1.1 transport for httpx on trio: `FastHTTPTransport`.

It speaks httpx's transport API (``handle_async_request(httpx.Request) -> httpx.Response``)
while the wire work is done here, because httpcore's costs dominate a streaming client: its
pool rescans every connection for every request and several times per body chunk, it wraps
every read in ``contextlib``-based exception mapping, and h11 parses each chunk as a general
event. Here:

* **Connections and their pool** (``_connection.py``): raw non-blocking sockets for http
  and for https (TLS records through an `ssl.SSLObject` on memory BIOs, in the same loop),
  read deadlines enforced by one watchdog task; per origin a LIFO stack of idle connections
  (O(1) checkout and return), stale ones detected at checkout (``MSG_PEEK``, and any TLS
  record still buffered); FIFO admission of at most ``max_connections`` requests at once (from
  checkout until the response body is done or closed), others waiting up to the request's
  ``pool`` timeout.
* **Parsing** (``_wire.py``): the response head and the chunked framing, proven equal to h11
  by a differential test. Interim ``1xx`` responses are skipped (an unasked ``101`` is
  refused); HEAD, 204 and 304 responses have no body.
* **Response bodies** (``_body.py``): framed by ``Content-Length``, chunked framing (handed
  out as soon as any data arrives) or the connection's end; plain async iterators, not
  generators; a body read to its end gives its connection back at once, one closed early
  closes it.

Timeouts are httpx's, per request (the ``timeout`` extension): ``connect`` covers DNS, TCP and
the TLS handshake; ``read`` each wait for response bytes; ``write`` each wait for send-buffer
space; ``pool`` the wait for admission. A transport belongs to one trio run at a time.

**No hidden re-sends.** A request goes out again, once and on a new connection, only when it
provably never reached the server: writing it failed (EPIPE, ECONNRESET) on a *reused*
keep-alive connection, which the server had closed while it sat idle. Once the whole request
is written, every failure is raised, whatever it is: the server may be processing it, and
only the caller's retry policy may decide to send it again. The request's extensions say
what happened (`SENT`, `REUSED`). A streamed body, which cannot be replayed, always gets a
new connection.

Errors are httpx's own: `httpx.ConnectError` / `httpx.ConnectTimeout` (DNS, refused, TLS
handshake), `httpx.WriteError` / `httpx.WriteTimeout`, `httpx.ReadError` /
`httpx.ReadTimeout`, `httpx.RemoteProtocolError` (malformed or truncated responses),
`httpx.PoolTimeout`, `httpx.LocalProtocolError` (an illegal method or header) and
`httpx.UnsupportedProtocol` (a scheme other than http and https).

Not supported: proxies (`HttpPool` sends proxied requests through httpx's own transport),
HTTP/2, Unix sockets, happy eyeballs (addresses are tried in order), a DNS cache,
``Expect: 100-continue`` waiting (the body is sent at once; interim responses are skipped),
protocol upgrades, pipelining, and the ``network_stream`` response extension.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterable, Callable, Mapping, MutableMapping
from typing import Any, Final, final

import httpx
import msgspec
import trio

from ._body import CHUNKED, LENGTH, NONE, UNTIL_CLOSE, ResponseBody
from ._connection import (
    Connection,
    ConnectionPool,
    Origin,
    close_socket,
    io_error,
    open_socket,
    open_tls,
)
from ._reactor import watch
from ._records import TLS
from ._resolve import DEFAULT_DNS_TTL, Resolver
from ._wire import HEAD_END, MAX_HEAD, Head, Message, encode_request, parse_head

__all__ = [
    "REUSED",
    "SENT",
    "FastHTTPTransport",
    "ResponseBody",
    "TransportStatistics",
    "origin_of",
]

SENT: Final = "llm_invocation.sent"
"""Request extension set on failure: whether the whole request had been written."""
REUSED: Final = "llm_invocation.reused"
"""Request extension set on failure: whether the connection came from the pool."""

_NO_TIMEOUTS: Final[Mapping[str, float | None]] = {}


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
    resent: int
    """Requests written again on a new connection after the write failed on a reused one."""
    waiting: int
    """Requests waiting for admission (``max_connections`` reached)."""
    max_connections: int


@final
class FastHTTPTransport(httpx.AsyncBaseTransport):
    """A lean HTTP/1.1 transport for httpx on trio; see the module docstring.

    ``await transport.handle_async_request(request)`` sends an `httpx.Request` over pooled
    keep-alive connections with the request's timeouts: ``connect`` (DNS, TCP and TLS),
    ``read`` (each wait for response bytes), ``write`` (each wait for send buffer space) and
    ``pool`` (waiting for admission while ``max_connections`` requests are in flight).

    Args:
        max_connections: requests holding a connection at once, over all origins; more wait
            in FIFO order. Idle connections are evicted to keep the open total within it.
        keepalive_expiry: seconds an idle connection may wait in the pool.
        max_idle_per_origin: idle connections kept per (scheme, host, port); 0 disables
            keep-alive.
        connect_timeout: the connect timeout for a request that carries no ``connect``
            timeout of its own.
        ssl_context: the TLS settings for https, or a function that makes them at the first
            https connection (it may raise; the error reaches the request that needed it).
            Default: ``httpx.create_ssl_context()`` (certifi's CA bundle, or
            ``SSL_CERT_FILE``/``SSL_CERT_DIR``, as httpx's own transport) with ALPN
            ``http/1.1``. A context given here is used as is; a server that picks another
            protocol through it is refused.
        tcp_nodelay: set ``TCP_NODELAY`` on new sockets.
        read_buffer: the most bytes read from a socket at once.
        dns_ttl: seconds the addresses of a host name are kept for new connections (0:
            looked up for each; see `Resolver`).

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
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        tcp_nodelay: bool = True,
        read_buffer: int = 65536,
        dns_ttl: float = DEFAULT_DNS_TTL,
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
        self.resolver = Resolver(dns_ttl)
        self._ssl_context: ssl.SSLContext | None = None
        self._make_ssl_context: Callable[[], ssl.SSLContext] | None = None
        if isinstance(ssl_context, ssl.SSLContext):
            self._ssl_context = ssl_context
        else:
            self._make_ssl_context = ssl_context
        self._pool = ConnectionPool(
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

        On failure the request's extensions say whether the whole request had been written
        (`SENT`) and whether the connection was a reused one (`REUSED`).

        Raises:
            httpx.UnsupportedProtocol: the URL's scheme is not http or https.
            httpx.LocalProtocolError: the method or a header name is not a token, or a
                header value contains CR, LF or NUL.
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
        if self._pool.closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        origin = origin_of(url)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or _NO_TIMEOUTS
        message = encode_request(request)
        head, body = await self.exchange(
            origin, message, method=request.method, timeouts=timeouts, marks=request.extensions
        )
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=body,
            extensions={"http_version": head.version, "reason_phrase": head.reason},
        )

    async def exchange(
        self,
        origin: Origin,
        message: Message,
        *,
        method: str,
        timeouts: Mapping[str, float | None],
        marks: MutableMapping[str, Any],
        deadline: float = math.inf,
    ) -> tuple[Head, ResponseBody]:
        """Send an encoded request (`encode_request`) to ``origin`` and return the response
        head and its unread body: `handle_async_request` without httpx's request and response
        objects. On failure ``marks`` gets `SENT` and `REUSED` (as a request's extensions
        do), and ``marks["sni_hostname"]`` is read as that extension is.

        ``deadline`` (a `trio.current_time` value) is the caller's, for the whole exchange
        and the body's reads: a wait that reaches it raises `trio.TooSlowError` and closes
        the connection. Reads and writes keep it as they keep their own timeouts, without a
        cancel scope; only waiting for a slot and connecting take one.

        Raises:
            The errors of `handle_async_request`.
            trio.TooSlowError: ``deadline`` passed.
        """
        pool = self._pool
        if pool.closed:
            raise RuntimeError("the transport is closed")
        pool.token = trio.lowlevel.current_trio_token()
        await trio.lowlevel.checkpoint_if_cancelled()
        if deadline != math.inf and deadline <= trio.current_time():
            raise trio.TooSlowError("the caller's deadline passed before the request was sent")
        await pool.admit(timeouts.get("pool"), deadline)
        try:
            conn, head, initial = await self._exchange(marks, origin, timeouts, message, deadline)
        except BaseException:
            pool.admission.release()
            raise
        # From here on the body owns the connection and the admission slot.
        return head, self._body(method, conn, head, initial, message.close, timeouts)

    def _body(
        self,
        method: str,
        conn: Connection,
        head: Head,
        initial: bytes,
        close: bool,
        timeouts: Mapping[str, float | None],
    ) -> ResponseBody:
        """The body of the response ``head`` (read on ``conn``), framed as its head says."""
        status = head.status
        if method == "HEAD" or status in (204, 304):
            mode = NONE
        elif head.chunked:
            mode = CHUNKED
        elif head.length is not None:
            mode = LENGTH
        else:
            mode = UNTIL_CLOSE
        return ResponseBody(
            self._pool,
            conn,
            mode=mode,
            length=head.length or 0,
            initial=initial,
            keep_alive=head.keep_alive and not close,
            timeout=timeouts.get("read"),
            read_buffer=self.read_buffer,
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
            resent=pool.resent,
            waiting=pool.admission.statistics().tasks_waiting,
            max_connections=self.max_connections,
        )

    async def _exchange(
        self,
        marks: MutableMapping[str, Any],
        origin: Origin,
        timeouts: Mapping[str, float | None],
        message: Message,
        deadline: float = math.inf,
    ) -> tuple[Connection, Head, bytes]:
        """Send the request on a pooled or new connection and read the final response head.

        Returns the connection (in use), the head and the body bytes read with it. See the
        module docstring for the one case where the request is written again.

        Raises:
            httpx.TransportError: as `handle_async_request`.
        """
        pool = self._pool
        read_timeout = timeouts.get("read")
        write_timeout = timeouts.get("write")
        replayable = message.stream is None  # a body in memory can be written again
        resend = replayable
        conn = pool.check_out(origin) if replayable else None
        while True:
            if conn is None:
                with trio.fail_at(deadline):
                    conn = await self._connect(
                        origin,
                        timeouts.get("connect", self.connect_timeout),
                        marks.get("sni_hostname"),
                    )
                pool.add(conn)
            conn.responded = False
            conn.limit = deadline
            try:
                await conn.send(message.first, write_timeout)
                if message.rest:
                    await conn.send(message.rest, write_timeout)
                if message.stream is not None:
                    await _send_stream(conn, message.stream, message.chunked, write_timeout)
            except httpx.WriteError:
                pool.check_in(conn, reuse=False, release=False)
                if resend and conn.reused:
                    # The server closed the idle connection before the request was written:
                    # it never had it whole. Write it again, once, on a new connection.
                    resend = False
                    pool.resent += 1
                    conn = None
                    continue
                _mark(marks, sent=False, reused=conn.reused)
                raise
            except BaseException as exc:
                pool.check_in(conn, reuse=False, release=False)
                if isinstance(exc, Exception):
                    _mark(marks, sent=False, reused=conn.reused)
                raise
            try:
                head, initial = await self._read_head(conn, read_timeout)
            except BaseException as exc:
                # The request was written: whatever failed now, it may be at work there.
                pool.check_in(conn, reuse=False, release=False)
                if isinstance(exc, Exception):
                    _mark(marks, sent=True, reused=conn.reused)
                raise
            return conn, head, initial

    async def _read_head(self, conn: Connection, timeout: float | None) -> tuple[Head, bytes]:
        """The final response head and the bytes after it; interim 1xx responses skipped.

        Raises:
            httpx.RemoteProtocolError: malformed or oversized head, an unasked ``101``, or
                no response at all.
            httpx.ReadError: receiving failed.
            httpx.ReadTimeout: the response stalled for ``timeout`` seconds.
        """
        size = self.read_buffer
        buffer = bytearray()
        searched = 0  # the head's end does not start before this offset
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
                match = HEAD_END.search(buffer, searched)
                if match is None:
                    if len(buffer) > MAX_HEAD:
                        raise httpx.RemoteProtocolError("response head larger than 64 KiB")
                    searched = max(0, len(buffer) - 2)
                    break
                end = match.start()
                if end > MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head larger than 64 KiB")
                head = parse_head(bytes(buffer[:end]))
                del buffer[: match.end()]
                searched = 0
                if head.status < 200:
                    if head.status == 101:
                        raise httpx.RemoteProtocolError(
                            "unexpected 101 Switching Protocols: no upgrade was asked for"
                        )
                    continue  # an interim response: the final one follows
                return head, bytes(buffer)

    async def _connect(
        self, origin: Origin, timeout: float | None, sni_hostname: str | None
    ) -> Connection:
        """A new connection to ``origin``, not yet counted in the pool.

        Raises:
            httpx.ConnectError: resolution, connection or TLS handshake failed.
            httpx.ConnectTimeout: it took longer than ``timeout`` seconds.
        """
        scheme, host, port = origin
        tls: TLS | None = None
        context = self._context() if scheme == "https" else None
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                sock = await open_socket(
                    host, port, nodelay=self.tcp_nodelay, resolver=self.resolver
                )
            except OSError as exc:
                raise io_error(httpx.ConnectError, exc) from exc
            waiter = watch(sock)
            if context is not None:
                try:
                    tls = await open_tls(sock, context, sni_hostname or host, waiter)
                except BaseException:
                    waiter.forget()
                    close_socket(sock)
                    raise
            return Connection(origin, sock, tls, self._pool.watchdog, waiter)
        raise httpx.ConnectTimeout(f"could not connect to {host}:{port} within {timeout:g}s")

    def _context(self) -> ssl.SSLContext:
        """The TLS context, made at the first https connection."""
        context = self._ssl_context
        if context is None:
            if self._make_ssl_context is not None:
                context = self._make_ssl_context()
            else:
                context = httpx.create_ssl_context()
                context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return context


def _mark(marks: MutableMapping[str, Any], *, sent: bool, reused: bool) -> None:
    """Say in a request's ``marks`` (its extensions) how far it got before it failed."""
    marks[SENT] = sent
    marks[REUSED] = reused


def origin_of(url: httpx.URL) -> Origin:
    """The (scheme, host, port) a request to ``url`` connects to.

    Raises:
        httpx.UnsupportedProtocol: the URL's scheme is not http or https.
    """
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}://'.")
    return (scheme, url.raw_host.decode("ascii"), url.port or _default_port(scheme))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def _send_stream(
    conn: Connection, stream: AsyncIterable[bytes], chunked: bool, timeout: float | None
) -> None:
    """Send a streamed request body, chunked if asked.

    Raises:
        httpx.WriteError, httpx.WriteTimeout: see `Connection.send`.
    """
    async for piece in stream:
        if not piece:
            continue
        if chunked:
            piece = b"%x\r\n%b\r\n" % (len(piece), piece)
        await conn.send(piece, timeout)
    if chunked:
        await conn.send(b"0\r\n\r\n", timeout)
