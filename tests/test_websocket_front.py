"""The WebSocket front over real sockets on 127.0.0.1, with the client on the mock provider.

Clients: trio-websocket in the test's own event loop, and the third-party ``websockets``
library's sync client in a worker thread.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio_websocket
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, TextMessage
from wsproto.events import Request as WsRequest

import llm_invocation as llm
from llm_invocation.actors.websocket import (
    ChunkFrame,
    ChunksFrame,
    DoneFrame,
    ErrorFrame,
    PongFrame,
    ServerFrame,
    ToolCallFrame,
    ToolResultFrame,
    WebSocketFront,
    decode_server_message,
    serve_websocket_front,
)
from llm_invocation.actors.websocket._protocol import render_reference
from llm_invocation.cli._serve import serve_front
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import Scenario, Scenarios, ScriptedToolCall
from llm_invocation.tools import tool

TOKEN = "tok-3f9a-test-bearer"
CONFIG = llm.Config(provider="mock", model="mock")
SLOW_TEXT = "abcdefghij" * 40  # 400 characters, 2 per chunk, 5 ms apart: about 1 s


def scenarios() -> Scenarios:
    s = Scenarios(Scenario(text="hello over the socket", chunk_chars=4))
    s.add("slow", Scenario(text=SLOW_TEXT, chunk_chars=2, interval=0.005))
    s.add("fast", Scenario(text="x" * 2000, chunk_chars=5))
    s.add("endless", Scenario(text="y" * 20000, chunk_chars=2, interval=0.005))
    return s


def invoke(id: str, model: str = "mock", prompt: str = "hi") -> dict[str, Any]:
    request = llm.Request(model=model, messages=[llm.user(prompt)])
    return {"type": "invoke", "id": id, "request": msgspec.to_builtins(request)}


@asynccontextmanager
async def front_running(
    *,
    ws: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncGenerator[tuple[llm.Client, WebSocketFront]]:
    options.setdefault("grace", 1.0)
    async with (
        llm.open_client(CONFIG, scenarios=scenarios()) as client,
        trio.open_nursery() as nursery,
    ):
        front = WebSocketFront(client, WebSocketConfig(port=0, **(ws or {})), **options)
        await nursery.start(front.serve)
        yield client, front
        nursery.cancel_scope.cancel()


class Peer:
    """A trio-websocket client connection that reads server frames one by one."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream: trio.abc.Stream | None = None
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.pending: deque[ServerFrame] = deque()
        self.messages = 0

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = msgspec.json.encode(frame).decode()
        await self.ws.send_message(frame)

    async def frame(self) -> ServerFrame:
        while not self.pending:
            message = await self.ws.get_message()
            self.messages += 1
            self.pending.extend(decode_server_message(message))
        return self.pending.popleft()

    async def finish(self, id: str) -> tuple[str, DoneFrame | ErrorFrame]:
        """Read until ``id`` ends; its text and its terminal frame (other ids are skipped)."""
        text: list[str] = []
        while True:
            frame = await self.frame()
            if getattr(frame, "id", None) != id:
                continue
            match frame:
                case ChunkFrame(chunk=chunk):
                    text.append(chunk.text)
                case ChunksFrame(chunks=chunks):
                    text.extend(c.text for c in chunks)
                case DoneFrame() | ErrorFrame():
                    return "".join(text), frame
                case _:
                    pass

    async def first_text(self, id: str) -> str:
        while True:
            frame = await self.frame()
            if isinstance(frame, ChunkFrame) and frame.id == id and frame.chunk.text:
                return frame.chunk.text
            if isinstance(frame, ChunksFrame) and frame.id == id:
                text = "".join(c.text for c in frame.chunks)
                if text:
                    return text


@asynccontextmanager
async def connect(
    front: WebSocketFront | int,
    *,
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    message_queue_size: int = 1,
) -> AsyncGenerator[Peer]:
    """A trio-websocket client; the test owns the TCP stream and always closes it.

    (trio-websocket's own ``open_websocket_url`` leaves the client socket open when the
    server is the one that closes the connection.)
    """
    port = front if isinstance(front, int) else front.port
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                f"127.0.0.1:{port}",
                "/ws" + query,
                subprotocols=subprotocols,
                extra_headers=headers,
                message_queue_size=message_queue_size,
                max_message_size=64 << 20,
            )
            try:
                yield Peer(ws, stream)
            finally:
                with trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def eventually(check: Callable[[], bool | Awaitable[bool]], limit: float = 10.0) -> None:
    """Wait until ``check`` holds, polling every few milliseconds (bounded)."""
    with trio.fail_after(limit):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.005)


@contextmanager
def front_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture the front's log records at DEBUG, even when another test stopped the
    ``llm_invocation`` logger from propagating (the CLI's logging set-up does)."""
    logger = logging.getLogger("llm_invocation.websocket")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    caplog.set_level(logging.DEBUG, logger="trio-websocket")
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


async def statuses(client: llm.Client) -> dict[str | None, int]:
    report = await client.usage(group_by=["status"])
    return {row.group["status"]: row.calls for row in report.rows}


# -- streaming and multiplexing ----------------------------------------------------------------


async def test_an_invocation_streams_its_chunks_then_done_with_usage_and_cost() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(invoke("a"))
        text, end = await peer.finish("a")
        assert text == "hello over the socket"
        assert isinstance(end, DoneFrame)
        assert end.response.text == text
        assert end.usage is not None
        assert end.usage.completion_tokens > 0
        assert end.usage.cost is not None


async def test_two_invocations_multiplex_on_one_connection() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(invoke("slow-1", "slow"))
        await peer.send(invoke("fast-2", "fast"))
        results: dict[str, tuple[list[str], DoneFrame | ErrorFrame | None]] = {
            "slow-1": ([], None),
            "fast-2": ([], None),
        }
        order: list[str] = []
        while any(end is None for _, end in results.values()):
            frame = await peer.frame()
            match frame:
                case ChunkFrame(id=id, chunk=chunk):
                    results[id][0].append(chunk.text)
                case ChunksFrame(id=id, chunks=chunks):
                    results[id][0].extend(c.text for c in chunks)
                case DoneFrame(id=id) | ErrorFrame(id=str() as id):
                    results[id] = (results[id][0], frame)
                    order.append(id)
                case _:
                    pass
        assert "".join(results["slow-1"][0]) == SLOW_TEXT
        assert "".join(results["fast-2"][0]) == "x" * 2000
        assert all(isinstance(end, DoneFrame) for _, end in results.values())
        assert order == ["fast-2", "slow-1"]  # the fast one was not held up by the slow one


async def test_the_websockets_library_as_a_client_multiplexes_and_pings() -> None:
    async with front_running(ws={"tokens": [llm.Secret(TOKEN)]}) as (_, front):
        url = front.ws_url

        def talk() -> dict[str, Any]:
            texts: dict[str, str] = {"a": "", "b": ""}
            ends: dict[str, str] = {}
            pong: Any = None
            with ws_connect(
                url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=10
            ) as ws:
                ws.send(msgspec.json.encode(invoke("a", "slow")).decode())
                ws.send(msgspec.json.encode(invoke("b")).decode())
                ws.send('{"type": "ping", "nonce": 7}')
                while len(ends) < 2 or pong is None:
                    for frame in decode_server_message(ws.recv(timeout=10)):
                        match frame:
                            case ChunkFrame(id=id, chunk=chunk):
                                texts[id] += chunk.text
                            case ChunksFrame(id=id, chunks=chunks):
                                texts[id] += "".join(c.text for c in chunks)
                            case DoneFrame(id=id):
                                ends[id] = "done"
                            case PongFrame(nonce=nonce):
                                pong = nonce
                            case _:
                                pass
            return {"texts": texts, "ends": ends, "pong": pong}

        result = await trio.to_thread.run_sync(talk)
        assert result["texts"] == {"a": SLOW_TEXT, "b": "hello over the socket"}
        assert result["ends"] == {"a": "done", "b": "done"}
        assert result["pong"] == 7


async def test_frames_ready_in_one_tick_are_coalesced_into_one_message() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(invoke("f", "fast"))
        text, end = await peer.finish("f")
        assert isinstance(end, DoneFrame)
        assert text == "x" * 2000
        stats = front.statistics()
        assert stats.frames_sent >= 401  # 400 chunks and the done frame
        assert peer.messages == stats.messages_sent < stats.frames_sent / 2
        assert stats.frames_coalesced == stats.frames_sent - stats.messages_sent > 0


async def test_tool_events_of_the_stream_are_relayed_as_tool_frames() -> None:
    class Calls(msgspec.Struct, frozen=True, kw_only=True, tag="tool_call"):
        step: int
        calls: list[llm.ToolCall]

        @property
        def type(self) -> str:
            return "tool_call"

    class Results(msgspec.Struct, frozen=True, kw_only=True, tag="tool_result"):
        step: int
        results: list[dict[str, Any]]

        @property
        def type(self) -> str:
            return "tool_result"

    call = llm.ToolCall(id="call_1", name="lookup", arguments='{"q": "x"}')

    class FakeStream:
        usage = None
        response = llm.Response(
            id="r",
            provider="fake",
            model="fake",
            created=__import__("datetime").datetime.now(__import__("datetime").UTC),
            choices=[],
        )

        def __init__(self) -> None:
            self.items: list[object] = [
                llm.StreamChunk(text="let me look"),
                Calls(step=0, calls=[call]),
                Results(step=0, results=[{"id": "call_1", "content": "found"}]),
                llm.StreamChunk(text="done"),
            ]

        async def __aenter__(self) -> FakeStream:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        def __aiter__(self) -> FakeStream:
            return self

        async def __anext__(self) -> object:
            await trio.lowlevel.checkpoint()
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop(0)

    class FakeClient:
        config = CONFIG

        def invoke(self, request: llm.Request) -> FakeStream:
            return FakeStream()

    async with trio.open_nursery() as nursery:
        front = WebSocketFront(FakeClient(), WebSocketConfig(port=0), grace=0.5)
        await nursery.start(front.serve)
        async with connect(front) as peer:
            await peer.send(invoke("t"))
            raw: list[dict[str, Any]] = []
            while not raw or raw[-1]["type"] not in ("done", "error"):
                message = msgspec.json.decode(await peer.ws.get_message())
                raw.extend(message["frames"] if message["type"] == "batch" else [message])
        nursery.cancel_scope.cancel()
    kinds = [frame["type"] for frame in raw]
    assert [k for k in kinds if k.startswith("tool")] == ["tool_call", "tool_result"]
    tool_call = next(f for f in raw if f["type"] == "tool_call")
    assert tool_call == {
        "type": "tool_call",
        "id": "t",
        "step": 0,
        "calls": [msgspec.to_builtins(call)],
    }
    tool_result = next(f for f in raw if f["type"] == "tool_result")
    assert tool_result["results"] == [{"id": "call_1", "content": "found"}]
    assert kinds[-1] == "done"
    for frame in raw:  # every frame decodes as the protocol's types
        decode_server_message(msgspec.json.encode(frame))


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_the_tool_loop_runs_when_allowed_and_its_steps_come_as_tool_frames() -> None:
    async with front_running(allow_tool_loop=True) as (client, front):
        client.register_tool(add)
        client.scenarios.add(
            "adder",
            Scenario(tool_calls=[ScriptedToolCall(name="add", arguments={"a": 2, "b": 3})]),
            Scenario(text="2 + 3 = 5"),
        )
        async with connect(front) as peer:
            await peer.send({**invoke("t", "adder"), "tool_mode": "auto", "max_steps": 3})
            frames: list[ServerFrame] = []
            while not frames or not isinstance(frames[-1], DoneFrame | ErrorFrame):
                frames.append(await peer.frame())
    kinds = [type(f).__name__ for f in frames]
    assert kinds.index("ToolCallFrame") < kinds.index("ToolResultFrame")
    (calls,) = [f for f in frames if isinstance(f, ToolCallFrame)]
    assert [c["name"] for c in calls.calls] == ["add"]
    (results,) = [f for f in frames if isinstance(f, ToolResultFrame)]
    assert [r["content"] for r in results.results] == ["5"]
    done = frames[-1]
    assert isinstance(done, DoneFrame)
    assert done.response.text == "2 + 3 = 5"


async def test_the_tool_loop_is_refused_unless_the_front_allows_it() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send({**invoke("t"), "tool_mode": "auto"})
        _, end = await peer.finish("t")
        assert isinstance(end, ErrorFrame)
        assert (end.code, end.details) == ("invalid_request", {"reason": "tool_loop_disabled"})


# -- cancel and disconnect -----------------------------------------------------------------------


async def test_cancel_ends_the_invocation_with_canceled_and_settles_it_as_cancelled() -> None:
    async with front_running() as (client, front), connect(front) as peer:
        await peer.send(invoke("c", "slow"))
        first = await peer.first_text("c")
        await peer.send({"type": "cancel", "id": "c"})
        text, end = await peer.finish("c")
        assert isinstance(end, ErrorFrame)
        assert end.code == "canceled"
        assert end.usage is not None
        assert len(first + text) < len(SLOW_TEXT)
        assert await statuses(client) == {"cancelled": 1}
        assert front.statistics().invocations == 0


async def test_a_cancel_for_an_unknown_id_is_ignored() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send({"type": "cancel", "id": "nobody"})
        await peer.send({"type": "ping", "nonce": "after"})
        assert await peer.frame() == PongFrame(nonce="after")


async def test_a_disconnect_cancels_every_upstream_call_and_settles_them_as_cancelled() -> None:
    async with front_running() as (client, front):
        async with connect(front) as peer:
            await peer.send(invoke("one", "endless"))
            await peer.send(invoke("two", "endless"))
            await peer.first_text("one")
            await eventually(lambda: front.statistics().invocations == 2)
        await eventually(lambda: front.statistics().invocations == 0)
        assert await statuses(client) == {"cancelled": 2}
        assert front.statistics().connections == 0


# -- handshake: tokens and origins ---------------------------------------------------------------


async def refused_status(
    front: WebSocketFront,
    *,
    path: str = "ws",
    query: str = "",
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
    origin: str | None = None,
) -> int:
    """The HTTP status a refused handshake gets (the websockets library, in a thread)."""
    url = front.ws_url.removesuffix("ws") + path + query

    def attempt() -> int:
        try:
            with ws_connect(
                url,
                additional_headers=headers,
                subprotocols=subprotocols,
                origin=origin,
                open_timeout=10,
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return await trio.to_thread.run_sync(attempt)


async def test_a_handshake_without_a_token_gets_401() -> None:
    async with front_running(ws={"tokens": [llm.Secret(TOKEN)]}) as (_, front):
        assert await refused_status(front) == 401
        assert front.statistics().auth_failures == 1


async def test_a_handshake_with_a_wrong_token_gets_401_and_no_token_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "tok-wrong-0000-guess"
    with front_logs(caplog):
        async with front_running(ws={"tokens": [llm.Secret(TOKEN)]}) as (_, front):
            assert await refused_status(front, query=f"?token={wrong}") == 401
            headers = {"Authorization": f"Bearer {wrong}"}
            assert await refused_status(front, headers=headers) == 401
            assert await refused_status(front, subprotocols=[f"bearer.{wrong}"]) == 401
            async with connect(front, query=f"?token={TOKEN}") as peer:
                await peer.send({"type": "ping"})
                await peer.frame()
    assert front.statistics().auth_failures == 3
    # The server's own records (the client libraries log the URL they connect to).
    server = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("llm_invocation")
        or (r.name == "trio-websocket" and r.getMessage().startswith("server-"))
    ]
    assert not [line for line in server if wrong in line or TOKEN in line]
    assert any("invalid token" in line for line in server)


@pytest.mark.parametrize("how", ["header", "query", "subprotocol", "subprotocol-alone"])
async def test_the_right_token_is_accepted_from_each_place(how: str) -> None:
    kwargs: dict[str, Any] = {}
    if how == "header":
        kwargs["headers"] = [(b"Authorization", f"Bearer {TOKEN}".encode())]
    elif how == "query":
        kwargs["query"] = f"?token={TOKEN}"
    elif how == "subprotocol":
        kwargs["subprotocols"] = ["llm-invocation.v1", f"bearer.{TOKEN}"]
    else:
        kwargs["subprotocols"] = [f"bearer.{TOKEN}"]
    async with (
        front_running(ws={"tokens": [llm.Secret("other-token-1"), llm.Secret(TOKEN)]}) as (
            _,
            front,
        ),
        connect(front, **kwargs) as peer,
    ):
        expected = {
            "subprotocol": "llm-invocation.v1",
            "subprotocol-alone": f"bearer.{TOKEN}",
        }.get(how)
        assert peer.ws.subprotocol == expected
        await peer.send(invoke("ok"))
        _, end = await peer.finish("ok")
        assert isinstance(end, DoneFrame)


async def test_without_tokens_a_web_page_of_another_origin_gets_403() -> None:
    async with front_running() as (_, front):
        assert await refused_status(front, origin="http://evil.example") == 403
        assert await refused_status(front, origin="null") == 403
        other_port = f"http://127.0.0.1:{front.port + 1}"
        assert await refused_status(front, origin=other_port) == 403
        assert front.statistics().origin_rejections == 3


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_without_tokens_the_fronts_own_loopback_origins_are_accepted(host: str) -> None:
    async with front_running() as (_, front):
        origin = f"http://{host}:{front.port}".encode()
        async with connect(front, headers=[(b"Origin", origin)]) as peer:
            await peer.send({"type": "ping", "nonce": 1})
            assert await peer.frame() == PongFrame(nonce=1)
        assert front.statistics().origin_rejections == 0


async def test_with_tokens_and_no_allow_list_any_origin_may_present_a_token() -> None:
    async with front_running(ws={"tokens": [llm.Secret(TOKEN)]}) as (_, front):
        origin = (b"Origin", b"https://app.example")
        async with connect(front, query=f"?token={TOKEN}", headers=[origin]) as peer:
            await peer.send({"type": "ping", "nonce": 2})
            assert await peer.frame() == PongFrame(nonce=2)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])  # noqa: S104 - refusing them is the test
async def test_a_front_without_tokens_refuses_a_non_loopback_host(host: str) -> None:
    async with llm.open_client(CONFIG) as client:
        with pytest.raises(llm.ConfigurationError, match="without tokens"):
            WebSocketFront(client, WebSocketConfig(host=host, port=0))
        # Either of the two ways out is accepted (nothing is bound here).
        WebSocketFront(client, WebSocketConfig(host=host, port=0, insecure_no_auth=True))
        WebSocketFront(client, WebSocketConfig(host=host, port=0, tokens=[llm.Secret(TOKEN)]))


async def test_an_origin_not_on_the_allow_list_gets_403() -> None:
    allowed = {"allowed_origins": ["http://good.example"]}
    async with front_running(ws=allowed) as (_, front):
        assert await refused_status(front, origin="http://evil.example") == 403
        assert front.statistics().origin_rejections == 1
        async with connect(front, headers=[(b"Origin", b"http://good.example")]) as peer:
            await peer.send({"type": "ping", "nonce": 1})
            assert await peer.frame() == PongFrame(nonce=1)


# -- frames the server cannot act on -------------------------------------------------------------


async def test_an_oversized_frame_gets_an_error_and_the_connection_lives_on() -> None:
    async with front_running(ws={"max_message_size": 1000}) as (_, front):
        async with connect(front) as peer:
            big = invoke("big", prompt="z" * 2000)
            await peer.send(big)
            error = await peer.frame()
            assert isinstance(error, ErrorFrame)
            assert error.code == "protocol_error"
            assert "max_message_size" in error.message
            await peer.send(invoke("small"))
            _, end = await peer.finish("small")
            assert isinstance(end, DoneFrame)
        assert front.statistics().protocol_errors == 1


async def test_a_frame_beyond_close_message_size_closes_the_connection_with_1009() -> None:
    limits = {"max_message_size": 1000}
    async with (
        front_running(ws=limits, close_message_size=4000) as (_, front),
        connect(front) as peer,
    ):
        await peer.send(invoke("huge", prompt="z" * 5000))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await peer.frame()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1009


@pytest.mark.parametrize(
    ("raw", "code", "id"),
    [
        ("this is not json", "protocol_error", None),
        ("[1, 2, 3]", "protocol_error", None),
        ('{"type": "launch", "id": "x1"}', "protocol_error", "x1"),
        ('{"type": "cancel"}', "protocol_error", None),
        (
            '{"type": "invoke", "id": "x2", "request": {"model": "", "messages": []}}',
            "invalid_request",
            "x2",
        ),
        ('{"type": "invoke", "id": "x3", "request": {"model": 5}}', "invalid_request", "x3"),
        ('{"type": "invoke", "id": 12, "request": {}}', "protocol_error", None),
    ],
)
async def test_a_malformed_frame_gets_an_error_and_the_connection_lives_on(
    raw: str, code: str, id: str | None
) -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(raw)
        error = await peer.frame()
        assert isinstance(error, ErrorFrame)
        assert (error.code, error.id) == (code, id)
        await peer.send(invoke("next"))
        _, end = await peer.finish("next")
        assert isinstance(end, DoneFrame)


async def next_error(peer: Peer) -> ErrorFrame:
    frame = await peer.frame()
    while not isinstance(frame, ErrorFrame):
        frame = await peer.frame()
    return frame


async def test_a_duplicate_live_id_gets_an_error_and_the_live_invocation_goes_on() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(invoke("d", "slow"))
        await peer.first_text("d")
        await peer.send(invoke("d"))
        duplicate = await next_error(peer)
        assert (duplicate.id, duplicate.code) == ("d", "invalid_request")
        assert duplicate.details == {"reason": "duplicate_id"}
        _, end = await peer.finish("d")
        assert isinstance(end, DoneFrame)
        assert end.response.text == SLOW_TEXT


async def test_a_duplicate_live_id_with_an_invalid_request_is_a_duplicate_not_an_end() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(invoke("d", "slow"))
        await peer.first_text("d")
        await peer.send({"type": "invoke", "id": "d", "request": {"model": 5}})
        duplicate = await next_error(peer)
        assert (duplicate.id, duplicate.code) == ("d", "invalid_request")
        assert duplicate.details == {"reason": "duplicate_id"}
        _, end = await peer.finish("d")
        assert isinstance(end, DoneFrame)
        assert not peer.pending


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "launch", "id": "d"}',
        '{"type": "ping", "id": "d", "nonce": [1]}',
        '{"id": "d"}',
    ],
)
async def test_an_unreadable_frame_naming_a_live_id_gets_an_error_without_that_id(
    raw: str,
) -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send(invoke("d", "slow"))
        await peer.first_text("d")
        await peer.send(raw)
        error = await next_error(peer)
        assert error.id is None
        assert error.code == "protocol_error"
        _, end = await peer.finish("d")
        assert isinstance(end, DoneFrame)


async def test_a_duplicate_id_during_the_shutdown_is_a_duplicate_not_the_live_ones_end() -> None:
    async with llm.open_client(CONFIG, scenarios=scenarios()) as client:
        front = WebSocketFront(client, WebSocketConfig(port=0), grace=5.0)
        await client.runtime.start_child(front.child_spec())
        port = front.port
        async with connect(front) as peer:
            await peer.send(invoke("g", "slow"))
            await peer.first_text("g")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.runtime.terminate_child, "websocket_front")
                await eventually(lambda: not_(listening(port)))
                await peer.send(invoke("g"))
                duplicate = await next_error(peer)
                assert (duplicate.id, duplicate.details) == ("g", {"reason": "duplicate_id"})
                _, end = await peer.finish("g")
                assert isinstance(end, DoneFrame)


# -- limits --------------------------------------------------------------------------------------


async def test_invocations_beyond_the_per_connection_limit_are_refused_as_overloaded() -> None:
    async with front_running(ws={"max_concurrent_per_connection": 1}) as (_, front):
        async with connect(front) as peer:
            await peer.send(invoke("first", "slow"))
            await peer.send(invoke("second"))
            _, refused = await peer.finish("second")
            assert isinstance(refused, ErrorFrame)
            assert refused.code == "overloaded"
            _, end = await peer.finish("first")
            assert isinstance(end, DoneFrame)
            await peer.send(invoke("third"))  # room again
            _, end = await peer.finish("third")
            assert isinstance(end, DoneFrame)
        assert front.statistics().overloaded == 1


async def test_the_per_connection_rate_limit_refuses_with_rate_limit_exceeded() -> None:
    async with front_running(ws={"client_requests_per_minute": 2}) as (_, front):
        async with connect(front) as peer:
            for id in ("r1", "r2"):
                await peer.send(invoke(id))
                _, end = await peer.finish(id)
                assert isinstance(end, DoneFrame)
            await peer.send(invoke("r3"))
            _, refused = await peer.finish("r3")
            assert isinstance(refused, ErrorFrame)
            assert refused.code == "rate_limit_exceeded"
            assert refused.retry_after is not None
            assert 0 < refused.retry_after <= 30
        async with connect(front) as other:  # the bucket is per connection
            await other.send(invoke("r4"))
            _, end = await other.finish("r4")
            assert isinstance(end, DoneFrame)
        assert front.statistics().rate_limited == 1


async def test_a_client_that_stops_reading_gets_its_invocation_cancelled_not_buffered() -> None:
    many = Scenario(text="w" * 4_000_000, chunk_chars=2000)  # 2,000 chunks of 2 kB
    limits = {"max_queued_frames": 64, "max_queued_bytes": 256 << 10}
    async with front_running(slow_consumer_timeout=0.2, **limits) as (client, front):
        client.scenarios.add("many", many)
        async with connect(front) as peer:
            await peer.send(invoke("s", "many"))
            # Read nothing: kernel buffers fill, then the front's queue, then it gives up.
            await eventually(lambda: front.statistics().slow_client_cancellations == 1)
            await eventually(lambda: front.statistics().invocations == 0)
            text, end = await peer.finish("s")
        assert isinstance(end, ErrorFrame)
        assert end.code == "overloaded"
        assert end.details == {"reason": "slow_consumer"}
        assert 0 < len(text) < 4_000_000
        assert await statuses(client) == {"cancelled": 1}


def ws_frames_until_end(ws: Any, id: str) -> tuple[str, ServerFrame]:
    """Read with the websockets library until ``id`` ends: its text and terminal frame."""
    text: list[str] = []
    while True:
        for frame in decode_server_message(ws.recv(timeout=10)):
            match frame:
                case ChunkFrame(id=frame_id, chunk=chunk) if frame_id == id:
                    text.append(chunk.text)
                case ChunksFrame(id=frame_id, chunks=chunks) if frame_id == id:
                    text.extend(c.text for c in chunks)
                case DoneFrame(id=frame_id) | ErrorFrame(id=frame_id) if frame_id == id:
                    return "".join(text), frame
                case _:
                    pass


async def test_the_websockets_library_cancels_survives_bad_frames_and_disconnects() -> None:
    async with front_running(ws={"max_message_size": 1000}) as (client, front):
        url = front.ws_url
        results: dict[str, Any] = {}

        def talk() -> None:
            with ws_connect(url, open_timeout=10) as ws:
                # cancel
                ws.send(msgspec.json.encode(invoke("c", "slow")).decode())
                ws.recv(timeout=10)  # it has started streaming
                ws.send('{"type": "cancel", "id": "c"}')
                results["cancel"] = ws_frames_until_end(ws, "c")
                # malformed, then oversized: an error each, and the connection lives on
                ws.send("not json at all")
                results["malformed"] = decode_server_message(ws.recv(timeout=10))
                ws.send(msgspec.json.encode(invoke("big", prompt="z" * 2000)).decode())
                results["oversized"] = decode_server_message(ws.recv(timeout=10))
                ws.send(msgspec.json.encode(invoke("ok")).decode())
                results["after"] = ws_frames_until_end(ws, "ok")
                # a disconnect mid-stream
                ws.send(msgspec.json.encode(invoke("gone", "endless")).decode())
                ws.recv(timeout=10)
            # Leaving the block closed the connection with "gone" still streaming.

        await trio.to_thread.run_sync(talk)
        text, end = results["cancel"]
        assert isinstance(end, ErrorFrame) and end.code == "canceled" and end.usage is not None
        assert len(text) < len(SLOW_TEXT)
        [malformed] = results["malformed"]
        assert isinstance(malformed, ErrorFrame) and malformed.code == "protocol_error"
        [oversized] = results["oversized"]
        assert isinstance(oversized, ErrorFrame) and oversized.code == "protocol_error"
        assert isinstance(results["after"][1], DoneFrame)
        await eventually(lambda: front.statistics().invocations == 0)
        assert await statuses(client) == {"cancelled": 2, "ok": 1}
        assert front.statistics().protocol_errors == 2


async def test_the_websockets_library_client_that_stops_reading_is_cut_off() -> None:
    many = Scenario(text="w" * 4_000_000, chunk_chars=2000)
    limits = {"max_queued_frames": 64, "max_queued_bytes": 256 << 10}
    async with front_running(slow_consumer_timeout=0.2, **limits) as (client, front):
        client.scenarios.add("many", many)
        url = front.ws_url
        given_up = threading.Event()

        def talk() -> tuple[str, ServerFrame]:
            # max_queue=1: the library stops reading the socket once a message waits.
            with ws_connect(url, open_timeout=10, max_queue=1) as ws:
                ws.send(msgspec.json.encode(invoke("s", "many")).decode())
                assert given_up.wait(30), "the front never gave up on the client"
                return ws_frames_until_end(ws, "s")

        async with trio.open_nursery() as nursery:
            outcome: list[tuple[str, ServerFrame]] = []

            async def client_side() -> None:
                outcome.append(await trio.to_thread.run_sync(talk))

            nursery.start_soon(client_side)
            await eventually(lambda: front.statistics().slow_client_cancellations == 1, 30)
            given_up.set()
        [(text, end)] = outcome
        assert isinstance(end, ErrorFrame)
        assert end.code == "overloaded" and end.details == {"reason": "slow_consumer"}
        assert 0 < len(text) < 4_000_000
        assert await statuses(client) == {"cancelled": 1}


async def test_a_burst_from_many_invocations_waits_for_room_instead_of_being_cancelled() -> None:
    async with (
        front_running(ws={"max_concurrent_per_connection": 30}, max_queued_frames=32) as (
            _,
            front,
        ),
        connect(front) as peer,
    ):
        ids = [f"b{i}" for i in range(30)]
        for id in ids:
            await peer.send(invoke(id, "fast"))
        texts = dict.fromkeys(ids, "")
        ends: dict[str, ServerFrame] = {}
        while len(ends) < len(ids):
            frame = await peer.frame()
            match frame:
                case ChunkFrame(id=id, chunk=chunk):
                    texts[id] += chunk.text
                case ChunksFrame(id=id, chunks=chunks):
                    texts[id] += "".join(c.text for c in chunks)
                case DoneFrame(id=id) | ErrorFrame(id=str() as id):
                    ends[id] = frame
                case _:
                    pass
        assert all(isinstance(end, DoneFrame) for end in ends.values())
        assert all(text == "x" * 2000 for text in texts.values())
        stats = front.statistics()
        assert stats.slow_client_cancellations == 0
        assert stats.messages_sent < stats.frames_sent / 10


# -- shutdown ------------------------------------------------------------------------------------


async def listening(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def test_stopping_the_front_lets_invocations_finish_then_closes_with_1001() -> None:
    async with llm.open_client(CONFIG, scenarios=scenarios()) as client:
        front = WebSocketFront(client, WebSocketConfig(port=0), grace=5.0)
        await client.runtime.start_child(front.child_spec())
        port = front.port
        async with connect(front) as peer:
            await peer.send(invoke("g", "slow"))
            await peer.first_text("g")
            frames: list[ServerFrame] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.runtime.terminate_child, "websocket_front")
                await eventually(lambda: not_(listening(port)))  # it stopped accepting
                await peer.send(invoke("late"))  # and starts nothing new
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        frames.append(await peer.frame())
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1001
        late = [f for f in frames if isinstance(f, ErrorFrame) and f.id == "late"]
        assert [f.details for f in late] == [{"reason": "shutting_down"}]
        (done,) = [f for f in frames if isinstance(f, DoneFrame)]
        assert done.id == "g"
        assert done.response.text == SLOW_TEXT  # the one in flight finished within the grace
        with pytest.raises(RuntimeError):
            _ = front.port
        assert await statuses(client) == {"ok": 1}


async def not_(check: Awaitable[bool]) -> bool:
    return not await check


async def test_an_idle_connection_does_not_hold_up_the_shutdown() -> None:
    async with llm.open_client(CONFIG, scenarios=scenarios()) as client:
        front = WebSocketFront(client, WebSocketConfig(port=0), handshake_timeout=60)
        await client.runtime.start_child(front.child_spec())
        idle = await trio.open_tcp_stream("127.0.0.1", front.port)  # sends nothing
        try:
            await eventually(lambda: front.statistics().handshakes == 1)
            with trio.fail_after(3):
                await client.runtime.terminate_child("websocket_front")
            assert await idle.receive_some() == b""  # closed by the server
        finally:
            await idle.aclose()


async def test_a_malformed_handshake_gets_an_http_error_at_once() -> None:
    async with front_running() as (_, front):
        stream = await trio.open_tcp_stream("127.0.0.1", front.port)
        async with stream:
            await stream.send_all(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )
            answer = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        stream = await trio.open_tcp_stream("127.0.0.1", front.port)
        async with stream:
            await stream.send_all(b"garbage\r\n\r\n")
            with trio.fail_after(5):
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 400 ")


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """What the front sends until it closes (a reset after its answer ends it too)."""
    received = b""
    try:
        while chunk := await stream.receive_some():
            received += chunk
    except trio.BrokenResourceError:
        pass
    return received


async def test_a_handshake_carrying_a_body_gets_400() -> None:
    async with front_running() as (_, front):
        stream = await trio.open_tcp_stream("127.0.0.1", front.port)
        async with stream:
            await stream.send_all(UPGRADE.removesuffix(b"\r\n") + b"Content-Length: 5\r\n\r\nhello")
            with trio.fail_after(5):
                answer = await read_to_end(stream)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert answer.endswith(b"a GET request must not have a body\n")
        assert front.statistics().connections_total == 0


async def test_a_handshake_arriving_in_pieces_is_accepted_and_the_socket_works() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    handshake = client.send(WsRequest(host="127.0.0.1", target="/ws?token=" + TOKEN))
    messages: list[str] = []
    async with front_running(ws={"tokens": [llm.Secret(TOKEN)]}) as (_, front):
        stream = await trio.open_tcp_stream("127.0.0.1", front.port)
        async with stream:
            for start in range(0, len(handshake), 7):
                await stream.send_all(handshake[start : start + 7])
            with trio.fail_after(5):
                while not messages:
                    data = await stream.receive_some()
                    assert data, "the front closed the connection"
                    client.receive_data(data)
                    for event in client.events():
                        if isinstance(event, AcceptConnection):
                            await stream.send_all(
                                client.send(TextMessage(data='{"type":"ping","nonce":"n"}'))
                            )
                        elif isinstance(event, TextMessage):
                            messages.append(event.data)
    assert list(decode_server_message(messages[0])) == [PongFrame(nonce="n")]


async def test_stopping_the_front_cancels_what_outlives_the_grace() -> None:
    async with llm.open_client(CONFIG, scenarios=scenarios()) as client:
        async with trio.open_nursery() as outer:
            server = trio.CancelScope()

            async def run(*, task_status: trio.TaskStatus[int]) -> None:
                with server:
                    await serve_websocket_front(
                        client, WebSocketConfig(port=0), grace=0.2, task_status=task_status
                    )

            port = await outer.start(run)
            async with connect(port) as peer:
                await peer.send(invoke("e", "endless"))
                await peer.first_text("e")
                server.cancel()
                _, end = await peer.finish("e")
                assert isinstance(end, ErrorFrame)
                assert end.code == "canceled"
                assert "shutting down" in end.message
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await peer.frame()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1001
        assert await statuses(client) == {"cancelled": 1}


# -- the rest ------------------------------------------------------------------------------------


async def test_a_ping_is_answered_with_a_pong_carrying_its_nonce() -> None:
    async with front_running() as (_, front), connect(front) as peer:
        await peer.send({"type": "ping", "nonce": "n-1"})
        assert await peer.frame() == PongFrame(nonce="n-1")
        await peer.send({"type": "ping"})
        assert await peer.frame() == PongFrame(nonce=None)


async def test_get_slash_serves_the_chat_page_and_its_files() -> None:
    async with front_running() as (_, front), httpx.AsyncClient(base_url=front.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>llm-invocation chat</title>" in page.text
        assert "Content-Security-Policy" in page.headers
        assert page.headers["referrer-policy"] == "no-referrer"
        script = await http.get("/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "new WebSocket" in script.text
        style = await http.get("/style.css")
        assert style.headers["content-type"].startswith("text/css")
        config = await http.get("/config.json")
        assert config.json()["model"] == "mock"
        assert config.json()["ws"] == "/ws"
        assert (await http.get("/nope.js")).status_code == 404
        assert (await http.get("/../pyproject.toml")).status_code == 404
        assert (await http.get("/ws")).status_code == 426
        assert (await http.post("/", content=b"x")).status_code == 405
        head = await http.head("/")
        assert head.status_code == 200
        assert head.content == b""


async def test_the_page_is_served_without_a_token_but_the_socket_needs_one() -> None:
    async with (
        front_running(ws={"tokens": [llm.Secret(TOKEN)]}) as (_, front),
        httpx.AsyncClient(base_url=front.url) as http,
    ):
        assert (await http.get("/")).status_code == 200
        assert await refused_status(front) == 401


async def test_a_websocket_handshake_on_another_path_gets_404() -> None:
    async with front_running() as (_, front):
        assert await refused_status(front, path="elsewhere") == 404


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_rude_clients_do_not_disturb_the_front(caplog: pytest.LogCaptureFixture) -> None:
    with front_logs(caplog):
        async with front_running() as (_, front):
            # Gone right after the handshake request, half-way through a head, or mid-stream.
            for data in (UPGRADE, b"GET / HTTP/1.1\r\nHost: x\r\n"):
                stream = await trio.open_tcp_stream("127.0.0.1", front.port)
                await stream.send_all(data)
                await stream.aclose()
            async with connect(front) as peer:
                await peer.send(invoke("gone", "endless"))
                await peer.first_text("gone")
                assert peer.stream is not None
                await trio.aclose_forcefully(peer.stream)  # no closing handshake
            # A handshake followed by bytes that are not a WebSocket frame: the server hangs up.
            stream = await trio.open_tcp_stream("127.0.0.1", front.port)
            async with stream:
                await stream.send_all(UPGRADE)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some()
                assert head.startswith(b"HTTP/1.1 101 ")
                await stream.send_all(b"\xff" * 64)
                with trio.fail_after(5):
                    while await stream.receive_some():
                        pass
            await eventually(lambda: front.statistics().invocations == 0)
            async with connect(front) as peer:  # the front serves on
                await peer.send(invoke("fine"))
                _, end = await peer.finish("fine")
                assert isinstance(end, DoneFrame)
    assert any(r.name == "llm_invocation.websocket" for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_static_dir_replaces_the_packaged_page(tmp_path: Any) -> None:
    (tmp_path / "index.html").write_text("<p>mine</p>")
    async with (
        front_running(static_dir=tmp_path) as (_, front),
        httpx.AsyncClient(base_url=front.url) as http,
    ):
        assert (await http.get("/")).text == "<p>mine</p>"
        assert (await http.get("/app.js")).status_code == 404


async def test_statistics_count_connections_and_invocations() -> None:
    async with front_running() as (_, front):
        async with connect(front) as peer:
            await peer.send(invoke("a"))
            await peer.finish("a")
            stats = front.statistics()
            assert (stats.connections, stats.connections_total) == (1, 1)
            assert (stats.invocations, stats.invocations_total) == (0, 1)
        await eventually(lambda: front.statistics().connections == 0)


async def test_the_websockets_client_sees_1001_when_the_front_stops() -> None:
    async with llm.open_client(CONFIG, scenarios=scenarios()) as client:
        front = WebSocketFront(client, WebSocketConfig(port=0), grace=0.5)
        await client.runtime.start_child(front.child_spec())
        url = front.ws_url
        connected = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wait_for_close() -> int | None:
            with ws_connect(url) as ws:
                trio.from_thread.run_sync(connected.set, trio_token=token)
                try:
                    while True:
                        ws.recv(timeout=10)
                except WsClosed as exc:
                    return exc.rcvd.code if exc.rcvd is not None else None
            return None

        async with trio.open_nursery() as nursery:
            result: list[int | None] = []

            async def client_side() -> None:
                result.append(await trio.to_thread.run_sync(wait_for_close))

            nursery.start_soon(client_side)
            await connected.wait()
            await client.runtime.terminate_child("websocket_front")
        assert result == [1001]


async def test_serve_front_runs_a_client_and_the_front_says_where_and_stops_the_front() -> None:
    import io

    out = io.StringIO()
    config = llm.Config(
        provider="mock", model="mock", websocket=WebSocketConfig(port=0, tokens=[llm.Secret(TOKEN)])
    )
    stop = trio.Event()
    fronts: list[WebSocketFront] = []

    async def until(front: WebSocketFront) -> None:
        fronts.append(front)
        await stop.wait()

    async with trio.open_nursery() as nursery:
        run = functools.partial(serve_front, config, config.websocket, out=out, until=until)
        nursery.start_soon(run)
        await eventually(lambda: "WebSocket:" in out.getvalue())
        page_line, ws_line = out.getvalue().splitlines()
        assert page_line.endswith("/?token=<token>")
        assert TOKEN not in out.getvalue()
        url = page_line.split()[-1].removesuffix("?token=<token>")
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).status_code == 200
        port = int(ws_line.rsplit(":", 1)[1].split("/")[0])
        async with connect(port, query=f"?token={TOKEN}") as peer:
            await peer.send(invoke("cli"))
            _, end = await peer.finish("cli")
            assert isinstance(end, DoneFrame)
            stop.set()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await peer.frame()
        assert closed.value.reason is not None
        assert (closed.value.reason.code, closed.value.reason.reason) == (
            1001,
            "server shutting down",
        )
    with pytest.raises(RuntimeError):
        _ = fronts[0].port  # stopped with the command


class ScriptedService:
    """Not a client: anything with ``config`` and ``invoke`` can drive a front."""

    def __init__(self, client: llm.Client) -> None:
        self.config = CONFIG
        self.requests: list[llm.Request] = []
        self._client = client

    def invoke(
        self, request: llm.Request, /, *, tool_mode: Any = None, max_steps: int | None = None
    ) -> Any:
        self.requests.append(request)
        return self._client.invoke(request)


async def test_the_front_serves_any_invocation_service_not_only_a_client() -> None:
    async with (
        llm.open_client(CONFIG, scenarios=scenarios()) as client,
        trio.open_nursery() as nursery,
    ):
        service = ScriptedService(client)
        front = WebSocketFront(service, WebSocketConfig(port=0), grace=1.0)
        await nursery.start(front.serve)
        async with connect(front) as peer:
            await peer.send(invoke("svc", prompt="through a service"))
            text, end = await peer.finish("svc")
        nursery.cancel_scope.cancel()
    assert isinstance(end, DoneFrame)
    assert text == "hello over the socket"
    assert [r.messages[0].text for r in service.requests] == ["through a service"]


def test_the_documentation_holds_the_protocol_reference_rendered_from_the_types() -> None:
    from pathlib import Path

    docs = Path(__file__).parent.parent / "docs" / "websocket.md"
    assert render_reference() in docs.read_text(encoding="utf-8")
