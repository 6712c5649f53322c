"""Specification of the OpenAI-compatible presets and Azure (`llm_invocation.providers.compatible`).

Each quirk is shown on a tiny inline body written for the test.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from llm_invocation.errors import (
    ConfigurationError,
    ErrorCode,
    InvalidRequest,
    ProviderNotFound,
    RateLimited,
)
from llm_invocation.providers._base import HttpRequest, RateLimitInfo, RetryAdvice
from llm_invocation.providers.compatible import (
    PRESETS,
    AzureOpenAICodec,
    OpenAICompatibleCodec,
    Preset,
    make_compatible_codec,
    preset,
)
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.types import (
    Feature,
    ImagePart,
    Message,
    ModelOptions,
    ReasoningPart,
    Request,
    StreamAggregator,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    assistant,
    tool_result,
    user,
)

KEY = "gsk_test0123456789abcdefghijkl"


def request(model: str = "m", *messages: Message, **fields: Any) -> Request:
    return Request(model=model, messages=list(messages) or [user("Hi")], **fields)


def body_of(http: HttpRequest) -> dict[str, Any]:
    assert http.body is not None
    body: dict[str, Any] = json.loads(http.body)
    return body


def decode(codec: OpenAICodec, data: bytes) -> list[StreamChunk]:
    decoder = codec.stream_decoder(request())
    return decoder.feed(data) + decoder.close()


def aggregate(chunks: list[StreamChunk]) -> Any:
    agg = StreamAggregator()
    for c in chunks:
        agg.add(c)
    return agg.response()


# ---------------------------------------------------------------------------------------------
# Presets and construction


@pytest.mark.parametrize(
    ("name", "base_url", "env_key", "requires_key"),
    [
        ("ollama", "http://localhost:11434/v1", None, False),
        ("vllm", "http://localhost:8000/v1", "VLLM_API_KEY", False),
        ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", True),
        ("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", True),
        ("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", True),
        ("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", True),
        ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", True),
    ],
)
def test_presets(name: str, base_url: str, env_key: str | None, requires_key: bool) -> None:
    found = preset(name)
    assert found is PRESETS[name]
    assert (found.name, found.base_url, found.env_key, found.requires_key) == (
        name,
        base_url,
        env_key,
        requires_key,
    )
    codec = make_compatible_codec(name)
    assert codec.name == name
    assert codec.kind == "openai-compatible"
    assert codec.encode(request(), None).url == f"{base_url}/chat/completions"


def test_an_unknown_preset_is_provider_not_found() -> None:
    with pytest.raises(ProviderNotFound) as caught:
        preset("nope")
    assert "ollama" in caught.value.details["available"]
    with pytest.raises(ProviderNotFound):
        make_compatible_codec("nope")


def test_an_unknown_name_with_a_base_url_is_a_plain_compatible_server() -> None:
    codec = make_compatible_codec("lmstudio", base_url="http://127.0.0.1:1234/v1")
    assert codec.name == "lmstudio"
    http = codec.encode(request(), None)
    assert http.url == "http://127.0.0.1:1234/v1/chat/completions"
    assert body_of(http)["stream_options"] == {"include_usage": True}


def test_a_compatible_codec_needs_a_base_url() -> None:
    with pytest.raises(ConfigurationError):
        OpenAICompatibleCodec()
    codec = OpenAICompatibleCodec(base_url="http://h/v1")
    assert codec.name == "openai-compatible"


def test_a_preset_base_url_can_be_overridden() -> None:
    codec = make_compatible_codec("ollama", base_url="http://gpu-box:11434/v1")
    assert codec.encode(request(), None).url == "http://gpu-box:11434/v1/chat/completions"


def test_preset_headers_are_sent_and_caller_headers_win() -> None:
    custom = Preset(name="gw", base_url="http://gw/v1", headers={"x-a": "1", "x-b": "2"})
    codec = OpenAICompatibleCodec(preset=custom, headers={"x-b": "3"})
    headers = codec.encode(request(), None).headers
    assert (headers["x-a"], headers["x-b"]) == ("1", "3")


def test_a_preset_is_plain_data() -> None:
    data = msgspec.json.encode(preset("groq"))
    assert msgspec.json.decode(data, type=Preset) == preset("groq")


def test_compatible_servers_know_no_models_and_refuse_no_feature() -> None:
    codec = make_compatible_codec("ollama")
    assert codec.known_models() == []
    assert codec.supports(Feature.VISION, "gpt-3.5-turbo")
    codec.validate(request("llava", user("x", ImagePart.from_url("https://e.com/a.png"))))


def test_compatible_models_list() -> None:
    codec = make_compatible_codec("vllm")
    assert codec.list_models_request(None).url == "http://localhost:8000/v1/models"
    body = (
        b'{"object":"list","data":[{"id":"qwen3","object":"model","created":0,"owned_by":"vllm"}]}'
    )
    (model,) = codec.decode_models(body)
    assert (model.id, model.provider, model.created) == ("qwen3", "vllm", None)
    assert Feature.FUNCTION_CALLING in model.features


# ---------------------------------------------------------------------------------------------
# Sending quirks


def test_no_key_no_authorization_header() -> None:
    http = make_compatible_codec("ollama").encode(request(), None)
    assert "authorization" not in http.headers


def test_a_key_is_sent_as_bearer_and_hidden_from_repr() -> None:
    http = make_compatible_codec("groq").encode(request(), KEY)
    assert http.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(http)


def test_compatible_servers_get_max_tokens_even_for_reasoning_model_ids() -> None:
    for name in ("ollama", "vllm", "groq", "together", "deepseek", "mistral"):
        body = body_of(
            make_compatible_codec(name).encode(
                request("o3-mini", options=ModelOptions(max_tokens=9)), None
            )
        )
        assert body["max_tokens"] == 9, name
        assert "max_completion_tokens" not in body, name


def test_openrouter_routes_reasoning_models_with_max_completion_tokens() -> None:
    codec = make_compatible_codec("openrouter")
    body = body_of(codec.encode(request("openai/gpt-5", options=ModelOptions(max_tokens=9)), KEY))
    assert body["max_completion_tokens"] == 9


def test_the_explicit_option_still_forces_max_completion_tokens() -> None:
    options = ModelOptions(max_tokens=9, provider_options={"use_max_completion_tokens": True})
    body = body_of(make_compatible_codec("vllm").encode(request("m", options=options), None))
    assert body["max_completion_tokens"] == 9
    assert "use_max_completion_tokens" not in body


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("ollama", True),
        ("vllm", True),
        ("openrouter", True),
        ("deepseek", True),
        ("together", True),
        ("groq", False),
        ("mistral", False),
    ],
)
def test_stream_options_are_sent_where_the_server_takes_them(name: str, sent: bool) -> None:
    body = body_of(make_compatible_codec(name).encode(request(), None))
    assert body["stream"] is True
    assert ("stream_options" in body) is sent


def test_top_k_is_sent_where_the_server_takes_it() -> None:
    options = ModelOptions(top_k=40)
    vllm = body_of(make_compatible_codec("vllm").encode(request(options=options), None))
    groq = body_of(make_compatible_codec("groq").encode(request(options=options), None))
    assert vllm["top_k"] == 40
    assert "top_k" not in groq


def test_mistral_takes_random_seed() -> None:
    body = body_of(
        make_compatible_codec("mistral").encode(request(options=ModelOptions(seed=3)), None)
    )
    assert body["random_seed"] == 3
    assert "seed" not in body


def test_deepseek_gets_reasoning_back_as_reasoning_content() -> None:
    thought = Message(
        role="assistant",
        content=[ReasoningPart(text="Roll first."), TextPart(text="Rolling.")],
        tool_calls=[ToolCall(id="c1", name="roll", arguments="{}")],
    )
    req = request("deepseek-reasoner", user("Guess 4"), thought, tool_result("c1", "4"))
    body = body_of(make_compatible_codec("deepseek").encode(req, KEY))
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "Rolling.",
        "reasoning_content": "Roll first.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "roll", "arguments": "{}"}}
        ],
    }
    plain = body_of(make_compatible_codec("groq").encode(req, KEY))
    assert "reasoning_content" not in plain["messages"][1]


def test_compatible_legacy_completions_url() -> None:
    req = Request(model="m", messages=[user("x")], metadata={"endpoint": "completions"})
    assert make_compatible_codec("vllm").encode(req, None).url == (
        "http://localhost:8000/v1/completions"
    )


# ---------------------------------------------------------------------------------------------
# Receiving quirks (tiny bodies written for these tests)

OLLAMA_BODY = (
    b'{"id":"chatcmpl-7","object":"chat.completion","created":1765962162,"model":"qwen3:0.6b",'
    b'"system_fingerprint":"fp_ollama","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Paris","reasoning":"The capital..."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}'
)


def test_ollama_message_reasoning() -> None:
    response = make_compatible_codec("ollama").decode_response(request(), OLLAMA_BODY)
    assert response.reasoning == "The capital..."
    assert response.text == "Paris"
    assert response.provider == "ollama"
    assert response.system_fingerprint == "fp_ollama"


OLLAMA_STREAM = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"qwen3",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"Hmm"},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"qwen3",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Yes"},'
    b'"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def test_ollama_stream_reasoning() -> None:
    response = aggregate(decode(make_compatible_codec("ollama"), OLLAMA_STREAM))
    assert (response.reasoning, response.text, response.finish_reason) == ("Hmm", "Yes", "stop")


GROQ_STREAM = (
    b'data: {"id":"c-1","object":"chat.completion.chunk","created":1,"model":"llama",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}],'
    b'"x_groq":{"id":"req_1","seed":5}}\n\n'
    b'data: {"id":"c-1","object":"chat.completion.chunk","created":1,"model":"llama",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"id":"t1","type":"function",'
    b'"function":{"name":"weather","arguments":"{\\"city\\":\\"Oslo\\"}"},"index":0}]},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"c-1","object":"chat.completion.chunk","created":1,"model":"llama",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],'
    b'"x_groq":{"id":"req_1","usage":{"queue_time":0.04,"prompt_tokens":21,"prompt_time":0.01,'
    b'"completion_tokens":5,"total_tokens":26}}}\n\n'
    b"data: [DONE]\n\n"
)


def test_groq_usage_in_x_groq_on_the_finish_chunk() -> None:
    chunks = decode(make_compatible_codec("groq"), GROQ_STREAM)
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert last.usage == Usage(prompt_tokens=21, completion_tokens=5, total_tokens=26)
    response = aggregate(chunks)
    assert response.tool_calls == [ToolCall(id="t1", name="weather", arguments='{"city":"Oslo"}')]


GROQ_ERROR_STREAM = (
    b'data: {"id":"c-2","object":"chat.completion.chunk","created":1,"model":"gpt-oss",'
    b'"choices":[{"index":0,"delta":{"reasoning":"We need","channel":"analysis"},'
    b'"finish_reason":null}]}\n\n'
    b"event: error\n"
    b'data: {"error":{"message":"Tool call validation failed","type":"invalid_request_error",'
    b'"code":"tool_use_failed","failed_generation":"{}","status_code":400}}\n\n'
)


def test_groq_error_event_after_200_has_its_status() -> None:
    chunks = decode(make_compatible_codec("groq"), GROQ_ERROR_STREAM)
    assert chunks[0].reasoning == "We need"
    error = chunks[-1].error
    assert error is not None
    assert error.code is ErrorCode.INVALID_REQUEST
    assert error.status == 400
    assert error.message == "Tool call validation failed"
    assert error.details is not None
    assert error.details["code"] == "tool_use_failed"
    assert error.details["failed_generation"] == "{}"
    assert len(chunks) == 2  # no truncation error after the provider's own


TOGETHER_HEADERS = {
    "retry-after": "2",
    "x-ratelimit": "false",
    "x-ratelimit-limit": "10",
    "x-ratelimit-limit-tokens": "3000",
    "x-ratelimit-remaining": "19",
    "x-ratelimit-remaining-tokens": "3000",
    "x-ratelimit-reset": "2",
}


def test_together_retry_after_on_success_is_ignored() -> None:
    info = make_compatible_codec("together").parse_rate_limits(TOGETHER_HEADERS)
    assert info == RateLimitInfo(
        requests_limit=10,
        requests_remaining=19,
        requests_reset=2.0,
        tokens_limit=3000,
        tokens_remaining=3000,
    )


def test_together_still_honours_retry_after_on_a_429() -> None:
    codec = make_compatible_codec("together")
    error = codec.map_error(429, {"retry-after": "2"}, b'{"error":{"message":"slow down"}}')
    assert codec.retry_advice(error, {"retry-after": "2"}) == RetryAdvice(retryable=True, delay=2.0)


def test_other_servers_report_retry_after_in_rate_limits() -> None:
    info = make_compatible_codec("groq").parse_rate_limits({"retry-after": "2"})
    assert info == RateLimitInfo(retry_after=2.0)


OPENROUTER_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"gen-1","provider":"Bedrock","model":"anthropic/claude","object":'
    b'"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":"Hi!"},"finish_reason":null,"native_finish_reason":null}]}\n\n'
    b'data: {"id":"gen-1","provider":"Bedrock","model":"anthropic/claude","object":'
    b'"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":""},"finish_reason":"stop","native_finish_reason":"end_turn"}]}\n\n'
    b'data: {"id":"gen-1","provider":"Bedrock","model":"anthropic/claude","object":'
    b'"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":""},"finish_reason":null}],"usage":{"prompt_tokens":12,"completion_tokens":5,'
    b'"total_tokens":17,"cost":0.000222,"is_byok":false,"prompt_tokens_details":'
    b'{"cached_tokens":2,"cache_write_tokens":6},"completion_tokens_details":'
    b'{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)


def test_openrouter_comments_and_cost() -> None:
    chunks = decode(make_compatible_codec("openrouter"), OPENROUTER_STREAM)
    assert [c.text for c in chunks] == ["Hi!", "", ""]
    assert chunks[1].metadata == {"native_finish_reason": "stop"}
    assert chunks[-1].usage == Usage(
        prompt_tokens=12,
        completion_tokens=5,
        total_tokens=17,
        cache_read_tokens=2,
        cache_write_tokens=6,
        reported_cost=Decimal("0.000222"),
    )
    # The provider's figure, kept as reported; the invocation settles `cost` from it.
    assert aggregate(chunks).usage.reported_cost == Decimal("0.000222")


OPENROUTER_DUPLICATES = (
    b'data: {"id":"gen-2","model":"kimi","choices":[{"index":0,"delta":{"content":null,'
    b'"tool_calls":[{"index":0,"id":"0","type":"function","function":{"name":"llm_version",'
    b'"arguments":""}}]},"finish_reason":null}]}\n\n'
    b'data: {"id":"gen-2","model":"kimi","choices":[{"index":0,"delta":{"content":null,'
    b'"tool_calls":[{"index":0,"id":"0","type":"function","function":{"name":"llm_version",'
    b'"arguments":"{}"}}]},"finish_reason":null}]}\n\n'
    b"data: [DONE]\n\n"
)


def test_openrouter_repeated_tool_call_names_are_not_emitted_twice() -> None:
    chunks = decode(make_compatible_codec("openrouter"), OPENROUTER_DUPLICATES)
    assert [c.tool_calls for c in chunks] == [
        [ToolCallDelta(index=0, id="0", name="llm_version", arguments="")],
        [ToolCallDelta(index=0, arguments="{}")],
    ]
    response = aggregate(chunks)
    assert response.tool_calls == [ToolCall(id="0", name="llm_version", arguments="{}")]
    assert response.finish_reason == "tool_calls"


def test_openrouter_numeric_error_code() -> None:
    body = (
        b'{"error":{"code":429,"message":"Provider returned error","metadata":'
        b'{"provider_name":"Google","raw":"rate-limited upstream"}},"user_id":"u1"}'
    )
    codec = make_compatible_codec("openrouter")
    error = codec.map_error(429, {}, body)
    assert isinstance(error, RateLimited)
    assert error.retryable
    assert error.details["code"] == 429
    assert error.details["metadata"]["raw"] == "rate-limited upstream"


def test_openrouter_numeric_code_inside_a_stream_gives_the_status() -> None:
    data = b'data: {"error":{"code":502,"message":"Upstream failed"}}\n\n'
    (only,) = decode(make_compatible_codec("openrouter"), data)
    assert only.error is not None
    assert only.error.status == 502
    assert only.error.code is ErrorCode.PROVIDER_ERROR
    assert only.error.retryable


def test_leading_space_before_data_is_tolerated() -> None:
    data = b' data: {"id":"g","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    chunks = decode(make_compatible_codec("openrouter"), data + b"data: [DONE]\n\n")
    assert [c.text for c in chunks] == ["a"]


DEEPSEEK_STREAM = (
    b'data: {"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":'
    b'"First"},"finish_reason":null}]}\n\n'
    b'data: {"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",'
    b'"choices":[{"index":0,"delta":{"content":"Done","reasoning_content":null},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":6,'
    b'"total_tokens":14,"prompt_cache_hit_tokens":4,"prompt_cache_miss_tokens":4,'
    b'"completion_tokens_details":{"reasoning_tokens":3}}}\n\n'
    b"data: [DONE]\n\n"
)


def test_deepseek_reasoning_content_and_cache_hits() -> None:
    chunks = decode(make_compatible_codec("deepseek"), DEEPSEEK_STREAM)
    response = aggregate(chunks)
    assert response.reasoning == "First"
    assert response.text == "Done"
    assert response.usage == Usage(
        prompt_tokens=8,
        completion_tokens=6,
        total_tokens=14,
        cache_read_tokens=4,
        reasoning_tokens=3,
    )


def test_together_top_level_cached_tokens() -> None:
    body = (
        b'{"id":"t","object":"chat.completion","created":1,"model":"llama","prompt":[],'
        b'"choices":[{"finish_reason":"stop","seed":9949578379265081000,"index":0,'
        b'"message":{"role":"assistant","content":"4242","tool_calls":[]}}],'
        b'"usage":{"prompt_tokens":44,"completion_tokens":23,"total_tokens":67,'
        b'"cached_tokens":5}}'
    )
    response = make_compatible_codec("together").decode_response(request(), body)
    assert response.text == "4242"
    assert response.tool_calls == []
    assert response.usage is not None
    assert response.usage.cache_read_tokens == 5


def test_a_vllm_top_level_error_body() -> None:
    body = b'{"object":"error","message":"context too long","type":"BadRequestError","code":400}'
    error = make_compatible_codec("vllm").map_error(400, {}, body)
    assert isinstance(error, InvalidRequest)
    assert error.message == "context too long"


# ---------------------------------------------------------------------------------------------
# Azure OpenAI


def test_azure_url_uses_the_request_model_as_deployment() -> None:
    codec = AzureOpenAICodec(base_url="https://res.openai.azure.com/")
    http = codec.encode(request("gpt-4o"), "azure-key-0123456789")
    assert http.url == (
        "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
        "?api-version=2024-10-21"
    )
    assert codec.kind == "azure"
    assert codec.name == "azure"


def test_azure_explicit_deployment_and_api_version() -> None:
    codec = AzureOpenAICodec(
        base_url="https://res.openai.azure.com",
        deployment="prod chat",
        api_version="2025-01-01-preview",
    )
    http = codec.encode(request("gpt-4o"), "k")
    assert http.url == (
        "https://res.openai.azure.com/openai/deployments/prod%20chat/chat/completions"
        "?api-version=2025-01-01-preview"
    )


def test_azure_sends_the_key_in_api_key_not_authorization() -> None:
    key = "azure-key-0123456789"
    http = AzureOpenAICodec(base_url="https://res.openai.azure.com").encode(request(), key)
    assert http.headers["api-key"] == key
    assert "authorization" not in http.headers
    assert key not in repr(http)
    anonymous = AzureOpenAICodec(base_url="https://res.openai.azure.com").encode(request(), None)
    assert "api-key" not in anonymous.headers


def test_azure_body_is_openai_chat() -> None:
    codec = AzureOpenAICodec(base_url="https://res.openai.azure.com")
    body = body_of(codec.encode(request("o3-mini", options=ModelOptions(max_tokens=5)), "k"))
    assert body["model"] == "o3-mini"
    assert body["max_completion_tokens"] == 5
    assert body["stream_options"] == {"include_usage": True}


def test_azure_legacy_completions_and_models_urls() -> None:
    codec = AzureOpenAICodec(base_url="https://res.openai.azure.com", deployment="inst")
    req = Request(model="m", messages=[user("x")], metadata={"endpoint": "completions"})
    assert codec.encode(req, "k").url == (
        "https://res.openai.azure.com/openai/deployments/inst/completions?api-version=2024-10-21"
    )
    models = codec.list_models_request("k")
    assert models.url == "https://res.openai.azure.com/openai/models?api-version=2024-10-21"
    assert models.headers["api-key"] == "k"
    assert codec.known_models() == []


def test_azure_needs_an_endpoint() -> None:
    with pytest.raises(ConfigurationError):
        AzureOpenAICodec()


def test_azure_validates_like_openai() -> None:
    codec = AzureOpenAICodec(base_url="https://res.openai.azure.com")
    req = request("gpt-35-turbo", user("x"), assistant("y"))
    codec.validate(req)


# Gemini's OpenAI endpoint: tool-call fragments without an index, arguments split across
# index-less deltas, a metadata-only delta, and "stop" to end a turn that calls tools.
GEMINI_STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"fc-1",'
    b'"type":"function","function":{"name":"weather","arguments":"{\\"city\\":"}}]}}],'
    b'"model":"gemini-3-flash","object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":'
    b'"\\"Sydney\\"}"}}]}}],"model":"gemini-3-flash","object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"extra_content":{"google":'
    b'{"thought_signature":"sig"}}}]}}],"model":"gemini-3-flash","object":"chat.completion.chunk"}'
    b"\n\n"
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"id":"fc-2","type":"function",'
    b'"function":{"name":"time","arguments":"{}"}}]},"finish_reason":"stop"}],'
    b'"model":"gemini-3-flash","object":"chat.completion.chunk"}\n\n'
    b"data: [DONE]\n\n"
)


def test_gemini_index_less_tool_calls_and_stop() -> None:
    codec = make_compatible_codec(
        "gemini", base_url="https://generativelanguage.googleapis.com/v1beta/openai"
    )
    chunks = decode(codec, GEMINI_STREAM)
    assert [d.index for c in chunks for d in c.tool_calls or []] == [0, 0, 0, 1]
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].metadata == {"native_finish_reason": "stop"}
    response = aggregate(chunks)
    assert response.tool_calls == [
        ToolCall(
            id="fc-1",
            name="weather",
            arguments='{"city":"Sydney"}',
            metadata={"extra_content": {"google": {"thought_signature": "sig"}}},
        ),
        ToolCall(id="fc-2", name="time", arguments="{}"),
    ]
    assert response.finish_reason == "tool_calls"


# ---------------------------------------------------------------------------------------------
# Values out of range: absent


@pytest.mark.parametrize("value", ["-1", "1e999", "1e300", "1" + "0" * 400])
def test_together_unsuffixed_counts_out_of_range_are_absent(value: str) -> None:
    headers = {**TOGETHER_HEADERS, "x-ratelimit-limit": value, "x-ratelimit-remaining": value}
    info = make_compatible_codec("together").parse_rate_limits(headers)
    assert info == RateLimitInfo(requests_reset=2.0, tokens_limit=3000, tokens_remaining=3000)


def test_together_unsuffixed_reset_out_of_range_is_absent() -> None:
    headers = {**TOGETHER_HEADERS, "x-ratelimit-reset": "1e999"}
    info = make_compatible_codec("together").parse_rate_limits(headers)
    assert info is not None
    assert info.requests_reset is None


@pytest.mark.parametrize("cost", [b"-0.5", b"1e300"])
def test_an_openrouter_cost_out_of_range_is_unknown_and_the_counts_stay(cost: bytes) -> None:
    data = OPENROUTER_STREAM.replace(b'"cost":0.000222', b'"cost":' + cost)
    usage = decode(make_compatible_codec("openrouter"), data)[-1].usage
    assert usage == Usage(
        prompt_tokens=12,
        completion_tokens=5,
        total_tokens=17,
        cache_read_tokens=2,
        cache_write_tokens=6,
    )


def test_groq_usage_with_a_count_out_of_range_is_absent() -> None:
    data = GROQ_STREAM.replace(b'"completion_tokens":5', b'"completion_tokens":-5')
    chunks = decode(make_compatible_codec("groq"), data)
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage is None
