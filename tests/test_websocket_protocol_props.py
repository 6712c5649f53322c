"""The front's protocol as a property: exactly one terminal frame per id, always.

Hypothesis drives one client through random sequences of invokes, cancels, duplicates of
live ids (valid and invalid requests), unreadable frames, pings and the invocations' own
ends, against a front whose invocations a test service streams step by step (so which ids
are live is known exactly at every step). Whatever the sequence: every id that was sent in
an ``invoke`` gets exactly one terminal frame (``done``, or an ``error`` other than the
``duplicate_id`` notice), nothing of an id follows its terminal frame, and a duplicate
never ends the live invocation.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import msgspec
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.actors.websocket import (
    ChunkFrame,
    ChunksFrame,
    DoneFrame,
    ErrorFrame,
    PongFrame,
    ServerFrame,
    WebSocketFront,
    decode_server_message,
)
from llm_invocation.actors.websocket._protocol import is_terminal
from llm_invocation.config import WebSocketConfig
from llm_invocation.errors import ProviderError

CONFIG = llm.Config(provider="mock", model="mock")
WAIT = 10.0  # bound on each wait for an answer: generous for a loaded machine


class Scripted:
    """One invocation that streams, ends or fails when the test says so."""

    def __init__(self, commands: trio.MemoryReceiveChannel[str]) -> None:
        self._commands = commands
        self._text = ""
        self._response: llm.Response | None = None

    @property
    def response(self) -> llm.Response:
        assert self._response is not None
        return self._response

    @property
    def usage(self) -> llm.Usage | None:
        return None

    async def __aenter__(self) -> Scripted:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._commands.close()

    def __aiter__(self) -> Scripted:
        return self

    async def __anext__(self) -> llm.StreamChunk:
        command = await self._commands.receive()
        if command == "chunk":
            self._text += "x"
            return llm.StreamChunk(text="x")
        if command == "fail":
            raise ProviderError("scripted failure", provider="mock")
        self._response = llm.Response(
            id="r",
            provider="mock",
            model="mock",
            created=datetime.now(UTC),
            choices=[llm.Choice(message=llm.assistant(self._text), finish_reason="stop")],
        )
        raise StopAsyncIteration


class ScriptedService:
    """An `InvocationService` whose invocations are keyed by their prompt (the frame's id)."""

    config = CONFIG

    def __init__(self) -> None:
        self._channels: dict[
            str, tuple[trio.MemorySendChannel[str], trio.MemoryReceiveChannel[str]]
        ] = {}
        self.started: list[str] = []

    def _channel(
        self, key: str
    ) -> tuple[trio.MemorySendChannel[str], trio.MemoryReceiveChannel[str]]:
        if key not in self._channels:
            self._channels[key] = trio.open_memory_channel[str](math.inf)
        return self._channels[key]

    def command(self, key: str, command: str) -> None:
        self._channel(key)[0].send_nowait(command)

    def invoke(self, request: llm.Request, /, **options: Any) -> Scripted:
        key = request.messages[0].text
        self.started.append(key)
        return Scripted(self._channel(key)[1])


def invoke_frame(id: str, *, valid: bool = True) -> str:
    request: Any = (
        msgspec.to_builtins(llm.Request(model="mock", messages=[llm.user(id)]))
        if valid
        else {"model": 5, "messages": "no"}
    )
    return msgspec.json.encode({"type": "invoke", "id": id, "request": request}).decode()


class Peer:
    """The client: sends frames, keeps every server frame in order, waits for answers."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.frames: list[ServerFrame] = []
        self._read = 0

    async def send(self, text: str) -> None:
        await self.ws.send_message(text)

    async def until(self, wanted: Callable[[ServerFrame], bool]) -> ServerFrame:
        """The first frame not looked at yet that is ``wanted`` (others are kept)."""
        with trio.fail_after(WAIT):
            while True:
                while self._read < len(self.frames):
                    frame = self.frames[self._read]
                    self._read += 1
                    if wanted(frame):
                        return frame
                self.frames.extend(decode_server_message(await self.ws.get_message()))


def frame_id(frame: ServerFrame) -> str | None:
    return getattr(frame, "id", None)


def terminal_of(id: str) -> Callable[[ServerFrame], bool]:
    return lambda frame: frame_id(frame) == id and is_terminal(frame)


def duplicate_of(id: str) -> Callable[[ServerFrame], bool]:
    def wanted(frame: ServerFrame) -> bool:
        return (
            isinstance(frame, ErrorFrame)
            and frame.id == id
            and (frame.details or {}).get("reason") == "duplicate_id"
        )

    return wanted


def error_about(id: str) -> Callable[[ServerFrame], bool]:
    """An error frame naming ``id``, or none."""
    return lambda frame: isinstance(frame, ErrorFrame) and frame.id in (id, None)


def anonymous_error(frame: ServerFrame) -> bool:
    return isinstance(frame, ErrorFrame) and frame.id is None


@asynccontextmanager
async def front_and_peer(service: ScriptedService) -> AsyncGenerator[Peer]:
    async with trio.open_nursery() as nursery:
        ws_config = WebSocketConfig(port=0, max_concurrent_per_connection=1000)
        front = WebSocketFront(service, ws_config, grace=0.0)
        port: int = await nursery.start(front.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            async with trio.open_nursery() as client_nursery:
                ws = await trio_websocket.wrap_client_stream(
                    client_nursery, stream, f"127.0.0.1:{port}", "/ws"
                )
                yield Peer(ws)
                with trio.move_on_after(WAIT):
                    await ws.aclose()
                client_nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()


ON_LIVE = ("chunk", "finish", "fail", "cancel", "duplicate", "duplicate_invalid", "unreadable")
STANDALONE = ("invoke", "invoke", "invalid", "cancel_unknown", "ping", "garbage")

actions = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(STANDALONE), st.just(0)),
        st.tuples(st.sampled_from(ON_LIVE), st.integers(0, 31)),
    ),
    max_size=30,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=actions)
async def test_every_id_gets_exactly_one_terminal_frame_and_nothing_after_it(
    steps: list[tuple[str, int]],
) -> None:
    service = ScriptedService()
    invoked: list[str] = []  # every id sent in a fresh invoke (valid or not)
    duplicated: set[str] = set()
    async with front_and_peer(service) as peer:
        live: list[str] = []
        fresh = 0
        for kind, pick in steps:
            if kind in ON_LIVE and not live:
                continue
            id = live[pick % len(live)] if kind in ON_LIVE else f"i{fresh}"
            match kind:
                case "invoke":
                    fresh += 1
                    invoked.append(id)
                    live.append(id)
                    await peer.send(invoke_frame(id))
                case "invalid":
                    fresh += 1
                    invoked.append(id)
                    await peer.send(invoke_frame(id, valid=False))
                    end = await peer.until(terminal_of(id))
                    assert isinstance(end, ErrorFrame)
                    assert end.code == "invalid_request"
                case "chunk":
                    service.command(id, "chunk")
                case "finish" | "fail" | "cancel":
                    if kind == "cancel":
                        await peer.send(msgspec.json.encode({"type": "cancel", "id": id}).decode())
                    else:
                        service.command(id, kind)
                    live.remove(id)
                    end = await peer.until(terminal_of(id))
                    expected = {"finish": "done", "fail": "provider_error", "cancel": "canceled"}
                    got = "done" if isinstance(end, DoneFrame) else getattr(end, "code", None)
                    assert got == expected[kind]
                case "duplicate" | "duplicate_invalid":
                    duplicated.add(id)
                    await peer.send(invoke_frame(id, valid=kind == "duplicate"))
                    notice = await peer.until(error_about(id))
                    assert duplicate_of(id)(notice), notice
                    assert isinstance(notice, ErrorFrame)
                    assert notice.code == "invalid_request"
                case "unreadable":
                    await peer.send(msgspec.json.encode({"type": "launch", "id": id}).decode())
                    error = await peer.until(error_about(id))
                    assert isinstance(error, ErrorFrame)
                    assert (error.id, error.code) == (None, "protocol_error")
                case "garbage":
                    await peer.send("{not json")
                    await peer.until(anonymous_error)
                case "cancel_unknown":
                    await peer.send('{"type": "cancel", "id": "nobody"}')
                case "ping":
                    await peer.send(msgspec.json.encode({"type": "ping", "nonce": fresh}).decode())
                    await peer.until(lambda f, n=fresh: f == PongFrame(nonce=n))
                case _:
                    raise AssertionError(kind)
        for id in live:
            service.command(id, "finish")
            await peer.until(terminal_of(id))
        await peer.send('{"type": "ping", "nonce": "last"}')
        await peer.until(lambda f: f == PongFrame(nonce="last"))
        frames = list(peer.frames)

    # Only the valid fresh invokes reached the service, each once: duplicates never did.
    assert sorted(service.started) == sorted(id for id in invoked if id not in _invalid_ids(frames))
    by_id: dict[str, list[ServerFrame]] = {}
    for frame in frames:
        id = frame_id(frame)
        if id is not None:
            by_id.setdefault(id, []).append(frame)
    assert set(by_id) == set(invoked)  # no frame for an id that was never invoked
    for id in invoked:
        own = by_id[id]
        terminals = [i for i, frame in enumerate(own) if is_terminal(frame)]
        assert len(terminals) == 1, (id, own)
        assert terminals[0] == len(own) - 1, (id, own)  # nothing of the id after its end
        for frame in own[:-1]:
            assert isinstance(frame, ChunkFrame | ChunksFrame) or duplicate_of(id)(frame)
    assert duplicated <= set(invoked)


def _invalid_ids(frames: list[ServerFrame]) -> set[str]:
    return {
        frame.id
        for frame in frames
        if isinstance(frame, ErrorFrame)
        and frame.id is not None
        and frame.code == "invalid_request"
        and is_terminal(frame)
    }
