"""HttpPool: one path for every transport, one header policy, content codings, typed errors,
FIFO admission, shards, statistics and bounded closing."""

from __future__ import annotations

import json
import ssl
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation._version import __version__
from llm_invocation.http import HttpPool, HttpResponse, HttpSettings
from llm_invocation.http import _pool as pool_module
from llm_invocation.http._transport import ResponseBody
from llm_invocation.providers._base import HttpRequest
from llm_invocation.testing import OpenAIRenderer, Scenario

from .http_servers import CHUNKED_HEAD, Peer, chunked, ok, serve

KEY = "sk-test-POOL-0123456789abcdef"
BASE = "http://api.provider.invalid/v1"
RATE_LIMIT_MESSAGE = "Rate limit reached for gpt-test in organization org-x on requests per min."
RENDERER = OpenAIRenderer()
SSE_EVENTS = RENDERER.render_stream(
    Scenario(text="hello from a stock transport", chunk_chars=5),
    {"model": "m", "messages": [], "stream": True},
)
JSON_BODY = RENDERER.render_body(Scenario(text="a whole answer"), {"model": "m", "messages": []})[2]
assert all(isinstance(event, bytes) for event in SSE_EVENTS)


def gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=31)
    return packer.compress(data) + packer.flush()


def wants_stream(request: httpx.Request) -> bool:
    return bool(json.loads(request.content).get("stream"))


def client_config(**overrides: Any) -> llm.Config:
    settings: dict[str, Any] = {
        "provider": "openai",
        "providers": {"openai": {"api_key": KEY, "base_url": BASE}},
        "retries": {"max_attempts": 1},
    }
    settings.update(overrides)
    # Not about limits, and model "m" has no price: nothing is limited.
    return llm.Config.unlimited(**settings)


def ask(*, stream: bool) -> llm.Request:
    return llm.Request(model="openai:m", messages=[llm.user("hi")], stream=stream)


async def streamed_text(client: llm.Client) -> str:
    async with client.invoke(ask(stream=True)) as reply:
        return "".join([chunk.text async for chunk in reply])


# -- one path for every transport --------------------------------------------------------------


def stock_handler(request: httpx.Request) -> httpx.Response:
    if wants_stream(request):
        return httpx.Response(
            200, content=b"".join(SSE_EVENTS), headers=RENDERER.stream_headers(Scenario())
        )
    return httpx.Response(200, content=JSON_BODY, headers={"content-type": "application/json"})


async def test_a_stock_mock_transport_serves_a_streamed_call() -> None:
    transports = {"openai": lambda: httpx.MockTransport(stock_handler)}
    async with llm.open_client(client_config(), transports=transports) as client:
        assert await streamed_text(client) == "hello from a stock transport"


async def test_a_stock_mock_transport_serves_a_whole_call() -> None:
    transports = {"openai": lambda: httpx.MockTransport(stock_handler)}
    async with llm.open_client(client_config(), transports=transports) as client:
        assert (await client.invoke_sync(ask(stream=False))).text == "a whole answer"


def post(url: str, *, stream: bool = False, **headers: str) -> HttpRequest:
    return HttpRequest(
        method="POST",
        url=url,
        headers={"content-type": "application/json", **headers},
        body=b'{"model": "m"}',
        stream=stream,
    )


async def read_all(pool: HttpPool, request: HttpRequest) -> tuple[HttpResponse, bytes]:
    async with pool.stream(request) as response:
        return response, await response.read()


async def test_a_sync_body_from_an_injected_transport_is_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"one ", b"two"]))

    pool = HttpPool(transport=lambda: httpx.MockTransport(handler))
    try:
        _, body = await read_all(pool, post(BASE + "/x"))
    finally:
        await pool.aclose()
    assert body == b"one two"


class GeneratorBody(httpx.AsyncByteStream):
    """A body iterated by an async generator, like httpx's own transport's."""

    def __init__(self) -> None:
        self.generator_closed = False
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            yield b"first"
            yield b"second"
        finally:
            self.generator_closed = True

    async def aclose(self) -> None:
        self.closed = True


async def test_a_body_left_early_is_closed_with_its_generator_at_once() -> None:
    body = GeneratorBody()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    pool = HttpPool(transport=lambda: httpx.MockTransport(handler))
    try:
        async with pool.stream(post(BASE + "/x")) as response:
            async for piece in response:
                assert piece == b"first"
                break
        assert (body.generator_closed, body.closed) == (True, True)
    finally:
        await pool.aclose()


# -- one header policy -------------------------------------------------------------------------


@asynccontextmanager
async def recording(path: str) -> AsyncGenerator[tuple[HttpPool, str, list[dict[str, str]]]]:
    """A pool and a URL whose requests' headers (lower-case names) are recorded."""
    seen: list[dict[str, str]] = []
    if path == "injected":

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append({k.lower(): v for k, v in request.headers.items()})
            return httpx.Response(200, content=b"{}")

        pool = HttpPool(transport=lambda: httpx.MockTransport(handler))
        try:
            yield pool, BASE + "/chat", seen
        finally:
            await pool.aclose()
        return

    async def answer(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            seen.append(request.headers())
            await peer.send(ok(b"{}"))

    async with serve(answer) as server:
        pool = HttpPool()
        try:
            yield pool, server.url + "/chat", seen
        finally:
            await pool.aclose()


PATHS = pytest.mark.parametrize("path", ["socket", "injected"])


@PATHS
async def test_our_user_agent_is_sent_when_the_request_has_none(path: str) -> None:
    async with recording(path) as (pool, url, seen):
        await read_all(pool, post(url))
    assert seen[0]["user-agent"] == f"llm-invocation/{__version__}"


@PATHS
async def test_a_request_s_own_user_agent_is_kept(path: str) -> None:
    async with recording(path) as (pool, url, seen):
        await read_all(pool, post(url, **{"User-Agent": "my-app/2"}))
    assert seen[0]["user-agent"] == "my-app/2"


@PATHS
async def test_streams_ask_for_identity_and_whole_answers_for_gzip(path: str) -> None:
    async with recording(path) as (pool, url, seen):
        await read_all(pool, post(url, stream=True, **{"Accept-Encoding": "br"}))
        await read_all(pool, post(url, stream=False, **{"Accept-Encoding": "br"}))
    assert [request["accept-encoding"] for request in seen] == ["identity", "gzip"]


@PATHS
async def test_the_request_carries_only_its_own_headers_and_the_policy_s(path: str) -> None:
    async with recording(path) as (pool, url, seen):
        await read_all(pool, post(url, **{"X-Custom": "  padded value\t"}))
    headers = seen[0]
    assert headers["x-custom"] == "padded value"
    assert "accept" not in headers  # nothing added behind the policy's back
    assert headers["content-length"] == str(len(b'{"model": "m"}'))


# -- content codings ---------------------------------------------------------------------------


class Pieces(httpx.AsyncByteStream):
    """A body in given pieces (a plain iterator)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = iter(pieces)

    def __aiter__(self) -> Pieces:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_gzip_sse_stream_through_an_injected_transport_arrives_as_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = gzip(b"".join(SSE_EVENTS))
        headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=Pieces(cut(body, 7)))

    transports = {"openai": lambda: httpx.MockTransport(handler)}
    async with llm.open_client(client_config(), transports=transports) as client:
        assert await streamed_text(client) == "hello from a stock transport"


async def test_a_gzip_429_through_an_injected_transport_is_rate_limited_with_its_message() -> None:
    error = {
        "error": {"message": RATE_LIMIT_MESSAGE, "type": "requests", "code": "rate_limit_exceeded"}
    }

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        body = gzip(json.dumps(error).encode())
        return httpx.Response(429, headers=headers, stream=Pieces(cut(body, 10)))

    transports = {"openai": lambda: httpx.MockTransport(handler)}
    async with llm.open_client(client_config(), transports=transports) as client:
        with pytest.raises(llm.RateLimited) as caught:
            await client.invoke_sync(ask(stream=False))
    assert RATE_LIMIT_MESSAGE in caught.value.message


async def test_a_gzip_stream_over_sockets_is_decoded_as_each_event_arrives() -> None:
    got_first = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        packer = zlib.compressobj(wbits=31)
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        first = packer.compress(b"data: one\n\n") + packer.flush(zlib.Z_SYNC_FLUSH)
        await peer.send(head + b"%x\r\n%b\r\n" % (len(first), first))
        await got_first.wait()  # the client has the first event before the second is sent
        second = packer.compress(b"data: two\n\n") + packer.flush()
        await peer.send(chunked(second))

    async with serve(handler) as server:
        pool = HttpPool()
        try:
            async with pool.stream(post(server.url, stream=True)) as response:
                pieces: list[bytes] = []
                async for piece in response:
                    pieces.append(piece)
                    got_first.set()
        finally:
            await pool.aclose()
    assert pieces == [b"data: one\n\n", b"data: two\n\n"]


def deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


TEXT = b'{"answer": "' + b"compressible " * 50 + b'"}'


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip(TEXT)),
        ("x-gzip", gzip(TEXT)),
        ("GZIP", gzip(TEXT)),
        ("deflate", deflate(TEXT, zlib.MAX_WBITS)),
        ("deflate", deflate(TEXT, -zlib.MAX_WBITS)),
        ("identity", TEXT),
        ("gzip, identity", gzip(TEXT)),
        ("deflate, gzip", gzip(deflate(TEXT, zlib.MAX_WBITS))),
        ("gzip", gzip(TEXT[:100]) + gzip(TEXT[100:])),
    ],
    ids=[
        "gzip",
        "x-gzip",
        "upper-case",
        "zlib-deflate",
        "raw-deflate",
        "identity",
        "listed",
        "chained",
        "two-gzip-members",
    ],
)
@pytest.mark.parametrize("size", [1, 3, 1000])
async def test_content_codings_are_undone_whatever_the_pieces(
    coding: str, body: bytes, size: int
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-encoding": coding}, stream=Pieces(cut(body, size))
        )

    pool = HttpPool(transport=lambda: httpx.MockTransport(handler))
    try:
        _, data = await read_all(pool, post(BASE))
    finally:
        await pool.aclose()
    assert data == TEXT


async def test_a_gzip_body_over_sockets_is_decoded() -> None:
    body = gzip(TEXT)
    response = ok(body, b"Content-Encoding: gzip")
    async with serve(lambda peer: answer(peer, response)) as server:
        pool = HttpPool()
        try:
            _, data = await read_all(pool, post(server.url))
        finally:
            await pool.aclose()
    assert data == TEXT


async def answer(peer: Peer, response: bytes) -> None:
    while await peer.request() is not None:
        await peer.send(response)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br"])
async def test_an_unknown_content_coding_is_a_typed_error_that_names_it(coding: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-encoding": coding}, stream=Pieces([b"\x1b\x00\x01"])
        )

    pool = HttpPool(provider="openai", transport=lambda: httpx.MockTransport(handler))
    try:
        with pytest.raises(llm.ProviderError) as caught:
            await read_all(pool, post(BASE))
    finally:
        await pool.aclose()
    error = caught.value
    assert error.details["reason"] == "malformed response"
    assert error.details["content_encoding"] == coding.split(", ")[-1]
    assert "malformed response" in error.message
    assert (error.provider, error.status, error.retryable) == ("openai", 200, False)


@pytest.mark.parametrize(
    "body",
    [
        gzip(TEXT)[:-12],
        gzip(TEXT)[:30] + b"\xff" * 10 + gzip(TEXT)[40:],
        b"not gzip at all",
        gzip(TEXT) + b"junk",
    ],
    ids=["truncated", "corrupt", "not-gzip", "trailing-junk"],
)
async def test_corrupt_gzip_is_a_typed_malformed_response_error(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=Pieces([body]))

    pool = HttpPool(provider="openai", transport=lambda: httpx.MockTransport(handler))
    try:
        with pytest.raises(llm.ProviderError) as caught:
            await read_all(pool, post(BASE))
    finally:
        await pool.aclose()
    assert caught.value.details["reason"] == "malformed response"
    assert caught.value.details["content_encoding"] == "gzip"


async def test_a_decompressed_piece_is_at_most_256_kib() -> None:
    bomb = gzip(b"\0" * (8 * 1024 * 1024))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=Pieces([bomb]))

    pool = HttpPool(transport=lambda: httpx.MockTransport(handler))
    try:
        async with pool.stream(post(BASE)) as response:
            sizes = [len(piece) async for piece in response]
    finally:
        await pool.aclose()
    assert sum(sizes) == 8 * 1024 * 1024
    assert max(sizes) <= 256 * 1024


async def test_a_body_without_a_content_coding_is_read_from_the_transport_directly() -> None:
    async with serve(lambda peer: answer(peer, CHUNKED_HEAD + chunked(b"data: x\n\n"))) as server:
        pool = HttpPool()
        try:
            async with pool.stream(post(server.url, stream=True)) as response:
                assert isinstance(response._body, ResponseBody)  # no wrapper, no cost
                assert await response.read() == b"data: x\n\n"
        finally:
            await pool.aclose()


async def test_repeated_response_headers_are_joined() -> None:
    response = ok(b"", b"X-Multi: a", b"x-multi: b")
    async with serve(lambda peer: answer(peer, response)) as server:
        pool = HttpPool()
        try:
            reply, _ = await read_all(pool, post(server.url))
        finally:
            await pool.aclose()
    assert reply.headers["x-multi"] == "a, b"


async def test_a_body_is_read_whole_or_up_to_a_limit_however_it_arrives() -> None:
    body = b"0123456789" * 10

    async def split(peer: Peer) -> None:
        # Every other answer comes in two parts: the head with a part of the body, then
        # the rest once the client has had time to read the first part.
        first = True
        while await peer.request() is not None:
            if first:
                await peer.send(ok(body))
            else:
                whole = ok(body)
                await peer.send(whole[:-60])
                await trio.sleep(0.05)
                await peer.send(whole[-60:])
            first = not first

    async with serve(split) as server:
        pool = HttpPool()
        try:
            for limit in (None, None, 5, 5, 100, 100, 1000, 1000):
                async with pool.stream(post(server.url)) as response:
                    read = await response.read(limit)
                assert read == (body if limit is None else body[:limit])
        finally:
            await pool.aclose()


async def test_many_distinct_header_names_are_read_right_and_few_are_remembered() -> None:
    names = [b"X-Name-%d" % n for n in range(400)]
    response = ok(b"", *[name + b": v" for name in names], b"x-name-7: again")
    async with serve(lambda peer: answer(peer, response)) as server:
        pool = HttpPool()
        try:
            for _ in range(2):
                reply, _ = await read_all(pool, post(server.url))
                assert all(reply.headers[f"x-name-{n}"] == "v" for n in range(400) if n != 7)
                assert reply.headers["x-name-7"] == "v, again"
        finally:
            await pool.aclose()
    assert len(pool_module._NAMES) <= pool_module._NAMES_KEPT  # pyright: ignore[reportPrivateUsage]


# -- every failure is a typed error ------------------------------------------------------------

FAILURES: list[tuple[Callable[[], BaseException], type[llm.LLMError], bool]] = [
    (lambda: httpx.ConnectError("refused"), llm.ProviderError, True),
    (lambda: httpx.ConnectTimeout("slow"), llm.InvocationTimeout, True),
    (lambda: httpx.ReadTimeout("slow"), llm.InvocationTimeout, True),
    (lambda: httpx.RemoteProtocolError("bad"), llm.ProviderError, True),
    (lambda: httpx.ProxyError("502 Bad Gateway"), llm.ProviderError, True),
    (lambda: httpx.StreamConsumed(), llm.ProviderError, False),
    (lambda: httpx.UnsupportedProtocol("ftp"), llm.InvalidRequest, False),
    (lambda: ConnectionResetError(104, "reset"), llm.ProviderError, True),
    (
        lambda: ssl.SSLCertVerificationError(1, "certificate verify failed"),
        llm.ProviderError,
        False,
    ),
    (lambda: zlib.error("bad data"), llm.ProviderError, True),
    (lambda: RuntimeError("transport bug"), llm.ProviderError, False),
]
FAILURE_IDS = [
    "connect",
    "connect-timeout",
    "read-timeout",
    "protocol",
    "proxy",
    "stream-consumed",
    "unsupported",
    "os",
    "tls",
    "zlib",
    "other",
]


@pytest.mark.parametrize(("make", "kind", "retryable"), FAILURES, ids=FAILURE_IDS)
async def test_a_failure_sending_the_request_is_a_typed_error(
    make: Callable[[], BaseException], kind: type[llm.LLMError], retryable: bool
) -> None:
    failure = make()

    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    pool = HttpPool(provider="openai", transport=lambda: httpx.MockTransport(handler))
    try:
        with pytest.raises(llm.LLMError) as caught:
            await read_all(pool, post(BASE))
    finally:
        await pool.aclose()
    error = caught.value
    assert type(error) is kind
    assert (error.provider, error.retryable, error.__cause__) == ("openai", retryable, failure)
    assert error.details["phase"] == "request"
    assert pool.statistics().active == 0


class Failing(httpx.AsyncByteStream):
    def __init__(self, failure: BaseException) -> None:
        self._failure = failure
        self._sent = False

    def __aiter__(self) -> Failing:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._sent:
            self._sent = True
            return b"data: first\n\n"
        raise self._failure


@pytest.mark.parametrize(("make", "kind", "retryable"), FAILURES, ids=FAILURE_IDS)
async def test_a_failure_reading_the_body_is_a_typed_error(
    make: Callable[[], BaseException], kind: type[llm.LLMError], retryable: bool
) -> None:
    failure = make()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Failing(failure))

    pool = HttpPool(provider="openai", transport=lambda: httpx.MockTransport(handler))
    try:
        async with pool.stream(post(BASE, stream=True)) as response:
            pieces = aiter(response)
            assert await anext(pieces) == b"data: first\n\n"
            with pytest.raises(llm.LLMError) as caught:
                await anext(pieces)
    finally:
        await pool.aclose()
    error = caught.value
    assert isinstance(error, llm.LLMError)
    assert error.__cause__ is failure
    assert error.provider == "openai"
    assert error.details["phase"] == "stream"
    assert error.details["sent"] is True


async def test_an_invalid_url_is_an_invalid_request() -> None:
    pool = HttpPool(provider="openai")
    try:
        for url in ("http://[::1/", "http://example.com:port/", "ftp://example.com/x", "/x"):
            with pytest.raises(llm.InvalidRequest):
                await read_all(pool, post(url))
    finally:
        await pool.aclose()


async def test_a_connection_refused_over_sockets_is_a_retryable_typed_error() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once it is closed
    pool = HttpPool(provider="openai")
    try:
        with pytest.raises(llm.ProviderError) as caught:
            await read_all(pool, post(f"http://127.0.0.1:{port}/v1"))
    finally:
        await pool.aclose()
    assert caught.value.retryable
    assert caught.value.details["sent"] is False
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# -- admission, shards, statistics, closing ----------------------------------------------------


class Held(httpx.AsyncBaseTransport):
    """Answers each request when ``release`` is set; records order and concurrency."""

    made = 0

    def __init__(self, release: trio.Event, order: list[int]) -> None:
        Held.made += 1
        self.release = release
        self.order = order
        self.active = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.order.append(int(request.headers["x-index"]))
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return httpx.Response(200, content=b"ok")


async def test_a_burst_of_two_thousand_requests_is_admitted_in_order() -> None:
    release = trio.Event()
    order: list[int] = []
    pool = HttpPool(HttpSettings(max_connections=1), transport=lambda: Held(release, order))

    async def one(index: int) -> None:
        await read_all(pool, post(BASE, **{"X-Index": str(index)}))

    try:
        async with trio.open_nursery() as nursery:
            for index in range(2000):
                nursery.start_soon(one, index)
                await trio.testing.wait_all_tasks_blocked()  # queued before the next starts
            stats = pool.statistics()
            assert (stats.active, stats.waiting) == (1, 1999)
            release.set()
    finally:
        await pool.aclose()
    assert order == list(range(2000))
    assert pool.statistics().requests == 2000


async def test_transports_that_are_not_ours_get_at_most_shard_size_requests_each() -> None:
    release = trio.Event()
    made: list[Held] = []

    def factory() -> httpx.AsyncBaseTransport:
        made.append(Held(release, []))
        return made[-1]

    pool = HttpPool(HttpSettings(max_connections=10, shard_size=3), transport=factory)

    async def one(index: int) -> None:
        await read_all(pool, post(BASE, **{"X-Index": str(index)}))

    try:
        async with trio.open_nursery() as nursery:
            for index in range(12):
                nursery.start_soon(one, index)
            await trio.testing.wait_all_tasks_blocked()
            stats = pool.statistics()
            assert (stats.active, stats.waiting, stats.shards) == (10, 2, 4)
            assert [held.active for held in made] == [3, 3, 3, 1]
            release.set()
        assert max(held.most for held in made) == 3
        assert pool.statistics().active == 0
    finally:
        await pool.aclose()


async def test_our_transport_is_one_shard_and_counts_active_requests() -> None:
    hold = trio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"1\r\nx\r\n")
        await hold.wait()
        await peer.send(b"0\r\n\r\n")

    async with serve(handler) as server:
        pool = HttpPool()
        try:
            async with pool.stream(post(server.url, stream=True)) as response:
                stats = pool.statistics()
                assert (stats.shards, stats.active, stats.requests) == (1, 1, 1)
                hold.set()
                assert await response.read() == b"x"
            assert pool.statistics().active == 0
        finally:
            await pool.aclose()


async def test_closing_the_pool_is_bounded_when_a_transport_hangs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Hanging(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=b"ok")

        async def aclose(self) -> None:
            await trio.sleep_forever()

    pool = HttpPool(transport=Hanging)
    await read_all(pool, post(BASE))
    start = trio.current_time()
    await pool.aclose()
    assert trio.current_time() - start == pytest.approx(5)
    assert "closing the pool took longer" in caplog.text


async def test_closing_the_pool_fails_a_response_being_read_with_a_typed_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + b"1\r\nx\r\n")
        await peer.wait_closed()

    async with serve(handler) as server:
        pool = HttpPool(provider="openai")
        async with pool.stream(post(server.url, stream=True)) as response:
            pieces = aiter(response)
            assert await anext(pieces) == b"x"
            await pool.aclose()
            with pytest.raises(llm.StreamingFailed):
                await anext(pieces)
        with pytest.raises(llm.ProviderError, match="closed"):
            await read_all(pool, post(server.url))


@PATHS
async def test_a_response_block_opens_once_and_leaves_nothing_in_hand(path: str) -> None:
    async with recording(path) as (pool, url, _):
        exchange = pool.stream(post(url))
        async with exchange as response:
            assert response.status == 200
            assert pool.statistics().active == 1
        assert pool.statistics().active == 0
        with pytest.raises(RuntimeError, match="only once"):
            async with exchange:
                pass
        with pytest.raises(KeyError):  # the block's own error comes out as itself
            async with pool.stream(post(url)):
                raise KeyError("mine")
        assert pool.statistics().active == 0
