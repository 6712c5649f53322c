"""The Gemini codec against real recorded exchanges (``$LLM_CONFORMANCE_DIR/gemini``).

Every recorded stream decodes in its framing (SSE, the streamed JSON array, and the Vertex
``.jsonl`` data payloads wrapped as ``data: <line>\\r\\n\\r\\n``), whole and split at every
byte; every body decodes to what an independent reading of its JSON says; streamed and whole
recordings of one exchange agree; every recorded error maps to its code and retry decision;
and the encoder rebuilds every recorded request body from the equivalent `Request`, compared
key by key after an explicit list of normalisations. Recordings are read in place, never
copied into the repository.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from llm_invocation.errors import (
    AuthenticationError,
    InvalidRequest,
    InvocationTimeout,
    LLMError,
    ModelNotSupported,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
)
from llm_invocation.providers.gemini import GeminiCodec
from llm_invocation.types import (
    Feature,
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
ANY_REQUEST = Request(model="gemini-2.5-flash", messages=[Message(role="user", content="x")])
RETRIED = {408, 429, 500, 502, 503, 504}  # WIRE-FORMATS 0.2, the official SDK's list


@pytest.fixture
def folder(conformance_dir: Path) -> Path:
    return conformance_dir / "gemini"


@pytest.fixture
def index(folder: Path) -> dict[str, Fixture]:
    return {entry["file"]: entry for entry in load_index(folder)}


def section(entry: Fixture, key: str) -> dict[str, Any]:
    """``entry[key]`` as a dict (``request`` and ``response`` may be null)."""
    value: dict[str, Any] = entry.get(key) or {}
    return value


def status_of(entry: Fixture) -> int | None:
    status: int | None = section(entry, "response").get("status") or entry.get("implied_status")
    return status


def kind(entry: Fixture) -> str:
    """Which test covers a recording."""
    api: str = entry["api"]
    name: str = entry["file"]
    status = status_of(entry)
    if status is not None and status >= 400:
        return "error"
    if name.endswith(".jsonl"):
        return "vertex-jsonl"
    if api.startswith("streamGenerateContent"):
        return "sse" if name.endswith(".sse") else "json-array"
    if api.startswith("generateContent"):
        return "body"
    return {"countTokens": "count", "models.list": "models"}[api]


def of_kind(index: dict[str, Fixture], wanted: str) -> list[Fixture]:
    found = [entry for entry in index.values() if kind(entry) == wanted]
    assert found, f"no {wanted} recording in the folder"
    return found


def aggregate(chunks: list[StreamChunk]) -> Response:
    aggregator = StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    return aggregator.response()


def decode(codec: GeminiCodec, data: bytes, cut: int | None = None) -> list[StreamChunk]:
    decoder = codec.stream_decoder(ANY_REQUEST)
    if cut is None:
        chunks = decoder.feed(data)
    else:
        chunks = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    assert decoder.done
    return chunks + decoder.close()


def wrap_jsonl(data: bytes) -> bytes:
    return b"".join(b"data: " + line + b"\r\n\r\n" for line in data.splitlines() if line.strip())


def raw_objects(entry: Fixture, data: bytes) -> list[dict[str, Any]]:
    """The response objects of a recording, read with the standard library."""
    if entry["file"].endswith(".sse"):
        events = re.split(rb"\r\n\r\n|\n\n", data)
        return [json.loads(e.removeprefix(b"data: ")) for e in events if e.strip()]
    if entry["file"].endswith(".jsonl"):
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    value: Any = json.loads(data)
    return cast("list[dict[str, Any]]", value) if isinstance(value, list) else [value]


def check_stream(entry: Fixture, chunks: list[StreamChunk], objects: list[dict[str, Any]]) -> None:
    """A decoded stream says what the recorded objects say."""
    name = entry["file"]
    assert all(c.error is None for c in chunks), name
    assert all(c.provider == "gemini" for c in chunks), name
    response = aggregate(chunks)
    last = objects[-1]
    assert response.id == last["responseId"], name
    assert response.model == last["modelVersion"], name
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for o in objects:
        for part in o["candidates"][0].get("content", {}).get("parts", []):
            if "functionCall" in part:
                calls.append(part["functionCall"])
            elif part.get("thought"):
                thoughts.append(part.get("text", ""))
            else:
                texts.append(part.get("text", ""))
    assert response.text == "".join(texts), name
    assert response.reasoning == "".join(thoughts), name
    complete = [c for c in calls if "name" in c and not c.get("willContinue")]
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls][: len(complete)] == [
        (c["name"], c.get("args", {})) for c in complete
    ], name
    usage = last["usageMetadata"]
    assert response.usage is not None, name
    assert response.usage.prompt_tokens == usage["promptTokenCount"], name
    assert response.usage.completion_tokens == usage.get("candidatesTokenCount", 0) + usage.get(
        "thoughtsTokenCount", 0
    ), name
    native = last["candidates"][0]["finishReason"]
    assert response.metadata is not None, name
    assert response.metadata["native_finish_reason"] == native, name
    expected = {"STOP": "tool_calls" if calls else "stop", "MAX_TOKENS": "length"}[native]
    assert response.finish_reason == expected, name


def test_every_recording_is_covered_by_a_test(index: dict[str, Fixture], folder: Path) -> None:
    kinds = {kind(entry) for entry in index.values()}
    assert kinds == {"sse", "json-array", "vertex-jsonl", "body", "count", "models", "error"}
    on_disk = {p.name for p in folder.iterdir() if p.name not in ("index.json", "PROVENANCE.md")}
    assert on_disk == set(index)


def test_every_sse_recording_decodes_whole_and_split_anywhere(
    folder: Path, index: dict[str, Fixture]
) -> None:
    codec = GeminiCodec()
    for entry in of_kind(index, "sse"):
        data = (folder / entry["file"]).read_bytes()
        assert b"\r\n\r\n" in data  # Gemini's CRLF framing, which the parser must accept
        chunks = decode(codec, data)
        check_stream(entry, chunks, raw_objects(entry, data))
        for cut in range(len(data) + 1):
            assert decode(codec, data, cut) == chunks, (entry["file"], cut)


def test_every_json_array_recording_decodes_like_the_same_objects_over_sse(
    folder: Path, index: dict[str, Fixture]
) -> None:
    codec = GeminiCodec(stream_format="json-array")
    for entry in of_kind(index, "json-array"):
        data = (folder / entry["file"]).read_bytes()
        assert b"\n,\r\n" in data
        objects = raw_objects(entry, data)
        chunks = decode(codec, data)
        check_stream(entry, chunks, objects)
        as_sse = b"".join(b"data: " + json.dumps(o).encode() + b"\r\n\r\n" for o in objects)
        assert decode(GeminiCodec(), as_sse) == chunks, entry["file"]
        for cut in range(len(data) + 1):
            assert decode(codec, data, cut) == chunks, (entry["file"], cut)


def test_vertex_partial_arguments_build_the_calls_as_they_stream(
    folder: Path, index: dict[str, Fixture]
) -> None:
    for entry in of_kind(index, "vertex-jsonl"):
        data = wrap_jsonl((folder / entry["file"]).read_bytes())
        objects = raw_objects(entry, (folder / entry["file"]).read_bytes())
        chunks = decode(GeminiCodec(), data)
        assert all(c.error is None for c in chunks)
        response = aggregate(chunks)
        fragments: dict[int, list[dict[str, Any]]] = {}
        starts: list[dict[str, Any]] = []
        for o in objects:
            for part in o["candidates"][0]["content"]["parts"]:
                call = part["functionCall"]
                if "name" in call:
                    starts.append(part)
                for fragment in call.get("partialArgs", []):
                    fragments.setdefault(len(starts) - 1, []).append(fragment)
        assert [c.name for c in response.tool_calls] == [p["functionCall"]["name"] for p in starts]
        for n, call in enumerate(response.tool_calls):
            expected: dict[str, Any] = {}
            for fragment in fragments.get(n, []):
                key = fragment["jsonPath"].removeprefix("$.")
                expected[key] = expected.get(key, "") + fragment["stringValue"]
            assert call.parsed_arguments() == expected
            signature = starts[n].get("thoughtSignature")
            assert (call.metadata or {}).get("thought_signature") == signature
        # the arguments arrived in pieces before each call ended, not all at its end
        pieces = [d for c in chunks for d in c.tool_calls or [] if d.arguments]
        assert len(pieces) > len(response.tool_calls)
        assert response.finish_reason == "tool_calls"


def test_every_body_decodes_to_what_its_json_says(folder: Path, index: dict[str, Fixture]) -> None:
    codec = GeminiCodec()
    for entry in of_kind(index, "body"):
        data = (folder / entry["file"]).read_bytes()
        raw = json.loads(data)
        response = codec.decode_response(ANY_REQUEST, data)
        name = entry["file"]
        assert response.id == raw["responseId"], name
        assert response.model == raw["modelVersion"], name
        usage = raw.get("usageMetadata", {})
        if "promptTokenCount" in usage:
            assert response.usage is not None, name
            assert response.usage.prompt_tokens == usage["promptTokenCount"], name
            assert response.usage.cache_read_tokens == usage.get("cachedContentTokenCount", 0)
            assert response.usage.reasoning_tokens == usage.get("thoughtsTokenCount", 0), name
        if "candidates" not in raw:
            assert response.finish_reason == "content_filter", name
            assert response.metadata is not None, name
            assert response.metadata["block_reason"] == raw["promptFeedback"]["blockReason"]
            continue
        candidate = raw["candidates"][0]
        parts = candidate["content"].get("parts", [])
        texts = [p["text"] for p in parts if "text" in p and not p.get("thought")]
        calls = [p for p in parts if "functionCall" in p]
        assert response.text == "".join(texts), name
        assert [
            (c.name, c.parsed_arguments(), (c.metadata or {}).get("thought_signature"))
            for c in response.tool_calls
        ] == [
            (p["functionCall"]["name"], p["functionCall"]["args"], p.get("thoughtSignature"))
            for p in calls
        ], name
        assert len({c.id for c in response.tool_calls}) == len(calls), name
        native = candidate["finishReason"]
        expected = {"STOP": "tool_calls" if calls else "stop", "MAX_TOKENS": "length"}.get(
            native, "content_filter"
        )
        assert response.finish_reason == expected, name


def test_the_token_count_and_model_list_decode(folder: Path, index: dict[str, Fixture]) -> None:
    codec = GeminiCodec()
    for entry in of_kind(index, "count"):
        data = (folder / entry["file"]).read_bytes()
        assert codec.decode_count_tokens(data) == json.loads(data)["totalTokens"]
    for entry in of_kind(index, "models"):
        data = (folder / entry["file"]).read_bytes()
        raw = json.loads(data)["models"]
        models = codec.decode_models(data)
        assert [m.id for m in models] == [m["name"].removeprefix("models/") for m in raw]
        assert [(m.context_window, m.max_output_tokens) for m in models] == [
            (m.get("inputTokenLimit"), m.get("outputTokenLimit")) for m in raw
        ]
        by_id = {m.id: m for m in models}
        assert {
            Feature.VISION,
            Feature.FUNCTION_CALLING,
            Feature.STRUCTURED_OUTPUT,
            Feature.REASONING,
            Feature.COUNT_TOKENS,
        } <= by_id["gemini-2.5-flash"].features
        assert not by_id["gemini-2.0-flash"].supports(Feature.REASONING)
        assert by_id["gemini-embedding-001"].features == {Feature.COUNT_TOKENS}
        assert by_id["imagen-4.0-generate-001"].features == frozenset()


def test_streamed_and_whole_recordings_of_one_exchange_agree(
    folder: Path, index: dict[str, Fixture]
) -> None:
    by_body: dict[str, dict[str, Fixture]] = {}
    for entry in index.values():
        if kind(entry) in ("sse", "json-array", "body"):
            key = json.dumps(section(entry, "request")["body"], sort_keys=True)
            by_body.setdefault(key, {})["stream" if kind(entry) != "body" else "whole"] = entry
    pairs = [pair for pair in by_body.values() if len(pair) == 2]
    assert len(pairs) >= 2
    for pair in pairs:
        whole_data = (folder / pair["whole"]["file"]).read_bytes()
        whole = GeminiCodec().decode_response(ANY_REQUEST, whole_data)
        streamed = aggregate(decode(GeminiCodec(), (folder / pair["stream"]["file"]).read_bytes()))
        names = (pair["whole"]["file"], pair["stream"]["file"])
        assert streamed.finish_reason == whole.finish_reason, names
        assert streamed.model == whole.model, names
        assert [(c.name, c.parsed_arguments()) for c in streamed.tool_calls] == [
            (c.name, c.parsed_arguments()) for c in whole.tool_calls
        ], names
        assert streamed.usage is not None and whole.usage is not None
        assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens, names
        assert bool(streamed.text) == bool(whole.text), names


# -- errors -------------------------------------------------------------------------------------

EXPECTED_ERRORS: dict[str, type[LLMError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "FAILED_PRECONDITION": InvalidRequest,
    "PERMISSION_DENIED": AuthenticationError,
    "NOT_FOUND": ModelNotSupported,
    "RESOURCE_EXHAUSTED": RateLimited,
    "INTERNAL": ProviderError,
    "UNAVAILABLE": ProviderOverloaded,
    "DEADLINE_EXCEEDED": InvocationTimeout,
}


def test_every_recorded_error_maps_to_its_code_and_retry_decision(
    folder: Path, index: dict[str, Fixture]
) -> None:
    codec = GeminiCodec()
    for entry in of_kind(index, "error"):
        data = (folder / entry["file"]).read_bytes()
        status = status_of(entry)
        assert status is not None
        headers: dict[str, str] = section(entry, "response").get("headers") or {}
        error = codec.map_error(status, headers, data)
        raw = json.loads(data)["error"]
        details: list[dict[str, Any]] = raw.get("details", [])
        reasons = [d.get("reason", "") for d in details]
        expected = (
            AuthenticationError
            if any(r.startswith("API_KEY_") for r in reasons)
            else EXPECTED_ERRORS[raw["status"]]
        )
        name = entry["file"]
        assert type(error) is expected, name
        assert (error.status, error.message) == (status, raw["message"]), name
        delays = [d["retryDelay"] for d in details if d["@type"].endswith("google.rpc.RetryInfo")]
        advice = codec.retry_advice(error, headers)
        assert advice.retryable is (status in RETRIED), name
        assert advice.delay == (float(delays[0].removesuffix("s")) if delays else None), name


# -- request bodies -----------------------------------------------------------------------------


def camel(value: Any) -> Any:
    """Keys camel-cased (the recorders used snake_case spellings the API also accepts)."""
    if isinstance(value, dict):
        items = cast("dict[str, Any]", value).items()
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): camel(v) for k, v in items}
    if isinstance(value, list):
        return [camel(v) for v in cast("list[Any]", value)]
    return value


def allow_unmodelled(body: dict[str, Any]) -> dict[str, Any]:
    """The recorded body less what we deliberately send differently, each with its reason."""
    body = json.loads(json.dumps(body))
    system = body.get("systemInstruction")
    if system is not None:
        system.pop("role", None)  # a role inside systemInstruction is tolerated, never needed
    for tool in body.get("tools", []):
        for declaration in tool.get("functionDeclarations", []):
            if not declaration.get("description"):
                declaration.pop("description", None)  # null or "" descriptions are left out
            if "parameters" in declaration:  # every schema is sent as JSON Schema
                declaration["parametersJsonSchema"] = declaration.pop("parameters")
    config = body.get("generationConfig")
    if config is not None:
        if "responseSchema" in config:  # structured output is sent as JSON Schema
            config["responseJsonSchema"] = config.pop("responseSchema")
        if not config:
            del body["generationConfig"]  # an empty generationConfig is left out
    return body


def request_from_body(body: dict[str, Any], *, model: str, stream: bool) -> Request:
    """The `Request` a caller would write for a recorded (camel-cased) body."""
    messages: list[Message] = [
        Message(role="system", content=p["text"])
        for p in body.get("systemInstruction", {}).get("parts", [])
    ]
    pending: list[ToolCall] = []
    for content in body["contents"]:
        parts: list[dict[str, Any]] = content["parts"]
        if content.get("role") == "model":
            pieces: list[Part] = []
            calls: list[ToolCall] = []
            for part in parts:
                signature = part.get("thoughtSignature")
                if "functionCall" in part:
                    fc = part["functionCall"]
                    calls.append(
                        ToolCall(
                            id=f"call_{len(pending) + len(calls)}",
                            name=fc["name"],
                            arguments=json.dumps(fc.get("args", {})),
                            metadata={"thought_signature": signature} if signature else None,
                        )
                    )
                elif part.get("thought"):
                    pieces.append(ReasoningPart(text=part["text"], signature=signature))
                else:
                    if signature:
                        pieces.append(ReasoningPart(signature=signature))
                    pieces.append(TextPart(text=part["text"]))
            pending.extend(calls)
            messages.append(
                Message(role="assistant", content=pieces or None, tool_calls=calls or None)
            )
            continue
        user_parts: list[Part] = []
        for part in parts:
            if "functionResponse" in part:
                if user_parts:
                    messages.append(Message(role="user", content=user_parts))
                    user_parts = []
                response = part["functionResponse"]
                answered = next(c for c in pending if c.name == response["name"])
                pending.remove(answered)
                result = response["response"]
                text = result["output"] if set(result) == {"output"} else json.dumps(result)
                messages.append(Message(role="tool", content=text, tool_call_id=answered.id))
            elif "text" in part:
                user_parts.append(TextPart(text=part["text"]))
            elif "fileData" in part:
                data = part["fileData"]
                user_parts.append(ImagePart(url=data["fileUri"], media_type=data["mimeType"]))
            else:
                data = part["inlineData"]
                user_parts.append(ImagePart(data=data["data"], media_type=data["mimeType"]))
        if user_parts:
            messages.append(Message(role="user", content=user_parts))
    config: dict[str, Any] = dict(body.get("generationConfig", {}))
    options: dict[str, Any] = {}
    for ours, theirs in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("max_tokens", "maxOutputTokens"),
        ("stop", "stopSequences"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ]:
        if theirs in config:
            options[ours] = config.pop(theirs)
    response_format = None
    if config.get("responseMimeType") == "application/json":
        del config["responseMimeType"]
        schema = config.pop("responseSchema", None) or config.pop("responseJsonSchema", None)
        response_format = ResponseFormat.schema("Out", schema) if schema else ResponseFormat.json()
    tools = [
        ToolSpec(
            name=d["name"],
            description=d.get("description") or "",
            parameters=d.get("parameters") or d["parametersJsonSchema"],
        )
        for tool in body.get("tools", [])
        for d in tool["functionDeclarations"]
    ]
    tool_choice: ToolChoice | None = None
    calling = body.get("toolConfig", {}).get("functionCallingConfig")
    if calling is not None:
        names = calling.get("allowedFunctionNames")
        mode = {"AUTO": "auto", "NONE": "none", "ANY": "required"}[calling["mode"]]
        tool_choice = NamedToolChoice(name=names[0]) if names else cast("ToolChoice", mode)
    modelled = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig"}
    provider_options = {**config, **{k: v for k, v in body.items() if k not in modelled}}
    return Request(
        model=model,
        messages=messages,
        options=ModelOptions(**options, provider_options=provider_options or None),
        tools=tools or None,
        tool_choice=tool_choice,
        response_format=response_format,
        stream=stream,
    )


def test_the_encoder_rebuilds_every_recorded_request_body(index: dict[str, Fixture]) -> None:
    checked = 0
    for entry in index.values():
        recorded = section(entry, "request")
        body: Any = recorded.get("body")
        if not isinstance(body, dict):
            continue
        url: str = recorded["url"]
        name = entry["file"]
        model = url.rsplit("/models/", 1)[1].split(":", 1)[0]
        streaming = ":streamGenerateContent" in url
        codec = GeminiCodec(
            stream_format="sse" if "alt=sse" in url or not streaming else "json-array"
        )
        wanted = allow_unmodelled(camel(cast("dict[str, Any]", body)))
        equivalent = request_from_body(wanted, model=model, stream=streaming)
        if url.endswith(":countTokens"):
            http = codec.count_tokens_request(equivalent, "key")
        else:
            http = codec.encode(equivalent, "key")
        assert http.body is not None
        assert camel(json.loads(http.body)) == wanted, name
        if url.startswith(GeminiCodec.default_base_url):  # not the Vertex AI endpoint
            assert http.url == url, name
            sent: dict[str, str] = recorded["headers"]
            assert set(sent) - {"accept"} <= set(http.headers), name
        checked += 1
    assert checked >= 15


# -- response metadata --------------------------------------------------------------------------

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def recorded_time(text: str) -> datetime:
    """An RFC 3339 ``createTime`` read with the standard library (``Z`` spelled out)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def first(objects: list[dict[str, Any]], key: str) -> Any:
    return next((o[key] for o in objects if o.get(key)), None)


def test_every_recording_keeps_the_response_id_model_version_and_create_time(
    folder: Path, index: dict[str, Fixture]
) -> None:
    """``responseId``, ``modelVersion`` and (Vertex AI) ``createTime`` as recorded, streamed
    and whole; without a ``createTime`` no chunk makes one up."""
    checked = 0
    for entry in index.values():
        what = kind(entry)
        if what not in ("sse", "json-array", "vertex-jsonl", "body"):
            continue
        checked += 1
        name = entry["file"]
        data = (folder / name).read_bytes()
        objects = raw_objects(entry, data)
        created = first(objects, "createTime")
        if what == "body":
            response = GeminiCodec().decode_response(ANY_REQUEST, data)
        else:
            codec = (
                GeminiCodec(stream_format="json-array") if what == "json-array" else GeminiCodec()
            )
            chunks = decode(codec, wrap_jsonl(data) if what == "vertex-jsonl" else data)
            stamped = [c for c in chunks if c.created is not None]
            # The creation time travels once, on the first chunk, and only when recorded.
            assert stamped == (chunks[:1] if created else []), name
            aggregator = StreamAggregator()
            for chunk in chunks:
                aggregator.add(chunk)
            response = aggregator.response(created=WHEN)
        assert response.id == first(objects, "responseId"), name
        assert response.model == first(objects, "modelVersion"), name
        assert response.system_fingerprint is None, name
        if created:
            assert response.created == recorded_time(created), name
        elif what != "body":
            assert response.created == WHEN, name
    assert checked >= 15


# -- against the official SDK ---------------------------------------------------------------


def sdk_response(raw: dict[str, Any]) -> Any:
    """``raw`` read by google-genai's `GenerateContentResponse`; fields newer than the SDK
    (which it forbids) are dropped first, as its own client tolerates them."""
    import pydantic
    from google.genai import types as genai_types

    data = json.loads(json.dumps(raw))
    for _ in range(20):
        try:
            return genai_types.GenerateContentResponse.model_validate(data)
        except pydantic.ValidationError as error:
            extras = [e["loc"] for e in error.errors() if e["type"] == "extra_forbidden"]
            if not extras:
                raise
            for loc in extras:
                parent: Any = data
                for step in loc[:-1]:
                    parent = parent[step]
                del parent[loc[-1]]
    raise AssertionError("too many unknown fields")


def sdk_reading(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What the official SDK reads from a response, or from a stream's objects in order."""
    import warnings

    text, calls, finish, usage = "", [], None, None
    ids: list[str] = []
    models: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "non-text parts in the response"
        for raw in objects:
            response = sdk_response(raw)
            text += response.text or ""
            calls += [(c.name, c.args) for c in response.function_calls or []]
            if response.candidates and response.candidates[0].finish_reason is not None:
                finish = response.candidates[0].finish_reason.value
            if response.usage_metadata is not None:
                usage = response.usage_metadata.prompt_token_count
            if response.response_id:
                ids.append(response.response_id)
            if response.model_version:
                models.append(response.model_version)
    return {
        "text": text,
        "calls": calls,
        "finish": finish,
        "prompt_tokens": usage,
        "id": ids[0] if ids else None,
        "model": models[0] if models else None,
    }


def our_reading(response: Response) -> dict[str, Any]:
    return {
        "text": response.text,
        "calls": [(c.name, c.parsed_arguments()) for c in response.tool_calls],
        "prompt_tokens": response.usage.prompt_tokens if response.usage else None,
        "id": response.id or None,
        "model": response.model or None,
    }


def test_every_recording_reads_as_the_official_sdk_reads_it(
    folder: Path, index: dict[str, Fixture]
) -> None:
    codec = GeminiCodec()
    checked = 0
    for entry in index.values():
        wanted = kind(entry)
        if wanted not in ("body", "sse", "json-array", "vertex-jsonl"):
            continue
        data = (folder / entry["file"]).read_bytes()
        objects = raw_objects(entry, data)
        if wanted == "body":
            ours = codec.decode_response(ANY_REQUEST, data)
        elif wanted == "json-array":
            ours = aggregate(decode(GeminiCodec(stream_format="json-array"), data))
        else:
            stream = wrap_jsonl(data) if wanted == "vertex-jsonl" else data
            ours = aggregate(decode(codec, stream))
        sdk = sdk_reading(objects)
        mine = our_reading(ours)
        name = entry["file"]
        # Vertex's partial arguments are assembled by us (see the test above); the SDK reads
        # each fragment on its own, so only the other fields compare there.
        partial = any(args is None for _, args in sdk["calls"])
        for key in ("text", "id", "model") if partial else ("text", "calls", "id", "model"):
            assert mine[key] == sdk[key], (name, key)
        if sdk["prompt_tokens"] is not None:
            assert mine["prompt_tokens"] == sdk["prompt_tokens"], name
        native = sdk["finish"]
        if native is not None:
            expected = {
                "STOP": "tool_calls" if sdk["calls"] else "stop",
                "MAX_TOKENS": "length",
            }.get(native, "content_filter")
            assert ours.finish_reason == expected, name
        checked += 1
    assert checked >= 15
