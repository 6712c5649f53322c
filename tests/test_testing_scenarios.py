"""Scenarios, the three renderers and the in-process MockTransport.

Rendered bytes are parsed back with the project's SSE parser and JSON, and checked against
the official SDK models (openai, anthropic) and the project's own codecs.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydantic
import pytest
import trio
import trio.testing
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llm_invocation import types as T
from llm_invocation.errors import RateLimited
from llm_invocation.providers._base import HttpRequest, ProviderCodec
from llm_invocation.providers._sse import SSEEvent, SSEParser
from llm_invocation.providers.mock import MAX_RECORDED, FakeProvider, Reply
from llm_invocation.testing import (
    AnthropicRenderer,
    Disconnect,
    ErrorEvent,
    Event,
    GeminiRenderer,
    HttpError,
    Malformed,
    MockTransport,
    OpenAIRenderer,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    ScriptedUsage,
    Stall,
    WireFormat,
    renderer_for,
    tokens_per_second,
)

OPENAI_CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
OPENAI_STREAM = {**OPENAI_CHAT, "stream": True}
OPENAI_USAGE = {**OPENAI_STREAM, "stream_options": {"include_usage": True}}
LEGACY = {"model": "gpt-3.5-turbo-instruct", "prompt": "say something", "stream": True}
ANTHROPIC = {
    "model": "claude-test",
    "max_tokens": 100,
    "system": "be brief",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    "stream": True,
}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
REQUESTS: dict[WireFormat, dict[str, Any]] = {
    "openai": OPENAI_USAGE,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
}
TOOLS = [
    ScriptedToolCall(name="get_weather", arguments={"city": "Paris", "unit": "celsius"}),
    ScriptedToolCall(name="get_time", arguments={"zone": "CET"}),
]
_STREAM_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def sse(events: list[Event]) -> list[SSEEvent]:
    """The server-sent events of a rendered stream (markers skipped)."""
    parser = SSEParser()
    out: list[SSEEvent] = []
    for event in events:
        if isinstance(event, bytes):
            out.extend(parser.feed(event))
    out.extend(parser.flush())
    return out


def payloads(events: list[Event]) -> list[Any]:
    """The decoded JSON data of every event but OpenAI's ``[DONE]``."""
    return [json.loads(e.data) for e in sse(events) if e.data != b"[DONE]"]


def openai_chunks(events: list[Event]) -> list[ChatCompletionChunk]:
    return [
        ChatCompletionChunk.model_validate_json(e.data) for e in sse(events) if e.data != b"[DONE]"
    ]


def gemini_text(chunks: list[Any], *, thought: bool = False) -> str:
    return "".join(
        part.get("text", "")
        for chunk in chunks
        for part in chunk["candidates"][0]["content"]["parts"]
        if part.get("thought", False) is thought
    )


# -- scenarios --------------------------------------------------------------------------------


def test_scenarios_select_the_script_named_by_the_model() -> None:
    scenarios = Scenarios()
    scenarios.add("scripted", Scenario(text="from the script"))
    assert scenarios.next("scripted").text == "from the script"
    assert scenarios.next("other-model") is scenarios.default


def test_scenarios_strip_a_provider_prefix_and_gemini_models_prefix() -> None:
    scenarios = Scenarios()
    scenarios.add("fail-then-ok", Scenario(text="a"))
    assert scenarios.next("openai:fail-then-ok").text == "a"
    assert scenarios.next("models/fail-then-ok").text == "a"
    assert scenarios.calls("fail-then-ok") == 2


def test_scenarios_consume_steps_in_order_and_repeat_the_last() -> None:
    scenarios = Scenarios()
    scenarios.add("s", Scenario(text="1"), Scenario(text="2"), Scenario(text="3"))
    assert [scenarios.next("s").text for _ in range(5)] == ["1", "2", "3", "3", "3"]
    assert scenarios.calls("s") == 5


def test_scenarios_peek_does_not_consume() -> None:
    scenarios = Scenarios()
    scenarios.add("s", Scenario(text="1"), Scenario(text="2"))
    assert scenarios.peek("s").text == "1"
    assert scenarios.next("s").text == "1"
    assert scenarios.peek("s").text == "2"
    assert scenarios.calls("s") == 1


def test_scenarios_reset_rewinds_scripts_and_counts() -> None:
    scenarios = Scenarios()
    scenarios.add("s", Scenario(text="1"), Scenario(text="2"))
    scenarios.next("s")
    scenarios.next("unscripted")
    scenarios.reset()
    assert scenarios.calls("s") == 0
    assert scenarios.calls("unscripted") == 0
    assert scenarios.next("s").text == "1"


def test_scenarios_clear_forgets_scripts() -> None:
    scenarios = Scenarios(Scenario(text="default"))
    scenarios.add("s", Scenario(text="1"))
    scenarios.clear()
    assert scenarios.names() == []
    assert scenarios.next("s").text == "default"


def test_scenarios_count_unscripted_models_by_name() -> None:
    scenarios = Scenarios()
    scenarios.next("gpt-x")
    scenarios.next("gpt-x")
    assert scenarios.calls("gpt-x") == 2


def test_a_script_needs_a_step() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Scenarios().add("empty")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Scenario(chunk_chars=0),
        lambda: Scenario(ttft=-1),
        lambda: Scenario(interval=math.inf),
        lambda: HttpError(status=200),
        lambda: Stall(after_chunks=-1),
        lambda: ScriptedUsage(prompt_tokens=1, completion_tokens=1, cache_read_tokens=2),
        lambda: ScriptedUsage(prompt_tokens=1, completion_tokens=1, reasoning_tokens=2),
    ],
)
def test_out_of_range_values_raise_value_error(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_tokens_per_second_is_the_interval_between_chunks() -> None:
    assert tokens_per_second(50) == pytest.approx(0.02)
    with pytest.raises(ValueError):
        tokens_per_second(0)


def test_generated_text_echoes_the_last_user_message_in_completion_words() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "alpha beta"}]}
    chunks = openai_chunks(OpenAIRenderer().render_stream(Scenario(completion_words=7), request))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("You said: alpha beta ")
    assert len(text.split()) == 7


def test_failures_round_trip_as_a_tagged_union() -> None:
    import msgspec

    scenario = Scenario(failure=ErrorEvent(after_chunks=2, kind="rate_limit"))
    decoded = msgspec.json.decode(msgspec.json.encode(scenario), type=Scenario)
    assert decoded == scenario
    assert b'"type":"ErrorEvent"' in msgspec.json.encode(scenario)


# -- OpenAI -----------------------------------------------------------------------------------


def test_openai_stream_is_accepted_by_the_sdk_and_ends_with_done() -> None:
    events = OpenAIRenderer().render_stream(Scenario(text="Hello, fake world!"), OPENAI_STREAM)
    assert events[-1] == b"data: [DONE]\n\n"
    assert all(isinstance(e, bytes) and e.endswith(b"\n\n") for e in events)
    chunks = openai_chunks(events)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, fake world!"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_openai_text_is_cut_into_chunk_chars_pieces() -> None:
    scenario = Scenario(text="abcdefghij", chunk_chars=4)
    chunks = openai_chunks(OpenAIRenderer().render_stream(scenario, OPENAI_STREAM))
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["abcd", "efgh", "ij"]


def test_openai_include_usage_adds_a_final_usage_chunk() -> None:
    usage = ScriptedUsage(
        prompt_tokens=100, completion_tokens=40, cache_read_tokens=60, reasoning_tokens=10
    )
    events = OpenAIRenderer().render_stream(Scenario(text="hi", usage=usage), OPENAI_USAGE)
    data = payloads(events)
    assert all("usage" in d and d["usage"] is None for d in data[:-1])
    last = ChatCompletionChunk.model_validate(data[-1])
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (100, 40)
    assert last.usage.total_tokens == 140
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 60
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 10


def test_openai_computed_usage_counts_request_words_and_chunks() -> None:
    request = {
        **OPENAI_USAGE,
        "messages": [
            {"role": "system", "content": "one two three"},
            {"role": "user", "content": [{"type": "text", "text": "four five"}]},
        ],
    }
    events = OpenAIRenderer().render_stream(Scenario(text="x" * 24, chunk_chars=8), request)
    usage = payloads(events)[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 3)


def test_openai_parallel_tool_calls_stream_as_index_based_fragments() -> None:
    events = OpenAIRenderer().render_stream(
        Scenario(tool_calls=TOOLS, chunk_chars=5), OPENAI_STREAM
    )
    chunks = openai_chunks(events)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            if call.id:
                assert not entry["id"], "the id comes once, on the first fragment"
                entry["id"] = call.id
            if call.function and call.function.name:
                entry["name"] += call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert json.loads(calls[1]["arguments"]) == {"zone": "CET"}
    assert calls[0]["id"] != calls[1]["id"]
    fragments = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(fragments) > 4, "arguments arrive in several fragments"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[0].choices[0].delta.content is None


def test_openai_tool_call_ids_and_string_arguments_are_sent_verbatim() -> None:
    call = ScriptedToolCall(name="t", arguments='{"broken": ', id="call_given")
    data = payloads(OpenAIRenderer().render_stream(Scenario(tool_calls=[call]), OPENAI_STREAM))
    deltas = [d["choices"][0]["delta"] for d in data if d["choices"]]
    opening = next(d["tool_calls"][0] for d in deltas if "tool_calls" in d)
    assert opening["id"] == "call_given"
    arguments = "".join(
        d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d
    )
    assert arguments == '{"broken": '


def test_openai_reasoning_streams_as_reasoning_content() -> None:
    scenario = Scenario(reasoning="think first", text="answer")
    data = payloads(OpenAIRenderer().render_stream(scenario, OPENAI_STREAM))
    deltas = [d["choices"][0]["delta"] for d in data]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "think first"
    assert "".join(d.get("content") or "" for d in deltas) == "answer"


def test_openai_body_is_a_chat_completion() -> None:
    scenario = Scenario(text="whole answer", tool_calls=TOOLS[:1])
    status, headers, body = OpenAIRenderer().render_body(scenario, OPENAI_CHAT)
    assert status == 200
    assert headers["content-type"] == "application/json"
    completion = ChatCompletion.model_validate_json(body)
    assert completion.choices[0].message.content == "whole answer"
    assert completion.choices[0].finish_reason == "tool_calls"
    tool_calls = completion.choices[0].message.tool_calls or []
    function = getattr(tool_calls[0], "function", None)
    assert function is not None
    assert json.loads(function.arguments) == {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize(
    ("scripted", "rendered"),
    [("length", "length"), ("content_filter", "content_filter"), ("pause", "stop")],
)
def test_openai_finish_reasons_use_openai_vocabulary(scripted: str, rendered: str) -> None:
    chunks = openai_chunks(
        OpenAIRenderer().render_stream(Scenario(text="x", finish_reason=scripted), OPENAI_STREAM)
    )
    assert chunks[-1].choices[0].finish_reason == rendered


def test_legacy_completions_stream_text_completion_chunks() -> None:
    events = OpenAIRenderer().render_stream(Scenario(text="old school", chunk_chars=4), LEGACY)
    data = payloads(events)
    assert events[-1] == b"data: [DONE]\n\n"
    assert {d["object"] for d in data} == {"text_completion"}
    assert "".join(d["choices"][0]["text"] for d in data) == "old school"
    assert data[-1]["choices"][0]["finish_reason"] == "stop"


def test_legacy_completions_body_has_text_and_usage() -> None:
    request = {"model": "instruct", "prompt": "one two three"}
    status, _, body = OpenAIRenderer(legacy=True).render_body(Scenario(text="done"), request)
    data = json.loads(body)
    assert status == 200
    assert data["object"] == "text_completion"
    assert data["choices"][0]["text"] == "done"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


# -- Anthropic --------------------------------------------------------------------------------


def anthropic_events(events: list[Event]) -> list[SSEEvent]:
    parsed = sse(events)
    for event in parsed:
        data = json.loads(event.data)
        assert data["type"] == event.event
        if event.event not in ("ping", "error"):
            _STREAM_EVENT.validate_json(event.data)
    return parsed


def test_anthropic_stream_is_accepted_by_the_sdk() -> None:
    parsed = anthropic_events(
        AnthropicRenderer().render_stream(Scenario(text="Hi there!"), ANTHROPIC)
    )
    names = [e.event for e in parsed]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    data = [json.loads(e.data) for e in parsed]
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert text == "Hi there!"
    assert data[-2]["delta"]["stop_reason"] == "end_turn"


def test_anthropic_thinking_and_parallel_tools_are_sequential_blocks() -> None:
    scenario = Scenario(reasoning="ponder", text="calling", tool_calls=TOOLS, chunk_chars=6)
    data = [
        json.loads(e.data)
        for e in anthropic_events(AnthropicRenderer().render_stream(scenario, ANTHROPIC))
    ]
    starts = [d for d in data if d["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert [s["index"] for s in starts] == [0, 1, 2, 3]
    deltas = [d for d in data if d["type"] == "content_block_delta"]
    thinking = "".join(d["delta"].get("thinking", "") for d in deltas if d["index"] == 0)
    assert thinking == "ponder"
    assert any(d["delta"]["type"] == "signature_delta" for d in deltas)
    for index, call in ((2, TOOLS[0]), (3, TOOLS[1])):
        fragments = [d["delta"]["partial_json"] for d in deltas if d["index"] == index]
        assert fragments[0] == ""
        assert len(fragments) > 2
        assert json.loads("".join(fragments)) == call.arguments
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_usage_splits_cache_from_input_tokens() -> None:
    usage = ScriptedUsage(
        prompt_tokens=100, completion_tokens=30, cache_read_tokens=50, cache_write_tokens=20
    )
    data = payloads(AnthropicRenderer().render_stream(Scenario(text="x", usage=usage), ANTHROPIC))
    start = data[0]["message"]["usage"]
    assert (start["input_tokens"], start["cache_read_input_tokens"]) == (30, 50)
    assert start["cache_creation_input_tokens"] == 20
    final = next(d for d in data if d["type"] == "message_delta")["usage"]
    assert final["output_tokens"] == 30


def test_anthropic_computed_usage_counts_system_and_messages() -> None:
    data = payloads(AnthropicRenderer().render_stream(Scenario(text="x"), ANTHROPIC))
    assert data[0]["message"]["usage"]["input_tokens"] == 4


def test_anthropic_body_is_a_message() -> None:
    from anthropic.types import Message as AnthropicMessage

    scenario = Scenario(reasoning="hmm", text="ok", tool_calls=TOOLS[:1])
    status, headers, body = AnthropicRenderer().render_body(scenario, ANTHROPIC)
    message = AnthropicMessage.model_validate_json(body)
    assert status == 200
    assert headers["request-id"].startswith("req_")
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("scripted", "rendered"),
    [("length", "max_tokens"), ("content_filter", "refusal"), ("pause", "pause_turn")],
)
def test_anthropic_finish_reasons_use_anthropic_vocabulary(scripted: str, rendered: str) -> None:
    scenario = Scenario(text="x", finish_reason=scripted)
    data = payloads(AnthropicRenderer().render_stream(scenario, ANTHROPIC))
    assert next(d for d in data if d["type"] == "message_delta")["delta"]["stop_reason"] == rendered


# -- Gemini -----------------------------------------------------------------------------------


def test_gemini_stream_uses_crlf_and_finishes_on_the_last_chunk() -> None:
    events = GeminiRenderer().render_stream(Scenario(text="Gemini says hi"), GEMINI, model="g-1")
    assert all(isinstance(e, bytes) and e.endswith(b"\r\n\r\n") for e in events)
    chunks = payloads(events)
    assert gemini_text(chunks) == "Gemini says hi"
    reasons = [c["candidates"][0].get("finishReason") for c in chunks]
    assert reasons == [None] * (len(chunks) - 1) + ["STOP"]
    assert {c["modelVersion"] for c in chunks} == {"g-1"}
    assert len({c["responseId"] for c in chunks}) == 1
    assert all("usageMetadata" in c for c in chunks)


def test_gemini_thoughts_and_parallel_calls() -> None:
    scenario = Scenario(reasoning="deep thought", text="calling", tool_calls=TOOLS)
    chunks = payloads(GeminiRenderer().render_stream(scenario, GEMINI, model="g"))
    assert gemini_text(chunks, thought=True) == "deep thought"
    last_parts = chunks[-1]["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in last_parts] == ["get_weather", "get_time"]
    assert last_parts[0]["functionCall"]["args"] == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_usage_metadata_reports_thoughts_and_cache() -> None:
    usage = ScriptedUsage(
        prompt_tokens=80, completion_tokens=30, cache_read_tokens=40, reasoning_tokens=10
    )
    chunks = payloads(GeminiRenderer().render_stream(Scenario(text="x", usage=usage), GEMINI))
    meta = chunks[-1]["usageMetadata"]
    assert meta["promptTokenCount"] == 80
    assert meta["candidatesTokenCount"] == 20
    assert meta["thoughtsTokenCount"] == 10
    assert meta["cachedContentTokenCount"] == 40
    assert meta["totalTokenCount"] == 110


def test_gemini_json_array_stream_is_one_json_array() -> None:
    events = GeminiRenderer(sse=False).render_stream(Scenario(text="array form"), GEMINI)
    body = b"".join(e for e in events if isinstance(e, bytes))
    chunks = json.loads(body)
    assert body.startswith(b"[") and body.endswith(b"\n]")
    assert b"\n,\r\n" in body
    assert gemini_text(chunks) == "array form"


def test_gemini_body_is_a_generate_content_response() -> None:
    status, _, body = GeminiRenderer().render_body(Scenario(text="whole"), GEMINI, model="g")
    data = json.loads(body)
    assert status == 200
    assert data["candidates"][0]["content"]["parts"] == [{"text": "whole"}]
    assert data["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize(
    ("scripted", "rendered"),
    [("length", "MAX_TOKENS"), ("content_filter", "SAFETY"), ("tool_calls", "STOP")],
)
def test_gemini_finish_reasons_use_gemini_vocabulary(scripted: str, rendered: str) -> None:
    chunks = payloads(GeminiRenderer().render_stream(Scenario(finish_reason=scripted), GEMINI))
    assert chunks[-1]["candidates"][0]["finishReason"] == rendered


# -- failures ---------------------------------------------------------------------------------


def output_count(fmt: WireFormat, events: list[Event]) -> int:
    """How many output chunks (text deltas) a rendered stream delivers."""
    count = 0
    for data in payloads(events):
        if fmt == "openai":
            count += bool(data.get("choices") and data["choices"][0]["delta"].get("content"))
        elif fmt == "anthropic":
            count += data["type"] == "content_block_delta"
        elif "candidates" in data:
            count += 1
    return count


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_error_event_ends_the_stream_after_n_chunks(fmt: WireFormat) -> None:
    scenario = Scenario(text="x" * 80, failure=ErrorEvent(after_chunks=3))
    events = renderer_for(fmt).render_stream(scenario, REQUESTS[fmt], model="m")
    parsed = sse(events)
    last = json.loads(parsed[-1].data)
    assert output_count(fmt, events[:-1]) == 3
    if fmt == "openai":
        assert last["error"]["code"] == "server_overloaded"
        assert b"data: [DONE]\n\n" not in events
    elif fmt == "anthropic":
        assert parsed[-1].event == "error"
        assert last["error"]["type"] == "overloaded_error"
        assert all(e.event != "message_stop" for e in parsed)
    else:
        assert last["error"]["status"] == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("rate_limit", "rate_limit_error"),
        ("server", "api_error"),
        ("invalid_request", "invalid_request_error"),
    ],
)
def test_anthropic_error_event_kinds(kind: Any, expected: str) -> None:
    scenario = Scenario(text="x", failure=ErrorEvent(after_chunks=0, kind=kind))
    parsed = sse(AnthropicRenderer().render_stream(scenario, ANTHROPIC))
    assert json.loads(parsed[-1].data)["error"]["type"] == expected


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_disconnect_marker_follows_n_chunks(fmt: WireFormat) -> None:
    scenario = Scenario(text="y" * 80, failure=Disconnect(after_chunks=2))
    events = renderer_for(fmt).render_stream(scenario, REQUESTS[fmt])
    assert events[-1] == Disconnect(after_chunks=2)
    assert output_count(fmt, events) == 2


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_failure_past_the_end_comes_before_the_terminal_event(fmt: WireFormat) -> None:
    scenario = Scenario(text="z" * 24, failure=Disconnect(after_chunks=99))
    events = renderer_for(fmt).render_stream(scenario, REQUESTS[fmt])
    complete = renderer_for(fmt).render_stream(Scenario(text="z" * 24), REQUESTS[fmt])
    delivered = payloads(events)
    if fmt == "openai":
        assert all(
            d["choices"] == [] or d["choices"][0]["finish_reason"] is None for d in delivered
        )
    elif fmt == "anthropic":
        assert all(d["type"] != "message_delta" for d in delivered)
    else:
        assert all("finishReason" not in d["candidates"][0] for d in delivered)
    # Gemini's last text chunk is its terminal event (it carries the finishReason).
    assert output_count(fmt, events) == output_count(fmt, complete) - (fmt == "gemini")


def test_infinite_stall_drops_the_rest_and_a_finite_one_keeps_it() -> None:
    request = OPENAI_STREAM
    forever = OpenAIRenderer().render_stream(
        Scenario(text="a" * 32, failure=Stall(after_chunks=1)), request
    )
    assert forever[-1] == Stall(after_chunks=1)
    assert output_count("openai", forever) == 1
    pause = Stall(after_chunks=1, seconds=2.0)
    finite = OpenAIRenderer().render_stream(Scenario(text="a" * 32, failure=pause), request)
    at = finite.index(pause)
    assert output_count("openai", finite[:at]) == 1
    assert output_count("openai", finite) == 4
    assert finite[-1] == b"data: [DONE]\n\n"


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_malformed_inserts_one_non_json_data_line_and_goes_on(fmt: WireFormat) -> None:
    scenario = Scenario(text="m" * 32, failure=Malformed(after_chunks=1))
    events = renderer_for(fmt).render_stream(scenario, REQUESTS[fmt])
    bad: list[int] = []
    for at, event in enumerate(events):
        for parsed in sse([event]):
            if parsed.data == b"[DONE]":
                continue
            try:
                json.loads(parsed.data)
            except ValueError:
                bad.append(at)
    assert len(bad) == 1
    bad_at = bad[0]
    good: list[Event] = [e for e in events if isinstance(e, bytes) and e != events[bad_at]]
    assert output_count(fmt, good) == 4


def test_render_stream_refuses_an_http_error() -> None:
    with pytest.raises(ValueError, match="render_body"):
        OpenAIRenderer().render_stream(Scenario(failure=HttpError(status=500)), OPENAI_STREAM)


def test_openai_http_error_body_and_retry_headers() -> None:
    error = HttpError(status=429, retry_after=1.5, retry_after_ms=1500, should_retry=True)
    status, headers, body = OpenAIRenderer().render_body(Scenario(failure=error), OPENAI_CHAT)
    assert status == 429
    assert headers["retry-after"] == "1.5"
    assert headers["retry-after-ms"] == "1500"
    assert headers["x-should-retry"] == "true"
    data = json.loads(body)["error"]
    assert set(data) == {"message", "type", "param", "code"}
    assert data["code"] == "rate_limit_exceeded"


def test_openai_error_type_sets_type_and_code() -> None:
    error = HttpError(status=429, error_type="insufficient_quota", message="no money")
    _, _, body = OpenAIRenderer().render_body(Scenario(failure=error), OPENAI_CHAT)
    assert json.loads(body)["error"] == {
        "message": "no money",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }


def test_anthropic_overloaded_is_529_with_its_error_body() -> None:
    error = HttpError(status=503, should_retry=False)
    status, headers, body = AnthropicRenderer().render_body(Scenario(failure=error), ANTHROPIC)
    data = json.loads(body)
    assert status == 529
    assert headers["x-should-retry"] == "false"
    assert data["type"] == "error"
    assert data["error"]["type"] == "overloaded_error"
    assert data["request_id"].startswith("req_")


def test_gemini_error_is_an_rpc_status_with_retry_info() -> None:
    error = HttpError(status=429, retry_after=26)
    status, headers, body = GeminiRenderer().render_body(Scenario(failure=error), GEMINI)
    data = json.loads(body)["error"]
    assert status == 429
    assert "retry-after" not in headers
    assert data["code"] == 429
    assert data["status"] == "RESOURCE_EXHAUSTED"
    assert data["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}
    ]


def test_gemini_error_type_becomes_an_error_info_reason() -> None:
    error = HttpError(status=400, error_type="API_KEY_INVALID")
    _, _, body = GeminiRenderer().render_body(Scenario(failure=error), GEMINI)
    data = json.loads(body)["error"]
    assert data["status"] == "INVALID_ARGUMENT"
    assert data["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(("fmt", "status"), [("openai", 503), ("anthropic", 529), ("gemini", 503)])
def test_error_event_on_a_whole_body_is_the_matching_http_error(
    fmt: WireFormat, status: int
) -> None:
    scenario = Scenario(failure=ErrorEvent(after_chunks=1))
    assert renderer_for(fmt).render_body(scenario, REQUESTS[fmt])[0] == status


def test_malformed_whole_body_is_not_json() -> None:
    status, _, body = OpenAIRenderer().render_body(
        Scenario(failure=Malformed(after_chunks=0)), OPENAI_CHAT
    )
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_scenario_headers_are_added_to_every_answer() -> None:
    scenario = Scenario(headers={"x-ratelimit-remaining-requests": "7"})
    assert (
        OpenAIRenderer().render_body(scenario, OPENAI_CHAT)[1]["x-ratelimit-remaining-requests"]
        == "7"
    )
    assert OpenAIRenderer().stream_headers(scenario)["x-ratelimit-remaining-requests"] == "7"


# -- models and token counts ------------------------------------------------------------------


def test_model_lists_in_each_format() -> None:
    openai = json.loads(OpenAIRenderer().render_models(["a", "b"]))
    assert [m["id"] for m in openai["data"]] == ["a", "b"]
    assert openai["object"] == "list"
    anthropic = json.loads(AnthropicRenderer().render_models(["a"]))
    assert anthropic["data"][0]["type"] == "model"
    assert anthropic["has_more"] is False
    gemini = json.loads(GeminiRenderer().render_models(["a"]))
    assert gemini["models"][0]["name"] == "models/a"


def test_token_counts_in_each_format() -> None:
    assert json.loads(AnthropicRenderer().render_count_tokens(ANTHROPIC)) == {"input_tokens": 4}
    gemini = json.loads(GeminiRenderer().render_count_tokens({"generateContentRequest": GEMINI}))
    assert gemini["totalTokens"] == 2
    openai = json.loads(OpenAIRenderer().render_count_tokens({"input": "a b c"}))
    assert openai == {"object": "response.input_tokens", "input_tokens": 3}


# -- the project's codecs read what the renderers write ---------------------------------------

CODEC_SCENARIO = Scenario(
    reasoning="let me think",
    text="Hello, world.",
    tool_calls=TOOLS,
    usage=ScriptedUsage(
        prompt_tokens=100, completion_tokens=50, cache_read_tokens=30, reasoning_tokens=10
    ),
)


def _codecs() -> list[ProviderCodec]:
    from llm_invocation.providers.anthropic import AnthropicCodec
    from llm_invocation.providers.gemini import GeminiCodec
    from llm_invocation.providers.openai import OpenAICodec

    return [OpenAICodec(), AnthropicCodec(), GeminiCodec()]


def _codec_request(stream: bool) -> T.Request:
    tools = [
        T.ToolSpec(name=call.name, parameters={"type": "object", "properties": {}})
        for call in TOOLS
    ]
    return T.Request(model="fake-model", messages=[T.user("hi there")], tools=tools, stream=stream)


def byte_events(reply: Reply) -> list[bytes]:
    return [event for event in reply.events if isinstance(event, bytes)]


def _serve(provider: FakeProvider, http: HttpRequest) -> Reply:
    url = urlsplit(http.url)
    headers = {k.lower(): v for k, v in http.headers.items()}
    return provider.handle(
        http.method, url.path, url.query, headers, http.body or b"", url=http.url
    )


@pytest.mark.parametrize("index", [0, 1, 2], ids=["openai", "anthropic", "gemini"])
def test_codecs_decode_rendered_streams(index: int) -> None:
    codec = _codecs()[index]
    request = _codec_request(stream=True)
    reply = _serve(FakeProvider(Scenarios(CODEC_SCENARIO)), codec.encode(request, "key"))
    decoder = codec.stream_decoder(request)
    aggregator = T.StreamAggregator()
    for event in byte_events(reply):
        for chunk in decoder.feed(event):
            aggregator.add(chunk)
    for chunk in decoder.close():
        aggregator.add(chunk)
    response = aggregator.response()
    assert decoder.done
    assert response.text == "Hello, world."
    calls = response.choices[0].tool_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].arguments) == {"city": "Paris", "unit": "celsius"}
    assert response.choices[0].finish_reason == "tool_calls"
    usage = response.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens) == (100, 50, 30)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["openai", "anthropic", "gemini"])
def test_codecs_decode_rendered_bodies_and_errors(index: int) -> None:
    codec = _codecs()[index]
    request = _codec_request(stream=False)
    scenarios = Scenarios()
    scenarios.add(
        "fake-model", CODEC_SCENARIO, Scenario(failure=HttpError(status=429, retry_after=3))
    )
    provider = FakeProvider(scenarios)
    reply = _serve(provider, codec.encode(request, "key"))
    response = codec.decode_response(request, b"".join(byte_events(reply)))
    assert response.text == "Hello, world."
    assert len(response.choices[0].tool_calls) == 2
    reply = _serve(provider, codec.encode(request, "key"))
    error = codec.map_error(reply.status, reply.headers, b"".join(byte_events(reply)))
    assert isinstance(error, RateLimited)
    advice = codec.retry_advice(error, reply.headers)
    assert advice.delay == 3


@pytest.mark.parametrize("index", [0, 1, 2], ids=["openai", "anthropic", "gemini"])
def test_codecs_report_in_stream_error_events(index: int) -> None:
    codec = _codecs()[index]
    request = _codec_request(stream=True)
    scenario = Scenario(text="partial answer", failure=ErrorEvent(after_chunks=1))
    reply = _serve(FakeProvider(Scenarios(scenario)), codec.encode(request, "key"))
    decoder = codec.stream_decoder(request)
    chunks = [chunk for event in byte_events(reply) for chunk in decoder.feed(event)]
    chunks.extend(decoder.close())
    errors = [chunk.error for chunk in chunks if chunk.error is not None]
    assert len(errors) == 1
    assert errors[0].kind == "ProviderOverloaded"


# -- MockTransport ----------------------------------------------------------------------------


def openai_client(transport: MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url="https://api.openai.com/v1")


async def test_transport_streams_with_ttft_and_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenario = Scenario(text="abcdefgh" * 3, ttft=0.5, interval=0.1)
    start = trio.current_time()
    times: list[float] = []
    async with (
        openai_client(MockTransport(Scenarios(scenario))) as client,
        client.stream("POST", "/chat/completions", json=OPENAI_STREAM) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert trio.current_time() == start
        async for _ in response.aiter_raw():
            times.append(trio.current_time() - start)
    # role chunk, 3 text chunks, finish chunk, [DONE]
    assert times == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])


async def test_transport_streams_one_event_per_piece() -> None:
    scenario = Scenario(text="q" * 40)
    expected = OpenAIRenderer().render_stream(scenario, OPENAI_STREAM)
    async with (
        openai_client(MockTransport(Scenarios(scenario))) as client,
        client.stream("POST", "/chat/completions", json=OPENAI_STREAM) as response,
    ):
        pieces = [piece async for piece in response.aiter_raw()]
    assert len(pieces) == len(expected)
    assert all(len(SSEParser().feed(piece)) == 1 for piece in pieces)


async def test_transport_non_streamed_answer_waits_ttft(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    async with openai_client(MockTransport(Scenarios(Scenario(text="x", ttft=2.0)))) as client:
        response = await client.post("/chat/completions", json=OPENAI_CHAT)
    assert trio.current_time() - start == pytest.approx(2.0)
    assert response.json()["choices"][0]["message"]["content"] == "x"


async def test_transport_http_error_carries_retry_headers() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "flaky",
        Scenario(failure=HttpError(status=429, retry_after=2, retry_after_ms=2000)),
        Scenario(text="ok"),
    )
    async with openai_client(MockTransport(scenarios)) as client:
        first = await client.post("/chat/completions", json={**OPENAI_STREAM, "model": "flaky"})
        second = await client.post("/chat/completions", json={**OPENAI_CHAT, "model": "flaky"})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "2"
    assert first.headers["retry-after-ms"] == "2000"
    assert first.json()["error"]["type"] == "requests"
    assert second.status_code == 200
    assert scenarios.calls("flaky") == 2


async def test_transport_disconnect_raises_remote_protocol_error() -> None:
    scenario = Scenario(text="d" * 40, failure=Disconnect(after_chunks=2))
    pieces: list[bytes] = []
    async with openai_client(MockTransport(Scenarios(scenario))) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection"):
            async with client.stream("POST", "/chat/completions", json=OPENAI_STREAM) as response:
                async for piece in response.aiter_raw():
                    pieces.append(piece)
    assert len(pieces) == 3  # the role chunk and two text chunks


async def test_transport_disconnect_cuts_a_whole_body() -> None:
    scenario = Scenario(text="d" * 40, failure=Disconnect(after_chunks=0))
    async with openai_client(MockTransport(Scenarios(scenario))) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="expected"):
            await client.post("/chat/completions", json=OPENAI_CHAT)


async def test_transport_stall_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    scenario = Scenario(text="s" * 40, failure=Stall(after_chunks=1))
    pieces: list[bytes] = []
    start = trio.current_time()
    async with openai_client(MockTransport(Scenarios(scenario))) as client:
        with trio.move_on_after(30) as scope:
            async with client.stream("POST", "/chat/completions", json=OPENAI_STREAM) as response:
                async for piece in response.aiter_raw():
                    pieces.append(piece)
    assert scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(30)
    assert len(pieces) == 2


async def test_transport_finite_stall_delays_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenario = Scenario(text="s" * 16, failure=Stall(after_chunks=1, seconds=5))
    start = trio.current_time()
    async with (
        openai_client(MockTransport(Scenarios(scenario))) as client,
        client.stream("POST", "/chat/completions", json=OPENAI_STREAM) as response,
    ):
        times = [trio.current_time() - start async for _ in response.aiter_raw()]
    assert times[:2] == [0, 0]
    assert times[2:] == pytest.approx([5] * (len(times) - 2))


async def test_transport_records_requests_with_credentials_masked() -> None:
    transport = MockTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post(
            "https://api.openai.com/v1/chat/completions",
            json=OPENAI_CHAT,
            headers={"Authorization": "Bearer sk-secret", "X-Trace": "t1"},
        )
        await client.post(
            "https://api.anthropic.com/v1/messages",
            json={**ANTHROPIC, "stream": False},
            headers={"x-api-key": "sk-ant-secret", "anthropic-version": "2023-06-01"},
        )
        await client.post(
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-x:generateContent?key=AIza-secret",
            json=GEMINI,
        )
    first, second, third = transport.requests
    assert first.method == "POST"
    assert first.url == "https://api.openai.com/v1/chat/completions"
    assert first.headers["authorization"] == "present"
    assert first.headers["x-trace"] == "t1"
    assert first.json == OPENAI_CHAT
    assert first.model == "gpt-test"
    assert second.headers["x-api-key"] == "present"
    assert third.model == "gemini-x"
    assert "AIza-secret" not in third.url
    assert "key=present" in third.url
    assert "secret" not in repr(transport.requests)


async def test_transport_keeps_the_last_thousand_requests() -> None:
    transport = MockTransport()
    async with openai_client(transport) as client:
        for number in range(MAX_RECORDED + 5):
            await client.get("/models", params={"n": str(number)})
    assert len(transport.requests) == MAX_RECORDED
    assert transport.requests[0].url.endswith("n=5")


async def test_transport_routes_every_format_by_path() -> None:
    transport = MockTransport(Scenarios(Scenario(text="routed")))
    async with httpx.AsyncClient(transport=transport) as client:
        anthropic = await client.post(
            "https://x.test/v1/messages", json={**ANTHROPIC, "stream": False}
        )
        gemini = await client.post("https://x.test/v1beta/models/g:generateContent", json=GEMINI)
        legacy = await client.post(
            "https://x.test/v1/completions", json={**LEGACY, "stream": False}
        )
        count = await client.post("https://x.test/v1/messages/count_tokens", json=ANTHROPIC)
        gemini_count = await client.post("https://x.test/v1beta/models/g:countTokens", json=GEMINI)
    assert anthropic.json()["content"][0]["text"] == "routed"
    assert gemini.json()["candidates"][0]["content"]["parts"][0]["text"] == "routed"
    assert legacy.json()["choices"][0]["text"] == "routed"
    assert count.json() == {"input_tokens": 4}
    assert gemini_count.json()["totalTokens"] == 2


async def test_transport_streams_gemini_sse_and_json_array() -> None:
    transport = MockTransport(Scenarios(Scenario(text="streamed")))
    url = "https://x.test/v1beta/models/g:streamGenerateContent"
    async with httpx.AsyncClient(transport=transport) as client:
        sse_body = (await client.post(url, params={"alt": "sse"}, json=GEMINI)).content
        array_body = (await client.post(url, json=GEMINI)).content
    assert gemini_text([json.loads(e.data) for e in SSEParser().feed(sse_body)]) == "streamed"
    assert gemini_text(json.loads(array_body)) == "streamed"


@pytest.mark.parametrize(
    ("fmt", "key"), [("openai", "data"), ("anthropic", "data"), ("gemini", "models")]
)
async def test_transport_model_list_follows_the_format(fmt: Any, key: str) -> None:
    scenarios = Scenarios()
    scenarios.add("scripted-model", Scenario())
    async with httpx.AsyncClient(transport=MockTransport(scenarios, format=fmt)) as client:
        response = await client.get("https://x.test/v1/models")
    models = response.json()[key]
    assert len(models) == 2
    assert "scripted-model" in json.dumps(models)


async def test_transport_answers_400_to_a_body_that_is_not_json() -> None:
    async with openai_client(MockTransport()) as client:
        response = await client.post("/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_transport_answers_404_to_an_unknown_path() -> None:
    async with openai_client(MockTransport()) as client:
        response = await client.post("/nowhere", json={})
    assert response.status_code == 404
