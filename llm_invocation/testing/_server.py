"""A fake LLM provider as a real HTTP/1.1 server on trio sockets.

The server speaks the three wire formats under one port, each under its own prefix::

    /openai/v1/chat/completions          /anthropic/v1/messages
    /openai/v1/completions               /anthropic/v1/messages/count_tokens
    /openai/v1/responses
    /openai/v1/models                    /anthropic/v1/models
    /gemini/v1beta/models/{model}:generateContent
    /gemini/v1beta/models/{model}:streamGenerateContent (?alt=sse)
    /gemini/v1beta/models/{model}:countTokens
    /gemini/v1beta/models

(answers are chosen and rendered by ``FakeProvider``; any path ending as above works).

It is built for load tests as much as for behaviour tests: one trio task per connection and
no threads. Requests are parsed by h11 (request line, headers, ``Content-Length`` and chunked
bodies, ``Expect: 100-continue``, keep-alive and pipelining, ``Connection: close``); a
malformed request is answered 400, an oversized head 431, an oversized body 413, a transfer
coding other than chunked 501, an HTTP version other than 1.0 and 1.1 505, and the
connection is closed. Empty lines before a request line are skipped (RFC 9112 2.2), which
h11 alone would refuse.

Responses are written by hand, not through h11: a head of fixed shape, then the body with
one write, or for a stream one HTTP chunk and one write per server-sent event, so a client
sees one event per network read. h11's writer costs about 3.5 us per body chunk (its state
machine and event objects) against 0.2 us for formatting the chunk here, which would nearly
double the server's CPU per streamed event; the framing written is simple enough to keep
exact by hand (the tests read every answer back with httpx, whose parser is h11). Writes go
straight to the non-blocking socket (waiting only when its buffer is full) and stream pacing
shares one timer (`_Pacer`, 1 ms ticks, an absolute schedule), so a thousand paced streams
cost little more than the system calls: about 4 us per event back to back and 12 us paced,
on one core. Parsing a request with h11 costs about 45 us (the hand parser it replaced took
8 us), once per request: a cost per request, not per event.

**TLS.** Given a server-side `ssl.SSLContext`, the server speaks https: each accepted
connection is wrapped in a `trio.SSLStream` (``https_compatible``: a client may close without
``close_notify``, and the server closes without one too, so over TLS an HTTP/1.0 body that
ends with the connection ends with a bare close) and answers are written with its
``send_all``, one record per server-sent event. The plain path is untouched by this: it
still writes to the socket directly.

Scripted failures act on the socket: a `Disconnect` closes the connection mid-body (no
terminating chunk), a `Stall` stops writing and keeps the connection open, watching it, until
its time is up or the client goes away. A client that goes away mid-answer is counted in
`ServerStatistics.client_disconnects` and never disturbs the server.

Latency probes: in a streamed event, every `SEND_TIME` (16 characters) is replaced by the
server's ``time.monotonic()`` at the moment the event is written, in 16 characters (``%016.6f``).
A script whose text is made of `SEND_TIME` fragments (``chunk_chars=16``) thus tells a client
on the same machine when each chunk left the server: its arrival time less the chunk's text is
the chunk's latency, however busy the server was.
"""

from __future__ import annotations

import heapq
import http
import math
import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, NoReturn, final

import h11
import msgspec
import trio

from ..providers.mock import FakeProvider, RecordedRequest, Reply, Scenarios, Stall, WireFormat

__all__ = ["SEND_TIME", "FakeServer", "ServerStatistics", "open_fake_server", "serve_fake_server"]

SEND_TIME: Final = "<<send-time-16>>"
"""A placeholder in streamed text, replaced by the time the event is written (see above)."""
_SEND_TIME: Final = SEND_TIME.encode()

_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 32 * 1024 * 1024
_RECEIVE: Final = 64 * 1024
_PREFIXES: Final[dict[WireFormat, str]] = {
    "openai": "/openai/v1",
    "anthropic": "/anthropic/v1",
    "gemini": "/gemini/v1beta",
}
_TERMINATOR: Final = b"0\r\n\r\n"
_CHUNKED: Final = b"transfer-encoding: chunked\r\n"
_CLOSE: Final = b"connection: close\r\n"
_END_HEAD: Final = b"server: llm-invocation-fake\r\n\r\n"
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_Send = Callable[[bytes], Awaitable[None]]
"""Writes bytes to the client (`FakeServer._send` on a socket, `FakeServer._send_tls`)."""


def _reason(status: int) -> bytes:
    if status == 529:
        return b"Site Overloaded"
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def _head(status: int, headers: dict[str, str], framing: bytes, *, close: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %b\r\n" % (status, _reason(status))]
    for name, value in headers.items():
        text = f"{name}: {value}".replace("\r", " ").replace("\n", " ")
        lines.append(text.encode("latin-1", "replace") + b"\r\n")
    lines.append(framing)
    if close:
        lines.append(_CLOSE)
    lines.append(_END_HEAD)
    return b"".join(lines)


class _Pacer:
    """One timer for every stream: sleepers wait for a tick of ``tick`` seconds.

    ``trio.sleep`` costs a cancel scope and a deadline per call, about 20 us at a thousand
    streams; here a stream parks on the lot of its tick (rounded up) and one task wakes
    each lot when its time comes, so the streams due at the same tick wake together.
    """

    __slots__ = ("_heap", "_idle", "_lots", "_scope", "tick")

    def __init__(self, tick: float = 0.001) -> None:
        self.tick = tick
        self._lots: dict[int, trio.lowlevel.ParkingLot] = {}
        self._heap: list[int] = []
        self._idle = trio.lowlevel.ParkingLot()
        self._scope: trio.CancelScope | None = None

    async def sleep_until(self, deadline: float) -> None:
        """Wait until ``deadline`` (rounded up to a tick); a checkpoint even when it passed."""
        slot = math.ceil(deadline / self.tick)
        if slot * self.tick <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        lot = self._lots.get(slot)
        if lot is None:
            lot = self._lots[slot] = trio.lowlevel.ParkingLot()
            heapq.heappush(self._heap, slot)
            scope = self._scope
            if scope is not None and slot * self.tick < scope.deadline:
                scope.deadline = slot * self.tick
            self._idle.unpark_all()
        await lot.park()

    async def run(self) -> NoReturn:
        """Wake the sleepers as their ticks come; runs until cancelled."""
        heap, lots, tick = self._heap, self._lots, self.tick
        while True:
            if not heap:
                await self._idle.park()
                continue
            with trio.CancelScope(deadline=heap[0] * tick) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            while heap and heap[0] * tick <= now:
                lots.pop(heapq.heappop(heap)).unpark_all()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ClientGone(Exception):
    """The client closed its side while an answer was being played."""


class _Request:
    __slots__ = ("body", "close", "headers", "http10", "method", "target")

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        http10: bool,
        close: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.http10 = http10
        self.close = close


@final
class ServerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the fake server's counters.

    Attributes:
        connections_open: connections open now.
        connections_total: connections accepted since the start.
        requests_total: requests answered (or being answered).
        streams_in_progress: streamed answers being written now.
        streams_total: streamed answers started.
        bytes_sent: response bytes written.
        client_disconnects: answers cut short because the client went away.
        scripted_disconnects: connections closed by a `Disconnect` failure.
        bad_requests: requests refused as malformed (400, 413, 431, 501, 505).
        internal_errors: requests that crashed the handler (answered 500 when possible).
    """

    connections_open: int
    connections_total: int
    requests_total: int
    streams_in_progress: int
    streams_total: int
    bytes_sent: int
    client_disconnects: int
    scripted_disconnects: int
    bad_requests: int
    internal_errors: int


@final
class FakeServer:
    """A running fake server: its address, its scripts, what it saw and its counters.

    Made by `open_fake_server` or `serve_fake_server`, not directly.
    """

    def __init__(
        self,
        scenarios: Scenarios,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.scenarios = scenarios
        self.host = host
        self.port = port
        self._ssl_context = ssl_context
        self._provider = FakeProvider(scenarios)
        self._open = 0
        self._connections = 0
        self._requests = 0
        self._streaming = 0
        self._streams = 0
        self._sent = 0
        self._client_gone = 0
        self._cut = 0
        self._bad = 0
        self._errors = 0
        self._changed = trio.lowlevel.ParkingLot()
        self._pacer = _Pacer()
        self.last_error: BaseException | None = None
        """The last exception that crashed a request handler (a bug; None when all is well)."""

    def __repr__(self) -> str:
        return f"<FakeServer {self.url}>"

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https://`` over TLS), without a provider prefix."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}"

    def base_url(self, provider: WireFormat) -> str:
        """The base URL a provider's client should use, e.g. ``http://127.0.0.1:PORT/openai/v1``.

        Raises:
            KeyError: ``provider`` is not ``openai``, ``anthropic`` or ``gemini``.
        """
        return self.url + _PREFIXES[provider]

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests seen, oldest first (at most the last 1000), credentials masked."""
        return self._provider.requests

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self._provider.clear_requests()

    def statistics(self) -> ServerStatistics:
        """The server's counters now."""
        return ServerStatistics(
            connections_open=self._open,
            connections_total=self._connections,
            requests_total=self._requests,
            streams_in_progress=self._streaming,
            streams_total=self._streams,
            bytes_sent=self._sent,
            client_disconnects=self._client_gone,
            scripted_disconnects=self._cut,
            bad_requests=self._bad,
            internal_errors=self._errors,
        )

    async def wait_statistics(
        self, predicate: Callable[[ServerStatistics], bool]
    ) -> ServerStatistics:
        """Wait until the counters satisfy ``predicate``; return them.

        The predicate is checked now and whenever a request, a stream or a connection ends
        (use ``trio.fail_after`` to bound the wait)::

            await server.wait_statistics(lambda s: s.client_disconnects == 1)
        """
        await trio.lowlevel.checkpoint()
        while True:
            statistics = self.statistics()
            if predicate(statistics):
                return statistics
            await self._changed.park()

    # -- connections -----------------------------------------------------------------------

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve one connection until it closes (over TLS when the server has a TLS
        context); never raises but `trio.Cancelled`."""
        if self._ssl_context is None:
            await self._serve(stream, partial(self._send, stream.socket.fileno()))
            return
        tls = trio.SSLStream(stream, self._ssl_context, server_side=True, https_compatible=True)
        try:
            await self._serve(tls, partial(self._send_tls, tls))
        finally:
            await tls.aclose()  # https_compatible: closes the socket, no close_notify

    async def _serve(self, stream: trio.abc.Stream, send: _Send) -> None:
        """Serve requests from ``stream``, answering through ``send``, until it closes."""
        self._open += 1
        self._connections += 1
        buffer = bytearray()
        try:
            while True:
                request = await self._read_request(stream, buffer)
                if request is None:
                    return
                self._requests += 1
                keep_alive = await self._respond(stream, send, request, buffer)
                self._changed.unpark_all()
                if not keep_alive:
                    return
                if buffer:  # a pipelined request: receive_some would have checkpointed
                    await trio.lowlevel.checkpoint()
        except _BadRequest as error:
            self._bad += 1
            await self._send_quietly(stream, _error_response(error.status, str(error)))
        except _ClientGone:
            self._client_gone += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away between requests, or mid-request (or refused our TLS)
        except Exception as error:  # noqa: BLE001 - a bug must not bring the server down
            self._errors += 1
            self.last_error = error
            await self._send_quietly(stream, _error_response(500, f"fake server bug: {error!r}"))
        finally:
            self._open -= 1
            self._changed.unpark_all()

    async def _send_quietly(self, stream: trio.abc.Stream, data: bytes) -> None:
        try:
            await stream.send_all(data)
            self._sent += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _read_request(self, stream: trio.abc.Stream, buffer: bytearray) -> _Request | None:
        """Read the next request with h11; None when the client closes before it is whole.

        ``buffer`` holds bytes received but not parsed yet (a pipelined request); on return
        it holds whatever followed the request.

        Raises:
            _BadRequest: the request is malformed or too large (see the module docstring).
            trio.BrokenResourceError: the client reset the connection.
        """
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        started = _feed(parser, bytes(buffer), started=False)
        buffer.clear()
        request: h11.Request | None = None
        headers: dict[str, str] = {}
        body: list[bytes] = []
        size = 0
        continued = False
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as error:
                raise _BadRequest(error.error_status_hint, _explain(error)) from None
            if event is h11.NEED_DATA:
                if request is not None and not continued:
                    continued = True
                    if parser.they_are_waiting_for_100_continue:
                        await stream.send_all(_CONTINUE)
                data = await stream.receive_some(_RECEIVE)
                if not data:
                    return None
                started = _feed(parser, data, started=started)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > _MAX_BODY:
                    raise _BadRequest(413, "request body too large")
                body.append(event.data)
            elif isinstance(event, h11.Request):
                request = event
                if request.http_version not in (b"1.1", b"1.0"):
                    raise _BadRequest(505, "only HTTP/1.1 and HTTP/1.0 are served")
                for name, value in request.headers:
                    key = name.decode("latin-1")
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                if int(headers.get("content-length", "0")) > _MAX_BODY:
                    raise _BadRequest(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                buffer += parser.trailing_data[0]
                http10 = request.http_version == b"1.0"
                connection = headers.get("connection", "").lower()
                return _Request(
                    request.method.decode("ascii"),
                    request.target.decode("latin-1"),
                    headers,
                    b"".join(body),
                    http10=http10,
                    close="close" in connection or (http10 and "keep-alive" not in connection),
                )
            else:  # pragma: no cover - h11 gives Request, Data..., EndOfMessage in order
                raise _BadRequest(400, f"unexpected {event!r}")

    async def _respond(
        self, stream: trio.abc.Stream, send: _Send, request: _Request, buffer: bytearray
    ) -> bool:
        target = request.target
        if "://" in target:
            split = urllib.parse.urlsplit(target)
            raw_path, query = split.path or "/", split.query
        else:
            raw_path, _, query = target.partition("?")
        reply = self._provider.handle(
            request.method,
            urllib.parse.unquote(raw_path),
            query,
            request.headers,
            request.body,
            url=self.url + target if target.startswith("/") else target,
        )
        if reply.streaming:
            return await self._play_stream(stream, send, reply, request, buffer)
        return await self._play_body(stream, send, reply, request, buffer)

    async def _send(self, fd: int, data: bytes) -> None:
        """Write ``data`` with as few scheduler passes as possible.

        ``SocketStream.send_all`` yields to the scheduler on every call (about 10 us); a
        stream of small events is written here with a plain non-blocking ``write`` (about
        1.5 us), waiting for the socket only when its buffer is full. Callers checkpoint.

        Raises:
            _ClientGone: the client closed or reset the connection.
        """
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as error:  # EPIPE, ECONNRESET (SIGPIPE is ignored by Python)
            raise _ClientGone from error
        if sent < len(data):
            view = memoryview(data)
            while sent < len(data):
                await trio.lowlevel.wait_writable(fd)
                try:
                    sent += os.write(fd, view[sent:])
                except BlockingIOError:
                    continue
                except OSError as error:
                    raise _ClientGone from error
        self._sent += len(data)

    async def _send_tls(self, stream: trio.SSLStream[trio.SocketStream], data: bytes) -> None:
        """Encrypt and write ``data`` (`_send` over TLS; a checkpoint).

        Raises:
            _ClientGone: the client closed or reset the connection.
        """
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise _ClientGone from error
        self._sent += len(data)

    async def _stall(self, stream: trio.abc.Stream, seconds: float, buffer: bytearray) -> None:
        """Send nothing for ``seconds``, watching for the client going away.

        Raises:
            _ClientGone: the client closed its side (or reset) meanwhile.
        """
        with trio.move_on_after(seconds):
            while True:
                try:
                    data = await stream.receive_some(_RECEIVE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    raise _ClientGone from error
                if not data:
                    raise _ClientGone
                buffer += data  # a pipelined request: kept for after the answer

    async def _play_body(
        self,
        stream: trio.abc.Stream,
        send: _Send,
        reply: Reply,
        request: _Request,
        buffer: bytearray,
    ) -> bool:
        if reply.ttft:
            await trio.sleep(reply.ttft)
        close = request.close
        framing = b"content-length: %d\r\n" % reply.content_length
        pending = _head(reply.status, reply.headers, framing, close=close)
        for event in reply.events:
            if isinstance(event, bytes):
                await send(pending + event)
                pending = b""
            elif isinstance(event, Stall):
                await self._stall(stream, event.seconds, buffer)
            else:
                if pending:
                    await send(pending)
                self._cut += 1
                return False
        return not close

    async def _play_stream(
        self,
        stream: trio.abc.Stream,
        send: _Send,
        reply: Reply,
        request: _Request,
        buffer: bytearray,
    ) -> bool:
        chunked = not request.http10
        close = request.close or not chunked
        pending = _head(reply.status, reply.headers, _CHUNKED if chunked else b"", close=close)
        ttft, interval = reply.ttft, reply.interval
        events = reply.events
        last = len(events) - 1
        first = True
        ended = False
        pacer = self._pacer
        due = trio.current_time() + ttft  # an absolute schedule: no drift from rounding
        self._streaming += 1
        self._streams += 1
        try:
            if ttft:
                await send(pending)
                pending = b""
                await pacer.sleep_until(due)
            for index, event in enumerate(events):
                if isinstance(event, bytes):
                    if first:
                        first = False
                    elif interval:
                        due += interval
                        await pacer.sleep_until(due)
                    elif index & 15 == 15:
                        await trio.lowlevel.checkpoint()  # fairness and cancellation
                    if _SEND_TIME in event:
                        event = event.replace(_SEND_TIME, b"%016.6f" % time.monotonic())
                    if not chunked:
                        frame = event
                    elif index == last:
                        frame = b"%x\r\n%b\r\n0\r\n\r\n" % (len(event), event)
                        ended = True
                    else:
                        frame = b"%x\r\n%b\r\n" % (len(event), event)
                    if pending:
                        frame = pending + frame
                        pending = b""
                    await send(frame)
                elif isinstance(event, Stall):
                    if pending:
                        await send(pending)
                        pending = b""
                    await self._stall(stream, event.seconds, buffer)
                    due = trio.current_time()
                else:
                    if pending:
                        await send(pending)
                    self._cut += 1
                    return False
            if chunked and not ended:
                await send(pending + _TERMINATOR)
            elif pending:
                await send(pending)
        finally:
            self._streaming -= 1
        return not close


def _error_response(status: int, message: str) -> bytes:
    body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error"}})
    headers = {"content-type": "application/json"}
    return _head(status, headers, b"content-length: %d\r\n" % len(body), close=True) + body


def _feed(parser: h11.Connection, data: bytes | bytearray, *, started: bool) -> bool:
    """Give ``data`` to ``parser``, skipping empty lines before the request line (RFC 9112
    2.2, which h11 refuses); whether the request line has started."""
    if not started:
        data = data.lstrip(b"\r\n")
    if data:
        parser.receive_data(bytes(data))  # the same object when it is bytes already
        return True
    return started


def _explain(error: h11.RemoteProtocolError) -> str:
    if error.error_status_hint == 431:
        return "request header fields too large"
    return str(error)


async def serve_fake_server(
    scenarios: Scenarios | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[FakeServer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run the fake server until cancelled; for ``nursery.start``, which returns the server.

    Args:
        scenarios: the scripts to answer from (a fresh default registry when None).
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from `FakeServer.port`).
        ssl_context: serve https with this server-side context (its certificate loaded);
            None: plain http.
        task_status: given by ``nursery.start``.

    Raises:
        OSError: the address cannot be listened on.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = listeners[0].socket.getsockname()[1]
    server = FakeServer(
        scenarios if scenarios is not None else Scenarios(),
        host,
        bound_port,
        ssl_context=ssl_context,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server._pacer.run)  # pyright: ignore[reportPrivateUsage]
        task_status.started(server)
        await trio.serve_listeners(server.handle_connection, listeners, handler_nursery=nursery)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


@asynccontextmanager
async def open_fake_server(
    scenarios: Scenarios | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncGenerator[FakeServer]:
    """Run a fake server for the duration of the block::

        async with open_fake_server(scenarios) as server:
            client = httpx.AsyncClient(base_url=server.base_url("openai"))

    Leaving the block closes the listener and every open connection. With ``ssl_context``
    (server side, its certificate loaded) it serves https.

    Raises:
        OSError: the address cannot be listened on.
    """
    async with trio.open_nursery() as nursery:
        server: FakeServer = await nursery.start(
            partial(serve_fake_server, scenarios, host=host, port=port, ssl_context=ssl_context)
        )
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
