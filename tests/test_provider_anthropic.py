"""The Anthropic Messages codec, on bytes alone: encoding, validation, stream and body decoding,
error mapping, rate limits, token counting and models."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.errors import (
    AuthenticationError,
    ConfigurationError,
    ErrorCode,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ModelNotSupported,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
    StreamingFailed,
    error_from_info,
)
from llm_invocation.providers.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    AnthropicCodec,
    AnthropicStreamDecoder,
)
from llm_invocation.types import (
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
    ToolChoice,
    ToolSpec,
    assistant,
    developer,
    system,
    tool_result,
    user,
)

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test-0123456789"


@pytest.fixture
def codec() -> AnthropicCodec:
    return AnthropicCodec()


def make_request(*messages: Message, **kwargs: Any) -> Request:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("stream", False)
    return Request(messages=list(messages) or [user("Hi")], **kwargs)


def body_of(codec: AnthropicCodec, request: Request) -> dict[str, Any]:
    encoded = codec.encode(request, KEY)
    assert encoded.body is not None
    body: dict[str, Any] = json.loads(encoded.body)
    return body


def event(payload: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic frames it: ``event: <type>`` then ``data: <json>``."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def message_start(
    *, input_tokens: int = 10, cache_write: int = 0, cache_read: int = 0, output_tokens: int = 1
) -> bytes:
    return event(
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-test",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": cache_write,
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": output_tokens,
                    "service_tier": "standard",
                },
            },
        }
    )


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event({"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, payload: dict[str, Any]) -> bytes:
    return event({"type": "content_block_delta", "index": index, "delta": payload})


def text_delta(index: int, text: str) -> bytes:
    return delta(index, {"type": "text_delta", "text": text})


def json_delta(index: int, fragment: str) -> bytes:
    return delta(index, {"type": "input_json_delta", "partial_json": fragment})


def block_stop(index: int) -> bytes:
    return event({"type": "content_block_stop", "index": index})


def message_delta(
    stop_reason: str | None, *, output_tokens: int = 5, stop_sequence: str | None = None
) -> bytes:
    return event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": output_tokens},
        }
    )


PING = b'event: ping\ndata: {"type": "ping"}\n\n'
STOP = event({"type": "message_stop"})


def error_event(error_type: str, message: str = "boom") -> bytes:
    return event({"type": "error", "error": {"type": error_type, "message": message}})


def decode(data: bytes) -> list[StreamChunk]:
    decoder = AnthropicStreamDecoder()
    return decoder.feed(data) + decoder.close()


def aggregate(chunks: list[StreamChunk]) -> Response:
    aggregator = StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    return aggregator.response()


def text_stream(*pieces: str) -> bytes:
    return (
        message_start()
        + block_start(0, {"type": "text", "text": ""})
        + b"".join(text_delta(0, piece) for piece in pieces)
        + block_stop(0)
        + message_delta("end_turn")
        + STOP
    )


# ---------------------------------------------------------------------------------------------
# Encoding: transport


def test_encode_posts_json_to_messages_with_the_api_version(codec: AnthropicCodec) -> None:
    encoded = codec.encode(make_request(), KEY)
    assert encoded.method == "POST"
    assert encoded.url == "https://api.anthropic.com/v1/messages"
    assert encoded.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert encoded.headers["content-type"] == "application/json"
    assert encoded.headers["x-api-key"] == KEY


def test_base_url_is_configurable() -> None:
    codec = AnthropicCodec(base_url="http://127.0.0.1:9/v1/")
    assert codec.encode(make_request(), KEY).url == "http://127.0.0.1:9/v1/messages"


def test_no_api_key_header_without_a_key(codec: AnthropicCodec) -> None:
    assert "x-api-key" not in codec.encode(make_request(), None).headers


def test_repr_of_the_http_request_does_not_show_the_key(codec: AnthropicCodec) -> None:
    assert KEY not in repr(codec.encode(make_request(), KEY))


def test_extra_headers_are_sent_and_may_override_the_version() -> None:
    codec = AnthropicCodec(headers={"authorization": "Bearer t", "anthropic-version": "x"})
    headers = codec.encode(make_request(), None).headers
    assert headers["authorization"] == "Bearer t"
    assert headers["anthropic-version"] == "x"


def test_beta_flags_become_one_header_and_leave_the_body() -> None:
    codec = AnthropicCodec(options={"betas": ["a-1"]})
    request = make_request(
        options=ModelOptions(provider_options={"betas": "b-2, a-1", "anthropic_beta": ["c-3"]})
    )
    encoded = codec.encode(request, KEY)
    assert encoded.headers["anthropic-beta"] == "a-1,b-2,c-3"
    body = json.loads(encoded.body or b"")
    assert "betas" not in body
    assert "anthropic_beta" not in body


def test_beta_flags_must_be_strings(codec: AnthropicCodec) -> None:
    request = make_request(options=ModelOptions(provider_options={"betas": [1]}))
    with pytest.raises(InvalidRequest, match="betas"):
        codec.encode(request, KEY)


def test_no_beta_header_by_default(codec: AnthropicCodec) -> None:
    assert "anthropic-beta" not in codec.encode(make_request(), KEY).headers


def test_stream_true_only_when_streaming(codec: AnthropicCodec) -> None:
    streamed = codec.encode(make_request(stream=True), KEY)
    assert streamed.stream
    assert json.loads(streamed.body or b"")["stream"] is True
    whole = codec.encode(make_request(stream=False), KEY)
    assert not whole.stream
    assert "stream" not in json.loads(whole.body or b"")


# ---------------------------------------------------------------------------------------------
# Encoding: max_tokens


def test_max_tokens_defaults_to_4096(codec: AnthropicCodec) -> None:
    assert body_of(codec, make_request())["max_tokens"] == DEFAULT_MAX_TOKENS == 4096


def test_max_tokens_option_wins(codec: AnthropicCodec) -> None:
    request = make_request(options=ModelOptions(max_tokens=50))
    assert body_of(codec, request)["max_tokens"] == 50


def test_default_max_tokens_from_the_constructor_or_options() -> None:
    assert body_of(AnthropicCodec(default_max_tokens=1000), make_request())["max_tokens"] == 1000
    codec = AnthropicCodec(options={"default_max_tokens": 2000})
    assert body_of(codec, make_request())["max_tokens"] == 2000


@pytest.mark.parametrize("value", [0, -1, "many", True])
def test_invalid_default_max_tokens_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="default_max_tokens"):
        AnthropicCodec(default_max_tokens=value)


def test_default_max_tokens_exceeds_a_thinking_budget(codec: AnthropicCodec) -> None:
    thinking = {"type": "enabled", "budget_tokens": 10_000}
    request = make_request(options=ModelOptions(provider_options={"thinking": thinking}))
    body = body_of(codec, request)
    assert body["max_tokens"] > 10_000
    assert body["thinking"] == thinking


# ---------------------------------------------------------------------------------------------
# Encoding: messages


def test_a_single_system_message_is_lifted_to_a_string(codec: AnthropicCodec) -> None:
    body = body_of(codec, make_request(system("Be brief."), user("Hi")))
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_several_system_and_developer_messages_become_text_blocks(codec: AnthropicCodec) -> None:
    body = body_of(codec, make_request(system("One."), developer("Two."), user("Hi")))
    assert body["system"] == [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]


def test_a_system_message_of_parts_stays_blocks(codec: AnthropicCodec) -> None:
    request = make_request(Message(role="system", content=[TextPart(text="S")]), user("Hi"))
    assert body_of(codec, request)["system"] == [{"type": "text", "text": "S"}]


def test_no_system_field_without_system_messages(codec: AnthropicCodec) -> None:
    assert "system" not in body_of(codec, make_request(user("Hi")))


def test_consecutive_same_role_messages_are_merged(codec: AnthropicCodec) -> None:
    body = body_of(codec, make_request(user("a"), user("b"), assistant("c"), assistant("d")))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
        },
    ]


def test_a_trailing_assistant_string_is_sent_as_a_prefill(codec: AnthropicCodec) -> None:
    body = body_of(codec, make_request(user("Write code"), assistant("```python")))
    assert body["messages"][-1] == {"role": "assistant", "content": "```python"}


def test_images_are_sent_inline_or_by_url(codec: AnthropicCodec) -> None:
    request = make_request(
        user(
            "What are these?",
            ImagePart.from_bytes(b"\x89PNG", "image/png"),
            ImagePart.from_url("https://example.com/cat.jpg"),
        )
    )
    content = body_of(codec, request)["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What are these?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_a_data_url_image_is_sent_inline(codec: AnthropicCodec) -> None:
    request = make_request(user(ImagePart.from_url("data:image/gif;base64,R0lG")))
    source = body_of(codec, request)["messages"][0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/gif", "data": "R0lG"}


def test_signed_thinking_is_echoed_first_and_verbatim(codec: AnthropicCodec) -> None:
    reply = Message(
        role="assistant",
        content=[TextPart(text="Let me look."), ReasoningPart(text="hmm", signature="sig==")],
        tool_calls=[ToolCall(id="toolu_1", name="look", arguments='{"q": "x"}')],
    )
    request = make_request(user("Q"), reply, tool_result("toolu_1", "found"))
    content = body_of(codec, request)["messages"][1]["content"]
    assert content == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "x"}},
    ]


def test_redacted_thinking_is_echoed_as_a_redacted_block(codec: AnthropicCodec) -> None:
    reply = Message(
        role="assistant",
        content=[ReasoningPart(signature="opaque", redacted=True), TextPart(text="Hi")],
    )
    content = body_of(codec, make_request(user("Q"), reply, user("ok")))["messages"][1]["content"]
    assert content[0] == {"type": "redacted_thinking", "data": "opaque"}


def test_unsigned_reasoning_is_not_sent(codec: AnthropicCodec) -> None:
    reply = Message(role="assistant", content=[ReasoningPart(text="other"), TextPart(text="Hi")])
    content = body_of(codec, make_request(user("Q"), reply, user("ok")))["messages"][1]["content"]
    assert content == [{"type": "text", "text": "Hi"}]


def test_tool_calls_become_tool_use_blocks_and_empty_arguments_an_empty_object(
    codec: AnthropicCodec,
) -> None:
    reply = assistant(
        tool_calls=[
            ToolCall(id="toolu_1", name="now", arguments=""),
            ToolCall(id="toolu_2", name="add", arguments='{"a": 1, "b": [2]}'),
        ]
    )
    request = make_request(user("Q"), reply, tool_result("toolu_1", "t"), tool_result("toolu_2", 3))
    content = body_of(codec, request)["messages"][1]["content"]
    assert content == [
        {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}},
        {"type": "tool_use", "id": "toolu_2", "name": "add", "input": {"a": 1, "b": [2]}},
    ]


def test_assistant_text_and_tool_calls_become_text_then_tool_use(codec: AnthropicCodec) -> None:
    reply = assistant("Checking.", tool_calls=[ToolCall(id="toolu_1", name="f", arguments="{}")])
    request = make_request(user("Q"), reply, tool_result("toolu_1", "r"))
    assert body_of(codec, request)["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]


def test_parallel_tool_results_are_grouped_into_one_user_message(codec: AnthropicCodec) -> None:
    reply = assistant(
        tool_calls=[ToolCall(id="toolu_1", name="f"), ToolCall(id="toolu_2", name="f")]
    )
    request = make_request(
        user("Q"),
        reply,
        tool_result("toolu_1", "one"),
        tool_result("toolu_2", "no such file", is_error=True),
    )
    messages = body_of(codec, request)["messages"]
    assert len(messages) == 3
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "one"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": "no such file",
                "is_error": True,
            },
        ],
    }


def test_tool_results_come_before_user_text_in_a_merged_message(codec: AnthropicCodec) -> None:
    reply = assistant(tool_calls=[ToolCall(id="toolu_1", name="f")])
    request = make_request(user("Q"), reply, user("also this"), tool_result("toolu_1", "r"))
    content = body_of(codec, request)["messages"][2]["content"]
    assert [block["type"] for block in content] == ["tool_result", "text"]


def test_a_tool_result_may_carry_text_and_images(codec: AnthropicCodec) -> None:
    reply = assistant(tool_calls=[ToolCall(id="toolu_1", name="shot")])
    result = tool_result("toolu_1", [TextPart(text="here"), ImagePart.from_url("https://x/y.png")])
    block = body_of(codec, make_request(user("Q"), reply, result))["messages"][2]["content"][0]
    assert block["content"] == [
        {"type": "text", "text": "here"},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ]


def test_an_assistant_message_with_nothing_to_send_is_dropped(codec: AnthropicCodec) -> None:
    empty = Message(role="assistant", content=[ReasoningPart(text="unsigned")])
    body = body_of(codec, make_request(user("a"), empty, user("b")))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


# ---------------------------------------------------------------------------------------------
# Encoding: options, tools, formats


def test_sampling_options_are_mapped(codec: AnthropicCodec) -> None:
    options = ModelOptions(temperature=0.5, top_p=0.9, top_k=40, stop=["END", "```"])
    body = body_of(codec, make_request(options=options))
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert body["top_k"] == 40
    assert body["stop_sequences"] == ["END", "```"]


def test_unset_options_are_not_sent(codec: AnthropicCodec) -> None:
    body = body_of(codec, make_request())
    assert set(body) == {"model", "max_tokens", "messages"}


WEATHER = ToolSpec(
    name="weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def test_tools_are_sent_with_an_input_schema(codec: AnthropicCodec) -> None:
    strict = ToolSpec(name="clock", strict=True)
    body = body_of(codec, make_request(tools=[WEATHER, strict]))
    assert body["tools"] == [
        {
            "name": "weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {
            "name": "clock",
            "description": "",
            "input_schema": {"type": "object", "properties": {}},
            "strict": True,
        },
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (NamedToolChoice(name="weather"), {"type": "tool", "name": "weather"}),
    ],
)
def test_tool_choice_forms(codec: AnthropicCodec, choice: ToolChoice, wire: dict[str, Any]) -> None:
    body = body_of(codec, make_request(tools=[WEATHER], tool_choice=choice))
    assert body["tool_choice"] == wire


def test_disable_parallel_tool_use_goes_on_the_tool_choice(codec: AnthropicCodec) -> None:
    options = ModelOptions(provider_options={"disable_parallel_tool_use": True})
    body = body_of(codec, make_request(tools=[WEATHER], options=options))
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "disable_parallel_tool_use" not in body
    named = make_request(
        tools=[WEATHER], tool_choice=NamedToolChoice(name="weather"), options=options
    )
    assert body_of(codec, named)["tool_choice"] == {
        "type": "tool",
        "name": "weather",
        "disable_parallel_tool_use": True,
    }


def test_a_json_schema_format_becomes_output_config(codec: AnthropicCodec) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = make_request(response_format=ResponseFormat.schema("N", schema))
    body = body_of(codec, request)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_output_config_from_provider_options_is_merged_with_the_format(
    codec: AnthropicCodec,
) -> None:
    schema = {"type": "object"}
    request = make_request(
        response_format=ResponseFormat.schema("N", schema),
        options=ModelOptions(provider_options={"output_config": {"effort": "low"}}),
    )
    assert body_of(codec, request)["output_config"] == {
        "format": {"type": "json_schema", "schema": schema},
        "effort": "low",
    }


def test_a_json_object_format_without_a_schema_is_refused(codec: AnthropicCodec) -> None:
    request = make_request(response_format=ResponseFormat.json())
    with pytest.raises(InvalidRequest, match="no JSON mode without a schema"):
        codec.encode(request, KEY)
    with pytest.raises(InvalidRequest):
        codec.validate(request)


def test_provider_options_are_merged_last(codec: AnthropicCodec) -> None:
    extra = {
        "metadata": {"user_id": "u1"},
        "service_tier": "standard_only",
        "temperature": 0.1,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    request = make_request(options=ModelOptions(temperature=0.9, provider_options=extra))
    body = body_of(codec, request)
    assert body["metadata"] == {"user_id": "u1"}
    assert body["service_tier"] == "standard_only"
    assert body["temperature"] == 0.1
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "options",
    [ModelOptions(seed=1), ModelOptions(frequency_penalty=0.5), ModelOptions(presence_penalty=0.5)],
    ids=["seed", "frequency_penalty", "presence_penalty"],
)
def test_unsupported_options_are_refused_by_name(
    codec: AnthropicCodec, options: ModelOptions, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    with pytest.raises(InvalidRequest, match=name) as caught:
        codec.validate(make_request(options=options))
    assert caught.value.details["option"] == name
    with pytest.raises(InvalidRequest, match=name):
        codec.encode(make_request(options=options), KEY)


def test_a_plain_request_validates(codec: AnthropicCodec) -> None:
    codec.validate(make_request(system("s"), user("Hi"), tools=[WEATHER]))


def test_images_for_a_model_without_vision_are_refused(codec: AnthropicCodec) -> None:
    request = make_request(user("What?", ImagePart.from_url("https://x/y.png")), model="claude-2.1")
    with pytest.raises(ModelNotSupported, match="images") as caught:
        codec.validate(request)
    assert caught.value.details["feature"] == "vision"


def test_tools_for_a_model_without_function_calling_are_refused(codec: AnthropicCodec) -> None:
    request = make_request(tools=[WEATHER], model="claude-instant-1.2")
    with pytest.raises(ModelNotSupported, match="tools"):
        codec.validate(request)


def test_a_schema_for_a_model_without_structured_output_is_refused(
    codec: AnthropicCodec,
) -> None:
    request = make_request(
        response_format=ResponseFormat.schema("N", {"type": "object"}),
        model="claude-3-5-sonnet-20241022",
    )
    with pytest.raises(ModelNotSupported, match="JSON schema"):
        codec.validate(request)


@pytest.mark.parametrize(
    "messages",
    [
        [Message(role="system", content=[ImagePart.from_url("https://x/y.png")]), user("Hi")],
        [user([ReasoningPart(text="t", signature="s")])],
        [user("Q"), Message(role="assistant", content=[ImagePart.from_url("https://x/y.png")])],
        [user("Q"), tool_result("toolu_1", [ReasoningPart(text="t")])],
    ],
    ids=["image-in-system", "reasoning-in-user", "image-in-assistant", "reasoning-in-tool"],
)
def test_content_anthropic_cannot_take_is_refused(
    codec: AnthropicCodec, messages: list[Message]
) -> None:
    with pytest.raises(InvalidRequest, match="does not accept"):
        codec.validate(make_request(*messages))


def test_a_conversation_of_only_system_messages_is_refused(codec: AnthropicCodec) -> None:
    with pytest.raises(InvalidRequest, match="at least one user or assistant"):
        codec.validate(make_request(system("s")))


def test_an_empty_user_message_is_refused(codec: AnthropicCodec) -> None:
    with pytest.raises(InvalidRequest, match="no content"):
        codec.validate(make_request(user("")))


def test_required_tool_choice_without_tools_is_refused(codec: AnthropicCodec) -> None:
    with pytest.raises(InvalidRequest, match="required"):
        codec.validate(make_request(tool_choice="required"))


def test_malformed_tool_call_arguments_are_refused(codec: AnthropicCodec) -> None:
    reply = assistant(tool_calls=[ToolCall(id="toolu_1", name="f", arguments="{oops")])
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        codec.validate(make_request(user("Q"), reply, tool_result("toolu_1", "r")))


# ---------------------------------------------------------------------------------------------
# Capabilities


def test_the_api_supports_everything_but_json_mode_and_mcp(codec: AnthropicCodec) -> None:
    assert codec.supports(Feature.VISION)
    assert codec.supports(Feature.COUNT_TOKENS)
    assert not codec.supports(Feature.JSON_MODE)
    assert not codec.supports(Feature.MCP)


@pytest.mark.parametrize(
    ("model", "feature", "expected"),
    [
        ("claude-sonnet-4-5-20250929", Feature.STRUCTURED_OUTPUT, True),
        ("claude-haiku-4-5", Feature.REASONING, True),
        ("claude-3-7-sonnet-20250219", Feature.REASONING, True),
        ("claude-3-5-sonnet-20241022", Feature.REASONING, False),
        ("claude-sonnet-4-20250514", Feature.REASONING, True),
        ("claude-sonnet-4-20250514", Feature.STRUCTURED_OUTPUT, False),
        ("claude-opus-4-1-20250805", Feature.STRUCTURED_OUTPUT, True),
        ("claude-3-haiku-20240307", Feature.VISION, True),
        ("claude-2.1", Feature.VISION, False),
        ("claude-instant-1.2", Feature.FUNCTION_CALLING, False),
        ("some-gateway-alias", Feature.VISION, True),
    ],
)
def test_model_features(
    codec: AnthropicCodec, model: str, feature: Feature, expected: bool
) -> None:
    assert codec.supports(feature, model) is expected


def test_known_models_are_current_claude_models(codec: AnthropicCodec) -> None:
    models = codec.known_models()
    assert models
    assert len({m.id for m in models}) == len(models)
    for model in models:
        assert model.id.startswith("claude-")
        assert model.provider == "anthropic"
        assert model.context_window
        assert model.max_output_tokens
        assert model.supports(Feature.VISION)


# ---------------------------------------------------------------------------------------------
# Stream decoding


def test_a_text_stream_decodes_to_text_chunks() -> None:
    chunks = decode(text_stream("Hel", "lo"))
    first = chunks[0]
    assert (first.id, first.model, first.provider) == ("msg_01", "claude-test", "anthropic")
    assert [c.text for c in chunks if c.text] == ["Hel", "lo"]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.metadata == {"native_finish_reason": "end_turn"}
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (10, 5)
    assert all(c.error is None for c in chunks)


def test_the_decoder_is_done_after_message_stop() -> None:
    decoder = AnthropicStreamDecoder()
    decoder.feed(text_stream("a")[: -len(STOP)])
    assert not decoder.done
    decoder.feed(STOP)
    assert decoder.done
    assert decoder.close() == []
    assert decoder.feed(text_delta(0, "late")) == []


def test_the_first_chunk_carries_the_input_usage_with_cache_counts() -> None:
    chunks = decode(message_start(input_tokens=12, cache_write=100, cache_read=4167) + STOP)
    usage = chunks[0].usage
    assert usage is not None
    assert usage.prompt_tokens == 12 + 100 + 4167
    assert usage.cache_read_tokens == 4167
    assert usage.cache_write_tokens == 100
    assert chunks[0].metadata == {"service_tier": "standard"}


def test_final_usage_keeps_the_input_counts_of_message_start() -> None:
    stream = message_start(input_tokens=7, cache_read=3) + message_delta("end_turn") + STOP
    usage = aggregate(decode(stream)).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens) == (10, 5, 3)


def test_thinking_tokens_of_message_delta_become_reasoning_tokens() -> None:
    final = event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 3,
                "output_tokens": 92,
                "output_tokens_details": {"thinking_tokens": 53},
            },
        }
    )
    usage = aggregate(decode(message_start() + final + STOP)).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (3, 92, 53)


def test_ping_anywhere_is_ignored() -> None:
    stream = (
        PING
        + message_start()
        + PING
        + block_start(0, {"type": "text", "text": ""})
        + PING
        + text_delta(0, "Hi")
        + PING
        + block_stop(0)
        + message_delta("end_turn")
        + PING
        + STOP
    )
    assert decode(stream) == decode(text_stream("Hi"))


def test_padded_data_lines_decode() -> None:
    padded = (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hi"}}          \n\n'
    )
    chunks = decode(message_start() + block_start(0, {"type": "text", "text": ""}) + padded + STOP)
    assert [c.text for c in chunks if c.text] == ["Hi"]


def test_crlf_framed_events_decode() -> None:
    stream = text_stream("a", "b").replace(b"\n", b"\r\n")
    assert decode(stream) == decode(text_stream("a", "b"))


def test_thinking_then_text_aggregates_to_a_signed_reasoning_part() -> None:
    stream = (
        message_start()
        + block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
        + delta(0, {"type": "thinking_delta", "thinking": "Let me "})
        + delta(0, {"type": "thinking_delta", "thinking": "think."})
        + delta(0, {"type": "thinking_delta", "thinking": ""})
        + delta(0, {"type": "signature_delta", "signature": "EqQBCkgI=="})
        + block_stop(0)
        + block_start(1, {"type": "text", "text": ""})
        + text_delta(1, "Answer")
        + block_stop(1)
        + message_delta("end_turn")
        + STOP
    )
    chunks = decode(stream)
    assert [c.reasoning for c in chunks if c.reasoning] == ["Let me ", "think."]
    assert [c.reasoning_signature for c in chunks if c.reasoning_signature] == ["EqQBCkgI=="]
    message = aggregate(chunks).message
    assert message.content == [
        ReasoningPart(text="Let me think.", signature="EqQBCkgI==", provider="anthropic"),
        TextPart(text="Answer"),
    ]


def test_a_redacted_thinking_block_travels_as_a_signature() -> None:
    stream = (
        message_start()
        + block_start(0, {"type": "redacted_thinking", "data": "opaque=="})
        + block_stop(0)
        + STOP
    )
    chunks = decode(stream)
    assert chunks[1].reasoning_signature == "opaque=="
    assert chunks[1].reasoning_redacted
    assert chunks[1].metadata == {"redacted_thinking": True}


def test_streamed_redacted_thinking_aggregates_to_a_redacted_part_and_is_echoed_as_one(
    codec: AnthropicCodec,
) -> None:
    stream = (
        message_start()
        + block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
        + delta(0, {"type": "thinking_delta", "thinking": "Plan."})
        + delta(0, {"type": "signature_delta", "signature": "sig=="})
        + block_stop(0)
        + block_start(1, {"type": "redacted_thinking", "data": "opaque=="})
        + block_stop(1)
        + block_start(2, {"type": "text", "text": ""})
        + text_delta(2, "Answer")
        + block_stop(2)
        + message_delta("end_turn")
        + STOP
    )
    message = aggregate(decode(stream)).message
    assert message.content == [
        ReasoningPart(text="Plan.", signature="sig==", provider="anthropic"),
        ReasoningPart(signature="opaque==", redacted=True, provider="anthropic"),
        TextPart(text="Answer"),
    ]
    # the next turn of a tool loop sends both blocks back as Anthropic gave them
    content = body_of(codec, make_request(user("Q"), message, user("ok")))["messages"][1]["content"]
    assert content == [
        {"type": "thinking", "thinking": "Plan.", "signature": "sig=="},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "text", "text": "Answer"},
    ]


def parallel_tools_stream() -> bytes:
    return (
        message_start()
        + block_start(0, {"type": "text", "text": ""})
        + text_delta(0, "Checking both.")
        + block_stop(0)
        + block_start(1, {"type": "tool_use", "id": "toolu_A", "name": "secret", "input": {}})
        + json_delta(1, "")
        + json_delta(1, '{"passwo')
        + json_delta(1, 'rd": "mel')
        + json_delta(1, 'lon"}')
        + block_stop(1)
        + block_start(2, {"type": "tool_use", "id": "toolu_B", "name": "secret", "input": {}})
        + json_delta(2, '{"password"')
        + PING
        + json_delta(2, ': "radiance"}')
        + block_stop(2)
        + message_delta("tool_use")
        + STOP
    )


def test_tool_call_deltas_are_indexed_by_call_ordinal_not_block_index() -> None:
    chunks = decode(parallel_tools_stream())
    deltas = [d for c in chunks for d in c.tool_calls or ()]
    assert {d.index for d in deltas} == {0, 1}
    opening = [d for d in deltas if d.id]
    assert [(d.index, d.id, d.name) for d in opening] == [
        (0, "toolu_A", "secret"),
        (1, "toolu_B", "secret"),
    ]
    assert all(d.arguments for d in deltas if not d.id)  # empty fragments are not sent


def test_parallel_tool_calls_with_split_fragments_aggregate() -> None:
    response = aggregate(decode(parallel_tools_stream()))
    assert response.text == "Checking both."
    assert [(c.id, c.name, c.parsed_arguments()) for c in response.tool_calls] == [
        ("toolu_A", "secret", {"password": "mellon"}),
        ("toolu_B", "secret", {"password": "radiance"}),
    ]
    assert response.finish_reason == "tool_calls"


def test_tools_without_arguments_aggregate_to_an_empty_object() -> None:
    stream = (
        message_start()
        + block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}})
        + json_delta(0, "")
        + block_stop(0)
        + block_start(1, {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}})
        + json_delta(1, "")
        + block_stop(1)
        + message_delta("tool_use")
        + STOP
    )
    calls = aggregate(decode(stream)).tool_calls
    assert [(c.id, c.arguments) for c in calls] == [("toolu_1", "{}"), ("toolu_2", "{}")]


@pytest.mark.parametrize(
    ("native", "normalised"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause"),
        ("something_new", "other"),
    ],
)
def test_stop_reasons_are_normalised(native: str, normalised: str) -> None:
    chunks = decode(message_start() + message_delta(native) + STOP)
    assert chunks[-1].finish_reason == normalised
    assert chunks[-1].metadata == {"native_finish_reason": native}


def test_the_stop_sequence_is_kept_in_metadata() -> None:
    chunks = decode(message_start() + message_delta("stop_sequence", stop_sequence="```") + STOP)
    assert chunks[-1].metadata == {"native_finish_reason": "stop_sequence", "stop_sequence": "```"}


def test_an_error_event_before_content_yields_an_overloaded_error() -> None:
    chunks = decode(message_start() + error_event("overloaded_error", "Overloaded"))
    assert len(chunks) == 2
    info = chunks[1].error
    assert info is not None
    assert info.retryable
    assert info.details == {"type": "overloaded_error", "in_stream": True}
    error = error_from_info(info)
    assert isinstance(error, ProviderOverloaded)
    assert error.message == "Overloaded"


def test_an_error_event_after_content_ends_the_stream() -> None:
    decoder = AnthropicStreamDecoder()
    head = message_start() + block_start(0, {"type": "text", "text": ""}) + text_delta(0, "par")
    chunks = decoder.feed(head + error_event("api_error") + text_delta(0, "ignored"))
    assert [c.text for c in chunks if c.text] == ["par"]
    assert chunks[-1].error is not None
    assert decoder.done
    assert decoder.feed(text_delta(0, "more")) == []
    assert decoder.close() == []


@pytest.mark.parametrize(
    ("error_type", "cls", "retryable"),
    [
        ("overloaded_error", ProviderOverloaded, True),
        ("api_error", ProviderError, True),
        ("rate_limit_error", RateLimited, True),
        ("timeout_error", InvocationTimeout, True),
        ("invalid_request_error", InvalidRequest, False),
        ("authentication_error", AuthenticationError, False),
        ("mystery_error", ProviderError, False),
    ],
)
def test_error_events_map_by_type(error_type: str, cls: type[LLMError], retryable: bool) -> None:
    chunks = decode(message_start() + error_event(error_type))
    info = chunks[-1].error
    assert info is not None
    error = error_from_info(info)
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.provider == "anthropic"


def test_a_stream_that_ends_without_message_stop_fails() -> None:
    decoder = AnthropicStreamDecoder()
    chunks = decoder.feed(text_stream("a")[: -len(STOP)])
    assert all(c.error is None for c in chunks)
    tail = decoder.close()
    assert len(tail) == 1
    assert tail[0].error is not None
    assert tail[0].error.code is ErrorCode.STREAMING_FAILED
    assert isinstance(error_from_info(tail[0].error), StreamingFailed)
    assert decoder.close() == []


def test_a_stream_cut_inside_an_event_fails_once() -> None:
    stream = text_stream("abc")
    chunks = decode(stream[: stream.index(b"abc") + 1])
    errors = [c.error for c in chunks if c.error is not None]
    assert len(errors) == 1
    assert errors[0].code is ErrorCode.STREAMING_FAILED


def test_a_final_event_without_its_blank_line_still_counts() -> None:
    chunks = decode(text_stream("a").rstrip(b"\n"))
    assert all(c.error is None for c in chunks)


def test_unknown_event_types_are_skipped() -> None:
    novel = event({"type": "message_annotation", "index": 3, "payload": {"x": [1, 2]}})
    stream = text_stream("Hi")
    cut = stream.index(b"\n\n") + 2  # after message_start
    assert decode(novel + stream[:cut] + novel + stream[cut:]) == decode(stream)


def test_unknown_block_and_delta_kinds_are_skipped_with_their_deltas() -> None:
    stream = (
        message_start()
        + block_start(
            0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
        )
        + json_delta(0, '{"query": "weather"}')
        + block_stop(0)
        + block_start(
            1,
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_1",
                "content": [{"type": "web_search_result", "url": "https://x"}],
            },
        )
        + block_stop(1)
        + block_start(2, {"type": "hologram", "text": {"not": "a string"}})
        + delta(2, {"type": "hologram_delta", "text": 5})
        + block_stop(2)
        + block_start(3, {"citations": [], "type": "text", "text": ""})
        + delta(3, {"type": "citations_delta", "citation": {"type": "web_search_result_location"}})
        + text_delta(3, "Sunny.")
        + block_stop(3)
        + message_delta("end_turn")
        + STOP
    )
    chunks = decode(stream)
    assert all(c.error is None for c in chunks)
    assert all(not c.tool_calls for c in chunks)
    assert aggregate(chunks).text == "Sunny."


def test_malformed_json_fails_the_stream() -> None:
    chunks = decode(message_start() + b"event: content_block_delta\ndata: {not json\n\n" + STOP)
    assert chunks[-1].error is not None
    assert chunks[-1].error.code is ErrorCode.STREAMING_FAILED
    assert "malformed" in chunks[-1].error.message


def test_a_known_event_of_the_wrong_shape_fails_the_stream() -> None:
    bad = event(
        {
            "type": "content_block_delta",
            "index": "zero",
            "delta": {"type": "text_delta", "text": "x"},
        }
    )
    chunks = decode(message_start() + bad + STOP)
    assert chunks[-1].error is not None
    assert "content_block_delta" in chunks[-1].error.message


def test_empty_data_lines_are_ignored() -> None:
    assert decode(b"data: \n\n" + text_stream("x")) == decode(text_stream("x"))


def test_the_decoder_name_is_the_configured_provider_name() -> None:
    codec = AnthropicCodec(name="claude-eu")
    decoder = codec.stream_decoder(make_request())
    chunks = decoder.feed(message_start() + error_event("api_error"))
    assert chunks[0].provider == "claude-eu"
    assert chunks[-1].error is not None
    assert chunks[-1].error.provider == "claude-eu"


RICH_STREAM = (
    PING
    + message_start(cache_read=2)
    + block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
    + delta(0, {"type": "thinking_delta", "thinking": "Déjà vu → 🤔"})
    + delta(0, {"type": "signature_delta", "signature": "c2lnbmF0dXJl"})
    + block_stop(0)
    + block_start(1, {"type": "text", "text": ""})
    + text_delta(1, "日本語 text")
    + block_stop(1)
    + block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}})
    + json_delta(2, '{"k": "v€')
    + json_delta(2, '"}')
    + block_stop(2)
    + event({"type": "future_event"})
    + message_delta("tool_use", output_tokens=42)
    + STOP
)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(RICH_STREAM)), max_size=40))
def test_any_split_of_the_bytes_yields_the_same_chunks(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [
        RICH_STREAM[a:b] for a, b in zip([0, *points], [*points, len(RICH_STREAM)], strict=True)
    ]
    decoder = AnthropicStreamDecoder()
    chunks: list[StreamChunk] = []
    for piece in pieces:
        chunks.extend(decoder.feed(piece))
    chunks.extend(decoder.close())
    assert chunks == decode(RICH_STREAM)


def test_the_rich_stream_decodes_without_error() -> None:
    chunks = decode(RICH_STREAM)
    assert all(c.error is None for c in chunks)
    response = aggregate(chunks)
    assert response.reasoning == "Déjà vu → 🤔"
    assert response.text == "日本語 text"
    assert response.tool_calls[0].parsed_arguments() == {"k": "v€"}


# ---------------------------------------------------------------------------------------------
# Whole bodies, and agreement with streams


def synthetic_exchange(
    *, thinking: bool, text: str, calls: list[tuple[str, str, dict[str, Any]]], stop: str
) -> tuple[bytes, bytes]:
    """The same answer as a stream and as a whole body."""
    content: list[dict[str, Any]] = []
    stream = message_start(input_tokens=20, cache_write=5, cache_read=7, output_tokens=1)
    index = 0
    if thinking:
        content.append({"type": "thinking", "thinking": "Plan it.", "signature": "sig=="})
        stream += block_start(index, {"type": "thinking", "thinking": "", "signature": ""})
        stream += delta(index, {"type": "thinking_delta", "thinking": "Plan "})
        stream += delta(index, {"type": "thinking_delta", "thinking": "it."})
        stream += delta(index, {"type": "signature_delta", "signature": "sig=="})
        stream += block_stop(index)
        index += 1
    if text:
        content.append({"type": "text", "text": text})
        stream += block_start(index, {"type": "text", "text": ""})
        half = len(text) // 2
        stream += text_delta(index, text[:half]) + text_delta(index, text[half:])
        stream += block_stop(index)
        index += 1
    for call_id, name, arguments in calls:
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
        stream += block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}})
        compact = msgspec.json.encode(arguments).decode()
        stream += (
            json_delta(index, "") + json_delta(index, compact[:3]) + json_delta(index, compact[3:])
        )
        stream += block_stop(index)
        index += 1
    stream += message_delta(stop, output_tokens=33) + STOP
    body = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 7,
            "output_tokens": 33,
            "service_tier": "standard",
        },
    }
    return stream, json.dumps(body).encode()


@pytest.mark.parametrize(
    ("thinking", "text", "calls", "stop"),
    [
        (False, "Just text.", [], "end_turn"),
        (False, "", [], "max_tokens"),
        (
            False,
            "Two calls.",
            [("toolu_1", "add", {"a": 1, "b": [2, 3]}), ("toolu_2", "now", {})],
            "tool_use",
        ),
        (True, "After thought.", [("toolu_1", "look", {"q": "ünï"})], "tool_use"),
    ],
    ids=["text", "empty", "parallel-tools", "thinking-tool"],
)
def test_the_aggregate_of_a_stream_equals_the_whole_body(
    codec: AnthropicCodec,
    thinking: bool,
    text: str,
    calls: list[tuple[str, str, dict[str, Any]]],
    stop: str,
) -> None:
    stream, body = synthetic_exchange(thinking=thinking, text=text, calls=calls, stop=stop)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    streamed = msgspec.structs.replace(aggregate(decode(stream)), created=created)
    whole = msgspec.structs.replace(codec.decode_response(make_request(), body), created=created)
    assert streamed == whole
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == 32
    assert whole.usage.completion_tokens == 33


def test_a_whole_body_decodes_in_block_order(codec: AnthropicCodec) -> None:
    body = {
        "id": "msg_9",
        "type": "message",
        "model": "claude-test",
        "content": [
            {"type": "thinking", "thinking": "T", "signature": "S"},
            {"type": "redacted_thinking", "data": "R"},
            {"type": "text", "text": "A"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "B", "citations": [{"type": "x"}]},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": [1, {"y": None}]}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    response = codec.decode_response(make_request(), json.dumps(body).encode())
    assert response.id == "msg_9"
    assert response.provider == "anthropic"
    assert response.model == "claude-test"
    assert response.created.tzinfo is UTC
    assert response.message.content == [
        ReasoningPart(text="T", signature="S", provider="anthropic"),
        ReasoningPart(signature="R", redacted=True, provider="anthropic"),
        TextPart(text="AB"),
    ]
    assert response.tool_calls == [
        ToolCall(id="toolu_1", name="f", arguments='{"x":[1,{"y":null}]}')
    ]
    assert response.finish_reason == "tool_calls"
    assert response.metadata == {"redacted_thinking": True, "native_finish_reason": "tool_use"}


def test_a_text_only_body_has_string_content(codec: AnthropicCodec) -> None:
    body = (
        b'{"id":"m","type":"message","model":"c","content":[{"type":"text","text":"Hi"}],'
        b'"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}'
    )
    response = codec.decode_response(make_request(), body)
    assert response.message.content == "Hi"
    assert response.finish_reason == "stop"


def test_a_body_stopped_by_a_stop_sequence_keeps_it_in_metadata(codec: AnthropicCodec) -> None:
    body = (
        b'{"id":"m","type":"message","model":"c","content":[{"type":"text","text":"x"}],'
        b'"stop_reason":"stop_sequence","stop_sequence":"END"}'
    )
    response = codec.decode_response(make_request(), body)
    assert response.finish_reason == "stop"
    assert response.metadata == {"native_finish_reason": "stop_sequence", "stop_sequence": "END"}
    assert response.usage is None


def test_a_body_without_stop_reason_but_with_tool_calls_finishes_with_tool_calls(
    codec: AnthropicCodec,
) -> None:
    body = (
        b'{"id":"m","type":"message","model":"c","content":'
        b'[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}],"stop_reason":null}'
    )
    response = codec.decode_response(make_request(), body)
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [ToolCall(id="toolu_1", name="f", arguments="{}")]


def test_a_malformed_body_is_a_provider_error(codec: AnthropicCodec) -> None:
    with pytest.raises(ProviderError, match="malformed"):
        codec.decode_response(make_request(), b"<html>")
    with pytest.raises(ProviderError):
        codec.decode_response(make_request(), b'{"content": 5}')


def test_an_error_body_with_status_200_raises_its_typed_error(codec: AnthropicCodec) -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(ProviderOverloaded):
        codec.decode_response(make_request(), body)


# ---------------------------------------------------------------------------------------------
# Errors and retry advice


def error_body(error_type: str, message: str, request_id: str | None = "req_1") -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "error_type", "message", "cls", "retryable"),
    [
        (400, "invalid_request_error", "max_tokens: too big", InvalidRequest, False),
        (401, "authentication_error", "invalid x-api-key", AuthenticationError, False),
        (403, "permission_error", "no access", AuthenticationError, False),
        (404, "not_found_error", "model: claude-nope", ModelNotSupported, False),
        (404, "not_found_error", "file_abc not found", InvalidRequest, False),
        (413, "request_too_large", "too large", InvalidRequest, False),
        (429, "rate_limit_error", "slow down", RateLimited, True),
        (500, "api_error", "internal", ProviderError, True),
        (529, "overloaded_error", "Overloaded", ProviderOverloaded, True),
        (402, "billing_error", "pay up", AuthenticationError, False),
        (504, "timeout_error", "timed out", InvocationTimeout, True),
        (409, "conflict_error", "conflict", ProviderError, True),
    ],
)
def test_error_bodies_map_by_type(
    codec: AnthropicCodec,
    status: int,
    error_type: str,
    message: str,
    cls: type[LLMError],
    retryable: bool,
) -> None:
    error = codec.map_error(status, {}, error_body(error_type, message))
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.status == status
    assert error.message == message
    assert error.request_id == "req_1"
    assert error.details["type"] == error_type
    assert error.provider == "anthropic"
    assert codec.retry_advice(error, {}).retryable is retryable


def test_the_request_id_header_is_used_when_the_body_has_none(codec: AnthropicCodec) -> None:
    error = codec.map_error(
        429, {"request-id": "req_h"}, error_body("rate_limit_error", "x", request_id=None)
    )
    assert error.request_id == "req_h"


def test_retry_after_is_read_from_the_headers(codec: AnthropicCodec) -> None:
    error = codec.map_error(429, {"retry-after": "12"}, error_body("rate_limit_error", "x"))
    assert error.retry_after == 12.0


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (502, b"<html><body>Bad gateway</body></html>", ProviderError),
        (500, b"", ProviderError),
        (413, b"<html>413 Request Entity Too Large</html>", InvalidRequest),
        (529, b"Overloaded", ProviderOverloaded),
        (401, b'{"message": "not anthropic"}', AuthenticationError),
    ],
)
def test_non_anthropic_error_bodies_map_by_status(
    codec: AnthropicCodec, status: int, body: bytes, cls: type[LLMError]
) -> None:
    error = codec.map_error(status, {"request-id": "req_x"}, body)
    assert type(error) is cls
    assert error.status == status
    assert error.request_id == "req_x"
    assert error.message


def test_x_should_retry_false_wins(codec: AnthropicCodec) -> None:
    error = codec.map_error(529, {}, error_body("overloaded_error", "Overloaded"))
    assert not codec.retry_advice(error, {"x-should-retry": "false"}).retryable


def test_x_should_retry_true_wins(codec: AnthropicCodec) -> None:
    error = codec.map_error(400, {}, error_body("invalid_request_error", "x"))
    assert codec.retry_advice(error, {"x-should-retry": "true"}).retryable


def test_a_short_retry_after_is_honoured(codec: AnthropicCodec) -> None:
    headers = {"retry-after": "30"}
    error = codec.map_error(429, headers, error_body("rate_limit_error", "x"))
    assert codec.retry_advice(error, headers) == codec.retry_advice(
        error, {"retry-after-ms": "30000"}
    )
    advice = codec.retry_advice(error, headers)
    assert advice.retryable
    assert advice.delay == 30.0


@pytest.mark.parametrize("value", ["120", "0", "-3"])
def test_a_retry_after_outside_0_to_60_seconds_falls_back_to_backoff(
    codec: AnthropicCodec, value: str
) -> None:
    headers = {"retry-after": value}
    error = codec.map_error(429, headers, error_body("rate_limit_error", "x"))
    advice = codec.retry_advice(error, headers)
    assert advice.retryable
    assert advice.delay is None


# ---------------------------------------------------------------------------------------------
# Rate limits


def test_rate_limit_headers_are_parsed(codec: AnthropicCodec) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": soon,
        "anthropic-ratelimit-tokens-limit": "2400000",
        "anthropic-ratelimit-tokens-remaining": "2399000",
        "anthropic-ratelimit-tokens-reset": "2000-01-01T00:00:00Z",
        "anthropic-ratelimit-input-tokens-limit": "2000000",
        "anthropic-ratelimit-input-tokens-remaining": "1999000",
        "anthropic-ratelimit-output-tokens-limit": "400000",
        "anthropic-ratelimit-output-tokens-remaining": "400000",
        "retry-after": "31",
    }
    info = codec.parse_rate_limits(headers)
    assert info is not None
    assert (info.requests_limit, info.requests_remaining) == (4000, 3999)
    assert info.requests_reset is not None
    assert 25 <= info.requests_reset <= 31
    assert (info.tokens_limit, info.tokens_remaining, info.tokens_reset) == (2400000, 2399000, 0.0)
    assert (info.input_tokens_limit, info.input_tokens_remaining) == (2000000, 1999000)
    assert (info.output_tokens_limit, info.output_tokens_remaining) == (400000, 400000)
    assert info.retry_after == 31.0


def test_no_rate_limit_headers_means_none(codec: AnthropicCodec) -> None:
    assert codec.parse_rate_limits({"content-type": "application/json"}) is None


def test_garbled_rate_limit_values_are_ignored(codec: AnthropicCodec) -> None:
    info = codec.parse_rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "lots",
            "anthropic-ratelimit-requests-reset": "soon",
            "anthropic-ratelimit-tokens-limit": "5",
        }
    )
    assert info is not None
    assert info.requests_limit is None
    assert info.requests_reset is None
    assert info.tokens_limit == 5


# ---------------------------------------------------------------------------------------------
# Token counting and models


def test_the_count_tokens_request_carries_only_what_the_endpoint_takes(
    codec: AnthropicCodec,
) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    request = make_request(
        system("Be brief."),
        user("Hi"),
        tools=[WEATHER],
        tool_choice="auto",
        stream=True,
        options=ModelOptions(
            temperature=0.3,
            max_tokens=10,
            stop=["x"],
            seed=3,
            provider_options={"thinking": thinking, "metadata": {"user_id": "u"}, "betas": ["b1"]},
        ),
    )
    encoded = codec.count_tokens_request(request, KEY)
    assert encoded.method == "POST"
    assert encoded.url == "https://api.anthropic.com/v1/messages/count_tokens"
    assert not encoded.stream
    assert encoded.headers["anthropic-beta"] == "b1"
    assert encoded.headers["x-api-key"] == KEY
    body = json.loads(encoded.body or b"")
    assert body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be brief.",
        "tools": [
            {
                "name": "weather",
                "description": "Weather for a city",
                "input_schema": WEATHER.parameters,
            }
        ],
        "tool_choice": {"type": "auto"},
        "thinking": thinking,
    }


def test_a_token_count_decodes(codec: AnthropicCodec) -> None:
    assert codec.decode_count_tokens(b'{"input_tokens": 1114}') == 1114


def test_a_malformed_token_count_is_a_provider_error(codec: AnthropicCodec) -> None:
    with pytest.raises(ProviderError):
        codec.decode_count_tokens(b'{"tokens": 3}')


def test_the_models_request_lists_up_to_a_thousand(codec: AnthropicCodec) -> None:
    encoded = codec.list_models_request(KEY)
    assert encoded.method == "GET"
    assert encoded.url == "https://api.anthropic.com/v1/models?limit=1000"
    assert encoded.headers["x-api-key"] == KEY
    assert encoded.headers["anthropic-version"] == ANTHROPIC_VERSION
    assert encoded.body is None


def test_models_decode_with_capabilities_or_from_the_id(codec: AnthropicCodec) -> None:
    body = {
        "data": [
            {
                "type": "model",
                "id": "claude-opus-5-5",
                "display_name": "Claude Opus 5.5",
                "created_at": "2026-09-01T00:00:00Z",
                "max_input_tokens": 1000000,
                "max_tokens": 128000,
                "capabilities": {
                    "image_input": {"supported": False},
                    "structured_outputs": {"supported": True},
                    "thinking": {"supported": True, "types": {"adaptive": {"supported": True}}},
                    "batch": {"supported": True},
                },
            },
            {
                "type": "model",
                "id": "claude-3-5-haiku-20241022",
                "display_name": "Claude Haiku 3.5",
                "created_at": "2024-10-22T00:00:00Z",
            },
        ],
        "has_more": False,
        "first_id": "claude-opus-5-5",
        "last_id": "claude-3-5-haiku-20241022",
    }
    first, second = codec.decode_models(json.dumps(body).encode())
    assert first.id == "claude-opus-5-5"
    assert first.provider == "anthropic"
    assert first.display_name == "Claude Opus 5.5"
    assert first.created == datetime(2026, 9, 1, tzinfo=UTC)
    assert (first.context_window, first.max_output_tokens) == (1000000, 128000)
    assert not first.supports(Feature.VISION)
    assert first.supports(Feature.REASONING)
    assert first.supports(Feature.STRUCTURED_OUTPUT)
    assert first.supports(Feature.COUNT_TOKENS)
    assert second.context_window is None
    assert second.supports(Feature.VISION)
    assert second.supports(Feature.FUNCTION_CALLING)
    assert not second.supports(Feature.REASONING)


def test_a_malformed_models_list_is_a_provider_error(codec: AnthropicCodec) -> None:
    with pytest.raises(ProviderError):
        codec.decode_models(b'{"data": [{"display_name": "no id"}]}')


# ---------------------------------------------------------------------------------------------
# Values out of range and JSON nested too deep: absent, or a typed error, never an exception

NESTED = b"[" * 5000 + b"]" * 5000
"""JSON nested deeper than any decoder follows."""


@pytest.mark.parametrize("value", ["-1", str(10**40), str(2**53), "1" + "0" * 400])
def test_a_rate_limit_count_out_of_range_is_absent(codec: AnthropicCodec, value: str) -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": value,
        "anthropic-ratelimit-tokens-remaining": value,
    }
    assert codec.parse_rate_limits(headers) is None


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59Z", "1e999", "1e300", "NaN"])
def test_a_rate_limit_reset_out_of_range_is_absent(codec: AnthropicCodec, value: str) -> None:
    assert codec.parse_rate_limits({"anthropic-ratelimit-requests-reset": value}) is None


def test_a_message_usage_with_a_count_out_of_range_is_absent(codec: AnthropicCodec) -> None:
    body = (
        b'{"id":"m","type":"message","model":"c","content":[{"type":"text","text":"Hi"}],'
        b'"stop_reason":"end_turn","usage":{"input_tokens":-1,"output_tokens":1}}'
    )
    response = codec.decode_response(make_request(), body)
    assert response.message.content == "Hi"
    assert response.usage is None


def test_a_streamed_start_usage_out_of_range_leaves_every_usage_absent() -> None:
    chunks = decode(
        message_start(input_tokens=-1)
        + block_start(0, {"type": "text", "text": ""})
        + text_delta(0, "Hi")
        + block_stop(0)
        + message_delta("end_turn")
        + STOP
    )
    assert [chunk.usage for chunk in chunks] == [None] * len(chunks)
    assert aggregate(chunks).text == "Hi"


def test_a_streamed_output_count_out_of_range_is_absent() -> None:
    huge = b'"output_tokens": ' + str(10**40).encode()
    chunks = decode(text_stream("Hi").replace(b'"output_tokens": 5', huge))
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is None


def test_a_stream_event_nested_too_deep_is_a_malformed_event_after_what_came() -> None:
    deep = b'event: ping\ndata: {"type": "ping", "extra": ' + NESTED + b"}\n\n"
    chunks = decode(message_start() + block_start(0, {"type": "text", "text": "a"}) + deep + STOP)
    assert aggregate(chunks[:-1]).text == "a"
    error = chunks[-1].error
    assert error is not None
    assert error.code == ErrorCode.STREAMING_FAILED
    assert error.details == {"reason": "malformed response"}


def test_a_mistyped_stream_event_nested_too_deep_is_a_malformed_event() -> None:
    deep = (
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": "zero", '
        b'"extra": ' + NESTED + b"}\n\n"
    )
    chunks = decode(message_start() + deep + STOP)
    error = chunks[-1].error
    assert error is not None
    assert error.details == {"reason": "malformed response"}


def test_a_message_body_nested_too_deep_is_a_provider_error(codec: AnthropicCodec) -> None:
    body = b'{"id": "m", "type": "message", "content": [], "extra": ' + NESTED + b"}"
    with pytest.raises(ProviderError, match="malformed Anthropic message body"):
        codec.decode_response(make_request(), body)


def test_an_error_body_nested_too_deep_is_classified_by_its_status(codec: AnthropicCodec) -> None:
    body = b'{"type": "error", "error": {"type": "api_error", "extra": ' + NESTED + b"}}"
    error = codec.map_error(529, {}, body)
    assert isinstance(error, ProviderOverloaded)
    assert error.status == 529


def test_a_token_count_nested_too_deep_is_a_provider_error(codec: AnthropicCodec) -> None:
    with pytest.raises(ProviderError, match="malformed Anthropic token count"):
        codec.decode_count_tokens(b'{"input_tokens": 1, "extra": ' + NESTED + b"}")


def test_a_models_list_nested_too_deep_is_a_provider_error(codec: AnthropicCodec) -> None:
    with pytest.raises(ProviderError, match="malformed Anthropic models list"):
        codec.decode_models(b'{"data": [], "extra": ' + NESTED + b"}")
