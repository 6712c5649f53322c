"""One retry rule for malformed answers, the same in every wire format, streamed or not.

An answer that cannot be decoded (JSON that does not parse, or a payload of the wrong shape)
is retryable only while no content (text, reasoning, a tool-call fragment, a finish) has
come out of it; once content has reached the caller it is never retried: the stream ends
with the error. Each retry is an attempt the client counts, governed like any other.

The codecs are checked on bytes alone; the whole rule over real sockets, against the fake
provider server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.errors import ErrorCode
from llm_invocation.providers._base import ProviderCodec
from llm_invocation.providers.anthropic import AnthropicCodec
from llm_invocation.providers.gemini import GeminiCodec
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import (
    FakeServer,
    Malformed,
    Scenario,
    Scenarios,
    WireFormat,
    open_fake_server,
)
from llm_invocation.types import Message, Request, StreamChunk

FORMATS: Final[tuple[WireFormat, ...]] = ("openai", "anthropic", "gemini")
KEY: Final = "sk-test-MALFORMED-0123456789abcdef"
BROKEN: Final = b"{this is not json"
ANY_REQUEST: Final = Request(model="m", messages=[Message(role="user", content="x")])


# ---------------------------------------------------------------------------------------------
# The codecs, on bytes alone


def openai_stream(pieces: list[str]) -> bytes:
    out = [b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]}']
    for piece in pieces:
        out.append(
            b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"'
            + piece.encode()
            + b'"}}]}'
        )
    out.append(b"data: " + BROKEN)
    return b"\n\n".join(out) + b"\n\n"


def anthropic_stream(pieces: list[str]) -> bytes:
    start = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"type":"message","role":"assistant","model":"claude-x","content":[],'
        b'"usage":{"input_tokens":3,"output_tokens":1}}}'
    )
    out = [start]
    if pieces:
        out.append(
            b"event: content_block_start\ndata: "
            b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
        )
    for piece in pieces:
        out.append(
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"' + piece.encode() + b'"}}'
        )
    out.append(b"event: content_block_delta\ndata: " + BROKEN)
    return b"\n\n".join(out) + b"\n\n"


def gemini_stream(pieces: list[str]) -> bytes:
    out: list[bytes] = []
    for piece in pieces:
        out.append(
            b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"'
            + piece.encode()
            + b'"}]},"index":0}],"responseId":"r1","modelVersion":"gemini-x"}'
        )
    out.append(b"data: " + BROKEN)
    return b"\r\n\r\n".join(out) + b"\r\n\r\n"


CODECS: Final[
    dict[WireFormat, tuple[Callable[[], ProviderCodec], Callable[[list[str]], bytes]]]
] = {
    "openai": (OpenAICodec, openai_stream),
    "anthropic": (AnthropicCodec, anthropic_stream),
    "gemini": (GeminiCodec, gemini_stream),
}


def decode_in_reads(codec: ProviderCodec, data: bytes, read: int) -> list[StreamChunk]:
    decoder = codec.stream_decoder(ANY_REQUEST)
    chunks: list[StreamChunk] = []
    for start in range(0, len(data), read):
        chunks.extend(decoder.feed(data[start : start + read]))
    chunks.extend(decoder.close())
    return chunks


@pytest.mark.parametrize("fmt", FORMATS)
@given(
    pieces=st.lists(st.text(alphabet="abcxyz ", min_size=1, max_size=5), max_size=4),
    read=st.integers(min_value=1, max_value=64),
)
def test_a_malformed_stream_event_is_retryable_exactly_when_no_content_came_before_it(
    fmt: WireFormat, pieces: list[str], read: int
) -> None:
    make_codec, render = CODECS[fmt]
    chunks = decode_in_reads(make_codec(), render(pieces), read)
    errors = [c.error for c in chunks if c.error is not None]
    assert len(errors) == 1
    assert chunks[-1].error is errors[0]
    error = errors[0]
    assert error.code is ErrorCode.STREAMING_FAILED
    assert error.details["reason"] == "malformed response"
    assert "".join(c.text for c in chunks) == "".join(pieces)
    assert error.retryable is (not pieces)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("body", [BROKEN, b"", b'{"choices": 5, "candidates": 5, "content": 5}'])
def test_a_malformed_whole_body_is_a_retryable_provider_error(fmt: WireFormat, body: bytes) -> None:
    make_codec, _ = CODECS[fmt]
    request = Request(model="m", messages=[Message(role="user", content="x")], stream=False)
    with pytest.raises(llm.ProviderError) as caught:
        make_codec().decode_response(request, body)
    assert caught.value.retryable
    assert caught.value.details["reason"] == "malformed response"


# ---------------------------------------------------------------------------------------------
# The rule end to end, over real sockets


@asynccontextmanager
async def serve(scenarios: Scenarios) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    async with open_fake_server(scenarios) as server:
        settings: dict[str, Any] = {
            "provider": "openai",
            "retries": {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.02},
            "timeouts": {"connect": 5, "first_chunk": 5, "idle_chunk": 5},
            "providers": {
                fmt: {"api_key": KEY, "base_url": server.base_url(fmt)} for fmt in FORMATS
            },
        }
        # Not about limits, and the scripted models have no price: nothing is limited.
        async with llm.open_client(llm.Config.unlimited(**settings)) as client:
            yield client, server


def request(fmt: str, *, stream: bool) -> llm.Request:
    return llm.Request(model=f"{fmt}:m", messages=[llm.user("hello")], stream=stream)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_answer_before_any_content_is_retried_and_counted(
    fmt: WireFormat, stream: bool
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m", Scenario(text="lost", failure=Malformed(after_chunks=0)), Scenario(text="second")
    )
    async with serve(scenarios) as (client, _):
        response = await client.invoke_sync(request(fmt, stream=stream))
        assert response.text == "second"
        assert scenarios.calls("m") == 2
        assert client.statistics().retries == 1
        stats = (await client.session_statistics())[fmt]
        assert (stats.requests, stats.attempts, stats.retries) == (1, 2, 1)
        assert stats.malformed == 1  # counted whether the codec or the session caught it


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_stream_after_content_is_never_retried(fmt: WireFormat) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(text="abcdefghijkl", chunk_chars=3, failure=Malformed(after_chunks=2)),
        Scenario(text="never asked for"),
    )
    async with serve(scenarios) as (client, _):
        received: list[str] = []
        with pytest.raises(llm.StreamingFailed) as caught:
            async with client.invoke(request(fmt, stream=True)) as stream:
                async for chunk in stream:
                    received.append(chunk.text)
        assert "".join(received) == "abcdef"
        assert not caught.value.retryable
        assert caught.value.details["reason"] == "malformed response"
        assert scenarios.calls("m") == 1
        assert client.statistics().retries == 0


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_malformed_answers_are_retried_no_more_than_the_configured_attempts(
    fmt: WireFormat, stream: bool
) -> None:
    scenarios = Scenarios()
    broken = Scenario(text="lost", failure=Malformed(after_chunks=0))
    scenarios.add("m", broken, broken, broken, Scenario(text="never asked for"))
    async with serve(scenarios) as (client, _):
        expected = llm.StreamingFailed if stream else llm.ProviderError
        with pytest.raises(expected) as caught:
            await client.invoke_sync(request(fmt, stream=stream))
        assert caught.value.details["reason"] == "malformed response"
        assert scenarios.calls("m") == 3
        assert client.statistics().retries == 2
        assert (await client.session_statistics())[fmt].malformed == 3


@pytest.mark.parametrize(("before", "retryable"), [([], True), (["ab"], False)])
def test_a_malformed_gemini_json_array_follows_the_same_rule(
    before: list[str], retryable: bool
) -> None:
    objects = [
        b'{"candidates":[{"content":{"role":"model","parts":[{"text":"'
        + piece.encode()
        + b'"}]},"index":0}]}'
        for piece in before
    ]
    body = b"[" + b"".join(o + b"\n,\r\n" for o in objects) + b"oops"
    chunks = decode_in_reads(GeminiCodec(stream_format="json-array"), body, 5)
    error = chunks[-1].error
    assert error is not None
    assert error.code is ErrorCode.STREAMING_FAILED
    assert error.details["reason"] == "malformed response"
    assert error.retryable is retryable
    assert "".join(c.text for c in chunks) == "".join(before)
