"""The WebSocket front: streaming invocations for remote clients, and a chat page.

One port serves both the chat page (``GET /``, ``/app.js``, ``/style.css``,
``/config.json``, ``/models.json``: see ``_page``) and the WebSocket endpoint ``/ws``.
The protocol is in `llm_invocation.actors.websocket._protocol`: JSON frames tagged by
``"type"``, several invocations multiplexed per connection by id (the frame types are
re-exported here)::

    front = WebSocketFront(client, config.websocket)          # any InvocationService
    await client.runtime.start_child(front.child_spec())     # a service child of the tree
    print(front.url)                                          # http://127.0.0.1:8765/
    ...
    await client.runtime.terminate_child("websocket_front")   # graceful: see below

or ``await nursery.start(serve_websocket_front, client, config.websocket)``, which returns
the bound port.

Handshake. Only ``/ws`` upgrades. When ``allowed_origins`` is set, a handshake whose
``Origin`` header is not listed gets 403 (a handshake without ``Origin``, which browsers
always send, is not a browser and is let through to the token check). When ``tokens`` are
set, the handshake must present one of them: ``Authorization: Bearer <token>``, the
``?token=`` query parameter, or a ``bearer.<token>`` entry of ``Sec-WebSocket-Protocol``;
otherwise 401. Tokens are compared in constant time and never logged.

Without tokens, any web page the user visits could open a WebSocket to the front on
localhost and spend the user's keys: so without tokens and without ``allowed_origins``
only the front's own loopback origins (``http://127.0.0.1:<port>``,
``http://localhost:<port>``, ``http://[::1]:<port>``) and handshakes without ``Origin``
are accepted (others get 403), and a front without tokens refuses to listen on an
address other than loopback (`ConfigurationError`) unless ``insecure_no_auth`` is set.
The server selects the subprotocol ``llm-invocation.v1`` when offered, else the
``bearer.<token>`` entry (browsers insist on one of their offers being selected), else
none.

Frames. A frame larger than ``max_message_size`` is answered with an ``error`` frame
(``protocol_error``) and the connection lives on, up to ``close_message_size`` (default 4x
``max_message_size``): trio-websocket buffers a message whole, so a larger one closes the
connection with code 1009 (message too big). A frame that is not JSON, has an unknown type
or an invalid request is answered with an ``error`` frame carrying its id when it has one;
the connection lives on.

Limits per connection: at most ``max_concurrent_per_connection`` live invocations (more:
``error`` code ``overloaded``), at most ``client_requests_per_minute`` started (a token
bucket holding a minute's worth; more: ``error`` code ``rate_limit_exceeded`` with
``retry_after``). Outgoing frames wait in a bounded queue (``max_queued_frames``,
``max_queued_bytes``). An invocation that finds it full waits for room (which holds its
upstream stream back); a burst from many invocations passes that way. A client that does
not read keeps the queue full: an invocation that gets no room within
``slow_consumer_timeout`` (default 2 s) is cancelled (upstream call cancelled, cost
settled) and ends with ``error`` code ``overloaded``, ``details.reason ==
"slow_consumer"``. Everything ready in one scheduler tick goes out as one WebSocket message
(see ``_ws_outbox``).

Tools. An ``invoke`` with ``"tool_mode": "auto"`` runs the client's automatic tool loop
(``tool_call`` and ``tool_result`` frames between the chunks) when the front was made with
``allow_tool_loop=True``; otherwise it is refused with ``invalid_request``
(``details.reason == "tool_loop_disabled"``): the loop runs the server's tools. A plain
``invoke`` offers only the tools its request lists (the remote client runs those itself),
never the server's registered or MCP tools: the model's tool calls come back in the frames.

Cancellation. ``cancel {id}`` cancels that invocation's upstream call at once; it ends with
``error {id, code: "canceled", usage}`` (what was streamed is settled and its usage sent).
A ``cancel`` for an id that is not live (it may just have finished) is ignored. A
disconnect cancels every invocation of the connection; each settles as ``cancelled`` in
the client's ledger.

Shutdown. Cancelling the front (``terminate_child``, runtime shutdown, or cancelling the
task running `WebSocketFront.serve`) stops accepting connections and invocations (new ones
get ``overloaded``, ``details.reason == "shutting_down"``), lets the invocations in flight
finish for ``grace`` seconds (``config.grace``, default 5), cancels what is left
(``error`` code ``canceled``, ``details.reason == "shutting_down"``), then closes every
connection with code 1001 (going away) and the reason ``server shutting down``. The
serving task shields itself to do that, and bounds it: it ends at most
``grace + 2 * close_timeout + 1`` seconds after it was cancelled. Stop the front before the
client it serves (``terminate_child``, or leave ``open_client`` normally: the front, started
last, stops first): its invocations need the client's providers and accountant until they
end, and a cancelled scope around ``open_client`` cancels those too.
"""

from __future__ import annotations

import logging
import os
from typing import Final, final

import msgspec
import trio
import trio_websocket

from ...config import WebSocketConfig
from ...errors import ConfigurationError
from ...runtime import ChildSpec, RestartType
from ._connection import Connection, Counters, FrontState
from ._gateway import Gateway
from ._http import (
    PAGE_HEADERS,
    BadRequest,
    PrefixedStream,
    RequestHead,
    StaticFile,
    TokenCheck,
    http_response,
    is_loopback_host,
    load_static,
    loopback_origins,
    offered_subprotocols,
    presented_tokens,
    read_head,
)
from ._page import PAGE_JSON, PageInfo, PageReply
from ._protocol import SUBPROTOCOL as SUBPROTOCOL
from ._protocol import BatchFrame as BatchFrame
from ._protocol import CancelFrame as CancelFrame
from ._protocol import ChunkFrame as ChunkFrame
from ._protocol import ChunksFrame as ChunksFrame
from ._protocol import ClientFrame as ClientFrame
from ._protocol import DoneFrame as DoneFrame
from ._protocol import ErrorFrame as ErrorFrame
from ._protocol import InvokeFrame as InvokeFrame
from ._protocol import PingFrame as PingFrame
from ._protocol import PongFrame as PongFrame
from ._protocol import ServerFrame as ServerFrame
from ._protocol import ServerMessage as ServerMessage
from ._protocol import ToolCallFrame as ToolCallFrame
from ._protocol import ToolResultFrame as ToolResultFrame
from ._protocol import decode_server_message as decode_server_message
from ._service import InvocationService as InvocationService
from ._service import Relayable as Relayable

__all__ = [
    "SUBPROTOCOL",
    "BatchFrame",
    "CancelFrame",
    "ChunkFrame",
    "ChunksFrame",
    "ClientFrame",
    "DoneFrame",
    "ErrorFrame",
    "FrontStatistics",
    "InvocationService",
    "InvokeFrame",
    "PingFrame",
    "PongFrame",
    "Relayable",
    "ServerFrame",
    "ServerMessage",
    "ToolCallFrame",
    "ToolResultFrame",
    "WebSocketFront",
    "decode_server_message",
    "serve_websocket_front",
]

log = logging.getLogger("llm_invocation.websocket")


@final
class FrontStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a `WebSocketFront` (totals since it was made, unless said otherwise).

    Attributes:
        connections: WebSocket connections open now.
        handshakes: TCP connections whose request head is still being read now.
        connections_total: WebSocket connections accepted.
        invocations: invocations in flight now.
        invocations_total: invocations started.
        queued_frames: frames waiting in the connections' outgoing queues now.
        frames_sent: frames sent (each chunk counts as one).
        messages_sent: WebSocket messages sent (a message carries one or more frames).
        frames_coalesced: frames that travelled in another frame's message
            (``frames_sent - messages_sent``).
        slow_client_cancellations: invocations cancelled because their client did not read.
        auth_failures: handshakes refused with 401.
        origin_rejections: handshakes refused with 403.
        protocol_errors: client frames that could not be read or were too large.
        rate_limited: invocations refused by the per-connection rate limit.
        overloaded: invocations refused by the per-connection concurrency limit.
        http_requests: plain HTTP requests answered (the page, refusals).
    """

    connections: int
    handshakes: int
    connections_total: int
    invocations: int
    invocations_total: int
    queued_frames: int
    frames_sent: int
    messages_sent: int
    frames_coalesced: int
    slow_client_cancellations: int
    auth_failures: int
    origin_rejections: int
    protocol_errors: int
    rate_limited: int
    overloaded: int
    http_requests: int


def _peer(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


_PEER_GONE: Final = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    ConnectionError,
)


def _peer_went_away(exc: Exception) -> bool:
    """Whether ``exc`` (or every exception in a group) just says the peer disconnected."""
    if isinstance(exc, ExceptionGroup):
        group: ExceptionGroup[Exception] = exc  # pyright: ignore[reportUnknownVariableType]
        return all(_peer_went_away(inner) for inner in group.exceptions)
    return isinstance(exc, _PEER_GONE)


@final
class WebSocketFront:
    """Serves invocations over WebSocket, and the chat page (see the module docstring).

    Args:
        service: what runs the invocations (`llm_invocation.Client`, or anything that
            satisfies `InvocationService`).
        config: host, port, tokens, origins, grace and per-connection limits (default: the
            service's ``config.websocket``).
        static_dir: a folder whose files replace the packaged chat page (``/`` serves its
            ``index.html``).
        grace: seconds in-flight invocations may take to finish when the front stops
            (default: ``config.grace``).
        close_timeout: seconds for a connection's last frames and its closing handshake.
        handshake_timeout: seconds a new connection has to send its request head and
            complete the WebSocket handshake.
        max_queued_frames, max_queued_bytes: the bound of each connection's outgoing queue.
        slow_consumer_timeout: how long an invocation waits for room in a full queue
            before it is cancelled as a slow consumer's.
        close_message_size: frames larger than this close the connection (1009); between
            ``max_message_size`` and this they get an ``error`` frame. Default: 4x
            ``max_message_size``.
        allow_tool_loop: let clients run the automatic tool loop (``tool_mode: "auto"``)
            with the tools registered on the client. Off by default: it lets whoever holds
            a token make the server run those tools.

    Raises:
        ValueError: a timeout or a queue bound is out of range.
        ConfigurationError: no tokens are configured and the host is not a loopback
            address, without ``insecure_no_auth``.
    """

    def __init__(
        self,
        service: InvocationService,
        config: WebSocketConfig | None = None,
        *,
        static_dir: str | os.PathLike[str] | None = None,
        grace: float | None = None,
        close_timeout: float = 2.0,
        handshake_timeout: float = 10.0,
        max_queued_frames: int = 256,
        max_queued_bytes: int = 1 << 20,
        slow_consumer_timeout: float = 2.0,
        close_message_size: int | None = None,
        allow_tool_loop: bool = False,
    ) -> None:
        config = config if config is not None else service.config.websocket
        grace = grace if grace is not None else config.grace
        if not config.tokens and not config.insecure_no_auth and not is_loopback_host(config.host):
            raise ConfigurationError(
                f"the WebSocket front would listen on {config.host} without tokens: set "
                "websocket.tokens, or listen on 127.0.0.1, or set websocket.insecure_no_auth "
                "(serve --insecure-no-auth) to let anyone who can reach it run invocations",
                details={"field": "websocket.tokens"},
            )
        if grace < 0 or min(close_timeout, handshake_timeout, slow_consumer_timeout) <= 0:
            raise ValueError("grace must be >= 0, the timeouts > 0")
        if max_queued_frames < 1 or max_queued_bytes < 1:
            raise ValueError("the outgoing queue bounds must be >= 1")
        self._service = service
        self._config = config
        self._static_dir = static_dir
        self._grace = grace
        self._close_timeout = close_timeout
        self._handshake_timeout = handshake_timeout
        self._max_frames = max_queued_frames
        self._max_bytes = max_queued_bytes
        self._slow_consumer_timeout = slow_consumer_timeout
        self._allow_tool_loop = allow_tool_loop
        self._close_size = max(
            config.max_message_size,
            close_message_size if close_message_size is not None else 4 * config.max_message_size,
        )
        self._tokens = TokenCheck(token.reveal() for token in config.named_tokens().values())
        self._page = PageInfo(service, self._tokens)
        self._origins = frozenset(config.allowed_origins)
        self._static: dict[str, StaticFile] = {}
        self._port: int | None = None
        self._serving = False
        self._scope: trio.CancelScope | None = None
        self._accept_scope: trio.CancelScope | None = None
        self._handshakes: set[trio.CancelScope] = set()
        self._counters = Counters()
        self._gateway = Gateway(service, config, self._counters, read_timeout=handshake_timeout)
        self._state = self._new_state()

    # -- public --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: the front is not serving.
        """
        if self._port is None:
            raise RuntimeError("the WebSocket front is not serving")
        return self._port

    @property
    def url(self) -> str:
        """The chat page's URL (the WebSocket endpoint is ``/ws`` on the same port)."""
        host = self._config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint's URL."""
        return "ws" + self.url.removeprefix("http") + "ws"

    def statistics(self) -> FrontStatistics:
        counters, connections = self._counters, self._state.connections
        frames, messages = counters.frames_sent, counters.messages_sent
        return FrontStatistics(
            connections=len(connections),
            handshakes=len(self._handshakes),
            connections_total=counters.connections_total,
            invocations=counters.in_flight,
            invocations_total=counters.invocations_total,
            queued_frames=sum(conn.outbox.frames for conn in connections),
            frames_sent=frames,
            messages_sent=messages,
            frames_coalesced=frames - messages,
            slow_client_cancellations=counters.slow,
            auth_failures=counters.auth_failures,
            origin_rejections=counters.origin_rejections,
            protocol_errors=counters.protocol_errors,
            rate_limited=counters.rate_limited,
            overloaded=counters.overloaded,
            http_requests=counters.http_requests,
        )

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a request with this ``Origin`` header may use the front (None: no header).

        ``allowed_origins`` when set; else, without tokens, the front's own loopback
        origins only (a page the user visits must not drive it); else any.
        """
        return not self._origins or origin is None or origin in self._origins

    def _new_state(self) -> FrontState:
        return FrontState(
            self._service,
            self._config,
            self._counters,
            close_timeout=self._close_timeout,
            max_frames=self._max_frames,
            max_bytes=self._max_bytes,
            slow_consumer_timeout=self._slow_consumer_timeout,
            allow_tool_loop=self._allow_tool_loop,
        )

    def child_spec(
        self, name: str = "websocket_front", *, restart: RestartType = "permanent"
    ) -> ChildSpec:
        """A service child for ``runtime.start_child``; its shutdown grace covers ours."""
        return ChildSpec.service(
            name,
            self.serve,
            restart=restart,
            shutdown=self._grace + 2 * self._close_timeout + 2.0,
        )

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled, then shut down gracefully.

        ``task_status.started`` gets the bound port.

        Raises:
            RuntimeError: this front is already serving.
            OSError: the address cannot be bound.
        """
        if self._serving:
            raise RuntimeError("this WebSocket front is already serving")
        self._serving = True
        self._state = self._new_state()
        try:
            self._static = await trio.to_thread.run_sync(load_static, self._static_dir)
            config = self._config
            try:
                listeners = await trio.open_tcp_listeners(config.port, host=config.host)
            except OSError as exc:
                where = f"{config.host}:{config.port}"
                raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
            port: int = listeners[0].socket.getsockname()[1]
            self._port = port
            if self._tokens.open and not self._origins:
                self._origins = loopback_origins(port)  # only this machine's own pages
            if self._tokens.open and not is_loopback_host(config.host):
                log.warning(
                    "WebSocket front on %s:%d has no tokens configured (insecure_no_auth): "
                    "anyone who can reach it can run invocations",
                    config.host,
                    port,
                )
            log.info("WebSocket front listening on %s (WebSocket at /ws)", self.url)
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run, listeners)
                task_status.started(port)
                try:
                    await trio.sleep_forever()
                finally:
                    self._begin_shutdown()
        finally:
            self._serving = False
            self._port = None
            self._origins = frozenset(self._config.allowed_origins)

    # -- the server's life ---------------------------------------------------------------------

    async def _run(
        self, listeners: list[trio.SocketListener], *, task_status: trio.TaskStatus[None]
    ) -> None:
        # Shielded: a stop must not cut the invocations in flight; `_begin_shutdown` sets
        # this scope's deadline instead.
        with trio.CancelScope(shield=True) as scope:
            self._scope = scope
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._accept, listeners, nursery)
                    task_status.started()
            finally:
                self._scope = None
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

    async def _accept(
        self,
        listeners: list[trio.SocketListener],
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        with trio.CancelScope() as scope:
            self._accept_scope = scope
            await trio.serve_listeners(
                self._handle_tcp,
                listeners,
                handler_nursery=nursery,
                task_status=task_status,
            )

    def _begin_shutdown(self) -> None:
        state = self._state
        if state.closing.is_set():
            return
        state.grace_deadline = trio.current_time() + self._grace
        state.closing.set()
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for scope in self._handshakes:
            scope.cancel()
        if self._scope is not None:
            self._scope.deadline = state.grace_deadline + 2 * self._close_timeout + 1.0
        log.info(
            "WebSocket front stopping: %d connections, %d invocations in flight, %gs grace",
            len(state.connections),
            self._counters.in_flight,
            self._grace,
        )

    # -- HTTP ----------------------------------------------------------------------------------

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            head: RequestHead | None = None
            with trio.move_on_after(self._handshake_timeout) as scope:
                self._handshakes.add(scope)  # cancelled at once when the front stops
                try:
                    head = await read_head(stream)
                finally:
                    self._handshakes.discard(scope)
            if head is None:
                return
            if Gateway.serves(head):  # the OpenAI-compatible API under /v1
                await self._gateway.serve(stream, head, self._state, port=self.port)
            elif head.is_websocket:
                await self._upgrade(stream, head)
            else:
                await self._serve_file(stream, head)
        except BadRequest as exc:
            await self._refuse(stream, exc.status, str(exc))
        except Exception as exc:
            # One connection's failure must not end the others (serve_listeners would).
            if _peer_went_away(exc):
                log.debug("WebSocket front: %s went away: %r", _peer(stream), exc)
            else:
                log.exception("WebSocket front: the connection from %s failed", _peer(stream))
        finally:
            await trio.aclose_forcefully(stream)

    async def _refuse(
        self,
        stream: trio.abc.SendStream,
        status: int,
        message: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._counters.http_requests += 1
        body = (message + "\n").encode()
        with trio.move_on_after(self._close_timeout):
            await stream.send_all(http_response(status, body, headers=headers or ()))

    async def _serve_file(self, stream: trio.SocketStream, head: RequestHead) -> None:
        if head.method not in ("GET", "HEAD"):
            await self._refuse(stream, 405, "method not allowed", [("Allow", "GET, HEAD")])
            return
        if head.path == "/ws":
            await self._refuse(
                stream, 426, "this endpoint speaks WebSocket", [("Upgrade", "websocket")]
            )
            return
        if head.path in PAGE_JSON:
            reply = await self._page.answer(head, _peer(stream))
        else:
            found = self._static.get(head.path)
            if found is None:
                await self._refuse(stream, 404, "not found")
                return
            reply = PageReply(200, found)
        file = reply.file
        self._counters.http_requests += 1
        response = http_response(
            reply.status,
            file.body,
            content_type=file.content_type,
            headers=[*PAGE_HEADERS, *reply.headers],
            head_only=head.method == "HEAD",
        )
        with trio.move_on_after(self._close_timeout):
            await stream.send_all(response)

    async def _upgrade(self, stream: trio.SocketStream, head: RequestHead) -> None:
        peer = _peer(stream)
        if head.path != "/ws":
            await self._refuse(stream, 404, "not found: the WebSocket endpoint is /ws")
            return
        connection = (head.header("connection") or "").lower()
        if (
            head.method != "GET"
            or "upgrade" not in connection
            or "sec-websocket-key" not in head.headers
            or "host" not in head.headers
        ):
            await self._refuse(stream, 400, "not a valid WebSocket handshake")
            return
        if head.header("sec-websocket-version") != "13":
            await self._refuse(
                stream, 426, "WebSocket version 13 only", [("Sec-WebSocket-Version", "13")]
            )
            return
        if self._state.closing.is_set():
            await self._refuse(stream, 503, "the server is shutting down")
            return
        if not self.origin_allowed(head.header("origin")):
            self._counters.origin_rejections += 1
            log.info("refused a WebSocket handshake from %s: origin not allowed", peer)
            await self._refuse(stream, 403, "origin not allowed")
            return
        tokens, bearer_protocol = presented_tokens(head)
        if not self._tokens.open:
            accepted = False
            for token in tokens:
                accepted |= self._tokens.accepts(token)
            if not accepted:
                self._counters.auth_failures += 1
                log.info(
                    "refused a WebSocket handshake from %s: %s",
                    peer,
                    "invalid token" if tokens else "no token",
                )
                await self._refuse(
                    stream, 401, "unauthorized", [("WWW-Authenticate", 'Bearer realm="llm"')]
                )
                return
        offered = offered_subprotocols(head)
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else bearer_protocol
        async with trio.open_nursery() as nursery:
            ws: trio_websocket.WebSocketConnection | None = None
            with trio.move_on_after(self._handshake_timeout):
                request = await trio_websocket.wrap_server_stream(
                    nursery,
                    PrefixedStream(stream, head.raw),
                    max_message_size=self._close_size,
                )
                ws = await request.accept(subprotocol=subprotocol)
            if ws is None:
                nursery.cancel_scope.cancel()
                return
            try:
                await Connection(self._state, ws, peer).run()
            finally:
                with trio.move_on_after(self._close_timeout):
                    await ws.aclose()
                nursery.cancel_scope.cancel()


async def serve_websocket_front(
    service: InvocationService,
    config: WebSocketConfig | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    static_dir: str | os.PathLike[str] | None = None,
    grace: float | None = None,
) -> None:
    """Serve ``service``'s invocations over WebSocket (and the chat page) until cancelled.

    For ``await nursery.start(serve_websocket_front, client, config)``, which returns the
    bound port. See `WebSocketFront` for the options and the shutdown sequence.

    Raises:
        ConfigurationError: no tokens and a host other than loopback (see `WebSocketFront`).
        OSError: the address cannot be bound.
    """
    front = WebSocketFront(service, config, static_dir=static_dir, grace=grace)
    await front.serve(task_status=task_status)
