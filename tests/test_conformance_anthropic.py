"""The Anthropic codec against real recorded exchanges (``$LLM_CONFORMANCE_DIR/anthropic``).

Every recorded stream and body decodes; streamed and whole recordings of one exchange agree;
every recorded error maps to its code and retry decision; the encoder rebuilds every recorded
request body from the equivalent `Request`; and the official ``anthropic`` SDK's typed event
models, used as a reference parser, see the same text, tool calls and thinking as we do.
Recordings are read in place, never copied into the repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from llm_invocation.errors import (
    AuthenticationError,
    InvalidRequest,
    LLMError,
    ModelNotSupported,
    ProviderOverloaded,
    RateLimited,
    error_from_info,
)
from llm_invocation.providers.anthropic import AnthropicCodec
from llm_invocation.types import (
    ImagePart,
    Message,
    ModelOptions,
    NamedToolChoice,
    Part,
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
)

from .conftest import load_index

pytestmark = pytest.mark.conformance

Fixture = dict[str, Any]


@pytest.fixture
def folder(conformance_dir: Path) -> Path:
    return conformance_dir / "anthropic"


@pytest.fixture
def index(folder: Path) -> dict[str, Fixture]:
    return {entry["file"]: entry for entry in load_index(folder)}


@pytest.fixture
def codec() -> AnthropicCodec:
    return AnthropicCodec()


def decode_stream(codec: AnthropicCodec, data: bytes) -> tuple[list[StreamChunk], bool]:
    decoder = codec.stream_decoder(Request(model="m", messages=[Message(role="user", content="x")]))
    chunks = decoder.feed(data)
    done = decoder.done
    return chunks + decoder.close(), done


def aggregate(chunks: list[StreamChunk]) -> Response:
    aggregator = StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    return aggregator.response()


def streams(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.sse"))
    assert found, f"no recorded streams in {folder}"
    return found


def message_bodies(index: dict[str, Fixture]) -> list[str]:
    return [
        name
        for name, entry in index.items()
        if entry["api"] == "messages"
        and name.endswith(".json")
        and (entry.get("response") or {}).get("status") == 200
    ]


# ---------------------------------------------------------------------------------------------
# Decoding


def test_every_recorded_stream_decodes_without_error(codec: AnthropicCodec, folder: Path) -> None:
    for path in streams(folder):
        chunks, done = decode_stream(codec, path.read_bytes())
        errors = [c.error for c in chunks if c.error is not None]
        assert not errors, f"{path.name}: {errors}"
        assert done, f"{path.name}: message_stop not seen"
        response = aggregate(chunks)
        assert response.id.startswith("msg_"), path.name
        assert response.model.startswith("claude-"), path.name
        assert response.finish_reason is not None, path.name
        assert response.usage is not None
        assert response.usage.completion_tokens > 0, path.name


def test_every_recorded_stream_decodes_the_same_in_small_reads(
    codec: AnthropicCodec, folder: Path
) -> None:
    for path in streams(folder):
        data = path.read_bytes()
        decoder = codec.stream_decoder(
            Request(model="m", messages=[Message(role="user", content="x")])
        )
        chunks: list[StreamChunk] = []
        for start in range(0, len(data), 7):
            chunks.extend(decoder.feed(data[start : start + 7]))
        chunks.extend(decoder.close())
        assert chunks == decode_stream(codec, data)[0], path.name


def test_the_recorded_error_event_is_an_overloaded_error(
    codec: AnthropicCodec, folder: Path, index: dict[str, Fixture]
) -> None:
    name = "stream-error-event-overloaded.data.json"
    assert index[name]["implied_status"] == 200
    payload = (folder / name).read_bytes().strip()
    chunks, done = decode_stream(codec, b"event: error\ndata: " + payload + b"\n\n")
    assert done
    assert len(chunks) == 1
    info = chunks[0].error
    assert info is not None
    error = error_from_info(info)
    assert isinstance(error, ProviderOverloaded)
    assert error.retryable
    assert error.message == "Overloaded"
    assert error.details["type"] == "overloaded_error"


def test_every_recorded_body_decodes(
    codec: AnthropicCodec, folder: Path, index: dict[str, Fixture]
) -> None:
    names = message_bodies(index)
    assert len(names) >= 5
    request = Request(model="m", messages=[Message(role="user", content="x")], stream=False)
    for name in names:
        raw = json.loads((folder / name).read_bytes())
        response = codec.decode_response(request, (folder / name).read_bytes())
        assert response.id == raw["id"], name
        assert response.model == raw["model"], name
        assert response.metadata is not None
        assert response.metadata["native_finish_reason"] == raw["stop_reason"], name
        usage = raw["usage"]
        assert response.usage is not None
        assert response.usage.prompt_tokens == (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        ), name
        assert response.usage.cache_read_tokens == usage["cache_read_input_tokens"], name
        assert response.usage.completion_tokens == usage["output_tokens"], name
        texts = [b["text"] for b in raw["content"] if b["type"] == "text"]
        assert response.text == "".join(texts), name
        calls = [b for b in raw["content"] if b["type"] == "tool_use"]
        assert [(c.id, c.name, c.parsed_arguments()) for c in response.tool_calls] == [
            (b["id"], b["name"], b["input"]) for b in calls
        ], name
        thinking = [
            (b["thinking"], b["signature"]) for b in raw["content"] if b["type"] == "thinking"
        ]
        content = response.message.content
        parts = content if isinstance(content, list) else []
        assert [(p.text, p.signature) for p in parts if isinstance(p, ReasoningPart)] == thinking


def test_the_recorded_token_count_decodes(codec: AnthropicCodec, folder: Path) -> None:
    assert codec.decode_count_tokens((folder / "count-tokens.json").read_bytes()) == 1114


def without_stream(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "stream"}


def test_streamed_and_whole_recordings_of_one_exchange_agree(
    codec: AnthropicCodec, folder: Path, index: dict[str, Fixture]
) -> None:
    request = Request(model="m", messages=[Message(role="user", content="x")], stream=False)
    pairs = 0
    for stream_name, stream_entry in index.items():
        if not stream_name.endswith(".sse") or not stream_entry.get("request"):
            continue
        for body_name in message_bodies(index):
            body_request = index[body_name].get("request")
            if not body_request:
                continue
            if without_stream(body_request["body"]) != without_stream(
                stream_entry["request"]["body"]
            ):
                continue
            pairs += 1
            streamed = aggregate(decode_stream(codec, (folder / stream_name).read_bytes())[0])
            whole = codec.decode_response(request, (folder / body_name).read_bytes())
            assert streamed.text == whole.text
            assert streamed.finish_reason == whole.finish_reason
            assert streamed.reasoning == whole.reasoning
            assert [(c.name, c.parsed_arguments()) for c in streamed.tool_calls] == [
                (c.name, c.parsed_arguments()) for c in whole.tool_calls
            ]
    assert pairs >= 1, "no exchange recorded both streamed and whole"


# ---------------------------------------------------------------------------------------------
# Errors and rate limits

EXPECTED_ERRORS: dict[str, tuple[type[LLMError], bool]] = {
    "count-tokens-error-404.json": (ModelNotSupported, False),
    "error-400-invalid-request.json": (InvalidRequest, False),
    "error-401-authentication.json": (AuthenticationError, False),
    "error-404-model-not-found.json": (ModelNotSupported, False),
    "error-529-overloaded.body.json": (ProviderOverloaded, True),
    "error-429-rate-limit.body.json": (RateLimited, True),
}


def test_every_recorded_error_maps_to_its_code_and_retry_decision(
    codec: AnthropicCodec, folder: Path, index: dict[str, Fixture]
) -> None:
    recorded = {
        name
        for name, entry in index.items()
        if "error" in entry["exercises"] and entry.get("implied_status") != 200
    }
    assert recorded == set(EXPECTED_ERRORS)
    for name, (cls, retryable) in EXPECTED_ERRORS.items():
        entry = index[name]
        response = entry.get("response") or {}
        status = response.get("status") or entry["implied_status"]
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        body = (folder / name).read_bytes()
        error = codec.map_error(status, headers, body)
        assert type(error) is cls, name
        assert error.status == status, name
        assert error.code == cls.code, name
        raw = json.loads(body)
        assert error.details["type"] == raw["error"]["type"], name
        assert error.request_id == (raw.get("request_id") or headers.get("request-id")), name
        assert codec.retry_advice(error, headers).retryable is retryable, name


def test_recorded_rate_limit_headers_parse(
    codec: AnthropicCodec, index: dict[str, Fixture]
) -> None:
    seen = 0
    for name, entry in index.items():
        headers = (entry.get("response") or {}).get("headers") or {}
        if "anthropic-ratelimit-requests-limit" not in headers:
            continue
        seen += 1
        info = codec.parse_rate_limits(headers)
        assert info is not None, name
        assert info.requests_limit == int(headers["anthropic-ratelimit-requests-limit"]), name
        assert info.tokens_remaining == int(headers["anthropic-ratelimit-tokens-remaining"]), name
        assert info.input_tokens_limit == int(headers["anthropic-ratelimit-input-tokens-limit"])
        assert info.output_tokens_remaining == int(
            headers["anthropic-ratelimit-output-tokens-remaining"]
        )
        assert info.requests_reset == 0.0, name  # the recorded resets are in the past
        if "retry-after" in headers:
            assert info.retry_after == float(headers["retry-after"])
    assert seen >= 5


# ---------------------------------------------------------------------------------------------
# Encoding: rebuild each recorded request body from the equivalent Request

# Recorded keys the codec does not model, removed from the recorded body before comparing:
# prompt-caching marks, and the null citations the recorder echoed on an assistant text block.
UNMODELLED_KEYS = frozenset({"cache_control"})
UNMODELLED_NULL_KEYS = frozenset({"citations"})


def strip_unmodelled(value: Any) -> Any:
    if isinstance(value, dict):
        items = cast("dict[str, Any]", value).items()
        return {
            k: strip_unmodelled(v)
            for k, v in items
            if k not in UNMODELLED_KEYS and not (k in UNMODELLED_NULL_KEYS and v is None)
        }
    if isinstance(value, list):
        return [strip_unmodelled(v) for v in cast("list[Any]", value)]
    return value


def parts_of(blocks: list[dict[str, Any]]) -> list[Part]:
    parts: list[Part] = []
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            parts.append(TextPart(text=block["text"]))
        elif kind == "image":
            source = block["source"]
            if source["type"] == "url":
                parts.append(ImagePart(url=source["url"]))
            else:
                parts.append(ImagePart(data=source["data"], media_type=source["media_type"]))
        elif kind == "thinking":
            parts.append(ReasoningPart(text=block["thinking"], signature=block["signature"]))
        elif kind == "redacted_thinking":
            parts.append(ReasoningPart(signature=block["data"], redacted=True))
        else:
            raise AssertionError(f"unexpected block {kind!r} in a recorded request")
    return parts


def messages_of(body: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append(Message(role="system", content=system))
    elif system:
        messages.append(Message(role="system", content=parts_of(system)))
    for turn in body["messages"]:
        role, content = turn["role"], turn["content"]
        if isinstance(content, str):
            messages.append(Message(role=role, content=content))
            continue
        if role == "assistant":
            calls = [
                ToolCall(id=b["id"], name=b["name"], arguments=json.dumps(b["input"]))
                for b in content
                if b["type"] == "tool_use"
            ]
            rest = [b for b in content if b["type"] != "tool_use"]
            messages.append(
                Message(role="assistant", content=parts_of(rest) or None, tool_calls=calls or None)
            )
            continue
        results = [b for b in content if b["type"] == "tool_result"]
        for result in results:
            value = result.get("content")
            messages.append(
                Message(
                    role="tool",
                    tool_call_id=result["tool_use_id"],
                    content=value if isinstance(value, str) or value is None else parts_of(value),
                    is_error=bool(result.get("is_error")),
                )
            )
        rest = [b for b in content if b["type"] != "tool_result"]
        if rest:
            messages.append(Message(role="user", content=parts_of(rest)))
    return messages


def request_of(body: dict[str, Any], headers: dict[str, str]) -> Request:
    """The `Request` whose encoding should be ``body``: the inverse of the encoder."""
    known = {"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k"}
    known |= {"stop_sequences", "stream", "tools", "tool_choice", "output_config"}
    extra: dict[str, Any] = {k: v for k, v in body.items() if k not in known}
    tools: list[ToolSpec] = []
    server_tools: list[dict[str, Any]] = []
    for tool in body.get("tools", []):
        if "type" in tool and tool["type"] != "custom":
            server_tools.append(tool)
        else:
            tools.append(
                ToolSpec(
                    name=tool["name"],
                    description=tool.get("description", ""),
                    parameters=tool["input_schema"],
                    strict=tool.get("strict"),
                )
            )
    if server_tools:
        extra["tools"] = server_tools
    choice: ToolChoice | None = None
    if "tool_choice" in body:
        wire = dict(body["tool_choice"])
        if "disable_parallel_tool_use" in wire:
            extra["disable_parallel_tool_use"] = wire.pop("disable_parallel_tool_use")
        kind = wire["type"]
        choice = (
            NamedToolChoice(name=wire["name"])
            if kind == "tool"
            else cast("ToolChoice", {"any": "required"}.get(kind, kind))
        )
    response_format: ResponseFormat | None = None
    config = dict(body.get("output_config", {}))
    if "format" in config:
        fmt = config.pop("format")
        response_format = ResponseFormat.schema("recorded", fmt["schema"])
    if config:
        extra["output_config"] = config
    if "anthropic-beta" in headers:
        extra["betas"] = headers["anthropic-beta"]
    return Request(
        model=body["model"],
        messages=messages_of(body),
        options=ModelOptions(
            max_tokens=body.get("max_tokens"),
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            top_k=body.get("top_k"),
            stop=body.get("stop_sequences"),
            provider_options=extra or None,
        ),
        tools=tools or None,
        tool_choice=choice,
        response_format=response_format,
        stream=bool(body.get("stream")),
    )


def normalised_recorded(body: dict[str, Any]) -> dict[str, Any]:
    stripped: dict[str, Any] = strip_unmodelled(body)
    if stripped.get("stream") is False:
        del stripped["stream"]  # the default, which the encoder leaves out
    return stripped


def test_the_encoder_rebuilds_every_recorded_request_body(
    codec: AnthropicCodec, index: dict[str, Fixture]
) -> None:
    checked = 0
    for name, entry in index.items():
        recorded = entry.get("request")
        if not recorded or not isinstance(recorded.get("body"), dict):
            continue
        headers = {k.lower(): v for k, v in recorded["headers"].items()}
        expected = normalised_recorded(recorded["body"])
        request = request_of(expected, headers)
        make: Callable[[Request, str | None], Any]
        make = codec.count_tokens_request if entry["api"] == "count_tokens" else codec.encode
        if entry["api"] != "count_tokens":
            codec.validate(request)
        encoded = make(request, "sk-test")
        ours = json.loads(encoded.body)
        assert ours == expected, name
        # The SDK's beta client adds ?beta=true, which the API does not need.
        assert encoded.url == recorded["url"].removesuffix("?beta=true"), name
        assert encoded.method == recorded["method"], name
        for header in ("anthropic-beta", "content-type", "anthropic-version"):
            if header in headers:
                assert encoded.headers[header] == headers[header], (name, header)
        checked += 1
    assert checked >= 15


# ---------------------------------------------------------------------------------------------
# The official SDK as a reference parser


def sdk_view(data: bytes) -> dict[str, Any]:
    """Accumulate a recorded stream with the SDK's typed event models (pydantic)."""
    pytest.importorskip("anthropic")
    from anthropic._models import construct_type
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter, ValidationError

    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    blocks: dict[int, dict[str, Any]] = {}
    stop_reason: str | None = None
    output_tokens: int | None = None
    started: dict[str, str] = {}
    for raw in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            continue
        payload = json.loads(b"\n".join(lines))
        if payload["type"] in ("ping", "error"):
            continue
        try:
            event = adapter.validate_python(payload)
        except ValidationError:
            # The SDK itself never validates events: it builds them leniently, which is what
            # older recordings need (the 2025 web-search stream lacks a field today's models
            # require: usage.server_tool_use.web_fetch_requests).
            event = construct_type(type_=RawMessageStreamEvent, value=payload)
        if event.type == "message_start":
            started = {"id": event.message.id, "model": event.message.model}
        elif event.type == "content_block_start":
            block = event.content_block
            blocks[event.index] = {
                "block": block,
                "text": "",
                "json": "",
                "thinking": "",
                "sig": "",
            }
        elif event.type == "content_block_delta":
            state = blocks[event.index]
            change = event.delta
            if change.type == "text_delta":
                state["text"] += change.text
            elif change.type == "input_json_delta":
                state["json"] += change.partial_json
            elif change.type == "thinking_delta":
                state["thinking"] += change.thinking
            elif change.type == "signature_delta":
                state["sig"] = change.signature
        elif event.type == "message_delta":
            stop_reason = event.delta.stop_reason
            output_tokens = event.usage.output_tokens
    ordered = [blocks[i] for i in sorted(blocks)]
    return {
        "text": "".join(s["text"] for s in ordered if s["block"].type == "text"),
        "tool_calls": [
            (s["block"].id, s["block"].name, json.loads(s["json"] or "{}"))
            for s in ordered
            if s["block"].type == "tool_use"
        ],
        "thinking": [(s["thinking"], s["sig"]) for s in ordered if s["block"].type == "thinking"],
        "stop_reason": stop_reason,
        "output_tokens": output_tokens,
        **started,
    }


def test_the_sdk_reference_parser_sees_what_we_see(codec: AnthropicCodec, folder: Path) -> None:
    for path in streams(folder):
        data = path.read_bytes()
        reference = sdk_view(data)
        ours = aggregate(decode_stream(codec, data)[0])
        content = ours.message.content
        parts = content if isinstance(content, list) else []
        assert ours.text == reference["text"], path.name
        assert [(c.id, c.name, c.parsed_arguments()) for c in ours.tool_calls] == reference[
            "tool_calls"
        ], path.name
        assert [(p.text, p.signature) for p in parts if isinstance(p, ReasoningPart)] == reference[
            "thinking"
        ], path.name
        assert ours.metadata is not None
        assert ours.metadata["native_finish_reason"] == reference["stop_reason"], path.name
        assert ours.usage is not None
        assert ours.usage.completion_tokens == reference["output_tokens"], path.name


# ---------------------------------------------------------------------------------------------
# Response metadata: id and model as sent; no creation time, since Anthropic sends none

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_streamed_id_and_model_equal_the_sdk_s_and_no_creation_time_is_made_up(
    codec: AnthropicCodec, folder: Path
) -> None:
    for path in streams(folder):
        data = path.read_bytes()
        reference = sdk_view(data)
        chunks = decode_stream(codec, data)[0]
        aggregator = StreamAggregator()
        for chunk in chunks:
            aggregator.add(chunk)
        ours = aggregator.response(created=WHEN)
        assert (ours.id, ours.model) == (reference["id"], reference["model"]), path.name
        assert ours.system_fingerprint is None, path.name
        # No chunk carries a clock reading: the aggregate's creation time is the one its
        # caller gives (the invocation: when the answer was complete).
        assert all(c.created is None for c in chunks), path.name
        assert ours.created == WHEN, path.name


def test_whole_body_id_and_model_equal_the_sdk_s(
    codec: AnthropicCodec, folder: Path, index: dict[str, Fixture]
) -> None:
    pytest.importorskip("anthropic")
    from anthropic._models import construct_type
    from anthropic.types import Message as SDKMessage

    request = Request(model="m", messages=[Message(role="user", content="x")], stream=False)
    for name in message_bodies(index):
        body = (folder / name).read_bytes()
        reference = construct_type(type_=SDKMessage, value=json.loads(body))
        ours = codec.decode_response(request, body)
        assert (ours.id, ours.model) == (reference.id, reference.model), name
        assert ours.system_fingerprint is None, name
        assert ours.created.tzinfo is UTC, name  # the local clock: the body has no time
