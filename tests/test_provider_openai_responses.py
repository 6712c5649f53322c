"""The OpenAI Responses API: encoding, decoding, selection, and calls over real sockets."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.config import ProviderConfig
from llm_invocation.errors import (
    ConfigurationError,
    ErrorCode,
    InvalidRequest,
    ProviderError,
    RateLimited,
    error_from_info,
)
from llm_invocation.providers import make_codec
from llm_invocation.providers.compatible import AzureOpenAICodec, make_compatible_codec
from llm_invocation.providers.mock import ResponsesRenderer
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.testing import (
    ErrorEvent,
    FakeServer,
    HttpError,
    Malformed,
    MockTransport,
    Scenario,
    Scenarios,
    ScriptedToolCall,
    ScriptedUsage,
    open_fake_server,
)
from llm_invocation.tools import tool
from llm_invocation.types import (
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
    ToolSpec,
    to_json,
)

KEY: Final = "sk-test-RESPONSES-0123456789abcdef"
RESPONSES: Final = {"api": "responses"}
CODEC: Final = OpenAICodec(api="responses")
RENDERER: Final = ResponsesRenderer()


def body_of(request: Request, codec: OpenAICodec = CODEC) -> dict[str, Any]:
    http = codec.encode(request, KEY)
    return json.loads(http.body or b"")


def ask(*messages: Message, **fields: Any) -> Request:
    return Request(model="gpt-5", messages=list(messages), **fields)


def decode(data: bytes, *, step: int | None = None) -> list[StreamChunk]:
    decoder = CODEC.stream_decoder(ask(llm.user("x")))
    out: list[StreamChunk] = []
    size = step or len(data) or 1
    for start in range(0, len(data), size):
        out.extend(decoder.feed(data[start : start + size]))
    out.extend(decoder.close())
    return out


def aggregate(chunks: list[StreamChunk]) -> Response:
    agg = StreamAggregator()
    for chunk in chunks:
        agg.add(chunk)
    return agg.response()


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
        for e in events
    )


CREATED: Final = {
    "type": "response.created",
    "response": {"id": "resp_1", "created_at": 1700000000, "model": "gpt-5", "output": []},
}


def completed(*output: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {
        "type": f"response.{status}" if status != "incomplete" else "response.incomplete",
        "response": {
            "id": "resp_1",
            "created_at": 1700000000,
            "model": "gpt-5",
            "status": status,
            "output": list(output),
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        },
    }


# ---------------------------------------------------------------------------------------------
# Selection


def test_the_chat_api_is_the_default_and_a_request_can_choose_responses() -> None:
    codec = OpenAICodec()
    request = ask(llm.user("hi"))
    assert codec.encode(request, KEY).url.endswith("/chat/completions")
    chosen = request.with_options(provider_options=RESPONSES)
    http = codec.encode(chosen, KEY)
    assert http.url == "https://api.openai.com/v1/responses"
    assert "api" not in json.loads(http.body or b"")


def test_a_responses_provider_can_send_one_request_to_chat() -> None:
    request = ask(llm.user("hi"), options=ModelOptions(provider_options={"api": "chat"}))
    http = CODEC.encode(request, KEY)
    assert http.url.endswith("/chat/completions")
    assert "api" not in json.loads(http.body or b"")


def test_an_unknown_api_is_refused() -> None:
    request = ask(llm.user("hi"), options=ModelOptions(provider_options={"api": "assistants"}))
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode(request, KEY)
    assert caught.value.details["field"] == "options.provider_options.api"


def test_the_provider_entry_chooses_the_api() -> None:
    config = ProviderConfig(api="responses")
    assert isinstance(codec := make_codec("openai", config), OpenAICodec)
    assert codec.api == "responses"
    default = make_codec("openai")
    assert isinstance(default, OpenAICodec)
    assert default.api == "chat"


def test_compatible_presets_and_azure_keep_chat_unless_configured() -> None:
    assert make_compatible_codec("groq").api == "chat"
    azure = make_codec("azure", ProviderConfig(base_url="https://r.openai.azure.com"))
    assert isinstance(azure, AzureOpenAICodec)
    assert azure.api == "chat"
    configured = make_codec(
        "azure", ProviderConfig(base_url="https://r.openai.azure.com", api="responses")
    )
    assert isinstance(configured, AzureOpenAICodec)
    configured.deployment = "prod-gpt"
    http = configured.encode(ask(llm.user("hi")), KEY)
    assert http.url == "https://r.openai.azure.com/openai/v1/responses"
    assert json.loads(http.body or b"")["model"] == "prod-gpt"
    assert http.headers["api-key"] == KEY


def test_api_responses_on_a_provider_of_another_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_codec("anthropic", ProviderConfig(api="responses"))
    assert "anthropic" in str(caught.value)


def test_the_api_is_not_an_option_of_the_entry() -> None:
    with pytest.raises(ConfigurationError):
        OpenAICodec(options={"api": "responses"})


def test_entry_defaults_the_responses_api_cannot_send_fail_when_the_codec_is_made() -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_codec("openai", ProviderConfig(api="responses", options={"seed": 7}))
    assert "providers.openai.options.seed" in str(caught.value)
    chat = make_codec("openai", ProviderConfig(options={"seed": 7}))
    assert isinstance(chat, OpenAICodec)
    assert chat.api == "chat"


def test_the_configuration_reads_the_api_of_a_provider() -> None:
    config = llm.Config.unlimited(providers={"openai": {"api_key": KEY, "api": "responses"}})
    assert config.providers["openai"].api == "responses"
    with pytest.raises(ConfigurationError):
        llm.Config.unlimited(providers={"openai": {"api_key": KEY, "api": "assistants"}})


# ---------------------------------------------------------------------------------------------
# Encoding


def test_system_messages_become_instructions_and_other_messages_input_items() -> None:
    body = body_of(
        ask(
            llm.system("Be brief."),
            llm.system("Answer in French."),
            llm.developer("Use tools."),
            llm.user("Hi"),
            llm.assistant("Salut"),
            llm.user("Again"),
        )
    )
    assert body["instructions"] == "Be brief.\n\nAnswer in French."
    assert body["input"] == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": "Again"},
    ]
    assert "stream" in body


def test_images_are_input_image_parts() -> None:
    image = ImagePart.from_bytes(b"\x89PNG", "image/png", detail="low")
    body = body_of(ask(llm.user("What is this?", image)))
    assert body["input"][0]["content"] == [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": image.as_url(), "detail": "low"},
    ]


def test_tool_calls_and_results_are_function_call_items() -> None:
    call = ToolCall(id="call_1", name="add", arguments='{"a":1}')
    body = body_of(
        ask(
            llm.user("add"),
            llm.assistant("Let me add.", tool_calls=[call]),
            llm.tool_result("call_1", "2"),
        )
    )
    assert body["input"][1:] == [
        {"role": "assistant", "content": "Let me add."},
        {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a":1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "2"},
    ]


def test_images_returned_by_a_tool_go_back_as_input_images_of_its_output() -> None:
    image = ImagePart.from_url("https://example.com/chart.png")
    call = ToolCall(id="call_1", name="chart", arguments="{}")
    request = ask(
        llm.user("chart"),
        llm.assistant(tool_calls=[call]),
        llm.tool_result("call_1", [TextPart(text="A chart:"), image]),
    )
    CODEC.validate(request)
    assert body_of(request)["input"][-1] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": [
            {"type": "input_text", "text": "A chart:"},
            {"type": "input_image", "image_url": "https://example.com/chart.png"},
        ],
    }


def test_signed_reasoning_goes_back_as_a_reasoning_item_and_other_reasoning_does_not() -> None:
    mine = ReasoningPart(text="thinking", signature="rs_7:gAAAAenc")
    foreign = ReasoningPart(text="claude thinks", signature="EqoBCkYIBxgCKkA")
    call = ToolCall(id="call_1", name="add", arguments="{}")
    message = Message(role="assistant", content=[foreign, mine], tool_calls=[call])
    body = body_of(ask(llm.user("q"), message, llm.tool_result("call_1", "3")))
    assert body["input"][1:3] == [
        {
            "type": "reasoning",
            "id": "rs_7",
            "encrypted_content": "gAAAAenc",
            "summary": [{"type": "summary_text", "text": "thinking"}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": "{}"},
    ]


def test_tools_choice_format_and_options_are_encoded() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = ask(
        llm.user("q"),
        tools=[ToolSpec(name="add", description="Add.", parameters=schema, strict=True)],
        tool_choice=NamedToolChoice(name="add"),
        response_format=ResponseFormat.schema("answer", schema),
        options=ModelOptions(
            max_tokens=50,
            temperature=0.5,
            provider_options={
                "reasoning_effort": "low",
                "verbosity": "high",
                "store": False,
                "previous_response_id": "resp_0",
                "include": ["reasoning.encrypted_content"],
            },
        ),
        stream=False,
    )
    body = body_of(request)
    assert body["tools"] == [
        {
            "type": "function",
            "name": "add",
            "description": "Add.",
            "parameters": schema,
            "strict": True,
        }
    ]
    assert body["tool_choice"] == {"type": "function", "name": "add"}
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True},
        "verbosity": "high",
    }
    assert body["reasoning"] == {"effort": "low"}
    assert (body["max_output_tokens"], body["temperature"]) == (50, 0.5)
    assert (body["store"], body["previous_response_id"]) == (False, "resp_0")
    assert body["include"] == ["reasoning.encrypted_content"]
    assert "stream" not in body


@pytest.mark.parametrize("field", ["stop", "seed", "top_k", "frequency_penalty"])
def test_options_without_a_responses_field_are_refused_not_dropped(field: str) -> None:
    value: Any = ["END"] if field == "stop" else 1
    request = ask(llm.user("q")).with_options(**{field: value})
    with pytest.raises(InvalidRequest) as caught:
        CODEC.validate(request)
    assert caught.value.details["field"] == field
    with pytest.raises(InvalidRequest):
        CODEC.encode(request, KEY)


def test_images_in_an_assistant_message_are_refused() -> None:
    image = ImagePart.from_url("https://example.com/a.png")
    with pytest.raises(InvalidRequest):
        CODEC.validate(ask(llm.user("q"), Message(role="assistant", content=[image])))


# ---------------------------------------------------------------------------------------------
# Decoding


def test_text_that_only_the_done_event_carries_is_delivered() -> None:
    item = {"id": "msg_1", "type": "message", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    chunks = decode(
        sse(
            CREATED,
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.output_text.delta", **where, "delta": "Hel"},
            {"type": "response.output_text.done", **where, "text": "Hello"},
            completed(),
        )
    )
    response = aggregate(chunks)
    assert response.text == "Hello"
    assert response.finish_reason == "stop"
    assert chunks[0].created is not None
    assert response.id == "resp_1"


def test_output_that_only_the_terminal_event_carries_is_delivered() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"x":1}'}
    message = {"type": "message", "content": [{"type": "output_text", "text": "ok"}]}
    response = aggregate(decode(sse(CREATED, completed(message, call))))
    assert response.text == "ok"
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [("c1", "f", '{"x":1}')]
    assert response.finish_reason == "tool_calls"


def test_a_done_event_that_disagrees_with_the_deltas_fails_the_stream() -> None:
    item = {"id": "msg_1", "type": "message", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    chunks = decode(
        sse(
            CREATED,
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.output_text.delta", **where, "delta": "Hel"},
            {"type": "response.output_text.done", **where, "text": "Goodbye"},
            completed(),
        )
    )
    assert chunks[-1].error is not None
    assert chunks[-1].error.code is ErrorCode.STREAMING_FAILED
    assert chunks[-1].error.details["reason"] == "malformed response"


@pytest.mark.parametrize(
    "data",
    [
        b'data: {"type":"response.output_text.delta","delta":"tru\n\n',
        b'data: {"type":"response.output_text.delta","output_index":"0","delta":"x"}\n\n',
        b'data: {"type":"response.output_item.added","output_index":0}\n\n',
        b'data: {"type":"response.function_call_arguments.delta","output_index":3,"delta":"x"}\n\n',
    ],
)
def test_malformed_events_fail_the_stream_with_a_typed_error(data: bytes) -> None:
    chunks = decode(sse(CREATED) + data)
    assert chunks[-1].error is not None
    assert chunks[-1].error.code is ErrorCode.STREAMING_FAILED
    assert chunks[-1].error.details["reason"] == "malformed response"


def test_a_stream_without_a_terminal_event_is_truncated() -> None:
    chunks = decode(sse(CREATED))
    assert chunks[-1].error is not None
    assert chunks[-1].error.details["reason"] == "truncated"


def test_unknown_events_and_item_types_are_skipped_and_named() -> None:
    search = {"id": "ws_1", "type": "web_search_call", "status": "completed"}
    chunks = decode(
        sse(
            CREATED,
            {"type": "response.web_search_call.searching", "output_index": 0},
            {"type": "response.output_item.added", "output_index": 0, "item": search},
            completed(search),
        )
    )
    response = aggregate(chunks)
    assert response.metadata is not None
    assert response.metadata["output_types"] == ["web_search_call"]


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        ({"code": "server_error", "message": "boom"}, ErrorCode.PROVIDER_ERROR, True),
        ({"code": "rate_limit_exceeded", "message": "slow"}, ErrorCode.RATE_LIMIT_EXCEEDED, True),
        ({"code": "insufficient_quota", "message": "pay"}, ErrorCode.RATE_LIMIT_EXCEEDED, False),
    ],
)
def test_a_failed_response_maps_its_error(
    error: dict[str, Any], code: ErrorCode, retryable: bool
) -> None:
    failed = {
        "type": "response.failed",
        "response": {"id": "resp_1", "status": "failed", "error": error},
    }
    chunks = decode(sse(CREATED, failed))
    info = chunks[-1].error
    assert info is not None
    assert (info.code, info.retryable, info.message) == (code, retryable, error["message"])
    body = json.dumps(failed["response"]).encode()
    with pytest.raises(type(error_from_info(info))):
        CODEC.decode_response(ask(llm.user("x"), stream=False), body)


def test_an_error_event_with_top_level_fields_maps_its_code() -> None:
    event = {"type": "error", "code": "insufficient_quota", "message": "pay", "param": None}
    info = decode(sse(CREATED, event))[-1].error
    assert info is not None
    assert isinstance(error_from_info(info), RateLimited)
    assert info.retryable is False


def test_a_malformed_body_is_a_provider_error() -> None:
    with pytest.raises(ProviderError) as caught:
        CODEC.decode_response(ask(llm.user("x"), stream=False), b'{"id": "resp_1", "output": 3}')
    assert caught.value.details["reason"] == "malformed response"


def test_incomplete_for_content_filter_maps_to_content_filter() -> None:
    done = completed(status="incomplete")
    done["response"]["incomplete_details"] = {"reason": "content_filter"}
    response = aggregate(decode(sse(CREATED, done)))
    assert response.finish_reason == "content_filter"


def test_usage_maps_cached_and_reasoning_tokens() -> None:
    done = completed()
    done["response"]["usage"] = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 30},
        "total_tokens": 140,
    }
    usage = aggregate(decode(sse(CREATED, done))).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (100, 60, 10)
    assert (usage.completion_tokens, usage.reasoning_tokens, usage.total_tokens) == (40, 30, 140)


# ---------------------------------------------------------------------------------------------
# Generated answers: the aggregate of a stream equals the whole body


words = st.text(alphabet=st.sampled_from('ab \n{}"é😀'), max_size=40)
tool_calls = st.lists(
    st.builds(
        ScriptedToolCall,
        name=st.sampled_from(["add", "search", "get_weather"]),
        arguments=st.dictionaries(st.sampled_from("xyz"), st.integers(), max_size=3),
    ),
    max_size=3,
)


def unnumbered(message: Message) -> str:
    return re.sub(r"fake\d{10}", "fake", to_json(message).decode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=words,
    reasoning=words,
    calls=tool_calls,
    chunk_chars=st.integers(1, 9),
    read_size=st.integers(1, 400),
    finish=st.sampled_from([None, "length", "content_filter"]),
)
def test_a_generated_stream_aggregates_to_the_whole_body(
    text: str,
    reasoning: str,
    calls: list[ScriptedToolCall],
    chunk_chars: int,
    read_size: int,
    finish: str | None,
) -> None:
    scenario = Scenario(
        text=text,
        reasoning=reasoning,
        tool_calls=calls,
        chunk_chars=chunk_chars,
        finish_reason=finish,
        usage=ScriptedUsage(prompt_tokens=7, completion_tokens=5, reasoning_tokens=2),
    )
    wire = {"model": "gpt-5", "input": [{"role": "user", "content": "hi"}], "stream": True}
    events = RENDERER.render_stream(scenario, wire)
    streamed = aggregate(
        decode(b"".join(e for e in events if isinstance(e, bytes)), step=read_size)
    )
    _, _, body = RENDERER.render_body(scenario, wire)
    whole = CODEC.decode_response(ask(llm.user("hi"), stream=False), body)
    # Two renderings of one scenario differ only in their numbered ids.
    assert unnumbered(streamed.message) == unnumbered(whole.message)
    assert streamed.finish_reason == whole.finish_reason
    assert streamed.usage == whole.usage
    assert streamed.metadata == whole.metadata
    assert streamed.model == whole.model
    assert whole.text == text
    assert whole.reasoning == reasoning
    assert [json.loads(c.arguments) for c in whole.tool_calls] == [c.arguments for c in calls]


# ---------------------------------------------------------------------------------------------
# Over real sockets: the fake server speaks the Responses API


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def chart() -> list[Any]:
    """Draw a chart."""
    return ["A chart:", ImagePart.from_url("https://example.com/chart.png")]


@asynccontextmanager
async def client_on(
    scenarios: Scenarios, **provider: Any
) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    async with open_fake_server(scenarios) as server:
        entry = {"api_key": KEY, "base_url": server.base_url("openai"), "api": "responses"}
        config = llm.Config.unlimited(
            provider="openai",
            providers={"openai": {**entry, **provider}},
            retries={"max_attempts": 2, "initial_delay": 0.01, "max_delay": 0.01},
            tools={"max_steps": 4},
        )
        async with llm.open_client(config) as client:
            client.register_tool(add)
            client.register_tool(chart)
            yield client, server


@pytest.mark.parametrize("stream", [True, False])
async def test_the_tool_loop_runs_over_the_responses_api(stream: bool) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "gpt-5",
        Scenario(
            reasoning="I should add.",
            tool_calls=[ScriptedToolCall(name="add", arguments={"a": 2, "b": 3})],
            usage=ScriptedUsage(prompt_tokens=20, completion_tokens=8, reasoning_tokens=4),
        ),
        Scenario(text="It is 5.", usage=ScriptedUsage(prompt_tokens=30, completion_tokens=4)),
    )
    async with client_on(scenarios) as (client, server):
        request = llm.Request(model="openai:gpt-5", messages=[llm.user("2+3?")], stream=stream)
        response = await client.invoke_sync(request, tool_mode="auto")
        assert response.text == "It is 5."
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.reasoning_tokens) == (50, 4)
        first, second = server.requests
        assert first.path == second.path == "/openai/v1/responses"
        assert (first.json or {}).get("stream", False) is stream
        items = (second.json or {})["input"]
        assert [item.get("type", "message") for item in items] == [
            "message",
            "reasoning",
            "function_call",
            "function_call_output",
        ]
        assert items[1]["encrypted_content"].startswith("enc_fake")
        assert items[3]["call_id"] == items[2]["call_id"]
        assert items[3]["output"] == "5"


async def test_a_tool_that_returns_an_image_sends_it_as_an_input_image() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "gpt-5",
        Scenario(tool_calls=[ScriptedToolCall(name="chart")]),
        Scenario(text="A rising line."),
    )
    async with client_on(scenarios) as (client, server):
        request = llm.Request(model="openai:gpt-5", messages=[llm.user("chart?")])
        response = await client.invoke_sync(request, tool_mode="auto")
        assert response.text == "A rising line."
        output = (server.requests[-1].json or {})["input"][-1]
        assert output["type"] == "function_call_output"
        assert {"type": "input_image", "image_url": "https://example.com/chart.png"} in output[
            "output"
        ]


async def test_an_in_stream_error_before_content_is_retried_and_counted() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "gpt-5",
        Scenario(failure=ErrorEvent(after_chunks=0, kind="server")),
        Scenario(text="recovered"),
    )
    async with client_on(scenarios) as (client, server):
        request = llm.Request(model="openai:gpt-5", messages=[llm.user("hi")])
        response = await client.invoke_sync(request)
        assert response.text == "recovered"
        assert len(server.requests) == 2
        assert client.statistics().retries == 1


async def test_a_model_not_found_is_not_retried() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "gpt-nope",
        Scenario(failure=HttpError(status=400, error_type="model_not_found", message="no model")),
    )
    async with client_on(scenarios) as (client, server):
        request = llm.Request(model="openai:gpt-nope", messages=[llm.user("hi")], stream=False)
        with pytest.raises(llm.ModelNotSupported):
            await client.invoke_sync(request)
        assert len(server.requests) == 1


async def test_one_request_chooses_chat_on_a_responses_provider() -> None:
    async with client_on(Scenarios()) as (client, server):
        request = llm.Request(
            model="openai:gpt-5",
            messages=[llm.user("hi")],
            options=ModelOptions(provider_options={"api": "chat"}),
        )
        response = await client.invoke_sync(request)
        assert response.text
        assert server.requests[-1].path == "/openai/v1/chat/completions"


async def test_the_in_process_mock_answers_the_responses_api() -> None:
    scenarios = Scenarios()
    scenarios.add("gpt-5", Scenario(text="in process", reasoning="hmm"))
    transport = MockTransport(scenarios)
    config = llm.Config.unlimited(
        provider="openai", providers={"openai": {"api_key": KEY, "api": "responses"}}
    )
    async with llm.open_client(config, transports={"openai": lambda: transport}) as client:
        request = llm.Request(model="openai:gpt-5", messages=[llm.user("hi")])
        async with client.invoke(request) as stream:
            texts = [chunk.text async for chunk in stream]
        assert "".join(texts) == "in process"
        assert stream.response.reasoning == "hmm"
        assert transport.requests[-1].path.endswith("/v1/responses")
    mock = make_codec("mock", ProviderConfig(api="responses"))
    assert isinstance(mock, OpenAICodec)
    assert mock.api == "responses"


@pytest.mark.parametrize("stream", [True, False])
async def test_insufficient_quota_is_a_rate_limit_that_is_not_retried(stream: bool) -> None:
    scenarios = Scenarios()
    quota = HttpError(status=429, error_type="insufficient_quota", message="pay up")
    scenarios.add("gpt-5", Scenario(failure=quota), Scenario(text="never"))
    async with client_on(scenarios) as (client, server):
        request = llm.Request(model="openai:gpt-5", messages=[llm.user("hi")], stream=stream)
        with pytest.raises(RateLimited) as caught:
            await client.invoke_sync(request)
        assert caught.value.retryable is False
        assert caught.value.details["code"] == "insufficient_quota"
        assert len(server.requests) == 1


def test_a_malformed_event_is_retryable_only_before_content() -> None:
    item = {"id": "msg_1", "type": "message", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    broken = b'data: {"type":"response.output_text.delta","delta":"tru\n\n'
    before = decode(sse(CREATED) + broken)[-1].error
    after = decode(
        sse(
            CREATED,
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.output_text.delta", **where, "delta": "Hel"},
        )
        + broken
    )[-1].error
    assert before is not None
    assert after is not None
    assert (before.retryable, after.retryable) == (True, False)


@pytest.mark.parametrize(("after_chunks", "attempts"), [(0, 2), (2, 1)])
async def test_malformed_answers_over_sockets_follow_the_one_retry_rule(
    after_chunks: int, attempts: int
) -> None:
    scenarios = Scenarios()
    scenarios.add(
        "gpt-5",
        Scenario(
            text="abcdefghijklmnop", chunk_chars=4, failure=Malformed(after_chunks=after_chunks)
        ),
        Scenario(text="clean"),
    )
    async with client_on(scenarios) as (client, server):
        request = llm.Request(model="openai:gpt-5", messages=[llm.user("hi")])
        if attempts == 2:
            assert (await client.invoke_sync(request)).text == "clean"
        else:
            with pytest.raises(llm.StreamingFailed):
                await client.invoke_sync(request)
        assert len(server.requests) == attempts
