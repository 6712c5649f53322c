"""No hidden re-sends: a request goes out again only when it provably never reached the server.

A server that reads a chat request and then drops the connection before answering may be
generating (and billing) an answer: the transport must not send the request again by
itself. It is raised as a typed, retryable error that says the request was sent, and the
session's retry policy (counted, with backoff and a rate-limit lease) decides. The one
transparent case: writing the request failed on a reused keep-alive connection that the
server had closed while it sat idle.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.http import FastHTTPTransport, HttpPool
from llm_invocation.http._connection import Connection
from llm_invocation.http._transport import REUSED, SENT
from llm_invocation.providers._base import HttpRequest
from llm_invocation.testing import MockTransport, Scenario, Scenarios

from .http_servers import Peer, Server, answer_each, answer_like_a_provider, ok, serve

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


def chat(server: Server) -> HttpRequest:
    return HttpRequest(
        method="POST",
        url=server.url + "/v1/chat/completions",
        headers={"content-type": "application/json"},
        body=BODY,
    )


async def drop(peer: Peer, how: str) -> None:
    if how == "reset":
        await peer.reset()
    else:
        await peer.stream.aclose()


@asynccontextmanager
async def dropping_server(how: str, *, answered_first: int) -> AsyncGenerator[Server]:
    """Answers the first ``answered_first`` requests, then reads one, works on it while the
    client waits, and drops the connection before answering.

    Every request it reads is counted in ``server.requests``.
    """

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server.requests.append(request)
            if len(server.requests) > answered_first:
                # It has the whole request and works on it while the client waits for the
                # answer; then the connection drops before a byte of the answer is sent.
                await trio.testing.wait_all_tasks_blocked()
                await drop(peer, how)
                return
            await peer.send(ok(b"{}"))

    async with serve(handler) as server:
        yield server


# -- the transport -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_request_dropped_after_it_was_read_is_not_sent_again_on_a_new_connection(
    how: str,
) -> None:
    transport = FastHTTPTransport()
    async with dropping_server(how, answered_first=0) as server:
        request = httpx.Request("POST", server.url + "/v1/chat", content=BODY)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await transport.handle_async_request(request)
        assert len(server.requests) == 1
        assert (request.extensions[SENT], request.extensions[REUSED]) == (True, False)
    await transport.aclose()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_request_dropped_after_it_was_read_is_not_sent_again_on_a_reused_connection(
    how: str,
) -> None:
    transport = FastHTTPTransport()
    async with dropping_server(how, answered_first=1) as server:
        first = await transport.handle_async_request(
            httpx.Request("POST", server.url + "/v1/chat", content=BODY)
        )
        assert await first.aread() == b"{}"
        request = httpx.Request("POST", server.url + "/v1/chat", content=BODY)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await transport.handle_async_request(request)
        assert len(server.requests) == 2  # one each: the second was not written again
        assert (request.extensions[SENT], request.extensions[REUSED]) == (True, True)
        stats = transport.statistics()
        assert (stats.created, stats.reused, stats.resent) == (1, 1, 0)
    await transport.aclose()


async def idle_connection(transport: FastHTTPTransport) -> Connection:
    (idle,) = [conn for stack in transport._pool.idle.values() for conn in stack]
    return idle


async def test_an_idle_connection_the_server_closed_is_replaced_at_checkout() -> None:
    closed = trio.Event()

    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        server.requests.append(request)
        await peer.send(ok(b"answer"))
        if len(server.requests) == 1:
            await peer.stream.aclose()  # closes the idle keep-alive connection
            closed.set()
            return
        await answer_each(ok(b"answer"), peer)

    transport = FastHTTPTransport()
    async with serve(handler) as server:
        reply = await transport.handle_async_request(httpx.Request("GET", server.url))
        assert await reply.aread() == b"answer"
        await closed.wait()
        await trio.lowlevel.wait_readable((await idle_connection(transport)).sock)  # its FIN
        reply = await transport.handle_async_request(httpx.Request("GET", server.url))
        assert await reply.aread() == b"answer"
        stats = transport.statistics()
        assert (stats.created, stats.discarded, stats.reused, stats.resent) == (2, 1, 0, 0)
        assert len(server.requests) == 2
    await transport.aclose()


async def test_a_write_that_fails_on_a_reused_connection_is_sent_once_more_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server resets the idle connection just after the stale check passed."""
    reset = trio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server.requests.append(request)
            await peer.send(ok(b"answer"))
            if server.connections == 1:
                await peer.reset()
                reset.set()
                return

    # The stale check at checkout runs before the reset arrives, as in the real race.
    monkeypatch.setattr(Connection, "is_stale", lambda self: False)
    transport = FastHTTPTransport()
    async with serve(handler) as server:
        reply = await transport.handle_async_request(
            httpx.Request("POST", server.url, content=b"1")
        )
        assert await reply.aread() == b"answer"
        await reset.wait()
        await trio.lowlevel.wait_readable((await idle_connection(transport)).sock)  # its RST
        request = httpx.Request("POST", server.url, content=b"2")
        reply = await transport.handle_async_request(request)
        assert await reply.aread() == b"answer"
        stats = transport.statistics()
        assert (stats.created, stats.reused, stats.resent) == (2, 1, 1)
        assert [r.body for r in server.requests] == [b"1", b"2"]  # the server had it once
    await transport.aclose()


async def test_a_request_written_whole_on_a_connection_closed_meanwhile_is_not_resent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server closed (FIN) the idle connection unnoticed: the write succeeds, the read
    fails. The request may have reached a server: the caller decides, not the transport."""
    closed = trio.Event()

    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        server.requests.append(request)
        await peer.send(ok(b"answer"))
        await peer.stream.aclose()
        closed.set()

    monkeypatch.setattr(Connection, "is_stale", lambda self: False)
    transport = FastHTTPTransport()
    async with serve(handler) as server:
        reply = await transport.handle_async_request(
            httpx.Request("POST", server.url, content=b"1")
        )
        assert await reply.aread() == b"answer"
        await closed.wait()
        await trio.lowlevel.wait_readable((await idle_connection(transport)).sock)
        request = httpx.Request("POST", server.url, content=b"2")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await transport.handle_async_request(request)
        assert (request.extensions[SENT], request.extensions[REUSED]) == (True, True)
        assert transport.statistics().resent == 0
        assert server.connections == 1
    await transport.aclose()


# -- the pool: a typed, retryable error that says what happened ---------------------------------


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
async def test_the_pool_raises_a_typed_retryable_error_saying_the_request_was_sent(
    reused: bool,
) -> None:
    async with dropping_server("close", answered_first=int(reused)) as server:
        pool = HttpPool(provider="openai")
        try:
            if reused:
                async with pool.stream(chat(server)) as response:
                    assert await response.read() == b"{}"
            with pytest.raises(llm.ProviderError) as caught:
                async with pool.stream(chat(server)):
                    pass
        finally:
            await pool.aclose()
        assert len(server.requests) == 1 + reused
    error = caught.value
    assert error.retryable
    assert error.provider == "openai"
    assert error.details["sent"] is True
    assert error.details["phase"] == "request"
    assert error.details.get("reused", False) is reused
    assert isinstance(error.__cause__, httpx.RemoteProtocolError | httpx.ReadError)


# -- the client: the session's retry policy decides, and counts --------------------------------


@asynccontextmanager
async def provider_that_drops(
    *, drop_requests: set[int]
) -> AsyncGenerator[tuple[Server, Scenarios]]:
    """An OpenAI-like server that reads request number n (from 1) and drops it if asked."""
    scenarios = Scenarios(Scenario(text="hello there"))
    provider = MockTransport(scenarios)

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server.requests.append(request)
            if len(server.requests) in drop_requests:
                await trio.testing.wait_all_tasks_blocked()  # working while the client waits
                await peer.stream.aclose()
                return
            await answer_like_a_provider(peer, request, provider, host="127.0.0.1")

    async with serve(handler) as server:
        yield server, scenarios


def config(server: Server, **overrides: Any) -> llm.Config:
    settings: dict[str, Any] = {
        "provider": "openai",
        "providers": {
            "openai": {"api_key": "sk-test-0123456789abcdef", "base_url": server.url + "/v1"}
        },
        "retries": {"max_attempts": 1},
    }
    settings.update(overrides)
    # Not about limits, and model "m" has no price: nothing is limited.
    return llm.Config.unlimited(**settings)


def ask(stream: bool) -> llm.Request:
    return llm.Request(model="openai:m", messages=[llm.user("hi")], stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_with_one_attempt_a_dropped_chat_reaches_the_server_exactly_once(
    stream: bool,
) -> None:
    async with provider_that_drops(drop_requests={1}) as (server, _):
        async with llm.open_client(config(server)) as client:
            with pytest.raises(llm.ProviderError) as caught:
                if stream:
                    async with client.invoke(ask(stream=True)) as reply:
                        async for _ in reply:
                            pass
                else:
                    await client.invoke_sync(ask(stream=False))
        assert len(server.requests) == 1
    assert caught.value.details["sent"] is True


async def test_with_one_attempt_a_chat_dropped_on_a_reused_connection_reaches_the_server_once() -> (
    None
):
    async with provider_that_drops(drop_requests={2}) as (server, _):
        async with llm.open_client(config(server)) as client:
            assert (await client.invoke_sync(ask(stream=False))).text == "hello there"
            with pytest.raises(llm.ProviderError) as caught:
                await client.invoke_sync(ask(stream=False))
        assert len(server.requests) == 2  # one per call
        assert server.connections == 1  # the second call went on the kept-alive connection
    details = caught.value.details
    assert (details["sent"], details["reused"]) == (True, True)


async def test_with_two_attempts_the_session_itself_sends_a_dropped_chat_again() -> None:
    retries = {"max_attempts": 2, "initial_delay": 0, "max_delay": 0}
    async with provider_that_drops(drop_requests={1}) as (server, _):
        async with llm.open_client(config(server, retries=retries)) as client:
            assert (await client.invoke_sync(ask(stream=False))).text == "hello there"
        assert len(server.requests) == 2  # the session's retry, counted and visible
