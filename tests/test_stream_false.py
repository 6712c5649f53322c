"""``stream=False`` through `Client.invoke`, and the response metadata every path keeps.

A non-streamed request is one HTTP request per attempt whose whole answer comes as one chunk
through the same stream object; ``id``, ``created``, ``model`` and ``system_fingerprint``
reach the aggregate whether the answer was streamed or not.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import (
    FakeServer,
    HttpError,
    MockTransport,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    ScriptedUsage,
    Stall,
    open_fake_server,
)

FORMATS: Final = ("openai", "anthropic", "gemini")
KEY: Final = "sk-test-STREAMFALSE-0123456789"


def make_config(**overrides: Any) -> llm.Config:
    """Explicit limits (none), quick retries, and a key for each provider."""
    settings: dict[str, Any] = {
        "provider": "openai",
        "timeout": 30,
        "retries": {"max_attempts": 3, "initial_delay": 0.1, "max_delay": 1, "jitter": False},
        "rate_limits": {
            "requests_per_minute": None,
            "tokens_per_minute": None,
            "concurrent_calls": None,
        },
        "cost_control": {"max_cost_per_request": None, "max_budget": None},
        "providers": {fmt: {"api_key": KEY} for fmt in FORMATS},
    }
    settings.update(overrides)
    return llm.Config.from_dict(settings)


@asynccontextmanager
async def mock_client(
    scenarios: Scenarios, config: llm.Config | None = None
) -> AsyncGenerator[tuple[llm.Client, dict[str, MockTransport]]]:
    transports = {name: MockTransport(scenarios, format=name) for name in FORMATS}
    factories = {name: (lambda t=t: t) for name, t in transports.items()}
    async with llm.open_client(config or make_config(), transports=factories) as client:
        yield client, transports


@asynccontextmanager
async def server_client(scenarios: Scenarios) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    async with open_fake_server(scenarios) as server:
        config = make_config(
            providers={"openai": {"api_key": KEY, "base_url": server.base_url("openai")}}
        )
        async with llm.open_client(config) as client:
            yield client, server


def ask(model: str, **kw: Any) -> llm.Request:
    return llm.Request(model=model, messages=[llm.user("hello there")], **kw)


# -- invoke(stream=False) ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_invoke_sends_one_non_streamed_request_and_yields_the_answer_as_one_chunk(
    fmt: str,
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(
            text="the whole answer",
            chunk_chars=2,
            usage=ScriptedUsage(prompt_tokens=7, completion_tokens=3),
        ),
    )
    async with (
        mock_client(scenarios) as (client, transports),
        client.invoke(ask(f"{fmt}:m", stream=False)) as stream,
    ):
        chunks = [chunk async for chunk in stream]
    (sent,) = transports[fmt].requests
    assert sent.json is not None
    assert not sent.json.get("stream")  # no streamed body was asked for
    assert "stream" not in sent.path and "alt=sse" not in sent.url
    (chunk,) = chunks
    assert (chunk.text, chunk.finish_reason) == ("the whole answer", "stop")
    assert chunk.usage is not None
    assert (chunk.usage.prompt_tokens, chunk.usage.completion_tokens) == (7, 3)
    assert stream.response.text == "the whole answer"
    assert stream.response.usage is not None and stream.response.usage.total_tokens == 10


async def test_the_one_chunk_carries_the_tool_calls() -> None:
    call = ScriptedToolCall(name="get_weather", arguments={"location": "San Francisco"})
    scenarios = Scenarios(Scenario(tool_calls=[call]))
    async with (
        mock_client(scenarios) as (client, _),
        client.invoke(ask("openai:m", stream=False), tools=[]) as stream,
    ):
        (chunk,) = [chunk async for chunk in stream]
    assert chunk.finish_reason == "tool_calls"
    assert chunk.tool_calls is not None
    (delta,) = chunk.tool_calls
    assert delta.name == "get_weather"
    assert '"San Francisco"' in delta.arguments
    assert [c.name for c in stream.response.tool_calls] == ["get_weather"]


async def test_stream_false_as_a_keyword_of_invoke_is_honoured() -> None:
    scenarios = Scenarios(Scenario(text="kw"))
    async with (
        mock_client(scenarios) as (client, transports),
        client.invoke(messages=[llm.user("hi")], model="openai:m", stream=False) as s,
    ):
        assert [c.text async for c in s] == ["kw"]
    assert not transports["openai"].requests[0].json.get("stream")


async def test_a_non_streamed_invoke_is_retried_and_each_attempt_is_one_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("flaky", Scenario(failure=HttpError(status=500)), Scenario(text="second"))
    async with (
        mock_client(scenarios) as (client, transports),
        client.invoke(ask("openai:flaky", stream=False)) as stream,
    ):
        texts = [chunk.text async for chunk in stream]
        report = await client.usage()
    assert texts == ["second"]
    assert len(transports["openai"].requests) == 2
    assert client.statistics().retries == 1
    assert (report.total.ok, report.total.error) == (1, 0)


async def test_a_non_streamed_invoke_cut_by_the_caller_is_recorded_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add("slow", Scenario(text="late", failure=Stall(after_chunks=0, seconds=60)))
    async with mock_client(scenarios) as (client, _):
        with trio.move_on_after(5) as scope:
            async with client.invoke(ask("openai:slow", stream=False)) as stream:
                async for _ in stream:
                    pass
        report = await client.usage()
    assert scope.cancelled_caught
    assert (report.total.cancelled, report.total.error, report.total.ok) == (1, 0, 0)


async def test_a_whole_answer_counts_as_delivered_once_it_arrived() -> None:
    # The caller leaves the block before reading the chunk: the answer came whole and was
    # paid for, so the call is recorded as ok, not cancelled.
    scenarios = Scenarios(Scenario(text="whole"))
    async with mock_client(scenarios) as (client, _):
        async with client.invoke(ask("openai:m", stream=False)) as stream:
            pass
        report = await client.usage()
    assert (report.total.ok, report.total.cancelled) == (1, 0)
    assert stream.response.text == "whole"


async def test_a_non_streamed_answer_is_cached_and_replayed_with_its_metadata() -> None:
    scenarios = Scenarios(Scenario(text="cached"))
    async with mock_client(scenarios) as (client, transports):
        first = await client.invoke_sync(ask("openai:m", stream=False, cache=True))
        async with client.invoke(ask("openai:m", stream=False, cache=True)) as stream:
            (chunk,) = [c async for c in stream]
    assert len(transports["openai"].requests) == 1
    assert chunk.text == "cached"
    assert chunk.system_fingerprint == first.system_fingerprint == "fp_fake"
    assert (stream.response.id, stream.response.created) == (first.id, first.created)
    assert stream.response.metadata is not None and stream.response.metadata["cache"] == "hit"


# -- metadata survives aggregation -------------------------------------------------------------


async def test_a_streamed_openai_answer_keeps_its_fingerprint_created_id_and_model() -> None:
    scenarios = Scenarios()
    scenarios.add("gpt-4o-2024-08-06", Scenario(text="streamed words", chunk_chars=3))
    async with (
        server_client(scenarios) as (client, _),
        client.invoke(ask("openai:gpt-4o-2024-08-06")) as stream,
    ):
        chunks = [chunk async for chunk in stream]
    response = stream.response
    stamped = [c for c in chunks if c.created is not None]
    assert len(stamped) == 1  # the first chunk carries them, not every chunk
    assert stamped[0] is chunks[0]
    assert response.system_fingerprint == "fp_fake"
    assert response.created == stamped[0].created
    assert response.created.timestamp() == int(response.created.timestamp())  # the server's
    assert response.id.startswith("chatcmpl-fake")
    assert response.model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize("stream", [True, False])
async def test_complete_and_chat_keep_the_fingerprint_created_and_id(stream: bool) -> None:
    scenarios = Scenarios(Scenario(text="an answer", chunk_chars=2))
    async with server_client(scenarios) as (client, _):
        chat = await client.chat([llm.user("hi")], model="openai:m")
        completion = await client.complete("once upon", model="openai:m")
        whole = await client.invoke_sync(ask("openai:m", stream=stream))
    for response in (chat, completion, whole):
        assert response.system_fingerprint == "fp_fake"
        assert response.created.timestamp() == int(response.created.timestamp())
    assert chat.id.startswith("chatcmpl-fake")
    assert completion.id.startswith("cmpl-fake") or completion.id.startswith("chatcmpl-fake")
    assert whole.id.startswith("chatcmpl-fake")


async def test_chat_deltas_carry_the_fingerprint_and_the_providers_creation_time() -> None:
    scenarios = Scenarios(Scenario(text="one two three", chunk_chars=4))
    async with (
        server_client(scenarios) as (client, _),
        client.stream_chat([llm.user("hi")], model="openai:m") as deltas,
    ):
        received = [delta async for delta in deltas]
    first = received[0]
    assert first.system_fingerprint == "fp_fake"
    assert first.created == deltas.response.created


async def test_a_non_streamed_invoke_keeps_what_the_provider_answered() -> None:
    scenarios = Scenarios(Scenario(text="whole"))
    async with (
        server_client(scenarios) as (client, _),
        client.invoke(ask("openai:m", stream=False)) as stream,
    ):
        (chunk,) = [c async for c in stream]
    response = stream.response
    assert response.system_fingerprint == chunk.system_fingerprint == "fp_fake"
    assert response.created == chunk.created
    assert response.id == chunk.id and response.id.startswith("chatcmpl-fake")
    assert response.metadata is not None and response.metadata.get("service_tier") == "default"


# -- the aggregator ----------------------------------------------------------------------------

WHEN: Final = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

_stamps = st.tuples(
    st.one_of(st.none(), st.integers(0, 10_000).map(lambda s: WHEN + timedelta(seconds=s))),
    st.one_of(st.none(), st.text("abcdef0123456789_", min_size=1, max_size=12)),
    st.one_of(st.none(), st.text("abcdef0123456789-", min_size=1, max_size=12)),
)


@given(st.lists(_stamps, min_size=1, max_size=12))
def test_the_aggregate_keeps_the_first_reported_created_fingerprint_and_id(
    stamps: list[tuple[datetime | None, str | None, str | None]],
) -> None:
    aggregator = llm.StreamAggregator()
    for created, fingerprint, chunk_id in stamps:
        aggregator.add(
            llm.StreamChunk(
                id=chunk_id or "",
                text="x",
                created=created,
                system_fingerprint=fingerprint,
            )
        )
    fallback = WHEN - timedelta(days=1)
    response = aggregator.response(id="fallback", created=fallback)
    createds = [c for c, _, _ in stamps if c is not None]
    fingerprints = [f for _, f, _ in stamps if f]
    ids = [i for _, _, i in stamps if i]
    assert response.created == (createds[0] if createds else fallback)
    assert response.system_fingerprint == (fingerprints[0] if fingerprints else None)
    assert response.id == (ids[0] if ids else "fallback")


def test_a_naive_creation_time_on_a_chunk_is_read_as_utc() -> None:
    aggregator = llm.StreamAggregator()
    aggregator.add(llm.StreamChunk(text="x", created=datetime(2025, 1, 2, 3, 4, 5)))
    assert aggregator.response().created == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _decode_openai(*payloads: bytes) -> list[llm.StreamChunk]:
    codec = OpenAICodec(name="openai")
    decoder = codec.stream_decoder(ask("gpt-4o"))
    body = b"".join(b"data: " + p + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"
    return decoder.feed(body) + decoder.close()


def test_the_openai_stream_stamps_only_its_first_chunk_with_created_and_fingerprint() -> None:
    head = b'{"id":"c1","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1",'
    chunks = _decode_openai(
        head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
        head + b'"choices":[{"index":0,"delta":{"content":"Hi"}}]}',
        head + b'"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}]}',
    )
    assert [c.text for c in chunks] == ["Hi", "!"]
    assert chunks[0].created == datetime.fromtimestamp(1700000000, UTC)
    assert chunks[0].system_fingerprint == "fp_1"
    assert (chunks[1].created, chunks[1].system_fingerprint) == (None, None)


@pytest.mark.parametrize("created", [b"1e300", b"-5", b"0", b"null"])
def test_an_impossible_creation_time_in_a_stream_is_no_creation_time(created: bytes) -> None:
    chunks = _decode_openai(
        b'{"id":"c1","created":' + created + b',"system_fingerprint":"fp_2",'
        b'"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}'
    )
    assert [c.text for c in chunks] == ["ok"]
    assert chunks[0].created is None
    assert chunks[0].system_fingerprint == "fp_2"
    aggregator = llm.StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    assert aggregator.response(created=WHEN).created == WHEN
