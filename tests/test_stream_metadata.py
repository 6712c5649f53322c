"""A response keeps the provider's own metadata, streamed or not: ``id``, ``model``,
``created`` and ``system_fingerprint``.

Where a provider sends no creation time (Anthropic; Gemini without Vertex AI's
``createTime``) no chunk makes one up: ``StreamChunk.created`` stays None and the aggregate's
``created`` is the time the whole answer had arrived, streamed or not.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import pytest

import llm_invocation as llm
from llm_invocation.providers.anthropic import AnthropicCodec
from llm_invocation.providers.gemini import GeminiCodec
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import FakeServer, Scenario, Scenarios, WireFormat, open_fake_server
from llm_invocation.types import Message, Request, StreamAggregator, StreamChunk

FORMATS: Final[tuple[WireFormat, ...]] = ("openai", "anthropic", "gemini")
KEY: Final = "sk-test-METADATA-0123456789abcdef"
ANY_REQUEST: Final = Request(model="m", messages=[Message(role="user", content="x")])
WHOLE_REQUEST: Final = Request(
    model="m", messages=[Message(role="user", content="x")], stream=False
)


def decode(decoder_of: Any, data: bytes) -> list[StreamChunk]:
    decoder = decoder_of.stream_decoder(ANY_REQUEST)
    return decoder.feed(data) + decoder.close()


# ---------------------------------------------------------------------------------------------
# Gemini: responseId, modelVersion and createTime


def gemini_object(text: str, *, create_time: str | None = None, finish: bool = False) -> bytes:
    candidate = '{"content":{"role":"model","parts":[{"text":"' + text + '"}]}'
    if finish:
        candidate += ',"finishReason":"STOP"'
    candidate += ',"index":0}'
    created = f',"createTime":"{create_time}"' if create_time is not None else ""
    body = (
        '{"candidates":['
        + candidate
        + '],"modelVersion":"gemini-x","responseId":"resp-1"'
        + created
        + "}"
    )
    return b"data: " + body.encode() + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-04-02T17:03:50.399550Z", datetime(2026, 4, 2, 17, 3, 50, 399550, tzinfo=UTC)),
        ("2026-04-02T17:03:50.399550123Z", datetime(2026, 4, 2, 17, 3, 50, 399550, tzinfo=UTC)),
        ("2026-04-02T19:03:50+02:00", datetime(2026, 4, 2, 17, 3, 50, tzinfo=UTC)),
        ("2026-04-02T17:03:50", datetime(2026, 4, 2, 17, 3, 50, tzinfo=UTC)),
    ],
)
def test_a_gemini_create_time_is_the_stream_s_creation_time_in_utc(
    text: str, expected: datetime
) -> None:
    data = gemini_object("a", create_time=text) + gemini_object("b", create_time=text, finish=True)
    chunks = decode(GeminiCodec(), data)
    assert [c.created for c in chunks] == [expected, None]
    assert chunks[0].created is not None
    assert chunks[0].created.tzinfo is UTC
    aggregator = StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    response = aggregator.response()
    assert (response.id, response.model, response.created) == ("resp-1", "gemini-x", expected)


def test_a_create_time_on_an_object_without_chunks_goes_on_the_first_chunk() -> None:
    empty = b'data: {"responseId":"resp-1","createTime":"2026-01-01T00:00:00Z"}\r\n\r\n'
    chunks = decode(GeminiCodec(), empty + gemini_object("a", finish=True))
    assert [c.created for c in chunks] == [datetime(2026, 1, 1, tzinfo=UTC)]


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-45T99:00:00Z"])
def test_an_unreadable_create_time_is_no_creation_time_and_the_answer_is_fine(
    text: str,
) -> None:
    chunks = decode(GeminiCodec(), gemini_object("a", create_time=text, finish=True))
    assert [(c.text, c.created, c.error) for c in chunks] == [("a", None, None)]


def test_a_gemini_body_without_create_time_makes_no_chunk_claim_one() -> None:
    chunks = decode(GeminiCodec(), gemini_object("a", finish=True))
    assert all(c.created is None for c in chunks)


def test_a_whole_gemini_body_keeps_its_create_time() -> None:
    body = gemini_object("a", create_time="2026-05-27T16:53:45.443719Z", finish=True)
    response = GeminiCodec().decode_response(WHOLE_REQUEST, body.removeprefix(b"data: "))
    assert response.created == datetime(2026, 5, 27, 16, 53, 45, 443719, tzinfo=UTC)
    assert (response.id, response.model) == ("resp-1", "gemini-x")


# ---------------------------------------------------------------------------------------------
# Anthropic: message_start's id and model, no creation time


ANTHROPIC_STREAM: Final = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01","type":'
    b'"message","role":"assistant","model":"claude-x-1","content":[],"usage":'
    b'{"input_tokens":3,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_an_anthropic_stream_keeps_id_and_model_and_claims_no_creation_time() -> None:
    chunks = decode(AnthropicCodec(), ANTHROPIC_STREAM)
    assert (chunks[0].id, chunks[0].model) == ("msg_01", "claude-x-1")
    assert all(c.created is None for c in chunks)
    aggregator = StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=1)))
    response = aggregator.response(created=when)
    assert (response.id, response.model, response.created) == ("msg_01", "claude-x-1", when)
    assert response.created.tzinfo is UTC  # stored in UTC


# ---------------------------------------------------------------------------------------------
# OpenAI: created and system_fingerprint once, on the first chunk


def test_an_openai_stream_stamps_created_and_fingerprint_on_its_first_chunk_only() -> None:
    def chunk(delta: str, finish: str = "null") -> bytes:
        return (
            b'data: {"id":"chatcmpl-1","model":"gpt-x","created":1700000000,'
            b'"system_fingerprint":"fp_1","choices":[{"index":0,"delta":'
            + delta.encode()
            + b',"finish_reason":'
            + finish.encode()
            + b"}]}\n\n"
        )

    data = chunk('{"content":"a"}') + chunk('{"content":"b"}') + chunk("{}", '"stop"')
    chunks = decode(OpenAICodec(), data + b"data: [DONE]\n\n")
    assert [(c.created, c.system_fingerprint) for c in chunks] == [
        (datetime.fromtimestamp(1700000000, UTC), "fp_1"),
        (None, None),
        (None, None),
    ]
    assert {(c.id, c.model) for c in chunks} == {("chatcmpl-1", "gpt-x")}


# ---------------------------------------------------------------------------------------------
# End to end: streamed and whole answers carry the same metadata


@asynccontextmanager
async def serve(scenarios: Scenarios) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    async with open_fake_server(scenarios) as server:
        settings: dict[str, Any] = {
            "provider": "openai",
            "retries": {"max_attempts": 1},
            "providers": {
                fmt: {"api_key": KEY, "base_url": server.base_url(fmt)} for fmt in FORMATS
            },
        }
        # Not about limits, and the scripted models have no price: nothing is limited.
        async with llm.open_client(llm.Config.unlimited(**settings)) as client:
            yield client, server


ID_PREFIXES: Final = {"openai": "chatcmpl-fake", "anthropic": "msg_fake", "gemini": "fake"}
FINGERPRINTS: Final = {"openai": "fp_fake", "anthropic": None, "gemini": None}


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_provider_s_id_model_and_fingerprint_reach_the_caller(
    fmt: WireFormat, stream: bool
) -> None:
    scenarios = Scenarios()
    scenarios.add("meta-model", Scenario(text="hello"))
    async with serve(scenarios) as (client, _):
        request = llm.Request(model=f"{fmt}:meta-model", messages=[llm.user("hi")], stream=stream)
        async with client.invoke(request) as invocation:
            chunks = [chunk async for chunk in invocation]
        response = invocation.response
    assert response.id.startswith(ID_PREFIXES[fmt])
    assert response.model == "meta-model"
    assert response.system_fingerprint == FINGERPRINTS[fmt]
    assert response.created.tzinfo is UTC
    assert chunks[0].id == response.id
    stamped = [c.created for c in chunks if c.created is not None]
    if fmt == "openai":
        # The server's own integer clock, carried once.
        assert stamped == [response.created]
        assert response.created.microsecond == 0
    elif stream:
        assert stamped == []  # no creation time sent: none made up on a chunk


def test_a_create_time_first_sent_on_a_later_object_still_reaches_a_chunk() -> None:
    data = gemini_object("a") + gemini_object("b", create_time="2026-01-01T00:00:00Z", finish=True)
    chunks = decode(GeminiCodec(), data)
    assert [c.created for c in chunks] == [None, datetime(2026, 1, 1, tzinfo=UTC)]
