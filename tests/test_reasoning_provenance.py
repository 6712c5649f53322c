"""Reasoning parts remember which provider made them, and their opaque data (Anthropic's
signature, Gemini's ``thoughtSignature``, a Responses item's encrypted content) goes back to
that provider only: another provider refuses or misreads it."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import trio.testing

import llm_invocation as llm
from llm_invocation import Message, ReasoningPart, Request, StreamAggregator, user
from llm_invocation.providers.anthropic import AnthropicCodec
from llm_invocation.providers.gemini import GeminiCodec
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import (
    HttpError,
    MockTransport,
    Scenario,
    Scenarios,
    ScriptedToolCall,
)
from llm_invocation.tools import tool

KEY = "sk-test-PROVENANCE-0123456789"


def ask(model: str, *messages: Message) -> Request:
    return Request(model=model, messages=[user("Weather in Paris?"), *messages, user("And?")])


def body_of(codec: Any, request: Request) -> dict[str, Any]:
    encoded = codec.encode(request, KEY)
    assert encoded.body is not None
    body: dict[str, Any] = json.loads(encoded.body)
    return body


def gemini_answer() -> Message:
    body: dict[str, Any] = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Look it up.", "thought": True, "thoughtSignature": "GEMSIG"},
                        {"text": "Sunny."},
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }
    request = Request(model="gemini-2.5-flash", messages=[user("q")])
    return GeminiCodec().decode_response(request, json.dumps(body).encode()).message


def anthropic_body() -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Look it up.", "signature": "ANTSIG"},
            {"type": "redacted_thinking", "data": "ANTDATA"},
            {"type": "text", "text": "Sunny."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }


def anthropic_answer(name: str = "anthropic") -> Message:
    request = Request(model="claude-sonnet-4-5", messages=[user("q")])
    body = json.dumps(anthropic_body()).encode()
    return AnthropicCodec(name=name).decode_response(request, body).message


def anthropic_streamed_answer() -> Message:
    def event(payload: dict[str, Any]) -> bytes:
        return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()

    message: dict[str, Any] = {**anthropic_body(), "content": [], "stop_reason": None}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Look it up."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "ANTSIG"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "text", "text": ""},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "Sunny."},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    stream = b"".join(event(e) for e in events)
    codec = AnthropicCodec()
    decoder = codec.stream_decoder(Request(model="claude-sonnet-4-5", messages=[user("q")]))
    aggregator = StreamAggregator()
    for chunk in decoder.feed(stream) + decoder.close():
        aggregator.add(chunk)
    return aggregator.response().message


def responses_answer(name: str) -> Message:
    body: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-5",
        "output": [
            {
                "id": "rs_1",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "Look it up."}],
                "encrypted_content": "gAAAAENC",
            },
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
            },
        ],
    }
    codec = OpenAICodec(name=name, api="responses")
    request = Request(model="gpt-5", messages=[user("q")])
    return codec.decode_response(request, json.dumps(body).encode()).message


def reasoning_parts(message: Message) -> list[ReasoningPart]:
    return [part for part in message.content or () if isinstance(part, ReasoningPart)]


# -- every decoder records the provider --------------------------------------------------------


def test_every_decoder_records_the_provider_entry_on_reasoning_parts() -> None:
    decoded = {
        "gemini": gemini_answer(),
        "anthropic": anthropic_answer(),
        "anthropic (streamed)": anthropic_streamed_answer(),
        "work-openai": responses_answer("work-openai"),
    }
    assert {
        source: {part.provider for part in reasoning_parts(message)}
        for source, message in decoded.items()
    } == {
        "gemini": {"gemini"},
        "anthropic": {"anthropic"},
        "anthropic (streamed)": {"anthropic"},
        "work-openai": {"work-openai"},
    }


def test_the_aggregator_takes_the_provider_given_when_no_chunk_names_one() -> None:
    aggregator = StreamAggregator()
    aggregator.add(llm.StreamChunk(reasoning="hmm", reasoning_signature="S"))
    response = aggregator.response(provider="gemini")
    assert reasoning_parts(response.message) == [
        ReasoningPart(text="hmm", signature="S", provider="gemini")
    ]


# -- the same provider gets its signatures back ------------------------------------------------


def test_anthropic_gets_its_own_signed_and_redacted_thinking_back() -> None:
    body = body_of(AnthropicCodec(), ask("claude-sonnet-4-5", anthropic_answer()))
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Look it up.", "signature": "ANTSIG"},
        {"type": "redacted_thinking", "data": "ANTDATA"},
        {"type": "text", "text": "Sunny."},
    ]


def test_anthropic_gets_the_signature_of_its_own_streamed_answer_back() -> None:
    body = body_of(AnthropicCodec(), ask("claude-sonnet-4-5", anthropic_streamed_answer()))
    assert body["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "Look it up.",
        "signature": "ANTSIG",
    }


def test_a_responses_entry_gets_its_own_encrypted_reasoning_back() -> None:
    codec = OpenAICodec(name="work-openai", api="responses")
    body = body_of(codec, ask("gpt-5", responses_answer("work-openai")))
    assert body["input"][1] == {
        "type": "reasoning",
        "id": "rs_1",
        "encrypted_content": "gAAAAENC",
        "summary": [{"type": "summary_text", "text": "Look it up."}],
    }


# -- another provider gets no foreign opaque data ----------------------------------------------


def test_anthropic_gets_no_thinking_made_by_gemini() -> None:
    body = body_of(AnthropicCodec(), ask("claude-sonnet-4-5", gemini_answer()))
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Sunny."}],
    }


def test_anthropic_gets_no_reasoning_made_by_the_responses_api() -> None:
    body = body_of(AnthropicCodec(), ask("claude-sonnet-4-5", responses_answer("openai")))
    assert "gAAAAENC" not in json.dumps(body)
    assert body["messages"][1]["content"] == [{"type": "text", "text": "Sunny."}]


def test_another_anthropic_entry_gets_no_thinking_signed_for_the_first() -> None:
    body = body_of(
        AnthropicCodec(name="anthropic-eu"), ask("claude-sonnet-4-5", anthropic_answer())
    )
    assert body["messages"][1]["content"] == [{"type": "text", "text": "Sunny."}]


def test_gemini_gets_anthropic_thinking_as_an_unsigned_thought() -> None:
    body = body_of(GeminiCodec(), ask("gemini-2.5-flash", anthropic_answer()))
    assert body["contents"][1]["parts"] == [
        {"text": "Look it up.", "thought": True},
        {"text": "Sunny."},
    ]


def test_another_responses_entry_gets_no_encrypted_reasoning_of_the_first() -> None:
    codec = OpenAICodec(name="home-openai", api="responses")
    body = body_of(codec, ask("gpt-5", responses_answer("work-openai")))
    assert "gAAAAENC" not in json.dumps(body)
    assert body["input"][1] == {"role": "assistant", "content": "Sunny."}


# -- serialisation -----------------------------------------------------------------------------


def test_a_part_built_by_hand_serialises_without_a_provider() -> None:
    part = ReasoningPart(text="hmm", signature="S")
    assert msgspec.json.decode(msgspec.json.encode(part)) == {
        "type": "reasoning",
        "text": "hmm",
        "signature": "S",
    }


def test_the_provider_survives_a_json_round_trip() -> None:
    message = anthropic_answer()
    assert msgspec.json.decode(msgspec.json.encode(message), type=Message) == message


# -- a fallback in the tool loop ---------------------------------------------------------------


@tool
def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name.
    """
    return f"Sunny in {city}"


async def test_a_fallback_in_the_tool_loop_sends_no_foreign_signature(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "m",
        Scenario(
            reasoning="Look it up.",
            tool_calls=[ScriptedToolCall(name="weather", arguments={"city": "Paris"})],
        ),
        *[Scenario(failure=HttpError(status=529)) for _ in range(3)],
    )
    scenarios.add("backup", Scenario(text="Sunny in Paris."))
    formats = ("openai", "anthropic", "gemini")
    transports = {name: MockTransport(scenarios, format=name) for name in formats}
    providers: dict[str, Any] = {name: {"api_key": KEY} for name in formats}
    providers["anthropic"]["fallback"] = ["gemini:backup"]
    config = llm.Config.unlimited(provider="openai", providers=providers, tools={"max_steps": 4})
    async with llm.open_client(
        config, transports={name: (lambda t=t: t) for name, t in transports.items()}
    ) as client:
        client.register_tool(weather)
        request = Request(model="anthropic:m", messages=[user("Weather in Paris?")])
        response = await client.invoke_sync(request, tool_mode="auto")
    assert response.text == "Sunny in Paris."
    first_answer = transports["anthropic"].requests[-1].json["messages"][1]["content"]
    assert first_answer[0]["type"] == "thinking"  # Anthropic's retries got it back, signed
    sent = transports["gemini"].requests[-1].json
    assert first_answer[0]["signature"] not in json.dumps(sent)
    assert sent["contents"][1]["parts"][0] == {"text": "Look it up.", "thought": True}
