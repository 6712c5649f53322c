"""The OpenAI Responses API codec against recorded provider exchanges.

Reads every ``api == "responses"`` recording of ``$LLM_CONFORMANCE_DIR/openai`` at test time;
nothing is copied into the repository. Expected values are read from the recordings with the
standard ``json`` module, independently of the codec under test, and the official ``openai``
SDK's own Responses parsing (its SSE decoder, event models and ``ResponseStreamState``) is
the reference for what a stream and a body mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_invocation.errors import ErrorCode, error_from_info
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.types import (
    ImagePart,
    Message,
    ModelOptions,
    NamedToolChoice,
    Part,
    Request,
    Response,
    ResponseFormat,
    StreamAggregator,
    StreamChunk,
    TextPart,
    ToolChoice,
    ToolSpec,
)

from .conftest import load_index

pytestmark = pytest.mark.conformance

RECORDINGS = 9
# In-stream errors: the code and retry decision each must map to.
STREAM_ERRORS = {
    "responses-stream-error-insufficient-quota.jsonl": (ErrorCode.RATE_LIMIT_EXCEEDED, False)
}
# HTTP errors: the code and retry decision (WIRE-FORMATS 6.3: 400 for an unknown model here).
STATUS_ERRORS = {"responses-error-400-model-not-found.json": (ErrorCode.MODEL_NOT_SUPPORTED, False)}
# Recorded body keys passed through `provider_options`, as a user would set them.
PASSED_THROUGH_KEYS = ("include", "store", "reasoning")


def entries(conformance_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every Responses API recording."""
    base = conformance_dir / "openai"
    out = [(base / e["file"], e) for e in load_index(base) if e["api"] == "responses"]
    assert len(out) == RECORDINGS, [p.name for p, _ in out]
    return out


def is_stream(path: Path) -> bool:
    return path.suffix in (".sse", ".jsonl")


def stream_bytes(path: Path, *, event_lines: bool = False) -> bytes:
    """A streamed recording's body; ``.jsonl`` payloads get SSE framing (with ``event:``
    lines when asked, as the README says a replay may add them)."""
    data = path.read_bytes()
    if path.suffix != ".jsonl":
        return data
    out: list[bytes] = []
    for line in data.splitlines():
        if not line:
            continue
        head = b"event: " + json.loads(line)["type"].encode() + b"\n" if event_lines else b""
        out.append(head + b"data: " + line + b"\n\n")
    return b"".join(out)


def payloads(path: Path) -> list[dict[str, Any]]:
    """The JSON data of every event of a streamed recording."""
    return [
        json.loads(line.strip()[5:])
        for line in stream_bytes(path).decode().splitlines()
        if line.strip().startswith("data:")
    ]


CODEC = OpenAICodec(api="responses")
REQUEST = Request(model="m", messages=[Message(role="user", content="x")])


def decode_all(data: bytes, read_size: int | None = None) -> list[StreamChunk]:
    decoder = CODEC.stream_decoder(REQUEST)
    out: list[StreamChunk] = []
    step = read_size or len(data) or 1
    for start in range(0, len(data), step):
        out.extend(decoder.feed(data[start : start + step]))
    out.extend(decoder.close())
    return out


def aggregate(chunks: list[StreamChunk]) -> Response:
    agg = StreamAggregator()
    for chunk in chunks:
        agg.add(chunk)
    return agg.response()


def decode_body(path: Path) -> Response:
    return CODEC.decode_response(
        Request(model="m", messages=[Message(role="user", content="x")], stream=False),
        path.read_bytes(),
    )


def status_of(entry: dict[str, Any]) -> int | None:
    response = entry.get("response") or {}
    return response.get("status") or entry.get("implied_status")


def headers_of(entry: dict[str, Any]) -> dict[str, str]:
    response = entry.get("response") or {}
    return {k.lower(): v for k, v in (response.get("headers") or {}).items()}


def check_against_raw(response: Response, raw: dict[str, Any]) -> None:
    """``response`` says what a raw response object says, field by field."""
    assert response.id == raw["id"]
    assert response.model == raw["model"]
    assert int(response.created.timestamp()) == raw["created_at"]
    output = raw["output"]
    text = "".join(
        part["text"]
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )
    assert response.text == text
    calls = [item for item in output if item["type"] == "function_call"]
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        (c["call_id"], c["name"], c["arguments"]) for c in calls
    ]
    incomplete = (raw.get("incomplete_details") or {}).get("reason")
    expected = {"max_output_tokens": "length"}.get(incomplete or "", "stop")
    if raw["status"] == "completed" and calls:
        expected = "tool_calls"
    assert response.finish_reason == expected
    assert response.metadata is not None
    assert response.metadata["native_finish_reason"] == (incomplete or raw["status"])
    usage = raw["usage"]
    assert response.usage is not None
    assert response.usage.prompt_tokens == usage["input_tokens"]
    assert response.usage.completion_tokens == usage["output_tokens"]
    assert response.usage.total_tokens == usage["total_tokens"]
    assert response.usage.cache_read_tokens == usage["input_tokens_details"]["cached_tokens"]
    reasoning = usage["output_tokens_details"]["reasoning_tokens"]
    assert response.usage.reasoning_tokens == reasoning


# ---------------------------------------------------------------------------------------------
# Streams


def test_every_recorded_stream_decodes_to_what_its_terminal_event_says(
    conformance_dir: Path, subtests: Any
) -> None:
    seen = 0
    for path, _ in entries(conformance_dir):
        if not is_stream(path) or path.name in STREAM_ERRORS:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            data = stream_bytes(path)
            chunks = decode_all(data)
            assert decode_all(data, read_size=7) == chunks, "depends on read sizes"
            assert all(c.error is None for c in chunks)
            assert all(c.provider == CODEC.name for c in chunks)
            terminal = payloads(path)[-1]
            assert terminal["type"] in ("response.completed", "response.incomplete")
            check_against_raw(aggregate(chunks), terminal["response"])
    assert seen == 4


def test_the_recorded_in_stream_error_maps_to_its_code_and_retry_decision(
    conformance_dir: Path, subtests: Any
) -> None:
    for path, _ in entries(conformance_dir):
        if path.name not in STREAM_ERRORS:
            continue
        code, retryable = STREAM_ERRORS[path.name]
        for event_lines in (False, True):
            with subtests.test(msg=f"{path.name} event_lines={event_lines}"):
                chunks = decode_all(stream_bytes(path, event_lines=event_lines))
                errors = [c.error for c in chunks if c.error is not None]
                assert len(errors) == 1
                assert chunks[-1].error is errors[0]
                assert (errors[0].code, errors[0].retryable) == (code, retryable)
                raw = next(p for p in payloads(path) if p["type"] == "error")
                assert errors[0].message == raw["error"]["message"]
                assert chunks[-1].id == payloads(path)[0]["response"]["id"]
                error = error_from_info(errors[0])
                assert CODEC.retry_advice(error, {}).retryable is retryable


# ---------------------------------------------------------------------------------------------
# Whole bodies and pairs


def test_every_recorded_body_decodes(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in entries(conformance_dir):
        if is_stream(path) or (status_of(entry) or 200) >= 400:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            response = decode_body(path)
            assert response.provider == CODEC.name
            check_against_raw(response, json.loads(path.read_bytes()))
    assert seen == 3


def comparable_body(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "stream"}


def test_streamed_and_whole_recordings_of_one_exchange_agree(conformance_dir: Path) -> None:
    recorded = [
        (path, entry)
        for path, entry in entries(conformance_dir)
        if (entry.get("request") or {}).get("body") and (status_of(entry) or 200) < 400
    ]
    pairs = 0
    for path, entry in recorded:
        if not is_stream(path):
            continue
        body = comparable_body(entry["request"]["body"])
        for other, other_entry in recorded:
            if is_stream(other) or comparable_body(other_entry["request"]["body"]) != body:
                continue
            pairs += 1
            streamed = aggregate(decode_all(stream_bytes(path)))
            whole = decode_body(other)
            # Two generations: the same finish reason, calls and prompt; the wording of a
            # free-text answer may differ, its presence may not.
            assert streamed.finish_reason == whole.finish_reason, (path.name, other.name)
            assert [(c.name, json.loads(c.arguments)) for c in streamed.tool_calls] == [
                (c.name, json.loads(c.arguments)) for c in whole.tool_calls
            ]
            assert bool(streamed.text) == bool(whole.text)
            assert streamed.usage is not None
            assert whole.usage is not None
            assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens
            assert streamed.metadata is not None
            assert whole.metadata is not None
            assert streamed.metadata.keys() == whole.metadata.keys()
    assert pairs == 3


# ---------------------------------------------------------------------------------------------
# Errors and rate limits


def test_every_recorded_error_maps_to_its_code_and_retry_decision(
    conformance_dir: Path, subtests: Any
) -> None:
    seen = 0
    for path, entry in entries(conformance_dir):
        status = status_of(entry)
        if status is None or status < 400:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            headers = headers_of(entry)
            error = CODEC.map_error(status, headers, path.read_bytes())
            code, retryable = STATUS_ERRORS[path.name]
            raw = json.loads(path.read_bytes())["error"]
            assert error.code is code
            assert error.status == status
            assert error.message == raw["message"]
            assert error.details["code"] == raw["code"]
            assert error.details["param"] == raw["param"]
            assert error.request_id == headers["x-request-id"]
            assert CODEC.retry_advice(error, headers).retryable is retryable
    assert seen == 1


def test_recorded_rate_limit_headers_are_parsed(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in entries(conformance_dir):
        headers = headers_of(entry)
        if "x-ratelimit-limit-requests" not in headers:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            info = CODEC.parse_rate_limits(headers)
            assert info is not None
            assert info.requests_limit == int(headers["x-ratelimit-limit-requests"])
            assert info.requests_remaining == int(headers["x-ratelimit-remaining-requests"])
            assert info.tokens_limit == int(headers["x-ratelimit-limit-tokens"])
            assert info.tokens_remaining == int(headers["x-ratelimit-remaining-tokens"])
            assert info.requests_reset is not None
            assert info.tokens_reset is not None
    assert seen >= 4


# ---------------------------------------------------------------------------------------------
# Request bodies


def content_from_wire(content: Any) -> str | list[Part]:
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for part in content:
        if part["type"] == "input_text":
            parts.append(TextPart(text=part["text"]))
        else:
            parts.append(ImagePart.from_url(part["image_url"], detail=part.get("detail")))
    return parts


def request_from_wire(body: dict[str, Any]) -> Request:
    """The `Request` a user would write for a recorded Responses body."""
    messages: list[Message] = []
    if "instructions" in body:
        messages.append(Message(role="system", content=body["instructions"]))
    for item in body["input"]:
        assert "role" in item, f"input item {item!r} is not modeled here"
        messages.append(Message(role=item["role"], content=content_from_wire(item["content"])))
    provider_options = {k: body[k] for k in PASSED_THROUGH_KEYS if k in body}
    tools = [
        ToolSpec(
            name=t["name"],
            description=t.get("description", ""),
            parameters=t["parameters"],
            strict=t.get("strict"),
        )
        for t in body.get("tools", [])
    ]
    choice: ToolChoice | None = None
    wire_choice = body.get("tool_choice")
    if isinstance(wire_choice, dict):
        choice = NamedToolChoice(name=wire_choice["name"])
    elif wire_choice is not None:
        choice = wire_choice
    fmt: ResponseFormat | None = None
    wire_format = (body.get("text") or {}).get("format")
    if wire_format is not None:
        fmt = ResponseFormat(
            type=wire_format["type"],
            name=wire_format.get("name"),
            json_schema=wire_format.get("schema"),
            strict=wire_format.get("strict"),
        )
    return Request(
        model=body["model"],
        messages=messages,
        options=ModelOptions(
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            max_tokens=body.get("max_output_tokens"),
            provider_options=provider_options or None,
        ),
        tools=tools or None,
        tool_choice=choice,
        response_format=fmt,
        stream=bool(body.get("stream", False)),
    )


MODELED_KEYS = {
    "model",
    "input",
    "instructions",
    "temperature",
    "top_p",
    "max_output_tokens",
    "tools",
    "tool_choice",
    "text",
    "stream",
}


def test_our_request_bodies_match_the_recorded_ones(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in entries(conformance_dir):
        recorded = entry.get("request") or {}
        body = recorded.get("body")
        if recorded.get("method") != "POST" or not isinstance(body, dict):
            continue
        seen += 1
        with subtests.test(msg=path.name):
            unknown = set(body) - MODELED_KEYS - set(PASSED_THROUGH_KEYS)
            assert not unknown, f"recorded keys neither modeled nor passed through: {unknown}"
            request = request_from_wire(body)
            http = CODEC.encode(request, "sk-test-key-0123456789")
            assert http.url == recorded["url"]
            assert http.stream is request.stream
            assert http.headers["content-type"] == recorded["headers"]["content-type"]
            assert http.headers["authorization"].startswith("Bearer ")
            expected = dict(body)
            if expected.get("stream") is False:
                del expected["stream"]  # the default: we leave it out
            assert json.loads(http.body or b"") == expected
            # The same request, chosen per request on a chat codec, sends the same body.
            per_request = request.with_options(
                provider_options={**(request.options.provider_options or {}), "api": "responses"}
            )
            again = OpenAICodec().encode(per_request, "sk-test-key-0123456789")
            assert (again.url, json.loads(again.body or b"")) == (http.url, expected)
    assert seen == 8


# ---------------------------------------------------------------------------------------------
# The openai SDK as the reference


def sdk_final(path: Path) -> Any:
    """The final response the official SDK's stream state makes of a recorded stream."""
    streaming = pytest.importorskip("openai._streaming")
    models = pytest.importorskip("openai._models")
    responses = pytest.importorskip("openai.types.responses")
    state_module = pytest.importorskip("openai.lib.streaming.responses._responses")
    sdk_types = pytest.importorskip("openai._types")
    state = state_module.ResponseStreamState(input_tools=[], text_format=sdk_types.omit)
    final: Any = None
    for event in streaming.SSEDecoder().iter_bytes(iter([stream_bytes(path)])):
        raw = models.construct_type(
            type_=responses.ResponseStreamEvent, value=json.loads(event.data)
        )
        for out in state.handle_event(raw):
            if out.type in ("response.completed", "response.incomplete"):
                final = out.response
    assert final is not None, f"{path.name}: the SDK saw no terminal event"
    return final


def sdk_body(path: Path) -> Any:
    """A recorded body as the SDK reads one (constructed, as its client does, not validated:
    the recordings lack fields its models mark required, like ``cache_write_tokens``)."""
    models = pytest.importorskip("openai._models")
    responses = pytest.importorskip("openai.types.responses")
    return models.construct_type(type_=responses.Response, value=json.loads(path.read_bytes()))


def same_as_sdk(ours: Response, theirs: Any) -> None:
    assert ours.id == theirs.id
    assert ours.model == theirs.model
    assert ours.text == theirs.output_text
    sdk_calls = [
        (item.call_id, item.name, item.arguments)
        for item in theirs.output
        if item.type == "function_call"
    ]
    assert [(c.id, c.name, c.arguments) for c in ours.tool_calls] == sdk_calls
    assert ours.usage is not None
    assert ours.usage.prompt_tokens == theirs.usage.input_tokens
    assert ours.usage.completion_tokens == theirs.usage.output_tokens
    assert ours.usage.cache_read_tokens == theirs.usage.input_tokens_details.cached_tokens
    assert ours.usage.reasoning_tokens == theirs.usage.output_tokens_details.reasoning_tokens
    assert int(ours.created.timestamp()) == int(theirs.created_at)


def test_stream_and_body_decoding_match_the_openai_sdk(
    conformance_dir: Path, subtests: Any
) -> None:
    seen = 0
    for path, entry in entries(conformance_dir):
        if path.name in STREAM_ERRORS or (status_of(entry) or 200) >= 400:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            if is_stream(path):
                same_as_sdk(aggregate(decode_all(stream_bytes(path))), sdk_final(path))
            else:
                same_as_sdk(decode_body(path), sdk_body(path))
    assert seen == 7
