"""Specification of the OpenAI Chat Completions codec (`llm_invocation.providers.openai`).

Every stream and body here is a small inline byte string written for the test; the recorded
responses are exercised by ``test_conformance_openai.py``.
"""

from __future__ import annotations

import email.utils
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.errors import (
    AuthenticationError,
    ErrorCode,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ModelNotSupported,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
)
from llm_invocation.providers._base import HttpRequest, RateLimitInfo, RetryAdvice
from llm_invocation.providers.openai import OpenAICodec, OpenAIStreamDecoder
from llm_invocation.types import (
    CompletionRequest,
    Feature,
    ImagePart,
    Message,
    ModelOptions,
    NamedToolChoice,
    ReasoningPart,
    Request,
    Response,
    ResponseFormat,
    StreamAggregator,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    assistant,
    developer,
    system,
    tool_result,
    user,
)

KEY = "sk-test-SECRET-0123456789abcdef"
WEATHER = ToolSpec(
    name="weather",
    description="Weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def request(model: str = "gpt-4o", *messages: Message, **fields: Any) -> Request:
    return Request(model=model, messages=list(messages) or [user("Hi")], **fields)


def body_of(http: HttpRequest) -> dict[str, Any]:
    assert http.body is not None
    body: dict[str, Any] = json.loads(http.body)
    return body


def encode(req: Request, codec: OpenAICodec | None = None, key: str | None = KEY) -> dict[str, Any]:
    return body_of((codec or OpenAICodec()).encode(req, key))


def sse(*payloads: Any, done: bool = True) -> bytes:
    """An SSE body of ``data:`` events; dicts are JSON-encoded, bytes sent as they are."""
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        out += b"data: " + data + b"\n\n"
    if done:
        out += b"data: [DONE]\n\n"
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict:
    base: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        "obfuscation": "xYz",
    }
    base.update(extra)
    return base


def decode_stream(data: bytes, codec: OpenAICodec | None = None) -> list[StreamChunk]:
    decoder = (codec or OpenAICodec()).stream_decoder(request())
    return decoder.feed(data) + decoder.close()


def aggregate(chunks: list[StreamChunk]) -> Response:
    agg = StreamAggregator()
    for c in chunks:
        agg.add(c)
    return agg.response()


# ---------------------------------------------------------------------------------------------
# Encoding: transport


def test_encode_posts_json_to_chat_completions() -> None:
    http = OpenAICodec().encode(request(stream=False), KEY)
    assert http.method == "POST"
    assert http.url == "https://api.openai.com/v1/chat/completions"
    assert http.headers["content-type"] == "application/json"
    assert http.headers["accept"] == "application/json"
    assert http.stream is False


def test_encode_a_stream_asks_for_events_and_usage() -> None:
    http = OpenAICodec().encode(request(), KEY)
    assert http.stream is True
    assert http.headers["accept"] == "text/event-stream"
    body = body_of(http)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_non_streamed_request_sends_no_stream_fields() -> None:
    body = encode(request(stream=False))
    assert "stream" not in body
    assert "stream_options" not in body


def test_base_url_is_configurable_and_trailing_slash_dropped() -> None:
    codec = OpenAICodec(base_url="http://127.0.0.1:9/v1/")
    assert codec.encode(request(), None).url == "http://127.0.0.1:9/v1/chat/completions"


def test_authorization_header_carries_the_key_as_bearer() -> None:
    http = OpenAICodec().encode(request(), KEY)
    assert http.headers["authorization"] == f"Bearer {KEY}"


def test_no_authorization_header_without_a_key() -> None:
    http = OpenAICodec().encode(request(), None)
    assert "authorization" not in http.headers


def test_organization_and_project_headers() -> None:
    codec = OpenAICodec(organization="org-1", project="proj-2")
    headers = codec.encode(request(), KEY).headers
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-2"


def test_no_organization_or_project_headers_by_default() -> None:
    headers = OpenAICodec().encode(request(), KEY).headers
    assert "openai-organization" not in headers
    assert "openai-project" not in headers


def test_extra_headers_are_sent_and_win() -> None:
    codec = OpenAICodec(headers={"x-gateway": "g1", "accept": "application/x-ndjson"})
    headers = codec.encode(request(), KEY).headers
    assert headers["x-gateway"] == "g1"
    assert headers["accept"] == "application/x-ndjson"


def test_repr_of_the_http_request_never_shows_the_key() -> None:
    http = OpenAICodec(organization="org-1").encode(request(), KEY)
    assert KEY not in repr(http)
    assert "SECRET" not in repr(http)
    assert "authorization" in repr(http)


# ---------------------------------------------------------------------------------------------
# Encoding: messages


def test_every_role_with_plain_text() -> None:
    body = encode(
        request(
            "gpt-4o",
            system("Be brief."),
            developer("Use metric units."),
            user("Hi"),
            assistant("Hello"),
        )
    )
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_user_parts_with_images_by_url_and_inline_data() -> None:
    message = user(
        "What is in these?",
        ImagePart.from_url("https://example.com/cat.png", detail="high"),
        ImagePart.from_bytes(b"PNG", "image/png"),
    )
    body = encode(request("gpt-4o", message))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.png", "detail": "high"},
        },
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,UE5H"}},
    ]


def test_a_base64_data_url_image_goes_back_out_as_a_data_url() -> None:
    url = "data:image/jpeg;base64,/9j/4AAQ"
    body = encode(request("gpt-4o", user([ImagePart.from_url(url, detail="low")])))
    assert body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
    ]


def test_an_image_in_an_assistant_message_is_refused() -> None:
    message = Message(role="assistant", content=[ImagePart.from_url("https://example.com/x.png")])
    req = request("gpt-4o", user("Hi"), message)
    with pytest.raises(InvalidRequest, match="only in user messages and tool results"):
        OpenAICodec().encode(req, KEY)


def test_assistant_tool_calls_have_null_content() -> None:
    calls = [
        ToolCall(id="call_1", name="weather", arguments='{"city":"Oslo"}'),
        ToolCall(id="call_2", name="weather", arguments='{"city":"Rome"}'),
    ]
    body = encode(
        request(
            "gpt-4o",
            user("Weather?"),
            assistant(tool_calls=calls),
            tool_result("call_1", "cold"),
            tool_result("call_2", "warm"),
        )
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
            },
        ],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "cold"}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_2", "content": "warm"}


def test_assistant_text_with_tool_calls_keeps_the_text() -> None:
    message = assistant("Let me look.", tool_calls=[ToolCall(id="c", name="w")])
    body = encode(request("gpt-4o", user("Hi"), message))
    assert body["messages"][1]["content"] == "Let me look."


def test_reasoning_parts_are_not_sent_to_openai() -> None:
    message = Message(
        role="assistant",
        content=[ReasoningPart(text="thinking...", signature="sig"), TextPart(text="Answer")],
    )
    body = encode(request("o3", user("Q"), message, user("And?")))
    assert body["messages"][1] == {"role": "assistant", "content": "Answer"}
    assert "thinking" not in json.dumps(body)


def test_reasoning_parts_in_user_content_are_dropped() -> None:
    message = user([TextPart(text="a"), ReasoningPart(text="hidden")])
    body = encode(request("gpt-4o", message))
    assert body["messages"][0]["content"] == [{"type": "text", "text": "a"}]


def test_text_parts_of_system_and_tool_messages_are_joined() -> None:
    body = encode(
        request(
            "gpt-4o",
            Message(role="system", content=[TextPart(text="a"), TextPart(text="b")]),
            user("Hi"),
        )
    )
    assert body["messages"][0] == {"role": "system", "content": "ab"}


def test_a_message_name_is_sent() -> None:
    body = encode(request("gpt-4o", user("Hi", name="alice")))
    assert body["messages"][0] == {"role": "user", "content": "Hi", "name": "alice"}


def test_extra_content_metadata_round_trips_for_gemini_thought_signatures() -> None:
    call = ToolCall(
        id="c1",
        name="now",
        arguments="{}",
        metadata={"extra_content": {"google": {"thought_signature": "sig"}}},
    )
    body = encode(request("gemini-2.5-pro", user("Time?"), assistant(tool_calls=[call])))
    assert body["messages"][1]["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": "sig"}
    }


# ---------------------------------------------------------------------------------------------
# Encoding: options, tools, response format


def test_sampling_options() -> None:
    options = ModelOptions(
        temperature=0.2,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        stop=["END", "STOP"],
        seed=7,
        max_tokens=100,
    )
    body = encode(request("gpt-4o", options=options))
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    assert body["frequency_penalty"] == 0.5
    assert body["presence_penalty"] == -0.5
    assert body["stop"] == ["END", "STOP"]
    assert body["seed"] == 7
    assert body["max_tokens"] == 100
    assert "max_completion_tokens" not in body


def test_unset_options_are_not_sent() -> None:
    body = encode(request("gpt-4o", stream=False))
    assert set(body) == {"model", "messages"}


def test_top_k_is_not_sent_to_openai() -> None:
    body = encode(request("gpt-4o", options=ModelOptions(top_k=5)))
    assert "top_k" not in body


@pytest.mark.parametrize(
    "model", ["o1", "o1-mini", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini-2025-08-07"]
)
def test_reasoning_models_get_max_completion_tokens(model: str) -> None:
    body = encode(request(model, options=ModelOptions(max_tokens=50)))
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "gpt-3.5-turbo", "omni-x"])
def test_other_models_get_max_tokens(model: str) -> None:
    body = encode(request(model, options=ModelOptions(max_tokens=50)))
    assert body["max_tokens"] == 50
    assert "max_completion_tokens" not in body


def test_use_max_completion_tokens_option_forces_it_and_is_consumed() -> None:
    options = ModelOptions(max_tokens=64, provider_options={"use_max_completion_tokens": True})
    body = encode(request("gpt-4o", options=options))
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body
    assert "use_max_completion_tokens" not in body


def test_use_max_completion_tokens_false_forces_max_tokens() -> None:
    options = ModelOptions(max_tokens=64, provider_options={"use_max_completion_tokens": False})
    body = encode(request("o3", options=options))
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body


def test_provider_options_are_merged_last_and_passed_through() -> None:
    options = ModelOptions(
        temperature=0.1,
        provider_options={
            "n": 2,
            "parallel_tool_calls": False,
            "temperature": 0.7,
            "stream_options": {"include_usage": True, "include_obfuscation": False},
        },
    )
    body = encode(request("gpt-4o", options=options))
    assert body["n"] == 2
    assert body["parallel_tool_calls"] is False
    assert body["temperature"] == 0.7
    assert body["stream_options"] == {"include_usage": True, "include_obfuscation": False}


def test_tools_are_functions_with_parameters() -> None:
    strict = ToolSpec(name="lookup", parameters={"type": "object"}, strict=True)
    body = encode(request("gpt-4o", tools=[WEATHER, strict]))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather in a city.",
                "parameters": WEATHER.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        (NamedToolChoice(name="weather"), {"type": "function", "function": {"name": "weather"}}),
    ],
)
def test_tool_choice(choice: Any, wire: Any) -> None:
    body = encode(request("gpt-4o", tools=[WEATHER], tool_choice=choice))
    assert body["tool_choice"] == wire


def test_response_format_text_and_json_object() -> None:
    assert encode(request(response_format=ResponseFormat()))["response_format"] == {"type": "text"}
    assert encode(request(response_format=ResponseFormat.json()))["response_format"] == {
        "type": "json_object"
    }


def test_response_format_json_schema_with_every_field() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = ResponseFormat.schema("Thing", schema, strict=True, description="A thing.")
    assert encode(request(response_format=fmt))["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "Thing",
            "schema": schema,
            "strict": True,
            "description": "A thing.",
        },
    }


def test_response_format_json_schema_without_a_name_gets_one() -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={"type": "object"})
    wire = encode(request(response_format=fmt))["response_format"]
    assert wire == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }


# ---------------------------------------------------------------------------------------------
# Legacy completions


def legacy(prompt: str = "Say hi", **options: Any) -> Request:
    return CompletionRequest(prompt=prompt, **options).to_request("gpt-3.5-turbo-instruct")


def test_legacy_completions_posts_the_prompt() -> None:
    http = OpenAICodec().encode(legacy(max_tokens=5, temperature=0.3), KEY)
    assert http.url == "https://api.openai.com/v1/completions"
    body = body_of(http)
    assert body["prompt"] == "Say hi"
    assert body["model"] == "gpt-3.5-turbo-instruct"
    assert body["max_tokens"] == 5
    assert body["temperature"] == 0.3
    assert "messages" not in body
    assert body["stream_options"] == {"include_usage": True}


def test_legacy_completions_never_send_max_completion_tokens() -> None:
    req = Request(
        model="o3",
        messages=[user("x")],
        options=ModelOptions(max_tokens=3),
        metadata={"endpoint": "completions"},
    )
    assert encode(req)["max_tokens"] == 3


@pytest.mark.parametrize(
    "messages",
    [
        [system("s"), user("u")],
        [assistant("a")],
        [user("a"), user("b")],
        [user("look", ImagePart.from_url("https://example.com/x.png"))],
    ],
)
def test_legacy_completions_refuse_anything_but_one_user_text(messages: list[Message]) -> None:
    req = Request(model="davinci-002", messages=messages, metadata={"endpoint": "completions"})
    with pytest.raises(InvalidRequest):
        OpenAICodec().encode(req, KEY)
    with pytest.raises(InvalidRequest):
        OpenAICodec().validate(req)


def test_legacy_completions_refuse_tools() -> None:
    req = Request(
        model="davinci-002",
        messages=[user("x")],
        tools=[WEATHER],
        metadata={"endpoint": "completions"},
    )
    with pytest.raises(InvalidRequest, match="no tools"):
        OpenAICodec().encode(req, KEY)


def test_legacy_text_parts_make_the_prompt() -> None:
    req = Request(
        model="davinci-002",
        messages=[user([TextPart(text="a"), TextPart(text="b")])],
        metadata={"endpoint": "completions"},
    )
    assert encode(req)["prompt"] == "ab"


TEXT_COMPLETION = b"""{"id":"cmpl-1","object":"text_completion","created":1700000000,
"model":"gpt-3.5-turbo-instruct","choices":[{"text":"Hello there","index":0,"logprobs":null,
"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"""


def test_legacy_text_completion_body_decodes() -> None:
    response = OpenAICodec().decode_response(legacy(), TEXT_COMPLETION)
    assert response.text == "Hello there"
    assert response.finish_reason == "length"
    assert response.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert response.id == "cmpl-1"


def test_legacy_text_completion_stream_decodes() -> None:
    def piece(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-2",
            "object": "text_completion",
            "created": 1,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }

    chunks = decode_stream(sse(piece("Hel"), piece("lo"), piece("", "stop")))
    response = aggregate(chunks)
    assert response.text == "Hello"
    assert response.finish_reason == "stop"


# ---------------------------------------------------------------------------------------------
# Stream decoding


def test_text_deltas_carry_id_model_and_provider() -> None:
    chunks = decode_stream(sse(chunk({"content": "Hel"}), chunk({"content": "lo"})))
    assert [c.text for c in chunks] == ["Hel", "lo"]
    assert {c.id for c in chunks} == {"chatcmpl-1"}
    assert {c.model for c in chunks} == {"gpt-4o-2024-08-06"}
    assert {c.provider for c in chunks} == {"openai"}


def test_provider_on_chunks_is_the_codec_name() -> None:
    chunks = decode_stream(sse(chunk({"content": "x"})), OpenAICodec(name="work-openai"))
    assert chunks[0].provider == "work-openai"


def test_a_role_only_first_chunk_yields_nothing() -> None:
    data = sse(chunk({"role": "assistant", "content": "", "refusal": None}))
    assert decode_stream(data) == []


def test_done_sentinel_ends_the_stream() -> None:
    decoder = OpenAICodec().stream_decoder(request())
    assert decoder.feed(sse(chunk({"content": "a"}))) != []
    assert decoder.done
    assert decoder.feed(sse(chunk({"content": "ignored"}))) == []
    assert decoder.close() == []


def test_finish_reasons_are_normalised_with_the_native_one_in_metadata() -> None:
    for native, ours in [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("something_new", "other"),
    ]:
        (last,) = decode_stream(sse(chunk({}, native)))
        assert last.finish_reason == ours
        assert last.metadata == {"native_finish_reason": native}


def test_parallel_tool_calls_are_streamed_by_index() -> None:
    data = sse(
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
    )
    chunks = decode_stream(data)
    assert chunks[0].tool_calls == [
        ToolCallDelta(index=0, id="call_a", name="weather", arguments="")
    ]
    assert chunks[1].tool_calls == [ToolCallDelta(index=0, arguments='{"city":')]
    response = aggregate(chunks)
    assert response.tool_calls == [
        ToolCall(id="call_a", name="weather", arguments='{"city":"Oslo"}'),
        ToolCall(id="call_b", name="weather", arguments='{"city":"Rome"}'),
    ]
    assert response.finish_reason == "tool_calls"


def test_a_fragment_repeating_id_and_name_passes_on_only_its_arguments() -> None:
    first = {"index": 0, "id": "0", "type": "function", "function": {"name": "v", "arguments": ""}}
    again = {
        "index": 0,
        "id": "0",
        "type": "function",
        "function": {"name": "v", "arguments": "{}"},
    }
    chunks = decode_stream(sse(chunk({"tool_calls": [first]}), chunk({"tool_calls": [again]})))
    assert chunks[1].tool_calls == [ToolCallDelta(index=0, arguments="{}")]
    assert aggregate(chunks).tool_calls == [ToolCall(id="0", name="v", arguments="{}")]


def test_a_new_id_at_a_taken_index_is_a_new_call() -> None:
    one = {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}
    two = {"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}}
    chunks = decode_stream(sse(chunk({"tool_calls": [one]}), chunk({"tool_calls": [two]})))
    assert chunks[1].tool_calls == [ToolCallDelta(index=0, id="b", name="g", arguments="{}")]
    assert [c.name for c in aggregate(chunks).tool_calls] == ["f", "g"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas(field: str) -> None:
    data = sse(chunk({field: "Let me think."}), chunk({"content": "42"}), chunk({}, "stop"))
    chunks = decode_stream(data)
    assert chunks[0].reasoning == "Let me think."
    response = aggregate(chunks)
    assert response.reasoning == "Let me think."
    assert response.text == "42"


def test_usage_chunk_is_normalised() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 8, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30, "audio_tokens": 0},
    }
    data = sse(chunk({"content": "x"}), chunk({}, "stop"), chunk(choices=[], usage=usage))
    chunks = decode_stream(data)
    assert chunks[-1].usage == Usage(
        prompt_tokens=100,
        completion_tokens=40,
        total_tokens=140,
        cache_read_tokens=64,
        cache_write_tokens=8,
        reasoning_tokens=30,
    )
    assert chunks[-1].text == ""


def test_usage_on_the_finish_chunk_rides_on_it() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    (last,) = decode_stream(sse(chunk({}, "stop", usage=usage)))
    assert last.finish_reason == "stop"
    assert last.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)


def test_a_streamed_refusal_ends_up_in_metadata() -> None:
    data = sse(chunk({"refusal": "I can't "}), chunk({"refusal": "help."}), chunk({}, "stop"))
    chunks = decode_stream(data)
    assert chunks[-1].metadata == {"native_finish_reason": "stop", "refusal": "I can't help."}
    assert aggregate(chunks).text == ""


def test_several_choices_get_their_own_index() -> None:
    two = chunk(
        choices=[
            {"index": 0, "delta": {"content": "a"}, "finish_reason": None},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
        ]
    )
    chunks = decode_stream(sse(two, chunk({}, "stop")))
    assert [(c.choice, c.text) for c in chunks[:2]] == [(0, "a"), (1, "b")]


def test_an_error_payload_in_the_stream_ends_it_with_an_error_chunk() -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    decoder = OpenAICodec().stream_decoder(request())
    chunks = decoder.feed(sse(chunk({"content": "a"}), error, chunk({"content": "b"})))
    assert [c.text for c in chunks] == ["a", ""]
    info = chunks[-1].error
    assert info is not None
    assert info.code is ErrorCode.PROVIDER_ERROR
    assert info.message == "The server had an error"
    assert info.retryable
    assert info.provider == "openai"
    assert info.details == {"type": "server_error"}
    assert decoder.done
    assert decoder.close() == []


def test_an_in_stream_quota_error_is_not_retryable() -> None:
    error = {
        "error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}
    }
    (only,) = decode_stream(sse(error))
    assert only.error is not None
    assert only.error.code is ErrorCode.RATE_LIMIT_EXCEEDED
    assert not only.error.retryable


def test_an_error_payload_with_a_falsy_error_key_is_a_chunk() -> None:
    chunks = decode_stream(sse(chunk({"content": "a"}, error=None)))
    assert chunks[0].text == "a"
    assert chunks[0].error is None


def test_an_error_event_becomes_an_error_chunk_with_its_status() -> None:
    data = (
        sse(chunk({"content": "a"}), done=False)
        + b"event: error\n"
        + b'data: {"error":{"message":"bad tool call","type":"invalid_request_error",'
        + b'"code":"tool_use_failed","status_code":400}}\n\n'
    )
    decoder = OpenAICodec().stream_decoder(request())
    chunks = decoder.feed(data)
    assert chunks[-1].error is not None
    assert chunks[-1].error.code is ErrorCode.INVALID_REQUEST
    assert chunks[-1].error.status == 400
    assert chunks[-1].error.message == "bad tool call"
    assert decoder.close() == []


def test_an_error_event_with_plain_text_data() -> None:
    (only,) = decode_stream(b"event: error\ndata: upstream went away\n\n")
    assert only.error is not None
    assert only.error.message == "upstream went away"
    assert only.error.code is ErrorCode.PROVIDER_ERROR


def test_malformed_json_is_a_non_retryable_streaming_failure() -> None:
    decoder = OpenAICodec().stream_decoder(request())
    chunks = decoder.feed(sse(chunk({"content": "a"}), b'{"id": "x", "choices": [', done=False))
    info = chunks[-1].error
    assert info is not None
    assert info.code is ErrorCode.STREAMING_FAILED
    assert not info.retryable
    assert "malformed JSON" in info.message
    assert decoder.done


def test_a_truncated_stream_is_a_streaming_failure_at_close() -> None:
    decoder = OpenAICodec().stream_decoder(request())
    assert [c.text for c in decoder.feed(sse(chunk({"content": "a"}), done=False))] == ["a"]
    assert not decoder.done
    (last,) = decoder.close()
    assert last.error is not None
    assert last.error.code is ErrorCode.STREAMING_FAILED
    assert last.error.message == "stream ended before completion"
    assert decoder.done


def test_an_empty_body_is_a_streaming_failure() -> None:
    (only,) = decode_stream(b"")
    assert only.error is not None
    assert only.error.code is ErrorCode.STREAMING_FAILED


def test_a_finished_stream_without_done_is_accepted() -> None:
    decoder = OpenAICodec().stream_decoder(request())
    decoder.feed(sse(chunk({"content": "a"}), chunk({}, "stop"), done=False))
    assert decoder.close() == []
    assert decoder.done


def test_close_decodes_a_last_event_without_its_blank_line() -> None:
    decoder = OpenAICodec().stream_decoder(request())
    decoder.feed(sse(chunk({"content": "a"}), done=False))
    tail = b"data: " + json.dumps(chunk({"content": "b"}, "stop")).encode()
    assert decoder.feed(tail) == []
    (last,) = decoder.close()
    assert last.text == "b"
    assert last.finish_reason == "stop"


def test_comments_and_crlf_line_endings_are_tolerated() -> None:
    data = b": keep-alive\r\n\r\n" + sse(chunk({"content": "a"})).replace(b"\n", b"\r\n")
    assert [c.text for c in decode_stream(data)] == ["a"]


def test_stream_decoder_type() -> None:
    assert isinstance(OpenAICodec().stream_decoder(request()), OpenAIStreamDecoder)


# A recorded-style stream: comment, role chunk, text, reasoning, two tool calls, finish, usage.
RICH_STREAM = b": PROCESSING\n\n" + sse(
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"reasoning_content": "Think "}),
    chunk({"reasoning_content": "more."}),
    chunk({"content": "Caf\u00e9 \u2615 "}),
    chunk({"content": "ok"}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "g", "arguments": "{}"},
                }
            ]
        }
    ),
    chunk({}, "tool_calls"),
    chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}),
)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(RICH_STREAM) * 2), max_size=30))
@settings(max_examples=150, deadline=None)
def test_any_split_of_a_stream_yields_the_same_chunks(newline: bytes, cuts: list[int]) -> None:
    data = RICH_STREAM.replace(b"\n", newline)
    whole = decode_stream(data)
    assert not any(c.error for c in whole)
    points = sorted({min(c, len(data)) for c in cuts})
    decoder = OpenAICodec().stream_decoder(request())
    out: list[StreamChunk] = []
    start = 0
    for point in [*points, len(data)]:
        out.extend(decoder.feed(data[start:point]))
        start = point
    out.extend(decoder.close())
    assert out == whole


# ---------------------------------------------------------------------------------------------
# The aggregate of a stream equals the decode of the same content as one body


def completion_body(
    *,
    text: str | None,
    reasoning: str | None,
    calls: list[tuple[str, str, str]],
    finish: str,
    usage: dict[str, Any],
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ]
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
            "system_fingerprint": "fp_1",
        }
    ).encode()


def stream_body(
    *,
    text: str | None,
    reasoning: str | None,
    calls: list[tuple[str, str, str]],
    finish: str,
    usage: dict[str, Any],
) -> bytes:
    def pieces(s: str) -> list[str]:
        return [s[i : i + 3] for i in range(0, len(s), 3)]

    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"reasoning_content": p}) for p in pieces(reasoning or "")]
    events += [chunk({"content": p}) for p in pieces(text or "")]
    for index, (call_id, name, arguments) in enumerate(calls):
        first = {"index": index, "id": call_id, "type": "function"}
        events.append(
            chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]})
        )
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
            for p in pieces(arguments)
        ]
    events.append(chunk({}, finish))
    events.append(chunk(choices=[], usage=usage))
    return sse(*events)


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 10,
    "total_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


@pytest.mark.parametrize(
    "content",
    [
        {"text": "The answer is 42.", "reasoning": None, "calls": [], "finish": "stop"},
        {"text": "Cut sho", "reasoning": None, "calls": [], "finish": "length"},
        {"text": "Sure.", "reasoning": "User wants it; fine.", "calls": [], "finish": "stop"},
        {
            "text": None,
            "reasoning": None,
            "calls": [("call_1", "weather", '{"city":"Oslo"}'), ("call_2", "time", "{}")],
            "finish": "tool_calls",
        },
        {
            "text": "Checking.",
            "reasoning": "Need the tool.",
            "calls": [("call_1", "weather", '{"city":"Rome"}')],
            "finish": "tool_calls",
        },
    ],
)
def test_stream_aggregate_equals_the_non_streamed_decode(content: dict[str, Any]) -> None:
    codec = OpenAICodec()
    whole = codec.decode_response(request(), completion_body(usage=USAGE, **content))
    streamed = aggregate(decode_stream(stream_body(usage=USAGE, **content)))
    assert streamed.choices == whole.choices
    assert streamed.usage == whole.usage
    assert (streamed.id, streamed.model, streamed.provider) == (
        whole.id,
        whole.model,
        whole.provider,
    )


# ---------------------------------------------------------------------------------------------
# Whole-body decoding

CHAT_TEXT = b"""{
  "id": "chatcmpl-9",
  "object": "chat.completion",
  "created": 1760728905,
  "model": "gpt-4o-2024-08-06",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "4242",
    "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 3663, "completion_tokens": 117, "total_tokens": 3780,
    "prompt_tokens_details": {"cached_tokens": 3584, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
  "service_tier": "default",
  "system_fingerprint": "fp_f64f290af2"
}"""


def test_decode_a_text_completion() -> None:
    response = OpenAICodec().decode_response(request(), CHAT_TEXT)
    assert response.id == "chatcmpl-9"
    assert response.model == "gpt-4o-2024-08-06"
    assert response.provider == "openai"
    assert response.created == datetime.fromtimestamp(1760728905, UTC)
    assert response.system_fingerprint == "fp_f64f290af2"
    assert response.text == "4242"
    assert response.finish_reason == "stop"
    assert response.metadata == {"native_finish_reason": "stop", "service_tier": "default"}
    assert response.usage == Usage(
        prompt_tokens=3663, completion_tokens=117, total_tokens=3780, cache_read_tokens=3584
    )


def test_decode_parallel_tool_calls() -> None:
    body = completion_body(
        text=None,
        reasoning=None,
        calls=[("call_a", "w", '{"city": "Oslo"}'), ("call_b", "w", "")],
        finish="tool_calls",
        usage=USAGE,
    )
    response = OpenAICodec().decode_response(request(), body)
    assert response.message.content is None
    assert response.tool_calls == [
        ToolCall(id="call_a", name="w", arguments='{"city": "Oslo"}'),
        ToolCall(id="call_b", name="w", arguments="{}"),
    ]
    assert response.finish_reason == "tool_calls"


def test_decode_a_tool_call_without_an_id_gets_one() -> None:
    body = b"""{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,
    "message":{"role":"assistant","tool_calls":[{"id":"","type":"function","function":
    {"name":"now","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"""
    response = OpenAICodec().decode_response(request(), body)
    assert response.tool_calls == [ToolCall(id="call_0", name="now", arguments="{}")]


def test_decode_a_refusal_keeps_the_finish_reason_and_puts_the_text_in_metadata() -> None:
    body = b"""{"id":"x","object":"chat.completion","created":1,"model":"gpt-4o","choices":[
    {"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help."},
    "finish_reason":"stop"}]}"""
    response = OpenAICodec().decode_response(request(), body)
    assert response.finish_reason == "stop"
    assert response.message.content is None
    assert response.metadata == {"native_finish_reason": "stop", "refusal": "I can't help."}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_decode_reasoning_becomes_a_reasoning_part_first(field: str) -> None:
    body = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "deepseek-reasoner",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Paris", field: "Capital..."},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()
    response = OpenAICodec().decode_response(request(), body)
    assert response.message.content == [
        ReasoningPart(text="Capital...", provider="openai"),
        TextPart(text="Paris"),
    ]
    assert response.text == "Paris"
    assert response.reasoning == "Capital..."


def test_decode_empty_content_is_none() -> None:
    body = b"""{"id":"x","object":"chat.completion","created":1,"model":"gpt-5-mini","choices":[
    {"index":0,"message":{"role":"assistant","content":""},"finish_reason":"length"}],
    "usage":{"prompt_tokens":13,"completion_tokens":50,"total_tokens":63,
    "completion_tokens_details":{"reasoning_tokens":50}}}"""
    response = OpenAICodec().decode_response(request(), body)
    assert response.message.content is None
    assert response.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.reasoning_tokens == 50


def test_decode_an_error_object_in_a_200_body_raises_it() -> None:
    body = b'{"error":{"message":"Overloaded","type":"server_error"}}'
    with pytest.raises(ProviderError, match="Overloaded"):
        OpenAICodec().decode_response(request(), body)


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'{"choices": 3}'])
def test_decode_a_malformed_body_raises_provider_error(body: bytes) -> None:
    with pytest.raises(ProviderError, match="malformed"):
        OpenAICodec().decode_response(request(), body)


# ---------------------------------------------------------------------------------------------
# Errors


def error_body(
    message: str, type_: str | None = None, code: Any = None, param: Any = None
) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, InvalidRequest, False),
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (404, ModelNotSupported, False),
        (408, InvocationTimeout, True),
        (409, ProviderError, True),
        (422, InvalidRequest, False),
        (429, RateLimited, True),
        (500, ProviderError, True),
        (502, ProviderError, True),
        (503, ProviderOverloaded, True),
    ],
)
def test_status_mapping_and_retry_advice(status: int, cls: type[LLMError], retryable: bool) -> None:
    codec = OpenAICodec()
    error = codec.map_error(status, {}, error_body("went wrong", "some_type", "some_code"))
    assert type(error) is cls
    assert error.status == status
    assert error.message == "went wrong"
    assert error.provider == "openai"
    assert codec.retry_advice(error, {}) == RetryAdvice(retryable=retryable)


def test_error_details_keep_type_param_and_code_and_the_request_id() -> None:
    body = error_body(
        "Unsupported parameter: 'stop' is not supported with this model.",
        "invalid_request_error",
        "unsupported_parameter",
        "stop",
    )
    error = OpenAICodec().map_error(400, {"x-request-id": "req_123"}, body)
    assert isinstance(error, InvalidRequest)
    assert error.message == "Unsupported parameter: 'stop' is not supported with this model."
    assert error.details == {
        "type": "invalid_request_error",
        "param": "stop",
        "code": "unsupported_parameter",
    }
    assert error.request_id == "req_123"


@pytest.mark.parametrize("status", [404, 400])
def test_model_not_found_is_model_not_supported(status: int) -> None:
    body = error_body("The model `x` does not exist", "invalid_request_error", "model_not_found")
    error = OpenAICodec().map_error(status, {}, body)
    assert isinstance(error, ModelNotSupported)
    assert error.status == status


def test_insufficient_quota_is_a_rate_limit_never_retried() -> None:
    codec = OpenAICodec()
    body = error_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota")
    error = codec.map_error(429, {"retry-after": "1"}, body)
    assert isinstance(error, RateLimited)
    assert not error.retryable
    assert not codec.retry_advice(error, {"retry-after": "1"}).retryable
    assert not codec.retry_advice(error, {"x-should-retry": "true"}).retryable


def test_rate_limit_retry_after_comes_from_the_headers() -> None:
    error = OpenAICodec().map_error(429, {"retry-after": "7"}, error_body("slow down"))
    assert error.retry_after == 7.0


def test_numeric_error_code_is_tolerated() -> None:
    body = b'{"error":{"code":429,"message":"Provider returned error","metadata":{"raw":"x"}}}'
    error = OpenAICodec().map_error(429, {}, body)
    assert isinstance(error, RateLimited)
    assert error.message == "Provider returned error"
    assert error.details == {"code": 429, "metadata": {"raw": "x"}}


def test_a_string_error_body() -> None:
    error = OpenAICodec().map_error(400, {}, b'{"error": "bad things"}')
    assert error.message == "bad things"


def test_a_top_level_message_body() -> None:
    body = (
        b'{"object":"error","message":"max_tokens too large","type":"BadRequestError","code":400}'
    )
    error = OpenAICodec().map_error(400, {}, body)
    assert error.message == "max_tokens too large"
    assert error.details["type"] == "BadRequestError"


def test_a_plain_text_body() -> None:
    error = OpenAICodec().map_error(502, {}, b"upstream connect error\n")
    assert isinstance(error, ProviderError)
    assert error.message == "upstream connect error"
    assert error.retryable


def test_an_html_body_uses_its_title() -> None:
    body = b"<html><head><title>502 Bad\n Gateway</title></head><body>nginx</body></html>"
    error = OpenAICodec().map_error(502, {}, body)
    assert error.message == "502 Bad Gateway"


def test_an_empty_body_gets_a_message() -> None:
    error = OpenAICodec().map_error(500, {}, b"")
    assert error.message == "HTTP 500 from openai"


def test_map_stream_error_without_status_uses_the_type() -> None:
    codec = OpenAICodec()
    cases = {
        "rate_limit_exceeded": RateLimited,
        "server_overloaded": ProviderOverloaded,
        "authentication_error": AuthenticationError,
        "model_not_found": ModelNotSupported,
        "invalid_request_error": InvalidRequest,
        "whatever": ProviderError,
    }
    for type_, cls in cases.items():
        assert type(codec.map_stream_error({"error": {"message": "m", "type": type_}})) is cls


# ---------------------------------------------------------------------------------------------
# Retry advice


def test_x_should_retry_overrides_the_status() -> None:
    codec = OpenAICodec()
    bad = codec.map_error(400, {}, error_body("bad"))
    assert codec.retry_advice(bad, {"x-should-retry": "true"}).retryable
    busy = codec.map_error(503, {}, error_body("busy"))
    assert not codec.retry_advice(busy, {"x-should-retry": "false"}).retryable


def test_retry_after_ms_wins_over_retry_after() -> None:
    codec = OpenAICodec()
    error = codec.map_error(429, {}, error_body("slow"))
    advice = codec.retry_advice(error, {"retry-after-ms": "1500", "retry-after": "9"})
    assert advice == RetryAdvice(retryable=True, delay=1.5)


def test_retry_after_in_seconds() -> None:
    codec = OpenAICodec()
    error = codec.map_error(429, {}, error_body("slow"))
    assert codec.retry_advice(error, {"retry-after": "2.5"}) == RetryAdvice(
        retryable=True, delay=2.5
    )


def test_retry_after_as_an_http_date() -> None:
    codec = OpenAICodec()
    error = codec.map_error(503, {}, error_body("busy"))
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    advice = codec.retry_advice(error, {"retry-after": when})
    assert advice.retryable
    assert advice.delay is not None
    assert 25 <= advice.delay <= 31


def test_a_retry_after_above_the_cap_means_do_not_retry() -> None:
    codec = OpenAICodec()
    error = codec.map_error(429, {}, error_body("slow"))
    assert not codec.retry_advice(error, {"retry-after": "61"}).retryable
    assert codec.retry_advice(error, {"retry-after": "60"}).retryable
    strict = OpenAICodec(max_retry_after=5)
    assert not strict.retry_advice(error, {"retry-after-ms": "5001"}).retryable


def test_no_delay_hint_leaves_the_delay_to_backoff() -> None:
    codec = OpenAICodec()
    error = codec.map_error(500, {}, error_body("oops"))
    assert codec.retry_advice(error, {}).delay is None


# ---------------------------------------------------------------------------------------------
# Rate-limit headers


def test_rate_limit_headers_are_parsed() -> None:
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-limit-tokens": "800000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "799993",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-limit-input-images": "50",
    }
    assert OpenAICodec().parse_rate_limits(headers) == RateLimitInfo(
        requests_limit=5000,
        requests_remaining=4999,
        requests_reset=0.012,
        tokens_limit=800000,
        tokens_remaining=799993,
        tokens_reset=360.0,
    )


def test_no_rate_limit_headers_is_none() -> None:
    assert OpenAICodec().parse_rate_limits({"content-type": "application/json"}) is None


def test_retry_after_alone_is_rate_limit_information() -> None:
    info = OpenAICodec().parse_rate_limits({"retry-after": "3"})
    assert info == RateLimitInfo(retry_after=3.0)


_LIMIT_NAMES = [
    f"x-ratelimit-{what}{of}"
    for what in ("limit", "remaining", "reset")
    for of in ("", "-requests", "-tokens")
] + ["retry-after", "retry-after-ms", "x-request-id", "content-type", "x-ratelimit-other"]


@settings(max_examples=300)
@given(
    headers=st.dictionaries(
        st.sampled_from(_LIMIT_NAMES),
        st.sampled_from(["", "0", "5000", "5000.0", "-1", "1m30s", "12ms", "lots", "3", "1e309"]),
        max_size=6,
    ),
    on_success=st.booleans(),
)
def test_responses_without_rate_limit_headers_are_answered_at_once_and_the_same(
    headers: dict[str, str], on_success: bool
) -> None:
    # An empty value reads as no header; with one, the quick answer for a response without
    # any rate-limit header is never taken.
    codec = OpenAICodec()
    codec.retry_after_on_success = on_success
    read_through = {
        **headers,
        "x-ratelimit-limit-requests": headers.get("x-ratelimit-limit-requests", ""),
    }
    assert codec.parse_rate_limits(headers) == codec.parse_rate_limits(read_through)


def test_garbage_rate_limit_values_are_dropped() -> None:
    info = OpenAICodec().parse_rate_limits(
        {"x-ratelimit-limit-requests": "lots", "x-ratelimit-reset-tokens": "soon"}
    )
    assert info is None


# ---------------------------------------------------------------------------------------------
# Models, features and validation


def test_list_models_request() -> None:
    http = OpenAICodec(project="p").list_models_request(KEY)
    assert http.method == "GET"
    assert http.url == "https://api.openai.com/v1/models"
    assert http.headers["authorization"] == f"Bearer {KEY}"
    assert http.headers["openai-project"] == "p"
    assert http.body is None


def test_decode_models_guesses_features_by_id() -> None:
    body = b"""{"object":"list","data":[
      {"id":"gpt-4o-2024-08-06","object":"model","created":1722814719,"owned_by":"system"},
      {"id":"o3-mini","object":"model","created":1737146383,"owned_by":"system"},
      {"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"},
      {"id":"brand-new-model","object":"model","created":0,"owned_by":"openai"}]}"""
    models = {m.id: m for m in OpenAICodec().decode_models(body)}
    gpt4o = models["gpt-4o-2024-08-06"]
    assert gpt4o.provider == "openai"
    assert gpt4o.context_window == 128_000
    assert gpt4o.created == datetime.fromtimestamp(1722814719, UTC)
    assert gpt4o.metadata == {"owned_by": "system"}
    assert {Feature.VISION, Feature.FUNCTION_CALLING, Feature.STRUCTURED_OUTPUT} <= gpt4o.features
    assert Feature.REASONING not in gpt4o.features
    assert Feature.VISION not in models["o3-mini"].features
    assert Feature.REASONING in models["o3-mini"].features
    assert models["text-embedding-3-small"].features == frozenset()
    assert models["brand-new-model"].created is None
    assert Feature.VISION in models["brand-new-model"].features


def test_decode_models_malformed_raises() -> None:
    with pytest.raises(ProviderError):
        OpenAICodec().decode_models(b'{"data": [{"object": "model"}]}')


def test_known_models_have_context_windows() -> None:
    known = {m.id: m for m in OpenAICodec().known_models()}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3"} <= set(known)
    assert all(m.context_window and m.provider == "openai" for m in known.values())
    assert Feature.REASONING in known["gpt-5"].features


@pytest.mark.parametrize(
    ("model", "feature", "expected"),
    [
        ("gpt-4o", Feature.VISION, True),
        ("gpt-4o-mini", Feature.VISION, True),
        ("gpt-4.1-nano", Feature.VISION, True),
        ("gpt-5-mini", Feature.VISION, True),
        ("o3", Feature.VISION, True),
        ("o4-mini", Feature.VISION, True),
        ("o1-mini", Feature.VISION, False),
        ("gpt-3.5-turbo", Feature.VISION, False),
        ("gpt-4o", Feature.FUNCTION_CALLING, True),
        ("o1-mini", Feature.FUNCTION_CALLING, False),
        ("gpt-4o", Feature.STRUCTURED_OUTPUT, True),
        ("gpt-3.5-turbo", Feature.STRUCTURED_OUTPUT, False),
        ("o3", Feature.REASONING, True),
        ("gpt-5", Feature.REASONING, True),
        ("gpt-5-chat-latest", Feature.REASONING, False),
        ("gpt-4o", Feature.REASONING, False),
        ("ft:gpt-4o-mini-2024-07-18:org::abc", Feature.VISION, True),
    ],
)
def test_supports_by_model_family(model: str, feature: Feature, expected: bool) -> None:
    assert OpenAICodec().supports(feature, model) is expected


def test_supports_at_provider_level() -> None:
    codec = OpenAICodec()
    assert codec.supports(Feature.STREAMING)
    assert codec.supports(Feature.VISION)
    assert not codec.supports(Feature.COUNT_TOKENS)


def test_no_token_count_endpoint() -> None:
    assert OpenAICodec().count_tokens_request(request(), KEY) is None


def test_validate_accepts_what_the_model_can_do() -> None:
    req = request(
        "gpt-4o",
        user("Look", ImagePart.from_url("https://example.com/a.png")),
        tools=[WEATHER],
        response_format=ResponseFormat.schema("T", {"type": "object"}),
        options=ModelOptions(provider_options={"n": 3, "logit_bias": {"50256": -100}}),
    )
    OpenAICodec().validate(req)
    assert encode(req)["n"] == 3


@pytest.mark.parametrize(
    ("req", "feature"),
    [
        (request("gpt-3.5-turbo", user("x", ImagePart.from_url("https://e.com/a.png"))), "vision"),
        (request("o1-mini", tools=[WEATHER]), "function_calling"),
        (
            request(
                "gpt-3.5-turbo", response_format=ResponseFormat.schema("T", {"type": "object"})
            ),
            "structured_output",
        ),
    ],
)
def test_validate_refuses_what_the_model_lacks(req: Request, feature: str) -> None:
    with pytest.raises(ModelNotSupported) as caught:
        OpenAICodec().validate(req)
    assert caught.value.details == {"model": req.model, "feature": feature}
    assert caught.value.provider == "openai"


def test_validate_lets_unknown_models_through() -> None:
    req = request(
        "future-model-9", user("x", ImagePart.from_url("https://e.com/a.png")), tools=[WEATHER]
    )
    OpenAICodec().validate(req)


def test_validate_refuses_an_image_in_an_assistant_message() -> None:
    message = Message(role="assistant", content=[ImagePart.from_url("https://e.com/a.png")])
    with pytest.raises(InvalidRequest):
        OpenAICodec().validate(request("gpt-4o", user("x"), message))


def test_codec_identity() -> None:
    codec = OpenAICodec()
    assert codec.kind == "openai"
    assert codec.name == "openai"
    assert codec.base_url == "https://api.openai.com/v1"


# ---------------------------------------------------------------------------------------------
# Edge cases of the wire


def test_a_fragment_without_an_id_gets_it_from_a_later_one() -> None:
    first = {"index": 0, "function": {"arguments": '{"a"'}}
    later = {"index": 0, "id": "c9", "function": {"name": "f", "arguments": ":1}"}}
    chunks = decode_stream(sse(chunk({"tool_calls": [first]}), chunk({"tool_calls": [later]})))
    assert chunks[1].tool_calls == [ToolCallDelta(index=0, id="c9", name="f", arguments=":1}")]
    assert aggregate(chunks).tool_calls == [ToolCall(id="c9", name="f", arguments='{"a":1}')]


def test_a_fragment_that_repeats_everything_and_adds_nothing_is_dropped() -> None:
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
    chunks = decode_stream(
        sse(chunk({"tool_calls": [call]}), chunk({"tool_calls": [call]}), chunk({}, "tool_calls"))
    )
    assert [c.tool_calls for c in chunks] == [
        [ToolCallDelta(index=0, id="c1", name="f", arguments="")],
        None,
    ]


def test_tool_call_extra_content_travels_in_delta_metadata() -> None:
    extra = {"google": {"thought_signature": "sig"}}
    call = {
        "index": 0,
        "id": "",
        "function": {"name": "now", "arguments": "{}"},
        "extra_content": extra,
    }
    chunks = decode_stream(sse(chunk({"tool_calls": [call]}), chunk({}, "tool_calls")))
    (tool_call,) = aggregate(chunks).tool_calls
    assert tool_call == ToolCall(
        id="call_0", name="now", arguments="{}", metadata={"extra_content": extra}
    )


def test_decode_extra_content_of_messages_and_tool_calls() -> None:
    extra = {"google": {"thought": True, "thought_signature": "AVSo"}}
    body = json.dumps(
        {
            "id": "g",
            "object": "chat.completion",
            "created": 1748902365,
            "model": "gemini-2.5-pro",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "extra_content": extra,
                        "tool_calls": [
                            {
                                "id": "",
                                "type": "function",
                                "function": {"name": "now", "arguments": "{}"},
                                "extra_content": extra,
                            }
                        ],
                    },
                }
            ],
        }
    ).encode()
    response = OpenAICodec().decode_response(request(), body)
    assert response.message.metadata == {"extra_content": extra}
    assert response.tool_calls[0].metadata == {"extra_content": extra}
    echoed = encode(request("gemini-2.5-pro", user("Time?"), response.message))
    assert echoed["messages"][1]["extra_content"] == extra
    assert echoed["messages"][1]["tool_calls"][0]["extra_content"] == extra


def test_decode_usage_from_x_groq_when_there_is_no_top_level_usage() -> None:
    body = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"llama","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
        b'"x_groq":{"id":"req","usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}}'
    )
    response = OpenAICodec().decode_response(request(), body)
    assert response.usage == Usage(prompt_tokens=4, completion_tokens=1, total_tokens=5)


def test_decode_a_choice_without_finish_reason() -> None:
    body = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"partial"},"finish_reason":null}]}'
    )
    response = OpenAICodec().decode_response(request(), body)
    assert response.finish_reason is None
    assert response.metadata is None
    assert response.usage is None


def test_empty_data_events_are_ignored() -> None:
    data = b"data:\n\n" + sse(chunk({"content": "a"}))
    assert [c.text for c in decode_stream(data)] == ["a"]


def test_close_finds_done_in_the_last_unterminated_event() -> None:
    decoder = OpenAICodec().stream_decoder(request())
    decoder.feed(sse(chunk({"content": "a"}), done=False) + b"data: [DONE]")
    assert not decoder.done
    assert decoder.close() == []
    assert decoder.done


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": 5}', "HTTP 400 from openai"),
        (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "field required"),
        (b'{"error": {"message": {"nested": "text"}}}', "nested"),
    ],
)
def test_odd_error_bodies_still_give_a_message(body: bytes, message: str) -> None:
    error = OpenAICodec().map_error(400, {}, body)
    assert isinstance(error, InvalidRequest)
    assert message in error.message


def test_stop_with_tool_calls_is_a_tool_calls_finish() -> None:
    # OpenAI answers a forced tool_choice with finish_reason "stop".
    call = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    chunks = decode_stream(sse(chunk({"tool_calls": [call]}), chunk({}, "stop")))
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].metadata == {"native_finish_reason": "stop"}
    body = completion_body(
        text=None, reasoning=None, calls=[("c1", "f", "{}")], finish="stop", usage=USAGE
    )
    whole = OpenAICodec().decode_response(request(), body)
    assert whole.finish_reason == "tool_calls"
    assert aggregate(chunks).choices == whole.choices


def test_provider_options_that_are_not_json_are_an_invalid_request() -> None:
    options = ModelOptions(provider_options={"callback": object()})
    with pytest.raises(InvalidRequest, match="cannot be encoded"):
        OpenAICodec().encode(request(options=options), KEY)


# ---------------------------------------------------------------------------------------------
# Values out of range and JSON nested too deep: absent, or a typed error, never an exception

NESTED = b"[" * 5000 + b"]" * 5000
"""JSON nested deeper than any decoder follows."""
DEEP_FIELD = b'{"extra": ' + NESTED + b"}"
"""An object with a field the codec does not read, nested too deep."""


@pytest.mark.parametrize(
    "value", ["1e999", "-1e999", "1e300", "-1", "1" + "0" * 400, "NaN", "inf", "9007199254740992"]
)
def test_a_rate_limit_count_out_of_range_is_absent(value: str) -> None:
    headers = {"x-ratelimit-limit-requests": value, "x-ratelimit-remaining-tokens": value}
    assert OpenAICodec().parse_rate_limits(headers) is None


@pytest.mark.parametrize("value", ["1e999", "inf", "NaN", "1e300", "99999999h", "24h0m1s"])
def test_a_rate_limit_reset_out_of_range_is_absent(value: str) -> None:
    assert OpenAICodec().parse_rate_limits({"x-ratelimit-reset-requests": value}) is None


def test_a_rate_limit_reset_within_a_day_is_kept() -> None:
    info = OpenAICodec().parse_rate_limits({"x-ratelimit-reset-tokens": "23h59m59s"})
    assert info == RateLimitInfo(tokens_reset=86399.0)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after-ms": "1e300"},
        {"retry-after": "1e300"},
        {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ],
    ids=["milliseconds", "seconds", "http-date"],
)
def test_a_retry_delay_longer_than_an_hour_is_an_hour_and_no_retry(
    headers: dict[str, str],
) -> None:
    codec = OpenAICodec()
    assert codec.parse_rate_limits(headers) == RateLimitInfo(retry_after=3600.0)
    error = codec.map_error(429, headers, error_body("Slow down."))
    assert error.retry_after == 3600.0
    assert codec.retry_advice(error, headers) == RetryAdvice(retryable=False, delay=3600.0)


@pytest.mark.parametrize("created", ["1e300", "253402300800"], ids=["1e300", "year-10000"])
def test_a_created_time_out_of_range_is_now(created: str) -> None:
    body = (
        b'{"id":"c","object":"chat.completion","created":' + created.encode() + b',"model":"m",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
        b'"finish_reason":"stop"}]}'
    )
    before = datetime.now(UTC)
    response = OpenAICodec().decode_response(request(), body)
    assert before <= response.created <= datetime.now(UTC)
    assert response.text == "ok"


def test_a_model_created_time_out_of_range_is_absent() -> None:
    body = b'{"data":[{"id":"gpt-4o","object":"model","created":1e300,"owned_by":"system"}]}'
    [model] = OpenAICodec().decode_models(body)
    assert model.id == "gpt-4o"
    assert model.created is None


OUT_OF_RANGE_USAGE = [
    {"prompt_tokens": -1, "completion_tokens": 2},
    {"prompt_tokens": 10**40, "completion_tokens": 2},
    {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": -3},
    {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "completion_tokens_details": {"reasoning_tokens": -3},
    },
]


@pytest.mark.parametrize("usage", OUT_OF_RANGE_USAGE)
def test_a_body_usage_with_a_count_out_of_range_is_absent(usage: dict[str, Any]) -> None:
    body = completion_body(text="ok", reasoning=None, calls=[], finish="stop", usage=usage)
    response = OpenAICodec().decode_response(request(), body)
    assert response.text == "ok"
    assert response.usage is None


@pytest.mark.parametrize("usage", OUT_OF_RANGE_USAGE)
def test_a_streamed_usage_with_a_count_out_of_range_is_absent(usage: dict[str, Any]) -> None:
    chunks = decode_stream(sse(chunk({"content": "ok"}, "stop"), chunk(choices=[], usage=usage)))
    assert [c.usage for c in chunks] == [None]
    assert chunks[0].finish_reason == "stop"


def test_json_nested_too_deep_in_a_stream_is_a_streaming_failure_after_what_came() -> None:
    chunks = decode_stream(sse(chunk({"content": "a"}), DEEP_FIELD))
    assert chunks[0].text == "a"
    error = chunks[-1].error
    assert error is not None
    assert error.code == ErrorCode.STREAMING_FAILED
    assert not error.retryable


def test_an_error_event_nested_too_deep_is_still_an_error_chunk() -> None:
    chunks = decode_stream(b"event: error\ndata: " + NESTED + b"\n\n")
    assert len(chunks) == 1
    assert chunks[0].error is not None


def test_a_body_nested_too_deep_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="malformed response body"):
        OpenAICodec().decode_response(request(), DEEP_FIELD)


def test_an_error_body_nested_too_deep_is_classified_by_its_status() -> None:
    error = OpenAICodec().map_error(429, {}, b'{"error": ' + NESTED + b"}")
    assert isinstance(error, RateLimited)
    assert error.status == 429


def test_a_model_list_nested_too_deep_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="malformed model list"):
        OpenAICodec().decode_models(DEEP_FIELD)
