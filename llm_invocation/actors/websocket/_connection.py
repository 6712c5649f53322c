"""One accepted WebSocket connection of the front: reader, writer, invocations, shutdown.

The reader task decodes client frames and answers them; each ``invoke`` runs as a task in
the connection's nursery under its own cancel scope (``cancel``, a slow consumer and the
shutdown cancel it); one writer task drains the `Outbox`. When the client goes away the
reader returns and the nursery is cancelled, which cancels every upstream call the
connection started (each settles its cost as cancelled, shielded, in the client).
"""

from __future__ import annotations

import logging
from typing import Any, Final, Literal, final

import msgspec
import trio
import trio_websocket

from ...config import WebSocketConfig
from ...errors import ErrorCode, LLMError
from ...types import Request, StreamChunk, Usage
from ._outbox import ENCODER, Outbox
from ._protocol import (
    CANCELED_AT_SHUTDOWN,
    CANCELED_BY_CLIENT,
    DUPLICATE_ID,
    RATE_LIMITED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOO_LARGE,
    TOO_MANY_INVOCATIONS,
    TOOL_LOOP_DISABLED,
    CancelFrame,
    DoneFrame,
    ErrorFrame,
    FrameError,
    InvokeFrame,
    PingFrame,
    PongFrame,
    ServerFrame,
    decode_client_frame,
    error_frame,
    probe_client_frame,
)
from ._service import InvocationService, Relayable

__all__ = ["CLOSE_REASON", "Connection", "Counters", "FrontState", "Reason"]

log = logging.getLogger("llm_invocation.websocket")

# Why the front cancelled an invocation: a cancel frame, a full queue, or a shutdown.
Reason = Literal["client", "slow_consumer", "shutdown"]

_RELAYED_EVENTS: Final = ("tool_call", "tool_result")

CLOSE_REASON: Final = "server shutting down"
"""The reason of the 1001 close at shutdown (a page can show it)."""


@final
class Counters:
    """The front's running totals (see `FrontStatistics`)."""

    __slots__ = (
        "auth_failures",
        "connections_total",
        "frames_sent",
        "http_requests",
        "in_flight",
        "invocations_total",
        "messages_sent",
        "origin_rejections",
        "overloaded",
        "protocol_errors",
        "rate_limited",
        "slow",
    )

    def __init__(self) -> None:
        self.connections_total = 0
        self.in_flight = 0
        self.invocations_total = 0
        self.frames_sent = 0
        self.messages_sent = 0
        self.slow = 0
        self.auth_failures = 0
        self.origin_rejections = 0
        self.protocol_errors = 0
        self.rate_limited = 0
        self.overloaded = 0
        self.http_requests = 0


@final
class FrontState:
    """What every connection of one front shares: the service, limits, counters, shutdown."""

    __slots__ = (
        "allow_tool_loop",
        "close_timeout",
        "closing",
        "config",
        "connections",
        "counters",
        "grace_deadline",
        "max_bytes",
        "max_frames",
        "service",
        "slow_consumer_timeout",
    )

    def __init__(
        self,
        service: InvocationService,
        config: WebSocketConfig,
        counters: Counters,
        *,
        close_timeout: float,
        max_frames: int,
        max_bytes: int,
        slow_consumer_timeout: float,
        allow_tool_loop: bool,
    ) -> None:
        self.service = service
        self.allow_tool_loop = allow_tool_loop
        self.config = config
        self.counters = counters
        self.close_timeout = close_timeout
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.slow_consumer_timeout = slow_consumer_timeout
        self.closing = trio.Event()
        """Set when the front stops: no new invocations, close after the grace."""
        self.grace_deadline = 0.0
        self.connections: set[Connection] = set()


@final
class _TokenBucket:
    """Invocations a connection may start: a minute's worth, refilled continuously."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.stamp = trio.current_time()

    def take(self) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there is."""
        now = trio.current_time()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _own_tools_only(request: Request) -> Request:
    """A remote client's request offers the tools it lists, never the server's registered
    ones: those run only in the tool loop (``tool_mode: "auto"``), which runs them here."""
    if request.tools is not None:
        return request
    return msgspec.structs.replace(request, tools=[])


@final
class _Invocation:
    __slots__ = ("reason", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.reason: Reason | None = None

    def cancel(self, reason: Reason) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


def _message_size(message: str | bytes, limit: int) -> int:
    """The size of ``message`` in bytes, encoding text only when it could matter."""
    if isinstance(message, bytes) or len(message) * 4 <= limit:
        return len(message)
    return len(message.encode("utf-8", "surrogatepass"))


@final
class Connection:
    """One accepted WebSocket connection; `run` serves it until it closes."""

    __slots__ = ("_idle", "_nursery", "bucket", "live", "outbox", "peer", "state", "ws")

    def __init__(
        self, state: FrontState, ws: trio_websocket.WebSocketConnection, peer: str
    ) -> None:
        self.state = state
        self.ws = ws
        self.peer = peer
        per_minute = state.config.client_requests_per_minute
        self.bucket = _TokenBucket(per_minute) if per_minute is not None else None
        self.outbox = Outbox(max_frames=state.max_frames, max_bytes=state.max_bytes)
        self.live: dict[str, _Invocation] = {}
        self._idle = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        """Serve the connection until the client or the front closes it."""
        state = self.state
        state.counters.connections_total += 1
        log.debug("WebSocket connection from %s", self.peer)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                state.connections.add(self)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._close_on_shutdown)
                await self._reader()
                nursery.cancel_scope.cancel()  # the client is gone: cancel what it started
        finally:
            state.connections.discard(self)
            log.debug("WebSocket connection from %s closed", self.peer)

    def _finished(self, id: str) -> None:
        self.live.pop(id, None)
        if not self.live:
            self._idle.unpark_all()

    async def _wait_idle(self) -> None:
        while self.live:
            await self._idle.park()

    def _cancel_all(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- reading -------------------------------------------------------------------------------

    async def _reader(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            await self._on_message(message)

    async def _reply(self, frame: ServerFrame) -> None:
        """Queue an answer to the client's frame, waiting while the queue is full."""
        await self.outbox.wait_room()
        self.outbox.put_frame(ENCODER.encode(frame), capped=False)

    async def _on_message(self, message: str | bytes) -> None:
        counters = self.state.counters
        limit = self.state.config.max_message_size
        size = _message_size(message, limit)
        if size > limit:
            counters.protocol_errors += 1
            text = f"a frame of {size} bytes exceeds max_message_size ({limit})"
            await self._reply(TOO_LARGE.frame(text, limit=limit))
            return
        try:
            # The id first: an invoke reusing a live id is a duplicate whatever its request
            # (its request's error would read as the live invocation's end).
            probe = probe_client_frame(message)
            id = probe.frame_id
            if probe.type == "invoke" and id is not None and id in self.live:
                text = f"id {id!r} is already in use by a live invocation"
                await self._reply(DUPLICATE_ID.frame(text, id=id))
                return
            frame = decode_client_frame(message, probe)
        except FrameError as exc:
            counters.protocol_errors += 1
            # An error naming a live id would read as that invocation's end: leave it out.
            id = exc.id if exc.id not in self.live else None
            await self._reply(ErrorFrame(id=id, code=exc.code, message=exc.message))
            return
        match frame:
            case PingFrame(nonce=nonce):
                await self._reply(PongFrame(nonce=nonce))
            case CancelFrame(id=id):
                invocation = self.live.get(id)
                if invocation is not None:
                    invocation.cancel("client")
            case InvokeFrame():
                await self._on_invoke(frame)

    def _refusal(self, frame: InvokeFrame) -> ErrorFrame | None:
        """Why ``frame`` cannot start now, if it cannot."""
        id, state, counters = frame.id, self.state, self.state.counters
        limit = state.config.max_concurrent_per_connection
        if id in self.live:  # (`_on_message` answers duplicates before decoding)
            message = f"id {id!r} is already in use by a live invocation"
            return DUPLICATE_ID.frame(message, id=id)
        if state.closing.is_set():
            return SHUTTING_DOWN.frame("the server is shutting down", id=id)
        if frame.tool_mode == "auto" and not state.allow_tool_loop:
            return TOOL_LOOP_DISABLED.frame("the tool loop is not enabled on this server", id=id)
        if len(self.live) >= limit:
            counters.overloaded += 1
            message = f"at most {limit} invocations at once per connection"
            return TOO_MANY_INVOCATIONS.frame(message, id=id, limit=limit)
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                counters.rate_limited += 1
                per_minute = state.config.client_requests_per_minute
                message = f"at most {per_minute} invocations per minute per connection"
                return RATE_LIMITED.frame(
                    message, id=id, retry_after=round(wait, 3), retryable=True
                )
        return None

    async def _on_invoke(self, frame: InvokeFrame) -> None:
        refusal = self._refusal(frame)
        if refusal is not None:
            await self._reply(refusal)
            return
        invocation = _Invocation()
        self.live[frame.id] = invocation
        counters = self.state.counters
        counters.in_flight += 1
        counters.invocations_total += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._invoke, frame, invocation)

    # -- one invocation ------------------------------------------------------------------------

    async def _invoke(self, frame: InvokeFrame, invocation: _Invocation) -> None:
        id = frame.id
        id_json = ENCODER.encode(id)
        final: ServerFrame | None = None
        stream: Relayable | None = None
        try:
            with invocation.scope:
                try:
                    service = self.state.service
                    if frame.tool_mode == "auto":
                        stream = service.invoke(
                            frame.request, tool_mode="auto", max_steps=frame.max_steps
                        )
                    else:
                        stream = service.invoke(_own_tools_only(frame.request))
                    async with stream:
                        async for item in stream:
                            if not self._relay(id, id_json, item) and not await self._wait_relay(
                                id, id_json, item
                            ):
                                invocation.reason = "slow_consumer"
                                break
                        else:
                            final = DoneFrame(id=id, response=stream.response, usage=stream.usage)
                except LLMError as error:
                    final = error_frame(error, id=id, usage=stream.usage if stream else None)
                except Exception:  # a bug in one invocation must not end the connection
                    log.exception("WebSocket invocation %r failed unexpectedly", id)
                    final = ErrorFrame(
                        id=id,
                        code=ErrorCode.PROVIDER_ERROR.value,
                        message="the invocation failed unexpectedly (see the server's log)",
                    )
            if final is None:
                usage = stream.usage if stream is not None else None
                final = self._stopped(id, invocation.reason, usage)
        finally:
            self._finished(id)
            self.state.counters.in_flight -= 1
            if final is not None:
                self.outbox.put_frame(ENCODER.encode(final), id=id, capped=False)

    def _stopped(self, id: str, reason: Reason | None, usage: Usage | None) -> ErrorFrame:
        """The terminal frame of an invocation the front cancelled."""
        if reason == "slow_consumer":
            self.state.counters.slow += 1
            log.warning(
                "WebSocket client %s does not read fast enough: invocation %r cancelled",
                self.peer,
                id,
            )
            message = "slow consumer: the connection's outgoing queue is full"
            return SLOW_CONSUMER.frame(message, id=id, usage=usage)
        if reason == "shutdown":
            message = "cancelled: the server is shutting down"
            return CANCELED_AT_SHUTDOWN.frame(message, id=id, usage=usage)
        return CANCELED_BY_CLIENT.frame("cancelled by the client", id=id, usage=usage)

    async def _wait_relay(self, id: str, id_json: bytes, item: object) -> bool:
        """The queue was full: wait for room, up to the slow-consumer timeout.

        A burst of many fast invocations fills the queue for a moment; a client that does
        not read keeps it full. Only the latter makes this return False.
        """
        with trio.move_on_after(self.state.slow_consumer_timeout):
            while True:
                await self.outbox.wait_room()
                if self._relay(id, id_json, item):
                    return True
        return False

    def _relay(self, id: str, id_json: bytes, item: object) -> bool:
        """Queue one item of an invocation's stream; False when the queue is full."""
        if isinstance(item, StreamChunk):
            return self.outbox.put_chunk(id, id_json, item)
        kind = getattr(item, "type", None)
        if kind not in _RELAYED_EVENTS:
            log.debug("WebSocket front: not relaying a %s", type(item).__name__)
            return True
        payload: Any = msgspec.to_builtins(item)
        frame: dict[str, Any] = {"type": kind, "id": id}
        if isinstance(payload, dict):
            for key, value in payload.items():  # pyright: ignore[reportUnknownVariableType]
                if key not in frame:
                    frame[str(key)] = value  # pyright: ignore[reportUnknownArgumentType]
        else:
            frame["data"] = payload
        return self.outbox.put_frame(ENCODER.encode(frame), id=id)

    # -- writing and closing -------------------------------------------------------------------

    async def _writer(self) -> None:
        outbox, ws, counters = self.outbox, self.ws, self.state.counters
        try:
            while True:
                await outbox.wait_ready()
                # One more scheduler pass lets the frames of this tick join: the other
                # invocations', and a lone invocation's next network read (its task reads
                # its provider's answer itself, one read per pass).
                await trio.lowlevel.checkpoint()
                data, frames = outbox.take()
                try:
                    await ws.send_message(data.decode())
                finally:
                    outbox.sent()
                counters.frames_sent += frames
                counters.messages_sent += 1
        except trio_websocket.ConnectionClosed:
            self._cancel_all()

    async def _close_on_shutdown(self) -> None:
        state = self.state
        await state.closing.wait()
        with trio.move_on_at(state.grace_deadline):
            await self._wait_idle()
        for invocation in list(self.live.values()):
            invocation.cancel("shutdown")
        with trio.move_on_after(state.close_timeout):
            await self._wait_idle()
            await self.outbox.wait_drained()
        with trio.move_on_after(state.close_timeout):
            await self.ws.aclose(1001, CLOSE_REASON)
        self._cancel_all()
