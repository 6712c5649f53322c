"""Provider sessions over real sockets, against the fake provider server on 127.0.0.1.

Each wire format, each injected failure, and what cancellation does to the connection pool.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import llm_invocation as llm
from llm_invocation.http import HttpPool, HttpSettings
from llm_invocation.testing import (
    Disconnect,
    ErrorEvent,
    FakeServer,
    HttpError,
    Malformed,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    Stall,
    open_fake_server,
)

FORMATS = ("openai", "anthropic", "gemini")
KEY = "sk-test-SERVER-0123456789abcdef"


@asynccontextmanager
async def serve(
    scenarios: Scenarios, **overrides: Any
) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    async with open_fake_server(scenarios) as server:
        settings: dict[str, Any] = {
            "provider": "openai",
            "retries": {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.05},
            "timeouts": {"connect": 5, "first_chunk": 5, "idle_chunk": 0.5},
            "providers": {
                fmt: {"api_key": KEY, "base_url": server.base_url(fmt)} for fmt in FORMATS
            },
        }
        settings.update(overrides)
        # Not about limits, and the scripted models have no price: nothing is limited.
        async with llm.open_client(llm.Config.unlimited(**settings)) as client:
            yield client, server


def request(fmt: str, model: str, **kw: Any) -> llm.Request:
    return llm.Request(model=f"{fmt}:{model}", messages=[llm.user("hello over sockets")], **kw)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_text_and_parallel_tool_calls_stream_over_sockets(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(
            text="Calling two tools.",
            tool_calls=[
                ScriptedToolCall(name="a", arguments={"x": 1}),
                ScriptedToolCall(name="b", arguments={"y": [1, 2]}),
            ],
            chunk_chars=3,
        ),
    )
    async with serve(scenarios) as (client, server):
        async with client.invoke(request(fmt, "m")) as stream:
            chunks = [chunk async for chunk in stream]
        response = stream.response
        assert response.text == "Calling two tools."
        assert [(c.name, c.parsed_arguments()) for c in response.tool_calls] == [
            ("a", {"x": 1}),
            ("b", {"y": [1, 2]}),
        ]
        assert sum(1 for c in chunks if c.text) == 6
        sent = server.requests[-1]
        assert sent.model == "m"
        assert isinstance(sent.json, dict)
        credential = {
            "openai": "authorization",
            "anthropic": "x-api-key",
            "gemini": "x-goog-api-key",
        }
        assert sent.headers[credential[fmt]] == "present"
        assert KEY not in repr(server.requests)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "failure",
    [
        HttpError(status=429, retry_after_ms=20),
        HttpError(status=503),
        ErrorEvent(after_chunks=0),
        Disconnect(after_chunks=0),
    ],
    ids=["429", "503", "error-event-first", "disconnect-first"],
)
async def test_failures_before_content_are_retried_over_sockets(fmt: str, failure: Any) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(failure=failure), Scenario(text="second attempt"))
    async with serve(scenarios) as (client, _):
        assert (await client.invoke_sync(request(fmt, "m"))).text == "second attempt"
        assert scenarios.calls("m") == 2


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (ErrorEvent(after_chunks=2), llm.ProviderOverloaded),
        (Disconnect(after_chunks=2), llm.StreamingFailed),
        (Malformed(after_chunks=2), llm.StreamingFailed),
        (Stall(after_chunks=2), llm.InvocationTimeout),
    ],
    ids=["error-event", "disconnect", "malformed", "stall"],
)
async def test_failures_after_content_reach_the_caller_over_sockets(
    fmt: str, failure: Any, error: type[llm.LLMError]
) -> None:
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text="abcdefghijkl", chunk_chars=3, failure=failure))
    async with serve(scenarios) as (client, server):
        received: list[str] = []
        with pytest.raises(error):
            async with client.invoke(request(fmt, "m")) as stream:
                async for chunk in stream:
                    received.append(chunk.text)
        assert "".join(received).startswith("abc")
        assert scenarios.calls("m") == 1
        with trio.fail_after(5):
            await server.wait_statistics(lambda s: s.streams_in_progress == 0)
        # The pool is still usable afterwards.
        scenarios.add("after", Scenario(text="fine"))
        assert (await client.invoke_sync(request(fmt, "after"))).text == "fine"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_cancelling_a_stream_closes_its_connection_at_once(fmt: str) -> None:
    scenarios = Scenarios()
    scenarios.add("long", Scenario(text="x" * 400, chunk_chars=2, interval=0.02))
    async with serve(scenarios) as (client, server):
        async with client.invoke(request(fmt, "long")) as stream:
            seen = 0
            async for chunk in stream:
                seen += bool(chunk.text)
                if seen == 3:
                    break
        with trio.fail_after(2):
            stats = await server.wait_statistics(lambda s: s.client_disconnects >= 1)
        assert stats.streams_in_progress == 0
        session = (await client.session_statistics())[fmt]
        assert session.pool.active == 0
        # The next request gets a fresh connection, and keep-alive still works after it.
        scenarios.add("short", Scenario(text="ok"))
        for _ in range(3):
            assert (await client.invoke_sync(request(fmt, "short"))).text == "ok"


async def test_a_cancelled_caller_leaves_the_httpx_pool_consistent() -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="y" * 200, chunk_chars=1, interval=0.01))
    scenarios.add("quick", Scenario(text="quick"))
    async with open_fake_server(scenarios) as server:
        from llm_invocation.providers.openai import OpenAICodec

        codec = OpenAICodec(base_url=server.base_url("openai"))
        pool = HttpPool(HttpSettings(max_connections=4, shard_size=4, read_timeout=5.0))
        try:
            for _ in range(6):
                with trio.move_on_after(0.05):
                    http = codec.encode(request("openai", "slow"), KEY)
                    async with pool.stream(http) as response:
                        async for _ in response:
                            pass
            assert pool.statistics().active == 0
            # Every connection is idle or gone: none is stuck mid-request, and the ones cut
            # mid-body were closed rather than returned to the pool.
            transport = pool._fast  # pyright: ignore[reportPrivateUsage]
            assert transport is not None
            stats = transport.statistics()
            assert stats.in_use == 0
            assert stats.connections_open == stats.idle
            assert stats.created >= 6  # each connection cut mid-body was replaced
            http = codec.encode(request("openai", "quick"), KEY)
            async with pool.stream(http) as response:
                assert response.status == 200
                await response.read()
        finally:
            await pool.aclose()


async def test_the_idle_watchdog_fires_on_a_silent_connection() -> None:
    scenarios = Scenarios()
    scenarios.add("quiet", Scenario(text="abcd", chunk_chars=1, failure=Stall(after_chunks=1)))
    async with serve(scenarios, retries={"max_attempts": 1}) as (client, _):
        start = trio.current_time()
        with pytest.raises(
            llm.InvocationTimeout, match=r"no chunk for 0\.5s \(the idle_chunk limit\)"
        ):
            await client.invoke_sync(request("openai", "quiet"))
        assert 0.4 < trio.current_time() - start < 3


async def test_two_hundred_concurrent_streams_over_sockets() -> None:
    scenarios = Scenarios(Scenario(text="z" * 40, chunk_chars=4, interval=0.005))
    # About concurrency, not the chunk limits: the server shares this process, so a busy
    # machine that stalls the process for half a second is not a provider gone silent.
    timeouts = {"connect": 5, "first_chunk": 30, "idle_chunk": 30}
    async with serve(scenarios, timeouts=timeouts) as (client, server):
        done: list[int] = []

        async def one(i: int) -> None:
            response = await client.invoke_sync(request(FORMATS[i % 3], "any"))
            assert response.text == "z" * 40
            done.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        assert len(done) == 200
        assert server.statistics().internal_errors == 0


@pytest.mark.parametrize(
    ("opener", "fmt", "model"),
    [
        (llm.open_openai_client, "openai", "gpt-4o-mini"),
        (llm.open_anthropic_client, "anthropic", "claude-haiku-4-5"),
        (llm.open_gemini_client, "gemini", "gemini-2.5-flash"),
    ],
)
async def test_provider_shortcuts_use_their_provider_by_default(
    opener: Any, fmt: str, model: str
) -> None:
    scenarios = Scenarios(Scenario(text=f"hello from {fmt}"))
    async with open_fake_server(scenarios) as server:
        async with opener(KEY, base_url=server.base_url(fmt), model=model) as client:
            reply = await client.chat([llm.user("hi")])
            assert reply.messages[-1].content == f"hello from {fmt}"
            assert reply.provider == fmt
        sent = server.requests[-1]
        assert sent.model == model


async def test_the_mock_shortcut_needs_no_key_and_no_network() -> None:
    async with llm.open_mock_client(Scenarios(Scenario(text="mocked"))) as client:
        assert (await client.chat([llm.user("hi")])).messages[-1].content == "mocked"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_finished_invocation_leaves_no_reference_cycle_behind(stream: bool) -> None:
    # What a finished invocation held (its run, its body, the loan, the exchange) is freed
    # when the last reference goes, not left for the cyclic garbage collector to find: at
    # thousands of streams that work is what stalls the event loop.
    scenarios = Scenarios()
    scenarios.add("m", *[Scenario(text="no cycles here", chunk_chars=4) for _ in range(8)])
    async with serve(scenarios) as (client, _):
        await client.invoke_sync(request("openai", "m", stream=stream))  # code paths
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                async with client.invoke(request("openai", "m", stream=stream)) as call:
                    assert "".join([chunk.text async for chunk in call]) == "no cycles here"
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            ours = [
                type(found).__qualname__
                for found in gc.garbage
                if type(found).__module__.startswith("llm_invocation")
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert ours == []
