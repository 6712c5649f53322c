"""The OpenAI and OpenAI-compatible codecs against recorded provider responses.

Reads ``$LLM_CONFORMANCE_DIR/openai`` (Chat Completions files only: the Responses API
recordings, told by their ``api`` field, are covered by ``test_conformance_openai_responses``)
and ``$LLM_CONFORMANCE_DIR/openai-compatible`` at test time; nothing is copied into the
repository. Expected values are read from the recordings with the standard ``json`` module,
independently of the codec under test, and the official ``openai`` SDK's own stream handling
is the reference for stream accumulation.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import llm_invocation as llm
from llm_invocation.errors import ErrorCode
from llm_invocation.providers.compatible import make_compatible_codec
from llm_invocation.providers.openai import OpenAICodec
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

FOLDERS = ("openai", "openai-compatible")
SKIPPED_APIS = ("responses",)  # in tests/test_conformance_openai_responses.py

# Which codec answers a recorded URL's host. Anything else is a plain compatible server.
HOST_PRESETS = {
    "api.groq.com": "groq",
    "openrouter.ai": "openrouter",
    "localhost:11434": "ollama",
    "api.together.xyz": "together",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral",
}
# Recordings without a request: the preset by file-name prefix.
FILE_PRESETS = {"groq-": "groq", "openrouter-": "openrouter", "ollama-": "ollama"}

# Errors inside a 200 stream: the code and retry decision each must map to.
STREAM_ERRORS = {"groq-stream-error-event.sse": (ErrorCode.INVALID_REQUEST, False)}

# An HTTP error status to the code and retry decision it must map to (WIRE-FORMATS 6.3).
STATUS_ERRORS = {
    400: (ErrorCode.INVALID_REQUEST, False),
    401: (ErrorCode.AUTHENTICATION, False),
    403: (ErrorCode.AUTHENTICATION, False),
    404: (ErrorCode.MODEL_NOT_SUPPORTED, False),
    429: (ErrorCode.RATE_LIMIT_EXCEEDED, True),
    500: (ErrorCode.PROVIDER_ERROR, True),
    503: (ErrorCode.PROVIDER_ERROR, True),
}

# Request-body keys of the recordings that the codec does not model (path with [] for list
# elements) and why.
UNMODELED_KEYS = {
    # OpenAI's response annotations, echoed back by one client in its assistant message.
    "messages[].annotations",
}
# Top-level keys the codec does not model but passes through from `provider_options`.
PASSED_THROUGH_KEYS = {"n"}
# Keys the codec adds that a recording may lack: same meaning, just spelled out.
SPELLED_OUT_KEYS = {
    "messages[].content",  # `null` content of an assistant message that only calls tools
    "tools[].function.description",  # an empty description
}
# Recordings where the openai SDK's own accumulation is known to differ from ours, and how.
SDK_DIVERGENCES = {
    # OpenRouter/Novita repeat id and name in a second fragment of the same call: the SDK
    # concatenates them ("00", "llm_versionllm_version"); we keep them once.
    "openrouter-tool-stream-duplicate-args.sse": "repeated id and name",
}


# ---------------------------------------------------------------------------------------------
# Loading the corpus


def chat_entries(conformance_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every Chat Completions (and model list) recording of the two folders."""
    out: list[tuple[Path, dict[str, Any]]] = []
    for folder in FOLDERS:
        base = conformance_dir / folder
        for entry in load_index(base):
            if entry["api"].startswith(SKIPPED_APIS):
                continue
            out.append((base / entry["file"], entry))
    assert out, "no Chat Completions recordings found"
    return out


def stream_bytes(path: Path) -> bytes:
    """The body of a streamed recording; ``.jsonl`` data payloads get their SSE framing."""
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        return b"".join(b"data: " + line + b"\n\n" for line in data.splitlines() if line)
    return data


def is_stream(path: Path) -> bool:
    return path.suffix in (".sse", ".jsonl")


def status_of(entry: dict[str, Any]) -> int | None:
    response = entry.get("response") or {}
    return response.get("status") or entry.get("implied_status")


def response_headers(entry: dict[str, Any]) -> dict[str, str]:
    response = entry.get("response") or {}
    return {k.lower(): v for k, v in (response.get("headers") or {}).items()}


def codec_for(path: Path, entry: dict[str, Any]) -> OpenAICodec:
    """The codec a client would configure for the recorded server."""
    request = entry.get("request") or {}
    url: str = request.get("url") or ""
    if path.parent.name == "openai":
        return OpenAICodec()
    host = url.split("/")[2] if "://" in url else ""
    base_url = url.rsplit("/", 2)[0] if url.endswith("/chat/completions") else None
    if url.endswith("/models"):
        base_url = url.rsplit("/", 1)[0]
    if host == "api.openai.com":
        return OpenAICodec()
    name = HOST_PRESETS.get(host)
    if name is None and not url:
        name = next((p for prefix, p in FILE_PRESETS.items() if path.name.startswith(prefix)), None)
    if name is not None:
        return make_compatible_codec(name, base_url=base_url)
    assert base_url, f"{path.name}: no URL to configure a compatible codec with"
    return make_compatible_codec(host.split(".")[-2] or "compatible", base_url=base_url)


def decode_all(codec: OpenAICodec, data: bytes, read_size: int | None = None) -> list[StreamChunk]:
    decoder = codec.stream_decoder(Request(model="m", messages=[Message(role="user")]))
    out: list[StreamChunk] = []
    step = read_size or len(data) or 1
    for start in range(0, len(data), step):
        out.extend(decoder.feed(data[start : start + step]))
    out.extend(decoder.close())
    return out


def aggregate(chunks: list[StreamChunk]) -> Response:
    agg = StreamAggregator()
    for c in chunks:
        agg.add(c)
    return agg.response()


# ---------------------------------------------------------------------------------------------
# Streams


def test_every_recorded_stream_decodes(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        if not is_stream(path):
            continue
        seen += 1
        with subtests.test(msg=path.name):
            codec = codec_for(path, entry)
            data = stream_bytes(path)
            chunks = decode_all(codec, data)
            assert decode_all(codec, data, read_size=7) == chunks, "depends on read sizes"
            errors = [c.error for c in chunks if c.error is not None]
            if path.name in STREAM_ERRORS:
                code, retryable = STREAM_ERRORS[path.name]
                assert len(errors) == 1
                assert chunks[-1].error is errors[0]
                assert (errors[0].code, errors[0].retryable) == (code, retryable)
                continue
            assert "error" not in " ".join(entry["exercises"]), "unlisted error recording"
            assert errors == []
            response = aggregate(chunks)
            assert response.text or response.tool_calls
            assert response.finish_reason in ("stop", "length", "tool_calls")
            assert all(c.provider == codec.name for c in chunks)
    assert seen >= 8


def test_recorded_stream_usage_is_normalised(conformance_dir: Path, subtests: Any) -> None:
    for path, entry in chat_entries(conformance_dir):
        if not is_stream(path) or path.name in STREAM_ERRORS:
            continue
        payloads = [
            json.loads(line.strip()[5:])
            for line in stream_bytes(path).decode().splitlines()
            if line.strip().startswith("data:") and "[DONE]" not in line
        ]
        raw = [p.get("usage") or (p.get("x_groq") or {}).get("usage") for p in payloads]
        raw = [u for u in raw if u]
        if not raw:
            continue
        with subtests.test(msg=path.name):
            usage = aggregate(decode_all(codec_for(path, entry), stream_bytes(path))).usage
            assert usage is not None
            assert usage.prompt_tokens == raw[-1]["prompt_tokens"]
            assert usage.completion_tokens == raw[-1]["completion_tokens"]
            assert usage.total_tokens == raw[-1]["total_tokens"]
            if "cost" in raw[-1]:
                assert usage.reported_cost is not None
                assert float(usage.reported_cost) == raw[-1]["cost"]


# ---------------------------------------------------------------------------------------------
# Whole bodies


def test_every_recorded_body_decodes(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        if is_stream(path) or (status_of(entry) or 200) >= 400:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            codec = codec_for(path, entry)
            raw = json.loads(path.read_bytes())
            if entry["api"].startswith("models.list"):
                models = codec.decode_models(path.read_bytes())
                assert [m.id for m in models] == [m["id"] for m in raw["data"]]
                continue
            request = Request(model="m", messages=[Message(role="user")], stream=False)
            response = codec.decode_response(request, path.read_bytes())
            check_body(response, raw, codec.name)
    assert seen >= 10


def check_body(response: Response, raw: dict[str, Any], provider: str) -> None:
    """``response`` says what the raw JSON body says, field by field."""
    assert response.id == raw["id"]
    assert response.model == raw["model"]
    assert response.provider == provider
    assert int(response.created.timestamp()) == raw["created"]
    assert response.system_fingerprint == raw.get("system_fingerprint")
    assert len(response.choices) == len(raw["choices"])
    for choice, wire in zip(response.choices, raw["choices"], strict=True):
        message = wire["message"]
        assert choice.message.text == (message.get("content") or "")
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        assert choice.message.reasoning == reasoning
        calls = message.get("tool_calls") or []
        assert [(c.name, c.arguments) for c in choice.tool_calls] == [
            (c["function"]["name"], c["function"]["arguments"]) for c in calls
        ]
        assert all(c.id for c in choice.tool_calls)
        for ours, theirs in zip(choice.tool_calls, calls, strict=True):
            assert ours.id == (theirs["id"] or ours.id)
        native = wire["finish_reason"]
        expected = {"function_call": "tool_calls"}.get(native, native)
        assert choice.finish_reason == expected
    first = raw["choices"][0]
    assert response.metadata is not None
    assert response.metadata["native_finish_reason"] == first["finish_reason"]
    assert response.metadata.get("refusal") == first["message"].get("refusal")
    usage = raw.get("usage")
    if usage:
        assert response.usage is not None
        assert response.usage.prompt_tokens == usage["prompt_tokens"]
        assert response.usage.completion_tokens == usage["completion_tokens"]
        assert response.usage.total_tokens == usage["total_tokens"]
        details = usage.get("prompt_tokens_details") or {}
        assert response.usage.cache_read_tokens == (
            details.get("cached_tokens")
            or usage.get("cached_tokens")
            or usage.get("prompt_cache_hit_tokens")
            or 0
        )
        reasoning_details = usage.get("completion_tokens_details") or {}
        assert response.usage.reasoning_tokens == (reasoning_details.get("reasoning_tokens") or 0)


def comparable_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request body without its streaming switches."""
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


def test_streamed_and_whole_recordings_of_one_exchange_agree(conformance_dir: Path) -> None:
    entries = [
        (path, entry)
        for path, entry in chat_entries(conformance_dir)
        if (entry.get("request") or {}).get("body") and (status_of(entry) or 200) < 400
    ]
    pairs = 0
    for path, entry in entries:
        if not is_stream(path):
            continue
        body = comparable_body(entry["request"]["body"])
        for other, other_entry in entries:
            if is_stream(other) or comparable_body(other_entry["request"]["body"]) != body:
                continue
            pairs += 1
            codec = codec_for(path, entry)
            streamed = aggregate(decode_all(codec, stream_bytes(path)))
            request = Request(model="m", messages=[Message(role="user")], stream=False)
            whole = codec.decode_response(request, other.read_bytes())
            # Two generations: same finish reason, same tool calls, same prompt; the wording
            # of a free-text answer may differ, its presence may not.
            assert streamed.finish_reason == whole.finish_reason, (path.name, other.name)
            assert [(c.name, json.loads(c.arguments)) for c in streamed.tool_calls] == [
                (c.name, json.loads(c.arguments)) for c in whole.tool_calls
            ], (path.name, other.name)
            assert bool(streamed.text) == bool(whole.text), (path.name, other.name)
            assert streamed.usage is not None
            assert whole.usage is not None
            assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens
    assert pairs >= 2


# ---------------------------------------------------------------------------------------------
# Errors


def test_every_recorded_error_maps_to_its_code_and_retry_decision(
    conformance_dir: Path, subtests: Any
) -> None:
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        status = status_of(entry)
        if status is None or status < 400:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            codec = codec_for(path, entry)
            headers = response_headers(entry)
            error = codec.map_error(status, headers, path.read_bytes())
            code, retryable = STATUS_ERRORS[status]
            raw = json.loads(path.read_bytes())["error"]
            assert error.code is code
            assert error.status == status
            assert error.message == raw["message"]
            assert error.provider == codec.name
            assert error.details.get("code") == raw.get("code")
            assert error.request_id == headers.get("x-request-id")
            assert codec.retry_advice(error, headers).retryable is retryable
    assert seen >= 6


# ---------------------------------------------------------------------------------------------
# Rate-limit headers


def test_recorded_rate_limit_headers_are_parsed(conformance_dir: Path, subtests: Any) -> None:
    for path, entry in chat_entries(conformance_dir):
        headers = response_headers(entry)
        if "x-ratelimit-limit-requests" not in headers:
            continue
        with subtests.test(msg=path.name):
            info = codec_for(path, entry).parse_rate_limits(headers)
            assert info is not None
            assert info.requests_limit == int(headers["x-ratelimit-limit-requests"])
            assert info.requests_remaining == int(headers["x-ratelimit-remaining-requests"])
            assert info.tokens_limit == int(headers["x-ratelimit-limit-tokens"])
            assert info.tokens_remaining == int(headers["x-ratelimit-remaining-tokens"])
            assert info.requests_reset is not None
            assert info.tokens_reset is not None


def test_together_retry_after_on_a_200_is_no_back_off(conformance_dir: Path) -> None:
    for path, entry in chat_entries(conformance_dir):
        if path.name == "together-chat.json":
            headers = response_headers(entry)
            assert "retry-after" in headers
            info = codec_for(path, entry).parse_rate_limits(headers)
            assert info is not None
            assert info.retry_after is None
            assert info.requests_limit == int(headers["x-ratelimit-limit"])
            return
    pytest.fail("together-chat.json not in the corpus")


# ---------------------------------------------------------------------------------------------
# Request bodies


def parts_from_wire(content: list[dict[str, Any]]) -> list[Part]:
    parts: list[Part] = []
    for part in content:
        if part["type"] == "text":
            parts.append(TextPart(text=part["text"]))
        else:
            image = part["image_url"]
            parts.append(ImagePart.from_url(image["url"], detail=image.get("detail")))
    return parts


def message_from_wire(wire: dict[str, Any]) -> Message:
    content: Any = wire.get("content")
    if isinstance(content, list):
        content = parts_from_wire(content)
    reasoning = wire.get("reasoning_content")
    if reasoning is not None:
        text = [TextPart(text=content)] if isinstance(content, str) and content else []
        content = [ReasoningPart(text=reasoning), *text]
    calls = wire.get("tool_calls")
    return Message(
        role=wire["role"],
        content=content,
        name=wire.get("name"),
        tool_call_id=wire.get("tool_call_id"),
        tool_calls=[
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
            for c in calls
        ]
        if calls
        else None,
    )


def request_from_wire(body: dict[str, Any]) -> Request:
    """The `Request` a user would write for a recorded Chat Completions body."""
    provider_options = {k: body[k] for k in PASSED_THROUGH_KEYS if k in body}
    # No `use_max_completion_tokens`: the codec must pick the recorded key by itself.
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop")
    options = ModelOptions(
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        frequency_penalty=body.get("frequency_penalty"),
        presence_penalty=body.get("presence_penalty"),
        seed=body.get("seed"),
        stop=[stop] if isinstance(stop, str) else stop,
        max_tokens=max_tokens,
        provider_options=provider_options or None,
    )
    tools = [
        ToolSpec(
            name=t["function"]["name"],
            description=t["function"].get("description", ""),
            parameters=t["function"].get("parameters", {"type": "object", "properties": {}}),
            strict=t["function"].get("strict"),
        )
        for t in body.get("tools", [])
    ]
    choice: ToolChoice | None = None
    wire_choice = body.get("tool_choice")
    if isinstance(wire_choice, dict):
        choice = NamedToolChoice(name=wire_choice["function"]["name"])
    elif wire_choice is not None:
        choice = wire_choice
    fmt: ResponseFormat | None = None
    wire_format = body.get("response_format")
    if wire_format is not None:
        schema = wire_format.get("json_schema") or {}
        fmt = ResponseFormat(
            type=wire_format["type"],
            name=schema.get("name"),
            json_schema=schema.get("schema"),
            strict=schema.get("strict"),
            description=schema.get("description"),
        )
    return Request(
        model=body["model"],
        messages=[message_from_wire(m) for m in body["messages"]],
        options=options,
        tools=tools or None,
        tool_choice=choice,
        response_format=fmt,
        stream=bool(body.get("stream", False)),
    )


def pattern(path: str) -> str:
    return path.lstrip(".")


def compare(ours: Any, recorded: Any, path: str = "") -> list[str]:
    """Where ``ours`` differs from ``recorded``, honouring the allow-lists above."""
    if isinstance(recorded, dict):
        if not isinstance(ours, dict):
            return [f"{pattern(path)}: we send {ours!r}, recorded {recorded!r}"]
        problems: list[str] = []
        for key, value in recorded.items():
            where = pattern(f"{path}.{key}")
            if where in UNMODELED_KEYS:
                continue
            if key not in ours:
                problems.append(f"{where}: recorded but not sent")
            else:
                problems += compare(ours[key], value, f"{path}.{key}")
        for key in ours.keys() - recorded.keys():
            where = pattern(f"{path}.{key}")
            if where not in SPELLED_OUT_KEYS:
                problems.append(f"{where}: sent but not recorded")
        return problems
    if isinstance(recorded, list):
        if not isinstance(ours, list) or len(ours) != len(recorded):
            return [f"{pattern(path)}: we send {ours!r}, recorded {recorded!r}"]
        problems = []
        for mine, theirs in zip(ours, recorded, strict=True):
            problems += compare(mine, theirs, f"{path}[]")
        return problems
    if ours != recorded or type(ours) is not type(recorded):
        return [f"{pattern(path)}: we send {ours!r}, recorded {recorded!r}"]
    return []


MODELED_KEYS = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "response_format",
    "stream",
    "stream_options",
}


def test_our_request_bodies_match_the_recorded_ones(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        recorded = entry.get("request") or {}
        body = recorded.get("body")
        if recorded.get("method") != "POST" or not isinstance(body, dict):
            continue
        seen += 1
        with subtests.test(msg=path.name):
            unknown = set(body) - MODELED_KEYS - PASSED_THROUGH_KEYS
            assert not unknown, f"recorded keys neither modeled nor allow-listed: {unknown}"
            codec = codec_for(path, entry)
            request = request_from_wire(body)
            http = codec.encode(request, "sk-test-key-0123456789")
            assert http.url == recorded["url"]
            assert http.stream is request.stream
            recorded_headers = {k.lower(): v for k, v in recorded["headers"].items()}
            assert http.headers["content-type"] == recorded_headers["content-type"]
            if "authorization" in recorded_headers:
                assert http.headers["authorization"].startswith("Bearer ")
            expected = dict(body)
            if expected.get("stream") is False:
                del expected["stream"]  # the default: we leave it out
            assert compare(json.loads(http.body or b""), expected) == []
    assert seen >= 15


# ---------------------------------------------------------------------------------------------
# The openai SDK as the reference for stream accumulation


def sdk_snapshot(path: Path) -> Any:
    """Accumulate a recorded stream with the official SDK's own SSE parser and chunk models."""
    openai_streaming = pytest.importorskip("openai._streaming")
    chat_streaming = pytest.importorskip("openai.lib.streaming.chat")
    chunk_types = pytest.importorskip("openai.types.chat")
    state = chat_streaming.ChatCompletionStreamState()
    for event in openai_streaming.SSEDecoder().iter_bytes(iter([stream_bytes(path)])):
        if event.data.startswith("[DONE]"):
            break
        state.handle_chunk(chunk_types.ChatCompletionChunk.model_validate_json(event.data))
    return state.current_completion_snapshot


def test_stream_accumulation_matches_the_openai_sdk(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        if not is_stream(path) or path.name in STREAM_ERRORS:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            snapshot = sdk_snapshot(path)
            ours = aggregate(decode_all(codec_for(path, entry), stream_bytes(path)))
            assert len(ours.choices) == len(snapshot.choices)
            for mine, theirs in zip(ours.choices, snapshot.choices, strict=True):
                assert mine.message.text == (theirs.message.content or "")
                sdk_calls = [
                    (c.id, c.function.name, c.function.arguments)
                    for c in theirs.message.tool_calls or []
                ]
                my_calls = [(c.id, c.name, c.arguments) for c in mine.tool_calls]
                if path.name in SDK_DIVERGENCES:
                    # The SDK doubles what the server repeated; we keep one copy.
                    sdk_calls = [(i[: len(i) // 2], n[: len(n) // 2], a) for i, n, a in sdk_calls]
                assert my_calls == sdk_calls
                if theirs.finish_reason is not None:
                    expected = {"function_call": "tool_calls"}.get(
                        theirs.finish_reason, theirs.finish_reason
                    )
                    assert mine.finish_reason == expected
    assert seen >= 8


# ---------------------------------------------------------------------------------------------
# Response metadata: id, model, creation time and fingerprint, as the provider sent them


def payloads(path: Path) -> list[dict[str, Any]]:
    """The JSON payloads of a recorded stream, read with the standard library."""
    out: list[dict[str, Any]] = []
    for line in stream_bytes(path).decode().splitlines():
        line = line.strip()
        if line.startswith("data:") and "[DONE]" not in line:
            out.append(json.loads(line[5:], parse_float=Decimal))
    return out


def test_streamed_metadata_equals_the_openai_sdk_s(conformance_dir: Path, subtests: Any) -> None:
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        if not is_stream(path) or path.name in STREAM_ERRORS:
            continue
        seen += 1
        with subtests.test(msg=path.name):
            snapshot = sdk_snapshot(path)
            chunks = decode_all(codec_for(path, entry), stream_bytes(path))
            ours = aggregate(chunks)
            assert ours.id == snapshot.id
            assert ours.model == snapshot.model
            assert ours.created == datetime.fromtimestamp(snapshot.created, UTC)
            # The SDK keeps the *last* chunk's fingerprint, even a null one (a usage chunk
            # without it); we keep the first one the stream reports, as the recording says.
            recorded = [
                p["system_fingerprint"] for p in payloads(path) if p.get("system_fingerprint")
            ]
            assert ours.system_fingerprint == (recorded[0] if recorded else None)
            if snapshot.system_fingerprint is not None:
                assert ours.system_fingerprint == snapshot.system_fingerprint
            # The creation time travels once, on the first chunk that comes out.
            stamped = [c for c in chunks if c.created is not None]
            assert stamped[:1] == chunks[:1]
            assert len(stamped) == 1
    assert seen >= 8


def test_whole_body_metadata_equals_the_openai_sdk_s(conformance_dir: Path, subtests: Any) -> None:
    completion_types = pytest.importorskip("openai.types.chat")
    seen = 0
    for path, entry in chat_entries(conformance_dir):
        if is_stream(path) or (status_of(entry) or 200) >= 400:
            continue
        if entry["api"].startswith("models.list"):
            continue
        seen += 1
        with subtests.test(msg=path.name):
            reference = completion_types.ChatCompletion.model_validate_json(path.read_bytes())
            request = Request(model="m", messages=[Message(role="user")], stream=False)
            ours = codec_for(path, entry).decode_response(request, path.read_bytes())
            assert ours.id == reference.id
            assert ours.model == reference.model
            assert ours.created == datetime.fromtimestamp(reference.created, UTC)
            assert ours.system_fingerprint == reference.system_fingerprint
    assert seen >= 10


# ---------------------------------------------------------------------------------------------
# A cost the provider reported (OpenRouter's usage.cost)


def reported_costs(path: Path) -> list[Decimal]:
    """Every ``usage.cost`` of a recorded stream, read exactly with the standard library."""
    usages = [p.get("usage") or {} for p in payloads(path)]
    return [usage["cost"] for usage in usages if "cost" in usage]


def cost_recordings(conformance_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = [(p, e) for p, e in chat_entries(conformance_dir) if is_stream(p) and reported_costs(p)]
    assert len(found) >= 3, "the recordings with a reported cost are missing"
    return found


def test_a_reported_cost_is_kept_beside_ours(conformance_dir: Path, subtests: Any) -> None:
    for path, entry in cost_recordings(conformance_dir):
        with subtests.test(msg=path.name):
            usage = aggregate(decode_all(codec_for(path, entry), stream_bytes(path))).usage
            assert usage is not None
            assert usage.reported_cost == reported_costs(path)[-1]
            assert usage.cost is None  # not priced yet: the invocation settles it


def replaying(body: bytes) -> httpx.MockTransport:
    """An httpx transport that answers every request with a recorded stream."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx.MockTransport(answer)


async def invoke_recording(path: Path, *, model: str, price: str | None) -> Response:
    """Replay a recorded stream through a client, with ``model`` priced at ``price`` per
    million tokens (input and output), or unpriced when None."""
    prices = (
        {f"openrouter:{model}": {"input_per_mtok": price, "output_per_mtok": price}}
        if price
        else {}
    )
    config = llm.Config.unlimited(
        provider="openrouter",
        retries={"max_attempts": 1},
        providers={"openrouter": {"api_key": "sk-or-test-0123456789abcdef"}},
        cost_control={"prices": prices, "unknown_price": "allow"},
    )
    body = stream_bytes(path)
    transports = {"openrouter": lambda: replaying(body)}
    async with llm.open_client(config, transports=transports) as client:
        request = llm.Request(model=f"openrouter:{model}", messages=[llm.user("hi")])
        async with client.invoke(request) as stream:
            async for _ in stream:
                pass
        return stream.response


async def test_settled_cost_is_the_price_book_s_when_known_and_the_reported_one_is_kept(
    conformance_dir: Path,
) -> None:
    for path, _ in cost_recordings(conformance_dir):
        response = await invoke_recording(path, model="recorded-model", price="1")
        usage = response.usage
        assert usage is not None, path.name
        assert usage.reported_cost == reported_costs(path)[-1], path.name
        expected = Decimal(usage.prompt_tokens + usage.completion_tokens) / 1_000_000
        assert usage.cost == expected, path.name


async def test_settled_cost_is_the_reported_one_when_no_price_is_known(
    conformance_dir: Path,
) -> None:
    for path, _ in cost_recordings(conformance_dir):
        response = await invoke_recording(path, model="no-such-priced-model-x1", price=None)
        usage = response.usage
        assert usage is not None, path.name
        assert usage.reported_cost == reported_costs(path)[-1], path.name
        assert usage.cost == usage.reported_cost, path.name
