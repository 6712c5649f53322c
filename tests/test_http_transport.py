"""FastHTTPTransport: httpx's API over our own HTTP/1.1 wire work, on real sockets.

Most tests run a small trio server in the test (``serve``) whose handler scripts exactly
what goes on the wire; the rest use the fake provider server. Synchronisation is by events
and `trio.testing.wait_all_tasks_blocked`, never by sleeping.
"""

from __future__ import annotations

import gc
import itertools
import json
import socket
import ssl
import warnings
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.http._body import CHUNKED, ResponseBody
from llm_invocation.http._connection import Connection, ConnectionPool
from llm_invocation.http._transport import FastHTTPTransport
from llm_invocation.testing import Scenario, Scenarios, open_fake_server

from .http_servers import (
    CHUNKED_HEAD,
    Certificates,
    Peer,
    Request,
    answer_each,
    chunked,
    ok,
    serve,
    serve_tls,
)


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


@pytest.mark.parametrize("peer", ["idle", "sent", "closed", "reset", "ours-closed"])
async def test_an_idle_connection_is_stale_once_its_socket_has_anything_to_say(peer: str) -> None:
    """The checkout check: an idle connection is reused only while its socket is silent."""
    pool = ConnectionPool(max_connections=1, max_idle=1, keepalive_expiry=30.0)
    ours, theirs = socket.socketpair()
    ours.settimeout(0.0)  # non-blocking
    conn = Connection(("http", "test", 80), ours, None, pool.watchdog)
    try:
        assert not conn.is_stale()
        if peer == "sent":
            theirs.send(b"x")
        elif peer == "closed":
            theirs.close()
        elif peer == "reset":
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            theirs.close()
        elif peer == "ours-closed":
            conn.close()
        assert conn.is_stale() is (peer != "idle")
        assert conn.is_stale() is (peer != "idle")  # asking again changes nothing
        if peer == "sent":
            assert ours.recv(10) == b"x"  # the check only looked
    finally:
        conn.close()
        theirs.close()


@asynccontextmanager
async def chunked_decoder() -> AsyncGenerator[ResponseBody]:
    """A chunked body on a connection nobody writes to: fed through ``_decode`` directly."""
    pool = ConnectionPool(max_connections=1, max_idle=1, keepalive_expiry=30.0)
    ours, theirs = socket.socketpair()
    conn = Connection(("http", "test", 80), ours, None, pool.watchdog)
    pool.add(conn)
    body = ResponseBody(
        pool,
        conn,
        mode=CHUNKED,
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


async def test_an_unsupported_scheme_is_refused() -> None:
    async with client(FastHTTPTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"X-Evil", b"a\r\nInjected: yes"),
        (b"X-Evil", b"a\x00b"),
        (b"X-Ev\x00il", b"a"),
        (b"X Evil", b"a"),
        (b"X-Evil:", b"a"),
    ],
    ids=["crlf-in-value", "nul-in-value", "nul-in-name", "space-in-name", "colon-in-name"],
)
async def test_illegal_headers_are_refused_before_connecting(name: bytes, value: bytes) -> None:
    transport = FastHTTPTransport()
    request = httpx.Request("GET", "http://127.0.0.1:9/", headers=[(name, value)])
    with pytest.raises(httpx.LocalProtocolError):
        await transport.handle_async_request(request)
    assert transport.statistics().created == 0


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


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def trusting(certificates: Certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certificates.ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def test_tls_with_a_trusted_certificate_and_keep_alive(certificates: Certificates) -> None:
    async with serve_tls(partial(answer_each, ok(b"secret")), certificates.server_context()) as s:
        transport = FastHTTPTransport(ssl_context=trusting(certificates))
        async with client(transport) as http:
            for _ in range(3):
                assert (await http.get(s.url + "/x")).content == b"secret"
            assert (transport.statistics().created, transport.statistics().reused) == (1, 2)


async def test_tls_chunked_stream(certificates: Certificates) -> None:
    response = CHUNKED_HEAD + chunked(b"data: 1\n\n", b"data: 2\n\n")
    async with (
        serve_tls(partial(answer_each, response), certificates.server_context()) as server,
        client(FastHTTPTransport(ssl_context=trusting(certificates))) as http,
        http.stream("GET", server.url) as reply,
    ):
        body = b"".join([piece async for piece in reply.aiter_raw()])
    assert body == b"data: 1\n\ndata: 2\n\n"


async def test_tls_with_an_untrusted_certificate_raises_connect_error(
    certificates: Certificates,
) -> None:
    async with (
        serve_tls(partial(answer_each, ok(b"x")), certificates.server_context()) as server,
        client(FastHTTPTransport()) as http,
    ):  # certifi's CAs: not ours
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(server.url)


async def test_an_ssl_context_factory_is_called_once_at_the_first_https_connection(
    certificates: Certificates,
) -> None:
    made: list[ssl.SSLContext] = []

    def factory() -> ssl.SSLContext:
        made.append(trusting(certificates))
        return made[-1]

    transport = FastHTTPTransport(ssl_context=factory, max_idle_per_origin=0)
    async with (
        serve(partial(answer_each, ok(b"plain"))) as plain,
        serve_tls(partial(answer_each, ok(b"tls")), certificates.server_context()) as secure,
        client(transport) as http,
    ):
        assert (await http.get(plain.url)).content == b"plain"
        assert made == []
        for _ in range(2):
            assert (await http.get(secure.url)).content == b"tls"
        assert len(made) == 1


async def test_tls_cancel_mid_body_closes_the_connection_with_close_notify(
    certificates: Certificates,
) -> None:
    ended: list[str] = []
    saw_end = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"5\r\nfirst\r\n")
        try:
            while await peer.stream.receive_some(65536):
                pass
            ended.append("close_notify")
        except trio.BrokenResourceError:  # the server's stream is not https-compatible
            ended.append("the connection's end without close_notify")
        saw_end.set()

    transport = FastHTTPTransport(ssl_context=trusting(certificates))
    async with (
        serve_tls(handler, certificates.server_context()) as server,
        client(transport) as http,
    ):
        with trio.CancelScope() as scope:
            async with http.stream("GET", server.url) as response:
                async for piece in response.aiter_raw():
                    assert piece == b"first"
                    scope.cancel()
                    await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        await saw_end.wait()
        assert transport.statistics().connections_open == 0
    assert ended == ["close_notify"]
