"""Streamed attempts: the caller's task reads the body its provider session lends it.

The session does the admission side (request, status, headers) and then hands the caller the
response's body; the caller's reads keep the session's chunk limits, and the session keeps
the body's lifetime: a caller that leaves, or a session that restarts, closes the connection
rather than returning it to the pool. Over real sockets against the fake server, or over the
mock transport where time is what is tested.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation._secrets import Secret
from llm_invocation.actors._stream_body import StreamBody
from llm_invocation.actors.provider_session import (
    Attempt,
    ProviderSession,
    SessionSettings,
    SessionStats,
)
from llm_invocation.http import HttpPool, HttpSettings
from llm_invocation.providers._base import HttpRequest
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.runtime import ActorCrashed, ChildSpec, SupervisorSpec, open_runtime
from llm_invocation.testing import MockTransport, Scenario, Scenarios, Stall, open_fake_server

from .crashing_session import CrashOnStats
from .mock_clients import client_for

KEY = "sk-test-BODY-0123456789abcdef"
SLOW = Scenario(text="abcdefgh", chunk_chars=1, interval=0.05)


@asynccontextmanager
async def serve(scenarios: Scenarios, **timeouts: float) -> AsyncGenerator[tuple[llm.Client, Any]]:
    async with open_fake_server(scenarios) as server:
        config = llm.Config.unlimited(
            provider="openai",
            retries={"max_attempts": 1},
            timeouts={"connect": 5, "first_chunk": 5, "idle_chunk": 5, **timeouts},
            providers={"openai": {"api_key": KEY, "base_url": server.base_url("openai")}},
        )
        async with llm.open_client(config) as client:
            yield client, server


@asynccontextmanager
async def open_pool(scenarios: Scenarios) -> AsyncGenerator[tuple[HttpPool, HttpRequest]]:
    """A pool and a request for the fake server; the pool is closed after the block."""
    async with open_fake_server(scenarios) as server:
        pool = HttpPool(HttpSettings(trust_env=False), provider="openai")
        codec = OpenAICodec(base_url=server.base_url("openai"))
        try:
            yield pool, codec.encode(resolved("m"), KEY)
        finally:
            await pool.aclose()


def connections_open(pool: HttpPool) -> int:
    transport = pool._fast  # pyright: ignore[reportPrivateUsage]
    assert transport is not None
    return transport.statistics().connections_open


def request(model: str) -> llm.Request:
    return llm.Request(model=f"openai:{model}", messages=[llm.user("hello")])


def resolved(model: str) -> llm.Request:
    """A request as a session receives it: provider and model resolved."""
    return llm.Request(model=model, provider="openai", messages=[llm.user("hello")])


async def test_a_body_read_to_its_end_gives_its_connection_back_for_the_next_call() -> None:
    scenarios = Scenarios(Scenario(text="whole"))
    async with serve(scenarios) as (client, server):
        for _ in range(3):
            async with client.invoke(request("m")) as stream:
                assert await stream.aggregate() == stream.response
            assert stream.response.text == "whole"
        assert server.statistics().connections_total == 1


async def test_a_caller_cancelled_mid_body_leaves_the_pool_without_that_connection() -> None:
    scenarios = Scenarios()
    scenarios.add("slow", SLOW)
    scenarios.add("quick", Scenario(text="ok"))
    async with serve(scenarios) as (client, server):
        stream = client.invoke(request("slow"))
        with trio.CancelScope() as scope:
            async with stream:
                async for chunk in stream:
                    if chunk.text:
                        scope.cancel()  # the caller's own cancellation, in the middle
        assert scope.cancelled_caught
        # What the caller's read held when it left: one event, or more when it read late
        # (events 50 ms apart meet in one read on a busy machine), never the whole answer.
        assert stream.text.startswith("a") and "abcdefgh".startswith(stream.text)
        assert stream.text != "abcdefgh"
        assert (await client.invoke_sync(request("quick"))).text == "ok"
        assert server.statistics().connections_total == 2  # the cut one was not reused
        statistics = (await client.session_statistics())["openai"]
        assert statistics.pool.active == 0
        assert statistics.failures == {}  # the caller's cancellation is no provider failure


async def test_the_first_chunk_limit_is_kept_by_the_callers_reads() -> None:
    scenarios = Scenarios(Scenario(text="late", ttft=30))  # the head at once, then nothing
    async with (
        serve(scenarios, first_chunk=0.3) as (client, _),
        client.invoke(request("m")) as stream,
    ):
        with pytest.raises(llm.InvocationTimeout) as caught:
            await stream.aggregate()
    assert "no content within 0.3s (the first_chunk limit)" in str(caught.value)
    assert caught.value.details["limit"] == "first_chunk"
    assert isinstance(caught.value.__cause__, trio.TooSlowError)


async def test_the_idle_chunk_limit_is_kept_by_the_callers_reads() -> None:
    scenarios = Scenarios(Scenario(text="abcd", chunk_chars=2, failure=Stall(after_chunks=1)))
    async with serve(scenarios, idle_chunk=0.3) as (client, _):
        async with client.invoke(request("m")) as stream:
            with pytest.raises(llm.InvocationTimeout) as caught:
                await stream.aggregate()
        assert stream.text == "ab"
        assert caught.value.details["limit"] == "idle_chunk"
        statistics = (await client.session_statistics())["openai"]
        assert statistics.failures == {"timeout": 1}


async def test_a_caller_slower_than_the_first_chunk_limit_is_not_a_slow_provider(
    autojump_clock: trio.testing.MockClock,
) -> None:
    del autojump_clock
    scenarios = Scenarios()
    scenarios.add("m", Scenario(text="abc", chunk_chars=1))
    anthropic = llm.Request(model="anthropic:m", messages=[llm.user("hello")])
    async with client_for(scenarios) as (client, _):
        async with client.invoke(anthropic) as stream:
            first = await stream.__anext__()
            assert not first.text  # the message's start: no content yet
            await trio.sleep(20)  # past the first_chunk limit of 10s, away from reading
            assert await stream.aggregate() == stream.response
        assert stream.response.text == "abc"
        assert scenarios.calls("m") == 1


# -- the session's side ------------------------------------------------------------------------


async def test_a_body_whose_session_restarts_stops_cleanly_and_its_connection_is_closed() -> None:
    CrashOnStats.pools = []
    scenarios = Scenarios(SLOW)
    async with open_fake_server(scenarios) as server:
        codec = OpenAICodec(base_url=server.base_url("openai"))
        settings = SessionSettings(http=HttpSettings(trust_env=False))

        def session() -> CrashOnStats:
            return CrashOnStats(codec, keys=[Secret(KEY)], settings=settings)

        spec = SupervisorSpec(children=[ChildSpec.actor("session", session)])
        async with open_runtime(spec) as runtime:
            ref = runtime.ref("session", CrashOnStats)
            attempt = Attempt(request=resolved("m"))
            body = await ref.call(attempt)
            batch = await body.next_batch()
            assert batch is not None  # the caller's task reads the body
            with pytest.raises(ActorCrashed):
                await ref.call(SessionStats())
            assert await body.next_batch() is None  # taken back: no more reads
            with pytest.raises(ActorCrashed):
                await body.verdict()
            first = CrashOnStats.pools[0]._fast  # pyright: ignore[reportPrivateUsage]
            assert first is not None
            stats = first.statistics()
            assert (stats.connections_open, stats.in_use) == (0, 0)


async def test_a_read_in_progress_stops_when_another_task_aborts_the_response() -> None:
    async with open_pool(Scenarios(Scenario(text="late", ttft=30))) as (pool, http_request):
        async with pool.stream(http_request) as response:
            failures: list[BaseException] = []

            async def read() -> None:
                try:
                    await response.receive(60)
                except llm.StreamingFailed as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
                response.abort()
            assert len(failures) == 1
            with pytest.raises(llm.StreamingFailed):
                await response.receive(60)
        assert connections_open(pool) == 0


async def test_a_read_past_its_time_limit_raises_too_slow_and_closes_the_connection() -> None:
    async with open_pool(Scenarios(Scenario(text="late", ttft=30))) as (pool, http_request):
        async with pool.stream(http_request) as response:
            with pytest.raises(trio.TooSlowError):
                await response.receive(0.2)
        assert connections_open(pool) == 0


async def test_reads_through_our_transport_open_no_cancel_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain body's reads keep their time limit in the connection (one deadline, no scope
    per read); only a body decoded on its way (content coding) needs a scope per read."""
    scopes: list[float] = []
    original = trio.move_on_after

    def counting(seconds: float, **kwargs: Any) -> trio.CancelScope:
        scopes.append(seconds)
        return original(seconds, **kwargs)

    async with open_pool(Scenarios(SLOW)) as (pool, http_request):
        async with pool.stream(http_request) as response:
            monkeypatch.setattr(trio, "move_on_after", counting)
            pieces = 0
            while True:
                try:
                    await response.receive(60)
                except StopAsyncIteration:
                    break
                pieces += 1
            monkeypatch.undo()
        assert pieces >= 8  # one read per chunk sent 50 ms apart
        assert scopes == []


class ThroughTheMailbox(ProviderSession):
    """A session whose calls all go through its mailbox (handled in tasks of its own)."""

    inline_calls = False


@pytest.mark.parametrize("mock", [False, True])
async def test_a_body_opened_in_the_sessions_task_is_read_and_judged_in_the_callers(
    mock: bool,
) -> None:
    scenarios = Scenarios(Scenario(text="whole", chunk_chars=2))
    async with open_fake_server(scenarios) as server:
        codec = OpenAICodec(base_url=server.base_url("openai"))
        settings = SessionSettings(http=HttpSettings(trust_env=False))
        transport: Callable[[], MockTransport] | None = None
        if mock:  # a transport of httpx's, not ours
            mocked = MockTransport(scenarios, format="openai")

            def mocked_transport() -> MockTransport:
                return mocked

            transport = mocked_transport

        def session() -> ThroughTheMailbox:
            return ThroughTheMailbox(
                codec, keys=[Secret(KEY)], settings=settings, transport=transport
            )

        spec = SupervisorSpec(children=[ChildSpec.actor("session", session)])
        async with open_runtime(spec) as runtime:
            ref = runtime.ref("session", ThroughTheMailbox)
            here = trio.lowlevel.current_task()
            for _ in range(2):
                body = await ref.call(Attempt(request=resolved("m")))
                text = ""
                while (batch := await body.next_batch()) is not None:
                    assert trio.lowlevel.current_task() is here
                    text += "".join(chunk.text or "" for chunk in batch)
                await body.verdict()
                assert text == "whole"
            statistics = await ref.call(SessionStats())
            assert (statistics.attempts, statistics.failures, statistics.pool.active) == (2, {}, 0)
            assert statistics.breakers == {"m": "closed"}
        if not mock:
            assert server.statistics().connections_total == 1  # given back, then reused


async def test_a_body_that_comes_as_its_mailbox_caller_gives_up_is_given_back_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The caller gives up while its call is handled in the session's task, and the body is
    # ready before the session's task meets a checkpoint: nobody will read it, so the
    # session closes it and ends its loan at once (its connection is not kept, and a
    # graceful stop does not wait for it).
    scenarios = Scenarios(Scenario(text="never read", chunk_chars=2))
    mocked = MockTransport(scenarios, format="openai")
    caller = trio.CancelScope()

    class GivesUpAsItAnswers(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await mocked.handle_async_request(request)
            caller.cancel()  # the caller gives up now: no checkpoint until the body is made
            return response

    abandoned: list[StreamBody] = []
    real_abandon = StreamBody.abandon

    async def recorded(body: StreamBody) -> None:
        abandoned.append(body)
        await real_abandon(body)

    monkeypatch.setattr(StreamBody, "abandon", recorded)
    settings = SessionSettings(http=HttpSettings(trust_env=False))
    codec = OpenAICodec(base_url="http://fake.test/openai/v1")

    def session() -> ThroughTheMailbox:
        return ThroughTheMailbox(
            codec, keys=[Secret(KEY)], settings=settings, transport=GivesUpAsItAnswers
        )

    spec = SupervisorSpec(children=[ChildSpec.actor("session", session, shutdown=30)])
    async with open_runtime(spec) as runtime:
        ref = runtime.ref("session", ThroughTheMailbox)
        with caller:
            await ref.call(Attempt(request=resolved("m")))
        assert caller.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert len(abandoned) == 1  # by the session, for the caller that left
        statistics = await ref.call(SessionStats())
        assert statistics.pool.active == 0
        stopping = trio.current_time()
    # The stop did not wait (30 s) for a loan nobody would give back.
    assert trio.current_time() - stopping < 5
