"""FastHTTPTransport: httpx's API over our own HTTP/1.1 wire work, on real sockets.

Most tests run a small trio server in the test (``serve``) whose handler scripts exactly
what goes on the wire; the rest use the fake provider server. Synchronisation is by events
and `trio.testing.wait_all_tasks_blocked`, never by sleeping.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
import itertools
import json
import re
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.http._transport import (
    _CHUNKED,
    FastHTTPTransport,
    ResponseBody,
    _Connection,
    _Pool,
)
from llm_invocation.testing import Scenario, Scenarios, open_fake_server

# -- a scripted server -------------------------------------------------------------------------


class Request:
    """A request as the server read it."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> bytes | None:
        match = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r$", self.head)
        return match[1] if match else None


class Peer:
    """The server's side of one connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def request(self) -> Request | None:
        """The next request, or None when the client closed the connection."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                return None
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        request = Request(head, b"")
        if (request.header("transfer-encoding") or b"").lower() == b"chunked":
            body = bytearray()
            while True:
                while b"\r\n" not in self.buffer:
                    assert await self._fill()
                line_end = self.buffer.index(b"\r\n")
                size = int(self.buffer[:line_end], 16)
                while len(self.buffer) < line_end + 2 + size + 2:
                    assert await self._fill()
                body += self.buffer[line_end + 2 : line_end + 2 + size]
                del self.buffer[: line_end + 2 + size + 2]
                if not size:
                    break
            request.body = bytes(body)
        else:
            length = int(request.header("content-length") or 0)
            while len(self.buffer) < length:
                assert await self._fill()
            request.body = bytes(self.buffer[:length])
            del self.buffer[:length]
        return request

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def wait_closed(self) -> None:
        """Return when the client closed (or reset) the connection."""
        try:
            while await self._fill():
                pass
        except trio.BrokenResourceError:
            pass

    async def reset(self) -> None:
        """Close with a TCP reset instead of an orderly FIN."""
        assert isinstance(self.stream, trio.SocketStream)
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


class Server:
    def __init__(self, url: str) -> None:
        self.url = url
        self.connections = 0


Handler = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncGenerator[Server]:
    """Run ``handler`` for every connection to a server on 127.0.0.1, port 0."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        server = Server(f"http://127.0.0.1:{port}")

        async def connection(stream: trio.SocketStream) -> None:
            server.connections += 1
            try:
                await handler(Peer(stream))
            finally:
                await stream.aclose()

        nursery.start_soon(trio.serve_listeners, connection, listeners)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def answer_each(response: bytes, peer: Peer) -> None:
    """Answer every request on the connection with ``response``."""
    while await peer.request() is not None:
        await peer.send(response)


def client(transport: FastHTTPTransport, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0, **timeouts))


# -- bodies and framing ------------------------------------------------------------------------


async def test_content_length_body_is_read_and_the_connection_kept() -> None:
    transport = FastHTTPTransport()
    async with (
        serve(partial(answer_each, ok(b"hello world", b"X-Test: yes"))) as server,
        client(transport) as http,
    ):
        response = await http.get(server.url + "/path?q=1")
        assert response.status_code == 200
        assert response.content == b"hello world"
        assert response.headers["x-test"] == "yes"
        assert response.http_version == "HTTP/1.1"
        assert response.reason_phrase == "OK"
        stats = transport.statistics()
        assert (stats.idle, stats.in_use, stats.connections_open) == (1, 0, 1)


async def test_request_head_carries_target_host_headers_and_body() -> None:
    seen: list[Request] = []

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            seen.append(request)
            await peer.send(ok(b""))

    async with serve(handler) as server, client(FastHTTPTransport()) as http:
        await http.post(server.url + "/a/b?x=1&y=2", content=b'{"k": 1}', headers={"X-A": "b"})
    [request] = seen
    assert request.line == b"POST /a/b?x=1&y=2 HTTP/1.1"
    assert request.header("host") == server.url.removeprefix("http://").encode()
    assert request.header("x-a") == b"b"
    assert request.header("content-length") == b"8"
    assert request.header("connection") == b"keep-alive"
    assert request.body == b'{"k": 1}'


async def test_streamed_request_body_is_sent_chunked() -> None:
    seen: list[Request] = []

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            seen.append(request)
            await peer.send(ok(b"done"))

    async def pieces() -> AsyncGenerator[bytes]:
        for piece in (b"one ", b"", b"two ", b"three"):
            yield piece

    async with serve(handler) as server, client(FastHTTPTransport()) as http:
        response = await http.post(server.url, content=pieces())
    assert response.content == b"done"
    assert seen[0].header("transfer-encoding") == b"chunked"
    assert seen[0].body == b"one two three"


async def test_large_bytes_body_is_sent_whole() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: sent after the head rather than joined to it
    seen: list[Request] = []

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            seen.append(request)
            await peer.send(ok(b"ok"))

    async with serve(handler) as server, client(FastHTTPTransport()) as http:
        await http.put(server.url, content=body)
    assert seen[0].body == body


async def test_chunked_body_written_byte_by_byte_is_decoded() -> None:
    wire = CHUNKED_HEAD + chunked(b"data: one\n\n", b"x" * 300, b"z") + b""

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            for byte in wire:
                await peer.send(bytes([byte]))

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        for _ in range(2):
            async with http.stream("GET", server.url) as response:
                assert b"".join([piece async for piece in response.aiter_raw()]) == (
                    b"data: one\n\n" + b"x" * 300 + b"z"
                )
    assert transport.statistics().created == 1


async def test_content_length_body_arriving_in_pieces_is_handed_out_as_it_comes() -> None:
    more = trio.Event()

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello")
            await more.wait()
            await peer.send(b" world")

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        async with http.stream("GET", server.url) as response:
            pieces = response.aiter_raw()
            assert await anext(pieces) == b"hello"
            more.set()
            assert b"".join([piece async for piece in pieces]) == b" world"
        assert (await http.get(server.url)).content == b"hello world"
        assert transport.statistics().created == 1


async def test_large_response_body_is_read_whole() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: many full reads
    transport = FastHTTPTransport()
    async with serve(partial(answer_each, ok(body))) as server, client(transport) as http:
        for _ in range(2):
            assert (await http.get(server.url)).content == body
        async with http.stream("GET", server.url) as response:
            pieces = [piece async for piece in response.aiter_raw()]
        assert b"".join(pieces) == body
        assert max(map(len, pieces)) <= 65536
        assert transport.statistics().created == 1


async def test_bare_lf_response_head_is_accepted() -> None:
    response = b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok"
    async with serve(partial(answer_each, response)) as server, client(FastHTTPTransport()) as http:
        reply = await http.get(server.url)
    assert (reply.content, reply.headers["x-a"]) == (b"ok", "b")


@pytest.mark.parametrize(
    ("response", "created"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 2),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", 1),
        (CHUNKED_HEAD + chunked(b"ok") + b"unasked bytes", 2),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok and more", 2),
    ],
    ids=["http/1.0", "http/1.0-keep-alive", "bytes-after-chunked", "bytes-after-length"],
)
async def test_connection_reuse_follows_the_response(response: bytes, created: int) -> None:
    transport = FastHTTPTransport()
    async with serve(partial(answer_each, response)) as server, client(transport) as http:
        for _ in range(2):
            assert (await http.get(server.url)).content == b"ok"
    assert transport.statistics().created == created


@asynccontextmanager
async def chunked_decoder() -> AsyncGenerator[ResponseBody]:
    """A chunked body on a connection nobody writes to: fed through ``_decode`` directly."""
    pool = _Pool(max_connections=1, max_idle=1, keepalive_expiry=30.0)
    ours, theirs = socket.socketpair()
    conn = _Connection(("http", "test", 80), ours, None, pool.watchdog)
    pool.add(conn)
    body = ResponseBody(
        pool,
        conn,
        mode=_CHUNKED,
        length=0,
        initial=b"",
        keep_alive=True,
        timeout=None,
        read_buffer=65536,
    )
    try:
        yield body
    finally:
        pool.close()
        theirs.close()


WIRE = (
    b"5;ext=1\r\nhello\r\n"  # a chunk extension: ignored
    b"1A\r\n" + b"a" * 26 + b"\r\n"  # upper-case hex
    b"0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n"  # trailers: skipped
)
DECODED = b"hello" + b"a" * 26


@pytest.mark.parametrize("split", range(1, len(WIRE)))
async def test_chunked_decoder_handles_a_split_at_every_byte(split: int) -> None:
    async with chunked_decoder() as body:
        out = body.decode(WIRE[:split]) + body.decode(WIRE[split:])
        assert out == DECODED
        assert body.done()


async def test_chunked_decoder_handles_one_byte_at_a_time() -> None:
    async with chunked_decoder() as body:
        out = b"".join(body.decode(WIRE[i : i + 1]) for i in range(len(WIRE)))
        assert out == DECODED
        assert body.done()


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
async def test_chunked_decoder_agrees_with_the_encoding(
    pieces: list[bytes], cuts: list[int]
) -> None:
    wire = chunked(*pieces)
    points = sorted({c for c in cuts if c < len(wire)} | {0, len(wire)})
    async with chunked_decoder() as body:
        out = b"".join(body.decode(wire[a:b]) for a, b in itertools.pairwise(points))
        assert out == b"".join(pieces)
        assert body.done()


@pytest.mark.parametrize(
    "bad",
    [b"zz\r\nhi\r\n", b"2\r\nhiXX", b"-1\r\n", b"0x2\r\nhi\r\n", b"1" * 9000],
    ids=["not-hex", "no-crlf-after-data", "negative", "0x-prefix", "size-line-too-long"],
)
async def test_chunked_decoder_rejects_malformed_framing(bad: bytes) -> None:
    async with chunked_decoder() as body:
        with pytest.raises(httpx.RemoteProtocolError):
            body.decode(bad)


async def test_close_delimited_body_reads_to_eof_and_is_not_reused() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\nfirst part, ")
        await peer.send(b"second part")

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        response = await http.get(server.url)
        assert response.content == b"first part, second part"
        stats = transport.statistics()
        assert (stats.connections_open, stats.idle, stats.in_use) == (0, 0, 0)


@pytest.mark.parametrize(
    ("method", "response"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"),
    ],
    ids=["204", "304", "HEAD"],
)
async def test_responses_without_a_body_keep_the_connection(method: str, response: bytes) -> None:
    transport = FastHTTPTransport()
    async with serve(partial(answer_each, response)) as server, client(transport) as http:
        for _ in range(3):
            reply = await http.request(method, server.url)
            assert reply.content == b""
    assert (transport.statistics().created, transport.statistics().reused) == (1, 2)


async def test_interim_100_continue_responses_are_skipped() -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + ok(b"final")
    async with serve(partial(answer_each, response)) as server, client(FastHTTPTransport()) as http:
        reply = await http.post(server.url, content=b"x", headers={"Expect": "100-continue"})
    assert (reply.status_code, reply.content) == (200, b"final")


async def test_connection_close_from_the_server_is_honoured() -> None:
    async with serve(partial(answer_each, ok(b"bye", b"Connection: close"))) as server:
        transport = FastHTTPTransport()
        async with client(transport) as http:
            assert (await http.get(server.url)).content == b"bye"
            assert transport.statistics().connections_open == 0


# -- keep-alive and the pool -------------------------------------------------------------------


async def test_sequential_requests_share_one_connection() -> None:
    transport = FastHTTPTransport()
    async with open_fake_server() as server, client(transport) as http:
        for _ in range(5):
            response = await http.post(
                server.base_url("openai") + "/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
        stats = transport.statistics()
        assert (stats.created, stats.reused, stats.idle) == (1, 4, 1)
        assert server.statistics().connections_total == 1


async def test_streamed_sse_through_async_client() -> None:
    scenarios = Scenarios(Scenario(text="one two three four five six", chunk_chars=4))
    transport = FastHTTPTransport()
    async with open_fake_server(scenarios) as server, client(transport) as http:
        events: list[str] = []
        async with http.stream(
            "POST",
            server.base_url("openai") + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as response:
            buffer = b""
            async for data in response.aiter_raw():
                buffer += data
                *complete, buffer = buffer.split(b"\n\n")
                events += [e.decode() for e in complete]
        assert events[-1] == "data: [DONE]"
        text = "".join(
            (json.loads(e[6:])["choices"][0]["delta"].get("content") or "")
            for e in events[:-1]
            if e.startswith("data: {")
            and json.loads(e[6:])["choices"]  # the usage chunk has no choices
        )
        assert text == "one two three four five six"
        assert transport.statistics().idle == 1


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    closed = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"once"))
        await peer.stream.aclose()  # closes the idle keep-alive connection
        closed.set()

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        assert (await http.get(server.url)).content == b"once"
        await closed.wait()
        assert (await http.get(server.url)).content == b"once"
        stats = transport.statistics()
        assert (stats.created, stats.discarded, stats.reused) == (2, 1, 0)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_request_racing_the_idle_close_is_retried_once(how: str) -> None:
    """The server takes the second request's bytes but drops the connection unanswered."""

    async def handler(peer: Peer) -> None:
        first = await peer.request()
        assert first is not None
        await peer.send(ok(b"first"))
        if await peer.request() is None:
            return
        if how == "reset":
            await peer.reset()
        else:
            await peer.stream.aclose()
        # A fresh connection (the retry) is answered by the next handler call.

    async def dispatch(peer: Peer) -> None:
        if server.connections == 1:
            await handler(peer)
        else:
            await answer_each(ok(b"retried"), peer)

    transport = FastHTTPTransport()
    async with serve(dispatch) as server, client(transport) as http:
        assert (await http.post(server.url, content=b"1")).content == b"first"
        assert (await http.post(server.url, content=b"2")).content == b"retried"
        stats = transport.statistics()
        assert (stats.created, stats.reused) == (2, 1)


async def test_request_on_a_new_connection_is_not_retried() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.stream.aclose()

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get(server.url)
        assert server.connections == 1


async def test_expired_idle_connection_is_discarded() -> None:
    transport = FastHTTPTransport(keepalive_expiry=0.0)
    async with serve(partial(answer_each, ok(b"x"))) as server, client(transport) as http:
        await http.get(server.url)
        await trio.testing.wait_all_tasks_blocked()  # real time moves on past the expiry
        await http.get(server.url)
        stats = transport.statistics()
        assert (stats.created, stats.discarded) == (2, 1)


async def test_max_idle_per_origin_zero_disables_keep_alive() -> None:
    transport = FastHTTPTransport(max_idle_per_origin=0)
    async with serve(partial(answer_each, ok(b"x"))) as server, client(transport) as http:
        await http.get(server.url)
        await http.get(server.url)
        assert transport.statistics().created == 2
        assert transport.statistics().connections_open == 0


async def test_transport_aclose_closes_idle_connections() -> None:
    gone = trio.Event()

    async def handler(peer: Peer) -> None:
        await answer_each(ok(b"x"), peer)
        gone.set()  # the client closed the connection

    transport = FastHTTPTransport()
    async with serve(handler) as server:
        http = client(transport)
        await http.get(server.url)
        assert transport.statistics().idle == 1
        await http.aclose()  # closes the transport
        with trio.fail_after(5):
            await gone.wait()
        assert transport.statistics().connections_open == 0
        with pytest.raises(RuntimeError, match="closed"):
            await transport.handle_async_request(httpx.Request("GET", server.url))


async def test_idle_connection_of_another_origin_is_evicted_at_the_cap() -> None:
    transport = FastHTTPTransport(max_connections=1)
    async with (
        serve(partial(answer_each, ok(b"a"))) as first,
        serve(partial(answer_each, ok(b"b"))) as second,
        client(transport) as http,
    ):
        assert (await http.get(first.url)).content == b"a"
        assert (await http.get(second.url)).content == b"b"
        stats = transport.statistics()
        assert (stats.connections_open, stats.discarded, stats.created) == (1, 1, 2)


# -- admission ---------------------------------------------------------------------------------


async def test_admission_holds_a_third_request_until_one_finishes() -> None:
    arrived: list[trio.Event] = [trio.Event() for _ in range(3)]
    release = [trio.Event() for _ in range(3)]
    count = 0

    async def handler(peer: Peer) -> None:
        nonlocal count
        while await peer.request() is not None:
            index = count
            count += 1
            arrived[index].set()
            await release[index].wait()
            await peer.send(ok(b"%d" % index))

    transport = FastHTTPTransport(max_connections=2)
    results: list[bytes] = []
    async with serve(handler) as server, client(transport) as http:

        async def get() -> None:
            results.append((await http.get(server.url)).content)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(get)
            await arrived[0].wait()
            await arrived[1].wait()
            await trio.testing.wait_all_tasks_blocked()
            stats = transport.statistics()
            assert (stats.in_use, stats.waiting) == (2, 1)
            assert not arrived[2].is_set()
            release[0].set()
            await arrived[2].wait()  # admitted once the first response was done
            release[1].set()
            release[2].set()
    assert sorted(results) == [b"0", b"1", b"2"]
    assert transport.statistics().created == 2


async def test_pool_timeout_when_no_connection_frees_up() -> None:
    hold = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"1\r\nx\r\n")
        await hold.wait()  # the body stays open, and so the connection in use
        await peer.send(b"0\r\n\r\n")

    transport = FastHTTPTransport(max_connections=1)
    async with (
        serve(handler) as server,
        client(transport, pool=0.05) as http,
        http.stream("GET", server.url) as first,
    ):
        with pytest.raises(httpx.PoolTimeout):
            await http.get(server.url)
        hold.set()
        assert await first.aread() == b"x"
        assert transport.statistics().waiting == 0


async def test_three_hundred_concurrent_streams_through_one_transport() -> None:
    scenarios = Scenarios(Scenario(text="a b c d e f g h", chunk_chars=2, interval=0.005))
    transport = FastHTTPTransport()
    done = 0
    async with open_fake_server(scenarios) as server, client(transport) as http:

        async def one() -> None:
            nonlocal done
            async with http.stream(
                "POST",
                server.base_url("openai") + "/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
            ) as response:
                body = b"".join([piece async for piece in response.aiter_raw()])
            assert body.endswith(b"data: [DONE]\n\n")
            done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(one)
        stats = transport.statistics()
    assert done == 300
    assert stats.created == 300
    # max_idle_per_origin (256) bounds what stays idle; the oldest of the rest are closed.
    assert (stats.in_use, stats.idle, stats.discarded) == (0, 256, 44)


# -- failures ----------------------------------------------------------------------------------


async def test_reset_mid_body_raises_a_transport_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await peer.reset()

    transport = FastHTTPTransport()
    async with (
        serve(handler) as server,
        client(transport) as http,
        http.stream("GET", server.url) as response,
    ):
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            async for _ in response.aiter_raw():
                pass
        assert transport.statistics().connections_open == 0


@pytest.mark.parametrize(
    "partial_body",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        CHUNKED_HEAD + b"a\r\n0123456789\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_eof_mid_body_raises_remote_protocol_error(partial_body: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(partial_body)

    async with serve(handler) as server, client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection"):
            await http.get(server.url)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTQ/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["version", "status", "header-line", "bad-length", "conflicting-lengths"],
)
async def test_malformed_response_head_raises_remote_protocol_error(response: bytes) -> None:
    async with serve(partial(answer_each, response)) as server, client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError, match=r"malformed|conflicting"):
            await http.get(server.url)


async def test_oversized_response_head_raises_remote_protocol_error() -> None:
    huge = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    async with serve(partial(answer_each, huge)) as server, client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="64 KiB"):
            await http.get(server.url)


async def test_eof_inside_the_response_head_raises_remote_protocol_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-")

    async with serve(handler) as server, client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="complete response head"):
            await http.get(server.url)


async def test_connect_refused_raises_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once it is closed
    async with client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_connect_timeout_when_the_accept_queue_is_full() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers: list[socket.socket] = []
        try:
            for _ in range(8):  # fill the accept queue: then connects hang (SYNs dropped)
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.2)
                try:
                    filler.connect(address)
                except TimeoutError:
                    break
            else:
                pytest.skip("this kernel accepts connections beyond a full backlog")
            async with client(FastHTTPTransport(), connect=0.1) as http:
                with pytest.raises(httpx.ConnectTimeout):
                    await http.get(f"http://127.0.0.1:{address[1]}/")
        finally:
            for filler in fillers:
                filler.close()


async def test_read_timeout_waiting_for_the_head() -> None:
    done = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await done.wait()

    async with serve(handler) as server, client(FastHTTPTransport(), read=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)
        done.set()


async def test_a_short_read_timeout_is_enforced_while_a_longer_one_waits() -> None:
    """The deadline watchdog is asleep until the long deadline: the short one must wake it."""
    done = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await done.wait()

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        async with trio.open_nursery() as nursery:

            async def long_wait() -> None:
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(server.url, timeout=httpx.Timeout(10.0, read=20.0))

            nursery.start_soon(long_wait)
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(5):
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(server.url, timeout=httpx.Timeout(10.0, read=0.1))
            nursery.cancel_scope.cancel()
        done.set()


async def test_read_timeout_mid_body_closes_the_connection() -> None:
    done = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"5\r\nfirst\r\n")
        await done.wait()

    transport = FastHTTPTransport()
    async with (
        serve(handler) as server,
        client(transport, read=0.1) as http,
        http.stream("GET", server.url) as response,
    ):
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"first"
        with pytest.raises(httpx.ReadTimeout):
            await anext(pieces)
        assert transport.statistics().connections_open == 0
        done.set()


async def test_write_timeout_when_the_server_does_not_read() -> None:
    done = trio.Event()

    async def handler(peer: Peer) -> None:
        await done.wait()  # never reads: the client's send buffer fills

    async with serve(handler) as server, client(FastHTTPTransport(), write=0.1) as http:
        with pytest.raises(httpx.WriteTimeout):
            await http.post(server.url, content=b"x" * (64 * 1024 * 1024))
        done.set()


async def test_unsupported_scheme_and_illegal_headers_are_refused() -> None:
    async with client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")
        request = httpx.Request("GET", "http://127.0.0.1:9/")
        request.headers["X-Evil"] = "a\r\nInjected: yes"
        with pytest.raises(httpx.LocalProtocolError):
            await http.send(request)


# -- cancellation and abandonment --------------------------------------------------------------


async def test_cancel_mid_body_closes_the_socket_and_next_request_uses_a_new_one() -> None:
    saw_eof = trio.Event()

    async def handler(peer: Peer) -> None:
        if server.connections == 1:
            await peer.request()
            await peer.send(CHUNKED_HEAD + b"5\r\nfirst\r\n")
            await peer.wait_closed()
            saw_eof.set()
        else:
            await answer_each(ok(b"fresh"), peer)

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        with trio.CancelScope() as scope:
            async with http.stream("GET", server.url) as response:
                async for piece in response.aiter_raw():
                    assert piece == b"first"
                    scope.cancel()
                    await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await saw_eof.wait()
        assert transport.statistics().connections_open == 0
        assert (await http.get(server.url)).content == b"fresh"
        assert transport.statistics().created == 2


async def test_body_dropped_unclosed_gives_back_its_connection_without_warnings() -> None:
    saw_eof = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"5\r\nfirst\r\n")
        await peer.wait_closed()
        saw_eof.set()

    transport = FastHTTPTransport()
    async with serve(handler) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            request = httpx.Request("GET", server.url, extensions={"timeout": {"read": 5.0}})
            response = await transport.handle_async_request(request)
            body = response.stream
            assert isinstance(body, httpx.AsyncByteStream)
            assert await anext(aiter(body)) == b"first"
            del response, body
            gc.collect()
            with trio.fail_after(5):
                await saw_eof.wait()
            gc.collect()
        assert [str(w.message) for w in caught] == []
        stats = transport.statistics()
        assert (stats.in_use, stats.connections_open) == (0, 0)
        await transport.aclose()


async def test_abandoned_iteration_closes_the_connection_without_our_warnings() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"5\r\nfirst\r\n5\r\nlater\r\n")
        await peer.wait_closed()

    transport = FastHTTPTransport()
    async with serve(handler) as server, client(transport) as http:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with http.stream("GET", server.url) as response:
                async for _ in response.aiter_raw():
                    break
            gc.collect()
        # httpx's own aiter_raw is an async generator (its warning is httpx's, and ignored
        # by the project's settings); nothing else may warn.
        assert [
            str(w.message) for w in caught if "Async generator 'httpx." not in str(w.message)
        ] == []
        assert transport.statistics().connections_open == 0


# -- TLS ---------------------------------------------------------------------------------------


def make_certificates() -> tuple[bytes, bytes, bytes]:
    """A CA certificate, and a server certificate and key for 127.0.0.1 signed by it (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-invocation test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem


@asynccontextmanager
async def serve_tls(
    handler: Handler, tmp_path_factory: pytest.TempPathFactory
) -> AsyncGenerator[tuple[str, ssl.SSLContext]]:
    """An https server on 127.0.0.1 running ``handler``; yields its URL and a client context."""
    pytest.importorskip("cryptography")
    ca_pem, cert_pem, key_pem = make_certificates()
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client_context = ssl.create_default_context(cadata=ca_pem.decode())
    client_context.set_alpn_protocols(["http/1.1"])

    async def connection(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await handler(Peer(stream))
        except trio.BrokenResourceError:
            pass  # a client that refused the certificate
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, connection, 0, server_context, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        try:
            yield f"https://127.0.0.1:{port}", client_context
        finally:
            nursery.cancel_scope.cancel()


async def test_tls_with_a_trusted_certificate_and_keep_alive(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with serve_tls(partial(answer_each, ok(b"secret")), tmp_path_factory) as (url, ctx):
        transport = FastHTTPTransport(ssl_context=ctx)
        async with client(transport) as http:
            for _ in range(3):
                assert (await http.get(url + "/x")).content == b"secret"
            assert (transport.statistics().created, transport.statistics().reused) == (1, 2)


async def test_tls_chunked_stream(tmp_path_factory: pytest.TempPathFactory) -> None:
    response = CHUNKED_HEAD + chunked(b"data: 1\n\n", b"data: 2\n\n")
    async with (
        serve_tls(partial(answer_each, response), tmp_path_factory) as (url, ctx),
        client(FastHTTPTransport(ssl_context=ctx)) as http,
        http.stream("GET", url) as reply,
    ):
        body = b"".join([piece async for piece in reply.aiter_raw()])
    assert body == b"data: 1\n\ndata: 2\n\n"


async def test_tls_with_an_untrusted_certificate_raises_connect_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with (
        serve_tls(partial(answer_each, ok(b"x")), tmp_path_factory) as (url, _),
        client(FastHTTPTransport()) as http,
    ):  # certifi's CAs: not ours
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(url)
