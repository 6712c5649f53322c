"""Specification of the Gemini codec (`llm_invocation.providers.gemini`), on bytes alone.

Every stream here is built inline from small synthetic objects (never copied from recordings):
`obj` makes one ``GenerateContentResponse``, `sse` frames objects as Gemini does (CRLF CRLF),
`json_array` as the streamed JSON array without ``alt=sse`` (``[{...}\\n,\\r\\n{...}\\n]``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
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
)
from llm_invocation.providers._base import HttpRequest, StreamDecoder
from llm_invocation.providers._gemini_stream import JSONArrayScanner, parse_json_path
from llm_invocation.providers.gemini import GeminiCodec, GeminiJSONArrayDecoder, GeminiSSEDecoder
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
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    Usage,
    assistant,
    developer,
    system,
    tool_result,
    user,
)

KEY = "AIzaSy-test-SECRET-0123456789abcdef"
BASE = "https://generativelanguage.googleapis.com/v1beta"
WHEN = datetime(2025, 1, 2, tzinfo=UTC)
WEATHER = ToolSpec(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


# -- helpers ------------------------------------------------------------------------------------


def request(*messages: Message, **fields: Any) -> Request:
    return Request(model="gemini-2.5-flash", messages=list(messages) or [user("Hi")], **fields)


def body_of(http: HttpRequest) -> dict[str, Any]:
    assert http.body is not None
    decoded: dict[str, Any] = json.loads(http.body)
    return decoded


def encode(*messages: Message, **fields: Any) -> dict[str, Any]:
    return body_of(GeminiCodec().encode(request(*messages, **fields), KEY))


def obj(
    *parts: dict[str, Any],
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    response_id: str = "resp1",
    model: str = "gemini-2.5-flash-001",
    **extra: Any,
) -> dict[str, Any]:
    """One GenerateContentResponse with one candidate holding ``parts``."""
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
    if response_id:
        out["responseId"] = response_id
    if usage is not None:
        out["usageMetadata"] = usage
    out.update(extra)
    return out


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"text": value, **extra}


def thought(value: str, **extra: Any) -> dict[str, Any]:
    return {"text": value, "thought": True, **extra}


def call(name: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    fc: dict[str, Any] = {"name": name}
    if args is not None:
        fc["args"] = args
    return {"functionCall": fc, **extra}


def counts(prompt: int, candidates: int = 0, thoughts: int = 0, **extra: int) -> dict[str, int]:
    out = {"promptTokenCount": prompt, "totalTokenCount": prompt + candidates + thoughts}
    if candidates:
        out["candidatesTokenCount"] = candidates
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    out.update(extra)
    return out


def sse(*objects: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\r\n\r\n" for o in objects)


def json_array(*objects: dict[str, Any]) -> bytes:
    items = [json.dumps(o, indent=2).encode() for o in objects]
    return b"[" + b"\n,\r\n".join(items) + b"\n]"


def feed_all(
    decoder: StreamDecoder, data: bytes, cuts: list[int] | None = None
) -> list[StreamChunk]:
    points = sorted(set(cuts or []))
    chunks: list[StreamChunk] = []
    last = 0
    for point in [*points, len(data)]:
        chunks.extend(decoder.feed(data[last:point]))
        last = point
    return chunks + decoder.close()


def sse_decoder() -> GeminiSSEDecoder:
    return GeminiSSEDecoder(provider="gemini", model="gemini-2.5-flash")


def array_decoder() -> GeminiJSONArrayDecoder:
    return GeminiJSONArrayDecoder(provider="gemini", model="gemini-2.5-flash")


def stream(*objects: dict[str, Any]) -> list[StreamChunk]:
    return feed_all(sse_decoder(), sse(*objects))


def aggregate(chunks: list[StreamChunk]) -> Response:
    aggregator = StreamAggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    return aggregator.response(created=WHEN)


def error_body(code: int, status: str, message: str = "boom", *details: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return json.dumps({"error": error}).encode()


# -- URL, method and headers --------------------------------------------------------------------


def test_non_streamed_request_posts_to_generate_content() -> None:
    http = GeminiCodec().encode(request(stream=False), KEY)
    assert (http.method, http.url, http.stream) == (
        "POST",
        f"{BASE}/models/gemini-2.5-flash:generateContent",
        False,
    )


def test_streamed_request_asks_for_server_sent_events_by_default() -> None:
    http = GeminiCodec().encode(request(), KEY)
    assert http.url == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert http.stream


def test_json_array_stream_format_drops_alt_sse() -> None:
    http = GeminiCodec(stream_format="json-array").encode(request(), KEY)
    assert http.url == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent"


def test_stream_format_can_come_from_the_provider_options() -> None:
    codec = GeminiCodec(options={"stream_format": "json-array"})
    assert isinstance(codec.stream_decoder(request()), GeminiJSONArrayDecoder)
    assert isinstance(GeminiCodec().stream_decoder(request()), GeminiSSEDecoder)


def test_unknown_stream_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        GeminiCodec(options={"stream_format": "ndjson"})


def test_key_travels_in_the_goog_header_only() -> None:
    http = GeminiCodec(base_url="https://proxy.example/v1beta/").encode(request(), KEY)
    assert http.headers["x-goog-api-key"] == KEY
    assert http.headers["content-type"] == "application/json"
    assert KEY not in http.url
    assert "key=" not in http.url
    assert KEY not in repr(http)
    assert http.url.startswith("https://proxy.example/v1beta/models/")


def test_no_key_means_no_key_header() -> None:
    http = GeminiCodec().encode(request(), None)
    assert "x-goog-api-key" not in http.headers


def test_extra_headers_are_sent() -> None:
    http = GeminiCodec(headers={"x-team": "blue"}).encode(request(), KEY)
    assert http.headers["x-team"] == "blue"


def test_tuned_model_paths_are_kept() -> None:
    http = GeminiCodec().encode(
        Request(model="tunedModels/mine-123", messages=[user("Hi")], stream=False), None
    )
    assert http.url == f"{BASE}/tunedModels/mine-123:generateContent"


def test_body_is_compact_json() -> None:
    http = GeminiCodec().encode(request(), KEY)
    assert http.body == b'{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}'


# -- contents -----------------------------------------------------------------------------------


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    body = encode(system("Be brief."), user("Hi"), developer("Use metric units."))
    assert body["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Use metric units."}]
    }
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_assistant_is_role_model_and_same_role_turns_merge() -> None:
    body = encode(user("a"), user("b"), assistant("c"), assistant("d"), user("e"))
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
        {"role": "user", "parts": [{"text": "e"}]},
    ]


def test_inline_image_becomes_inline_data() -> None:
    image = ImagePart.from_bytes(b"\x89PNG", "image/png")
    body = encode(user("What is it?", image))
    assert body["contents"][0]["parts"] == [
        {"text": "What is it?"},
        {"inlineData": {"mimeType": "image/png", "data": image.data}},
    ]


def test_data_url_image_becomes_inline_data() -> None:
    body = encode(user([ImagePart(url="data:image/webp;base64,AAAA")]))
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/webp", "data": "AAAA"}}
    ]


@pytest.mark.parametrize(
    ("url", "mime"),
    [
        ("https://x.example/cat.PNG", "image/png"),
        ("gs://bucket/dir/photo.webp?version=2", "image/webp"),
        ("https://x.example/image", "image/jpeg"),
        ("https://x.example/a.gif#frag", "image/gif"),
    ],
)
def test_image_url_becomes_file_data_with_a_guessed_mime_type(url: str, mime: str) -> None:
    body = encode(user([ImagePart.from_url(url)]))
    assert body["contents"][0]["parts"] == [{"fileData": {"mimeType": mime, "fileUri": url}}]


def test_an_image_url_with_a_media_type_keeps_it() -> None:
    part = ImagePart(url="https://youtu.be/x", media_type="video/mp4")
    body = encode(user([part]))
    assert body["contents"][0]["parts"][0]["fileData"]["mimeType"] == "video/mp4"


def test_tool_calls_become_function_calls_with_their_thought_signature() -> None:
    calls = [
        ToolCall(
            id="c1",
            name="get_weather",
            arguments='{"city":"Paris"}',
            metadata={"thought_signature": "SIG/+=="},
        ),
        ToolCall(id="c2", name="get_weather", arguments='{"city":"Oslo"}'),
    ]
    body = encode(user("Weather?"), assistant("Checking.", tool_calls=calls))
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "SIG/+==",
            },
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
        ],
    }


def test_tool_call_arguments_must_be_a_json_object() -> None:
    bad = assistant(tool_calls=[ToolCall(id="c1", name="f", arguments="[1]")])
    with pytest.raises(InvalidRequest) as caught:
        encode(user("x"), bad)
    assert caught.value.details["field"] == "messages[1].tool_calls[0].arguments"


def test_thoughts_go_back_as_thought_parts_and_a_bare_signature_on_the_next_part() -> None:
    content: list[Any] = [
        ReasoningPart(text="Let me think.", signature="S1"),
        ReasoningPart(signature="S2"),
        TextPart(text="Answer."),
        ReasoningPart(signature="S3"),
    ]
    body = encode(user("q"), Message(role="assistant", content=content))
    assert body["contents"][1]["parts"] == [
        {"text": "Let me think.", "thought": True, "thoughtSignature": "S1"},
        {"text": "Answer.", "thoughtSignature": "S2"},
        {"text": "", "thoughtSignature": "S3"},
    ]


def test_redacted_reasoning_of_another_provider_is_left_out() -> None:
    content: list[Any] = [ReasoningPart(signature="opaque", redacted=True), TextPart(text="Hi")]
    body = encode(user("q"), Message(role="assistant", content=content))
    assert body["contents"][1]["parts"] == [{"text": "Hi"}]


def test_parallel_tool_results_share_one_user_content_and_find_their_names() -> None:
    calls = [
        ToolCall(id="c1", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCall(id="c2", name="get_time", arguments="{}"),
    ]
    body = encode(
        user("q"),
        assistant(tool_calls=calls),
        tool_result("c1", "Sunny"),
        tool_result("c2", {"hour": 12}),
    )
    assert body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": "Sunny"}}},
            {"functionResponse": {"name": "get_time", "response": {"hour": 12}}},
        ],
    }


def test_a_tool_result_names_itself_when_it_has_a_name() -> None:
    body = encode(user("q"), tool_result("unknown", "ok", name="lookup"))
    assert body["contents"][0]["parts"][1] == {
        "functionResponse": {"name": "lookup", "response": {"output": "ok"}}
    }


def test_failed_tool_results_use_the_error_key() -> None:
    calls = [ToolCall(id="c1", name="f"), ToolCall(id="c2", name="g")]
    body = encode(
        user("q"),
        assistant(tool_calls=calls),
        tool_result("c1", "timed out", is_error=True),
        tool_result("c2", '{"why": "denied"}', is_error=True),
    )
    responses = [p["functionResponse"]["response"] for p in body["contents"][2]["parts"]]
    assert responses == [{"error": "timed out"}, {"error": {"why": "denied"}}]


def test_a_tool_result_with_images_sends_them_after_the_response() -> None:
    image = ImagePart.from_bytes(b"img", "image/png")
    result = tool_result("c1", [TextPart(text="chart"), image], name="plot")
    parts = encode(user("q"), result)["contents"][0]["parts"]
    assert parts[1:] == [
        {"functionResponse": {"name": "plot", "response": {"output": "chart"}}},
        {"text": "Images returned by tool call c1 (plot):"},
        {"inlineData": {"mimeType": "image/png", "data": image.data}},
    ]


def test_a_tool_result_for_an_unknown_call_without_a_name_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as caught:
        encode(user("q"), tool_result("nobody", "x"))
    assert caught.value.details["field"] == "messages[1].name"


def test_images_in_a_system_message_are_invalid() -> None:
    bad = Message(role="system", content=[ImagePart.from_url("https://x.example/a.png")])
    with pytest.raises(InvalidRequest):
        encode(bad, user("q"))


# -- options, formats, tools --------------------------------------------------------------------


def test_options_become_the_generation_config() -> None:
    options = ModelOptions(
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        max_tokens=100,
        stop=["END"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    )
    assert encode(options=options)["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
    }


def test_no_options_means_no_generation_config() -> None:
    assert "generationConfig" not in encode()


def test_more_than_five_stop_sequences_are_invalid() -> None:
    with pytest.raises(InvalidRequest):
        encode(options=ModelOptions(stop=list("abcdef")))


def test_json_mode_sets_the_response_mime_type() -> None:
    body = encode(response_format=ResponseFormat.json())
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_a_schema_goes_in_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = encode(response_format=ResponseFormat.schema("Out", schema))
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


def test_tools_become_function_declarations_with_json_schema() -> None:
    bare = ToolSpec(name="ping")
    body = encode(tools=[WEATHER, bare])
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city.",
                    "parametersJsonSchema": WEATHER.parameters,
                },
                {"name": "ping", "parametersJsonSchema": {"type": "object", "properties": {}}},
            ]
        }
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            NamedToolChoice(name="get_weather"),
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_becomes_the_function_calling_mode(
    choice: ToolChoice, config: dict[str, Any]
) -> None:
    body = encode(tools=[WEATHER], tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_provider_options_go_into_generation_config_or_the_top_level() -> None:
    provider_options: dict[str, Any] = {
        "thinking_config": {"includeThoughts": True},
        "responseModalities": ["TEXT"],
        "candidateCount": 1,
        "generationConfig": {"media_resolution": "MEDIA_RESOLUTION_LOW"},
        "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        "cached_content": "cachedContents/abc",
        "tools": [{"googleSearch": {}}],
        "toolConfig": {"retrievalConfig": {"languageCode": "en"}},
    }
    body = encode(
        tools=[WEATHER],
        tool_choice="auto",
        options=ModelOptions(temperature=0.1, provider_options=provider_options),
    )
    assert body["generationConfig"] == {
        "temperature": 0.1,
        "thinkingConfig": {"includeThoughts": True},
        "responseModalities": ["TEXT"],
        "candidateCount": 1,
        "mediaResolution": "MEDIA_RESOLUTION_LOW",
    }
    assert body["safetySettings"] == provider_options["safetySettings"]
    assert body["cachedContent"] == "cachedContents/abc"
    assert body["tools"][1] == {"googleSearch": {}}
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "AUTO"},
        "retrievalConfig": {"languageCode": "en"},
    }


# -- streaming: text, thoughts, usage -----------------------------------------------------------


def test_sse_text_stream_with_crlf_framing() -> None:
    data = (
        b'data: {"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],'
        b'"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1,"totalTokenCount":6},'
        b'"modelVersion":"gemini-2.5-flash","responseId":"r1"}\r\n\r\n'
        b'data: {"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},'
        b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,'
        b'"candidatesTokenCount":2,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash",'
        b'"responseId":"r1"}\r\n\r\n'
    )
    decoder = sse_decoder()
    chunks = decoder.feed(data)
    assert decoder.done
    assert decoder.close() == []
    assert [c.text for c in chunks] == ["Hel", "lo"]
    assert [c.finish_reason for c in chunks] == [None, "stop"]
    assert chunks[-1].metadata == {"native_finish_reason": "STOP"}
    assert {(c.id, c.provider, c.model) for c in chunks} == {("r1", "gemini", "gemini-2.5-flash")}


def test_a_crlf_split_between_reads_is_one_separator() -> None:
    data = sse(obj(text("a")), obj(text("b"), finish="STOP"))
    cut = data.index(b"\r\n") + 1  # between the CR and the LF
    chunks = feed_all(sse_decoder(), data, [cut])
    assert [c.text for c in chunks] == ["a", "b"]


def test_usage_is_a_running_total_on_every_chunk() -> None:
    chunks = stream(
        obj(thought("hmm"), usage=counts(10, thoughts=4)),
        obj(text("Hi"), usage=counts(10, 1, 4, cachedContentTokenCount=6)),
        obj(text("!"), finish="STOP", usage=counts(10, 2, 4, toolUsePromptTokenCount=3)),
    )
    assert [c.usage for c in chunks] == [
        Usage(prompt_tokens=10, completion_tokens=4, reasoning_tokens=4, total_tokens=14),
        Usage(
            prompt_tokens=10,
            completion_tokens=5,
            total_tokens=15,
            cache_read_tokens=6,
            reasoning_tokens=4,
        ),
        Usage(prompt_tokens=13, completion_tokens=6, total_tokens=16, reasoning_tokens=4),
    ]


def test_a_usage_block_without_counts_is_no_usage() -> None:
    chunks = stream(obj(text("a"), usage={}), obj(text("b"), finish="STOP"))
    assert [c.usage for c in chunks] == [None, None]


def test_thought_parts_are_reasoning_and_their_signature_closes_them() -> None:
    chunks = stream(
        obj(thought("Let me ")),
        obj(thought("think.", thoughtSignature="SIG")),
        obj(text("Done."), finish="STOP"),
    )
    assert [(c.reasoning, c.reasoning_signature, c.text) for c in chunks] == [
        ("Let me ", None, ""),
        ("think.", "SIG", ""),
        ("", None, "Done."),
    ]
    assert aggregate(chunks).message.content == [
        ReasoningPart(text="Let me think.", signature="SIG", provider="gemini"),
        TextPart(text="Done."),
    ]


def test_a_signature_on_an_empty_text_part_is_kept() -> None:
    chunks = stream(obj(text("Hi")), obj(text("", thoughtSignature="SIG"), finish="STOP"))
    assert chunks[-1].reasoning_signature == "SIG"
    assert aggregate(chunks).message.content == [
        TextPart(text="Hi"),
        ReasoningPart(signature="SIG", provider="gemini"),
    ]


def test_parts_that_cannot_share_a_chunk_are_split_in_order() -> None:
    chunks = stream(
        obj(text("a"), thought("b"), text("c", thoughtSignature="S"), text("d"), finish="STOP")
    )
    assert [(c.text, c.reasoning, c.reasoning_signature) for c in chunks] == [
        ("a", "", None),
        ("cd", "b", "S"),
    ]
    assert aggregate(chunks).message.content == [
        TextPart(text="a"),
        ReasoningPart(text="b", signature="S", provider="gemini"),
        TextPart(text="cd"),
    ]


# -- streaming: tool calls ----------------------------------------------------------------------


def test_parallel_calls_in_one_chunk_get_ordinals_ids_and_the_signature() -> None:
    chunks = stream(
        obj(
            call("get_weather", {"city": "Paris"}, thoughtSignature="SIG"),
            call("get_weather", {"city": "Oslo"}),
            finish="STOP",
            response_id="R9",
        )
    )
    assert len(chunks) == 1
    assert chunks[0].tool_calls == [
        ToolCallDelta(
            index=0,
            id="call_R9_0",
            name="get_weather",
            arguments='{"city":"Paris"}',
            metadata={"thought_signature": "SIG"},
        ),
        ToolCallDelta(index=1, id="call_R9_1", name="get_weather", arguments='{"city":"Oslo"}'),
    ]
    assert chunks[0].finish_reason == "tool_calls"


def test_call_ordinals_run_across_chunks_and_a_vertex_id_is_kept() -> None:
    chunks = stream(
        obj(call("a", {})),
        obj({"functionCall": {"name": "b", "args": {"x": 1}, "id": "vertex-7"}}, finish="STOP"),
    )
    deltas = [d for c in chunks for d in c.tool_calls or []]
    assert [(d.index, d.id, d.arguments) for d in deltas] == [
        (0, "call_resp1_0", "{}"),
        (1, "vertex-7", '{"x":1}'),
    ]


def test_a_call_without_args_has_empty_object_arguments() -> None:
    chunks = stream(obj(call("ping"), finish="STOP"))
    assert chunks[0].tool_calls == [
        ToolCallDelta(index=0, id="call_resp1_0", name="ping", arguments="{}")
    ]


def partial(*fragments: dict[str, Any], more: bool = True) -> dict[str, Any]:
    fc: dict[str, Any] = {"partialArgs": list(fragments)}
    if more:
        fc["willContinue"] = True
    return {"functionCall": fc}


def test_vertex_partial_args_accumulate_into_the_arguments() -> None:
    chunks = stream(
        obj({"functionCall": {"name": "cook", "willContinue": True}, "thoughtSignature": "S"}),
        obj(partial({"jsonPath": "$.recipe.name", "stringValue": "Lasa", "willContinue": True})),
        obj(partial({"jsonPath": "$.recipe.name", "stringValue": 'gna "x"'})),
        obj(partial({"jsonPath": "$.recipe.items[0].qty", "numberValue": 2})),
        obj(partial({"jsonPath": "$.recipe.items[0].ok", "boolValue": True})),
        obj({"functionCall": {"willContinue": True}}),
        obj(partial({"jsonPath": "$.recipe.items[1].qty", "numberValue": 1.5})),
        obj(partial({"jsonPath": "$.note", "nullValue": "NULL_VALUE"})),
        obj({"functionCall": {}}),
        obj(text(""), finish="STOP"),
    )
    calls = aggregate(chunks).message.tool_calls
    assert calls == [
        ToolCall(
            id="call_resp1_0",
            name="cook",
            arguments=(
                '{"recipe":{"name":"Lasagna \\"x\\"","items":[{"qty":2,"ok":true},{"qty":1.5}]},'
                '"note":null}'
            ),
            metadata={"thought_signature": "S"},
        )
    ]
    assert chunks[-1].finish_reason == "tool_calls"


def test_a_partial_call_left_open_is_closed_by_the_finish_reason() -> None:
    chunks = stream(
        obj({"functionCall": {"name": "find", "willContinue": True}}),
        obj(partial({"jsonPath": "$.q", "stringValue": "cats", "willContinue": True})),
        obj(text(""), finish="STOP"),
    )
    assert aggregate(chunks).message.tool_calls == [
        ToolCall(id="call_resp1_0", name="find", arguments='{"q":"cats"}')
    ]


def test_a_partial_call_without_arguments_is_an_empty_object() -> None:
    chunks = stream(
        obj({"functionCall": {"name": "ping", "willContinue": True}}),
        obj({"functionCall": {}}, finish="STOP"),
    )
    assert aggregate(chunks).message.tool_calls == [
        ToolCall(id="call_resp1_0", name="ping", arguments="{}")
    ]


def test_a_stray_end_of_call_marker_makes_no_call() -> None:
    chunks = stream(obj({"functionCall": {}}), obj(text("hi"), finish="STOP"))
    assert aggregate(chunks).message.tool_calls is None


def test_json_paths_are_parsed() -> None:
    assert parse_json_path("$.a.b[12]['c.d']") == ("a", "b", 12, "c.d")
    assert parse_json_path("$") is None
    assert parse_json_path("a.b") is None
    assert parse_json_path("$.a[x]") is None


# -- streaming: endings and failures ------------------------------------------------------------


@pytest.mark.parametrize(
    ("native", "normalised"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "other"),
        ("UNEXPECTED_TOOL_CALL", "other"),
        ("TOO_MANY_TOOL_CALLS", "other"),
        ("LANGUAGE", "other"),
        ("OTHER", "other"),
        ("FINISH_REASON_UNSPECIFIED", "other"),
        ("SOMETHING_NEW", "other"),
    ],
)
def test_finish_reasons_are_normalised_and_the_native_one_kept(
    native: str, normalised: str
) -> None:
    chunks = stream(obj(text("x"), finish=native))
    assert chunks[-1].finish_reason == normalised
    assert chunks[-1].metadata is not None
    assert chunks[-1].metadata["native_finish_reason"] == native


def test_a_safety_blocked_answer_ends_with_content_filter() -> None:
    blocked: dict[str, Any] = {
        "candidates": [{"content": {}, "finishReason": "SAFETY", "index": 0}],
        "usageMetadata": counts(14),
        "responseId": "r",
    }
    chunks = stream(blocked)
    assert len(chunks) == 1
    assert chunks[0].finish_reason == "content_filter"
    assert aggregate(chunks).message.content is None


def test_a_blocked_prompt_is_a_final_content_filter_chunk() -> None:
    decoder = sse_decoder()
    chunks = decoder.feed(
        sse(
            {
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "no"},
                "usageMetadata": counts(8),
                "responseId": "rb",
            }
        )
    )
    assert decoder.done
    assert decoder.close() == []
    assert len(chunks) == 1
    assert chunks[0].finish_reason == "content_filter"
    assert chunks[0].metadata == {
        "block_reason": "PROHIBITED_CONTENT",
        "block_reason_message": "no",
    }
    assert chunks[0].usage == Usage(prompt_tokens=8)


def test_an_error_object_in_the_stream_is_an_error_chunk_and_the_end() -> None:
    error = json.loads(error_body(503, "UNAVAILABLE", "The model is overloaded."))
    decoder = sse_decoder()
    chunks = decoder.feed(sse(obj(text("Hi")), error, obj(text("ignored"), finish="STOP")))
    assert [c.text for c in chunks] == ["Hi", ""]
    info = chunks[-1].error
    assert info is not None
    assert (info.code, info.status, info.retryable) == (ErrorCode.PROVIDER_ERROR, 503, True)
    assert "overloaded" in info.message
    assert decoder.done
    assert decoder.close() == []


def test_a_stream_ending_without_a_finish_reason_fails() -> None:
    decoder = sse_decoder()
    chunks = decoder.feed(sse(obj(text("Hel"))))
    assert not decoder.done
    closing = decoder.close()
    assert [c.text for c in chunks] == ["Hel"]
    assert len(closing) == 1
    assert closing[0].error is not None
    assert closing[0].error.code == ErrorCode.STREAMING_FAILED


def test_a_stream_cut_inside_an_event_fails() -> None:
    data = sse(obj(text("a")), obj(text("b"), finish="STOP"))
    decoder = sse_decoder()
    chunks = decoder.feed(data[: len(data) - 20]) + decoder.close()
    assert chunks[-1].error is not None
    assert chunks[-1].error.code == ErrorCode.STREAMING_FAILED


def test_an_error_written_outside_data_lines_is_reported() -> None:
    raw = b"\r\n".join(
        json.dumps(json.loads(error_body(429, "RESOURCE_EXHAUSTED")), indent=2)
        .encode()
        .splitlines()
    )
    decoder = sse_decoder()
    chunks = feed_all(decoder, sse(obj(text("a"))) + raw + b"\r\n")
    info = chunks[-1].error
    assert info is not None
    assert (info.code, info.status) == (ErrorCode.RATE_LIMIT_EXCEEDED, 429)


def test_a_malformed_event_is_an_error_chunk() -> None:
    chunks = feed_all(
        sse_decoder(), b"data: {not json\r\n\r\n" + sse(obj(text("x"), finish="STOP"))
    )
    assert len(chunks) == 1
    assert chunks[0].error is not None
    assert chunks[0].error.code == ErrorCode.STREAMING_FAILED


# -- the JSON-array framing ---------------------------------------------------------------------

ARRAY_OBJECTS = (
    obj(thought('Braces {in} "quotes" and \\ back\\slashes', thoughtSignature="T")),
    obj(text("Caf\u00e9 \u2603 } ] , [ {"), usage=counts(3, 1)),
    obj(call("f", {"a": [1, {"b": "}"}]}), text("done"), finish="STOP", usage=counts(3, 4)),
)


def test_json_array_split_at_every_byte_gives_the_same_chunks() -> None:
    data = json_array(*ARRAY_OBJECTS)
    whole = feed_all(array_decoder(), data)
    assert whole == feed_all(sse_decoder(), sse(*ARRAY_OBJECTS))
    for cut in range(len(data) + 1):
        assert feed_all(array_decoder(), data, [cut]) == whole, cut
    byte_by_byte = array_decoder()
    chunks = [c for i in range(len(data)) for c in byte_by_byte.feed(data[i : i + 1])]
    assert chunks + byte_by_byte.close() == whole
    assert byte_by_byte.done


def test_json_array_scanner_finds_objects_across_reads() -> None:
    scanner = JSONArrayScanner()
    assert scanner.feed(b'[{"a": "x\\') == []
    assert scanner.pending
    assert scanner.feed(b'"}"}\n,\r') == [b'{"a": "x\\"}"}']
    assert scanner.feed(b'\n{"b": {}}\n]') == [b'{"b": {}}']
    assert not scanner.pending


def test_json_array_with_garbage_between_objects_fails() -> None:
    chunks = feed_all(array_decoder(), b'[{"candidates": []}\n, nope')
    assert chunks[-1].error is not None
    assert chunks[-1].error.code == ErrorCode.STREAMING_FAILED


def test_a_truncated_json_array_fails() -> None:
    data = json_array(obj(text("a")), obj(text("b"), finish="STOP"))
    chunks = feed_all(array_decoder(), data[:-30])
    assert [c.text for c in chunks[:-1]] == ["a"]
    assert chunks[-1].error is not None


def test_an_error_element_in_a_json_array_is_an_error_chunk() -> None:
    data = json_array(obj(text("a")), json.loads(error_body(500, "INTERNAL")))
    chunks = feed_all(array_decoder(), data)
    info = chunks[-1].error
    assert info is not None
    assert (info.code, info.retryable) == (ErrorCode.PROVIDER_ERROR, True)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    texts = draw(st.lists(st.text(max_size=12), min_size=1, max_size=4))
    objects: list[dict[str, Any]] = []
    for n, piece in enumerate(texts):
        parts = [thought(piece)] if draw(st.booleans()) else [text(piece)]
        if draw(st.booleans()):
            parts.append(call("f", {"k": piece, "n": n}, thoughtSignature=piece or "s"))
        objects.append(obj(*parts, usage=counts(3, n + 1)))
    objects[-1]["candidates"][0]["finishReason"] = "STOP"
    cuts = draw(st.lists(st.integers(min_value=0, max_value=4000), max_size=8))
    return objects, cuts


@given(streams())
def test_any_split_of_the_bytes_gives_the_same_chunks_in_both_framings(
    case: tuple[list[dict[str, Any]], list[int]],
) -> None:
    objects, cuts = case
    sse_bytes = sse(*objects)
    array_bytes = json_array(*objects)
    expected = feed_all(sse_decoder(), sse_bytes)
    assert expected[-1].finish_reason is not None
    assert feed_all(sse_decoder(), sse_bytes, [c % (len(sse_bytes) + 1) for c in cuts]) == expected
    assert (
        feed_all(array_decoder(), array_bytes, [c % (len(array_bytes) + 1) for c in cuts])
        == expected
    )


# -- whole responses ----------------------------------------------------------------------------


def test_a_stream_aggregates_to_the_whole_response_for_the_same_content() -> None:
    usage = counts(20, 9, 5, cachedContentTokenCount=4)
    whole = obj(
        thought("Plan: call the tool.", thoughtSignature="SIG1"),
        text("Checking the weather."),
        call("get_weather", {"city": "Paris"}, thoughtSignature="SIG2"),
        call("get_weather", {"city": "Oslo"}),
        finish="STOP",
        usage=usage,
        response_id="same",
    )
    pieces = [
        obj(thought("Plan: "), usage=counts(20, 0, 3), response_id="same"),
        obj(
            thought("call the tool.", thoughtSignature="SIG1"),
            usage=counts(20, 0, 5),
            response_id="same",
        ),
        obj(text("Checking "), usage=counts(20, 2, 5), response_id="same"),
        obj(text("the weather."), usage=counts(20, 5, 5), response_id="same"),
        obj(
            call("get_weather", {"city": "Paris"}, thoughtSignature="SIG2"),
            call("get_weather", {"city": "Oslo"}),
            finish="STOP",
            usage=usage,
            response_id="same",
        ),
    ]
    codec = GeminiCodec()
    req = request(stream=False)
    decoded = codec.decode_response(req, json.dumps(whole).encode())
    streamed = aggregate(feed_all(codec.stream_decoder(req), sse(*pieces)))
    assert msgspec.structs.replace(decoded, created=WHEN) == streamed
    assert decoded.finish_reason == "tool_calls"
    assert decoded.id == "same"
    assert decoded.model == "gemini-2.5-flash-001"
    assert decoded.tool_calls[0].metadata == {"thought_signature": "SIG2"}


def test_a_whole_response_without_model_version_names_the_request_model() -> None:
    body = json.dumps(
        {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}
    )
    response = GeminiCodec().decode_response(request(stream=False), body.encode())
    assert (response.model, response.provider, response.text) == ("gemini-2.5-flash", "gemini", "x")


def test_a_blocked_prompt_is_a_response_not_an_exception() -> None:
    body = json.dumps({"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "b"}).encode()
    response = GeminiCodec().decode_response(request(stream=False), body)
    assert response.finish_reason == "content_filter"
    assert response.message == Message(role="assistant")
    assert response.metadata == {"block_reason": "SAFETY"}


def test_a_whole_json_array_body_is_decoded_too() -> None:
    body = json_array(obj(text("a")), obj(text("b"), finish="STOP"))
    assert GeminiCodec().decode_response(request(stream=False), body).text == "ab"


def test_an_error_body_with_status_200_raises_the_typed_error() -> None:
    with pytest.raises(RateLimited):
        GeminiCodec().decode_response(request(), error_body(429, "RESOURCE_EXHAUSTED"))


def test_a_malformed_body_raises_provider_error() -> None:
    with pytest.raises(ProviderError):
        GeminiCodec().decode_response(request(), b"<html>oops</html>")


# -- errors, retries, limits --------------------------------------------------------------------

API_KEY_INVALID = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
}
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}


@pytest.mark.parametrize(
    ("status", "body", "expected", "retryable"),
    [
        (400, error_body(400, "INVALID_ARGUMENT"), InvalidRequest, False),
        (
            400,
            error_body(400, "INVALID_ARGUMENT", "bad key", API_KEY_INVALID),
            AuthenticationError,
            False,
        ),
        (400, error_body(400, "FAILED_PRECONDITION"), InvalidRequest, False),
        (403, error_body(403, "PERMISSION_DENIED"), AuthenticationError, False),
        (404, error_body(404, "NOT_FOUND"), ModelNotSupported, False),
        (429, error_body(429, "RESOURCE_EXHAUSTED"), RateLimited, True),
        (500, error_body(500, "INTERNAL"), ProviderError, True),
        (503, error_body(503, "UNAVAILABLE"), ProviderOverloaded, True),
        (504, error_body(504, "DEADLINE_EXCEEDED"), InvocationTimeout, True),
        (502, b"<html>Bad Gateway</html>", ProviderError, True),
        (400, b"not json", InvalidRequest, False),
        (401, b"", AuthenticationError, False),
    ],
)
def test_errors_map_by_canonical_status_and_details(
    status: int, body: bytes, expected: type[LLMError], retryable: bool
) -> None:
    error = GeminiCodec().map_error(status, {}, body)
    assert type(error) is expected
    assert (error.status, error.provider, error.retryable) == (status, "gemini", retryable)
    assert GeminiCodec().retry_advice(error, {}).retryable is retryable


def test_a_rate_limit_waits_for_the_retry_info_delay() -> None:
    body = error_body(429, "RESOURCE_EXHAUSTED", "quota", {"@type": "x.Help"}, RETRY_INFO)
    codec = GeminiCodec()
    error = codec.map_error(429, {}, body)
    assert error.retry_after == 26.0
    assert error.message == "quota"
    assert error.details == {"status": "RESOURCE_EXHAUSTED"}
    assert codec.retry_advice(error, {}) == codec.retry_advice(error, {"retry-after": "3"})
    assert codec.retry_advice(error, {}).delay == 26.0


def test_without_retry_info_a_retry_after_header_gives_the_delay() -> None:
    codec = GeminiCodec()
    error = codec.map_error(503, {"retry-after": "4"}, error_body(503, "UNAVAILABLE"))
    assert codec.retry_advice(error, {"retry-after": "4"}).delay == 4.0


def test_the_bad_key_reason_is_in_the_details() -> None:
    error = GeminiCodec().map_error(
        400, {}, error_body(400, "INVALID_ARGUMENT", "k", API_KEY_INVALID)
    )
    assert error.details == {"status": "INVALID_ARGUMENT", "reason": "API_KEY_INVALID"}


def test_an_error_wrapped_in_a_json_array_is_understood() -> None:
    body = b"[" + error_body(429, "RESOURCE_EXHAUSTED", "slow down", RETRY_INFO) + b"]"
    error = GeminiCodec().map_error(429, {}, body)
    assert isinstance(error, RateLimited)
    assert (error.message, error.retry_after) == ("slow down", 26.0)


def test_errors_without_a_status_keep_their_own_retry_decision() -> None:
    codec = GeminiCodec()
    assert codec.retry_advice(StreamingFailed("cut"), {}).retryable
    assert not codec.retry_advice(InvalidRequest("bad"), {}).retryable


def test_gemini_has_no_rate_limit_headers() -> None:
    codec = GeminiCodec()
    assert codec.parse_rate_limits({"content-type": "application/json"}) is None
    limits = codec.parse_rate_limits({"retry-after": "7"})
    assert limits is not None
    assert limits.retry_after == 7.0


# -- token counting and models ------------------------------------------------------------------


def test_counting_plain_contents_posts_them_alone() -> None:
    http = GeminiCodec().count_tokens_request(request(user("Hello")), KEY)
    assert http.url == f"{BASE}/models/gemini-2.5-flash:countTokens"
    assert http.headers["x-goog-api-key"] == KEY
    assert body_of(http) == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


def test_counting_with_a_system_instruction_and_tools_uses_the_full_request_form() -> None:
    http = GeminiCodec().count_tokens_request(
        request(system("Be brief."), user("Hi"), tools=[WEATHER]), None
    )
    inner = body_of(http)["generateContentRequest"]
    assert inner["model"] == "models/gemini-2.5-flash"
    assert inner["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert inner["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_a_token_count_is_total_tokens() -> None:
    codec = GeminiCodec()
    assert codec.decode_count_tokens(b'{"totalTokens": 12, "promptTokensDetails": []}') == 12
    assert codec.decode_count_tokens(b"{}") == 0
    with pytest.raises(ProviderError):
        codec.decode_count_tokens(b"[1]")


MODELS = json.dumps(
    {
        "models": [
            {
                "name": "models/gemini-9.0-flash",
                "displayName": "Gemini 9 Flash",
                "version": "9.0",
                "inputTokenLimit": 2000000,
                "outputTokenLimit": 64000,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "thinking": True,
            },
            {
                "name": "models/gemini-2.0-flash",
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 8192,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            },
            {
                "name": "models/text-embedding-9",
                "supportedGenerationMethods": ["embedContent", "countTokens"],
            },
            {
                "name": "models/gemini-9-flash-preview-tts",
                "supportedGenerationMethods": ["generateContent"],
            },
        ],
        "nextPageToken": "next",
    }
).encode()


def test_listing_models_asks_for_one_big_page() -> None:
    http = GeminiCodec().list_models_request(KEY)
    assert (http.method, http.url) == ("GET", f"{BASE}/models?pageSize=1000")
    assert http.headers == {"x-goog-api-key": KEY}


def test_models_lose_their_prefix_and_get_limits_and_features() -> None:
    models = {m.id: m for m in GeminiCodec(name="google").decode_models(MODELS)}
    assert list(models) == [
        "gemini-9.0-flash",
        "gemini-2.0-flash",
        "text-embedding-9",
        "gemini-9-flash-preview-tts",
    ]
    flash = models["gemini-9.0-flash"]
    assert (flash.provider, flash.display_name, flash.context_window, flash.max_output_tokens) == (
        "google",
        "Gemini 9 Flash",
        2000000,
        64000,
    )
    assert flash.features == frozenset(Feature) - {Feature.MCP}
    assert Feature.REASONING not in models["gemini-2.0-flash"].features
    assert Feature.FUNCTION_CALLING in models["gemini-2.0-flash"].features
    assert models["text-embedding-9"].features == {Feature.COUNT_TOKENS}
    tts = models["gemini-9-flash-preview-tts"].features
    assert Feature.VISION not in tts
    assert Feature.FUNCTION_CALLING not in tts


def test_a_malformed_model_list_raises_provider_error() -> None:
    with pytest.raises(ProviderError):
        GeminiCodec().decode_models(b'{"models": 3}')


def test_known_models_include_the_current_flash_and_pro() -> None:
    known = {m.id: m for m in GeminiCodec().known_models()}
    assert {"gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash"} <= set(known)
    assert known["gemini-2.5-pro"].supports(Feature.REASONING)
    assert not known["gemini-2.0-flash"].supports(Feature.REASONING)
    assert known["gemini-2.5-flash"].context_window == 1_048_576


def test_supports_answers_for_the_provider_and_for_a_model() -> None:
    codec = GeminiCodec()
    assert codec.supports(Feature.VISION)
    assert not codec.supports(Feature.MCP)
    assert codec.supports(Feature.REASONING, "gemini-2.5-flash")
    assert codec.supports(Feature.REASONING, "gemini-3.1-pro-preview")
    assert not codec.supports(Feature.REASONING, "gemini-2.0-flash-lite")
    assert not codec.supports(Feature.FUNCTION_CALLING, "gemini-2.5-flash-image")


# -- validation ---------------------------------------------------------------------------------


def test_a_valid_request_passes_validation() -> None:
    GeminiCodec().validate(
        request(user("Hi", ImagePart.from_url("https://x.example/a.png")), tools=[WEATHER])
    )


def test_images_to_a_speech_model_are_refused() -> None:
    bad = Request(
        model="gemini-2.5-flash-preview-tts",
        messages=[user("Say it", ImagePart.from_url("https://x.example/a.png"))],
    )
    with pytest.raises(ModelNotSupported) as caught:
        GeminiCodec().validate(bad)
    assert caught.value.details["feature"] == "vision"


@pytest.mark.parametrize(
    "fields",
    [{"tools": [WEATHER]}, {"response_format": ResponseFormat.json()}],
)
def test_features_an_image_model_lacks_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ModelNotSupported):
        GeminiCodec().validate(
            Request(model="gemini-2.5-flash-image", messages=[user("x")], **fields)
        )


def test_validation_finds_structural_problems_too() -> None:
    with pytest.raises(InvalidRequest):
        GeminiCodec().validate(request(user("q"), tool_result("nobody", "x")))


# -- edge cases ---------------------------------------------------------------------------------


def test_empty_messages_send_no_empty_contents() -> None:
    body = encode(
        Message(role="system"),
        system(""),
        Message(role="system", content=[TextPart(text="Rules."), TextPart(text="")]),
        user(""),
        Message(role="user", content=[ReasoningPart(text="not for Gemini"), TextPart(text="q")]),
        Message(role="assistant"),
        Message(role="assistant", content=[TextPart(text=""), ReasoningPart()]),
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Rules."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "q"}]}]


def test_two_bare_signatures_in_a_row_each_keep_a_part() -> None:
    image = ImagePart.from_url("https://x.example/a.png")
    content: list[Any] = [
        ReasoningPart(signature="S1"),
        ReasoningPart(signature="S2"),
        image,
        ReasoningPart(signature="S3"),
        ReasoningPart(text="more", signature="S4"),
    ]
    parts = encode(user("q"), Message(role="assistant", content=content))["contents"][1]["parts"]
    assert parts == [
        {"text": "", "thoughtSignature": "S1"},
        {"fileData": {"mimeType": "image/png", "fileUri": image.url}, "thoughtSignature": "S2"},
        {"text": "", "thoughtSignature": "S3"},
        {"text": "more", "thought": True, "thoughtSignature": "S4"},
    ]


def test_a_tool_result_that_only_looks_like_json_is_sent_as_output() -> None:
    calls = [ToolCall(id="c1", name="f")]
    body = encode(user("q"), assistant(tool_calls=calls), tool_result("c1", "{not json"))
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {
        "output": "{not json"
    }


def test_an_empty_tool_result_is_an_empty_output() -> None:
    calls = [ToolCall(id="c1", name="f")]
    result = Message(role="tool", tool_call_id="c1")
    body = encode(user("q"), assistant(tool_calls=calls), result)
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": ""}


def test_two_signed_blocks_in_one_object_become_two_chunks() -> None:
    chunks = stream(
        obj(thought("a", thoughtSignature="S1"), text("b", thoughtSignature="S2"), finish="STOP")
    )
    assert [(c.reasoning, c.reasoning_signature, c.text) for c in chunks] == [
        ("a", "S1", ""),
        ("", "S2", "b"),
    ]
    assert aggregate(chunks).message.content == [
        ReasoningPart(text="a", signature="S1", provider="gemini"),
        ReasoningPart(signature="S2", provider="gemini"),
        TextPart(text="b"),
    ]


def test_each_candidate_is_its_own_choice() -> None:
    first = obj(text("a"), usage=counts(2, 1))
    first["candidates"].append({"content": {"parts": [text("x")]}, "index": 1})
    last = obj(call("f", {}), finish="STOP")
    last["candidates"].append(
        {"content": {"parts": [call("g", {})]}, "index": 1, "finishReason": "MAX_TOKENS"}
    )
    decoder = sse_decoder()
    chunks = decoder.feed(sse(first))
    assert not decoder.done
    chunks += decoder.feed(sse(last))
    assert decoder.done
    response = aggregate(chunks)
    assert [(c.index, c.message.text, c.finish_reason) for c in response.choices] == [
        (0, "a", "tool_calls"),
        (1, "x", "length"),
    ]
    assert [c.tool_calls[0].id for c in response.choices] == ["call_resp1_0", "call_resp1_1_0"]
    assert chunks[0].usage is None  # the usage goes on the object's last chunk
    assert chunks[1].usage is not None


def test_an_object_with_only_usage_is_a_usage_chunk() -> None:
    chunks = stream({"usageMetadata": counts(4), "responseId": "u"}, obj(text("a"), finish="STOP"))
    assert chunks[0] == StreamChunk(
        id="u", provider="gemini", model="gemini-2.5-flash", usage=Usage(prompt_tokens=4)
    )


def test_partial_fragments_handle_odd_sequences() -> None:
    chunks = stream(
        # fragments with no call opened first: an anonymous call is started for them
        obj(partial({"jsonPath": "$.a", "stringValue": "x", "willContinue": True})),
        obj(partial({"jsonPath": "$.a", "stringValue": "y", "willContinue": True})),
        # a signature arriving on a later fragment part
        obj({**partial({"jsonPath": "$.a", "stringValue": "z"}), "thoughtSignature": "LATE"}),
        obj(partial({"jsonPath": "$.a", "stringValue": ""})),  # a repeated end marker
        obj(partial({"jsonPath": "$.b"}, {"jsonPath": "nonsense", "stringValue": "q"})),
        obj(partial({"jsonPath": "$.c", "stringValue": "open", "willContinue": True})),
        obj(partial({"jsonPath": "$.d", "boolValue": False}, more=False)),
        obj(text("after"), finish="STOP"),
    )
    assert aggregate(chunks).message.tool_calls == [
        ToolCall(
            id="call_resp1_0",
            name="",
            arguments='{"a":"xyz","c":"open","d":false}',
            metadata={"thought_signature": "LATE"},
        )
    ]


def test_a_stray_error_search_skips_false_matches() -> None:
    raw = b'{"error": 1}\r\n' + error_body(500, "INTERNAL", "server fell over")
    chunks = feed_all(sse_decoder(), sse(obj(text("a"))) + raw)
    info = chunks[-1].error
    assert info is not None
    assert (info.code, info.message) == (ErrorCode.PROVIDER_ERROR, "server fell over")


def test_a_failed_json_array_ignores_what_follows() -> None:
    decoder = array_decoder()
    assert decoder.feed(b"nope")[0].error is not None
    assert decoder.done
    assert decoder.feed(json_array(obj(text("a"), finish="STOP"))) == []
    assert decoder.close() == []


def test_a_truncated_whole_json_array_body_is_a_provider_error() -> None:
    body = json_array(obj(text("a")), obj(text("b"), finish="STOP"))[:-40]
    with pytest.raises(ProviderError):
        GeminiCodec().decode_response(request(stream=False), body)


def test_an_error_element_in_a_whole_json_array_body_raises_it() -> None:
    body = json_array(obj(text("a")), json.loads(error_body(503, "UNAVAILABLE")))
    with pytest.raises(ProviderOverloaded):
        GeminiCodec().decode_response(request(stream=False), body)


def test_a_schema_needs_a_model_with_structured_output() -> None:
    schema = ResponseFormat.schema("Out", {"type": "object"})
    with pytest.raises(ModelNotSupported):
        GeminiCodec().validate(
            Request(model="gemma-3-27b-it", messages=[user("x")], response_format=schema)
        )


@pytest.mark.parametrize(
    ("model", "thinks"),
    [
        ("gemini-flash-latest", True),
        ("gemini-2.0-flash-thinking-exp", True),
        ("gemini-1.5-pro", False),
        ("learnlm-2.0-flash", False),
    ],
)
def test_reasoning_is_judged_from_the_name_when_unknown(model: str, thinks: bool) -> None:
    assert GeminiCodec().supports(Feature.REASONING, model) is thinks


def test_a_call_may_start_with_its_first_fragments_in_the_same_part() -> None:
    start = {
        "functionCall": {
            "name": "find",
            "id": "v1",
            "partialArgs": [{"jsonPath": "$.q", "stringValue": "ca", "willContinue": True}],
            "willContinue": True,
        }
    }
    whole_in_one = {
        "functionCall": {"name": "count", "partialArgs": [{"jsonPath": "$.n", "numberValue": 3}]}
    }
    chunks = stream(
        obj(start),
        obj(partial({"jsonPath": "$.q", "stringValue": "ts"}, more=False)),
        obj(whole_in_one, finish="STOP"),
    )
    assert aggregate(chunks).message.tool_calls == [
        ToolCall(id="v1", name="find", arguments='{"q":"cats"}'),
        ToolCall(id="call_resp1_1", name="count", arguments='{"n":3}'),
    ]


# -- values out of range and JSON nested too deep: absent, or a typed error ---------------------

NESTED = b"[" * 5000 + b"]" * 5000
"""JSON nested deeper than any decoder follows."""
DEEP_FIELD = b'{"extra": ' + NESTED + b"}"
"""An object with a field the codec does not read, nested too deep."""


def test_a_retry_delay_in_the_body_out_of_range_gives_way_to_the_header() -> None:
    delay = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "99999999999s"}
    body = error_body(429, "RESOURCE_EXHAUSTED", "quota", delay)
    codec = GeminiCodec()
    assert codec.map_error(429, {}, body).retry_after is None
    assert codec.map_error(429, {"retry-after": "4"}, body).retry_after == 4.0


def test_a_retry_after_date_far_ahead_is_an_hour() -> None:
    limits = GeminiCodec().parse_rate_limits({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"})
    assert limits is not None
    assert limits.retry_after == 3600.0


def test_a_streamed_usage_with_a_count_out_of_range_is_absent() -> None:
    chunks = stream(obj(text("Hi"), finish="STOP", usage=counts(-1, 2)))
    assert [chunk.usage for chunk in chunks] == [None]
    assert chunks[0].text == "Hi"


def test_a_body_usage_with_a_count_out_of_range_is_absent() -> None:
    body = json.dumps(obj(text("Hi"), finish="STOP", usage=counts(5, 10**40))).encode()
    response = GeminiCodec().decode_response(request(), body)
    assert response.text == "Hi"
    assert response.usage is None


def test_an_sse_object_nested_too_deep_is_a_streaming_failure_after_what_came() -> None:
    data = sse(obj(text("Hi"))) + b"data: " + DEEP_FIELD + b"\r\n\r\n"
    chunks = feed_all(sse_decoder(), data)
    assert chunks[0].text == "Hi"
    error = chunks[-1].error
    assert error is not None
    assert error.code == ErrorCode.STREAMING_FAILED


def test_a_json_array_element_nested_too_deep_is_a_streaming_failure() -> None:
    chunks = feed_all(array_decoder(), b"[" + DEEP_FIELD + b"]")
    assert len(chunks) == 1
    error = chunks[0].error
    assert error is not None
    assert error.code == ErrorCode.STREAMING_FAILED


def test_a_stray_error_object_nested_too_deep_is_a_truncated_stream() -> None:
    chunks = feed_all(sse_decoder(), b'{"error": {"code": 500, "extra": ' + NESTED + b"}}")
    assert len(chunks) == 1
    error = chunks[0].error
    assert error is not None
    assert error.message == "the Gemini stream ended before a finishReason"


def test_a_body_nested_too_deep_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="malformed Gemini response"):
        GeminiCodec().decode_response(request(), DEEP_FIELD)


def test_an_error_body_nested_too_deep_is_classified_by_its_status() -> None:
    error = GeminiCodec().map_error(503, {}, b'{"error": {"code": 503, "extra": ' + NESTED + b"}}")
    assert isinstance(error, ProviderOverloaded)
    assert error.status == 503


def test_a_token_count_nested_too_deep_is_a_provider_error() -> None:
    with pytest.raises(ProviderError):
        GeminiCodec().decode_count_tokens(DEEP_FIELD)


def test_a_models_list_nested_too_deep_is_a_provider_error() -> None:
    with pytest.raises(ProviderError):
        GeminiCodec().decode_models(DEEP_FIELD)


def test_a_tool_result_nested_too_deep_is_sent_as_text() -> None:
    deep = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    body = encode(
        user("q"), assistant(tool_calls=[ToolCall(id="c1", name="f")]), tool_result("c1", deep)
    )
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": deep}
