"""Provider options (``providers.<name>.options``) reach the wire for every codec, under the
request's own options; options that cannot be sent fail `open_client`, naming the key."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import pytest

import llm_invocation as llm
from llm_invocation.config import ProviderConfig
from llm_invocation.providers import make_codec
from llm_invocation.testing import (
    FakeServer,
    RecordedRequest,
    Scenario,
    Scenarios,
    WireFormat,
    open_fake_server,
)

KEY: Final = "sk-test-OPTIONS-0123456789abcdef"
SAFETY: Final = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
WEATHER: Final = llm.ToolSpec(
    name="weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)

# provider entry name -> (kind, wire format of the fake server)
ENTRIES: Final[dict[str, tuple[str, WireFormat]]] = {
    "openai": ("openai", "openai"),
    "azure": ("azure", "openai"),
    "vllm": ("vllm", "openai"),
    "mistral": ("mistral", "openai"),
    "anthropic": ("anthropic", "anthropic"),
    "gemini": ("gemini", "gemini"),
}


def entry(name: str, server: FakeServer | None, options: dict[str, Any]) -> dict[str, Any]:
    kind, wire = ENTRIES[name]
    config: dict[str, Any] = {"kind": kind, "api_key": KEY, "options": options}
    if server is not None:
        config["base_url"] = server.url if kind == "azure" else server.base_url(wire)
    elif kind in ("azure", "vllm", "mistral"):
        config["base_url"] = "http://127.0.0.1:9/v1"  # never reached
    return config


def config_for(name: str, server: FakeServer | None, options: dict[str, Any]) -> llm.Config:
    """One provider with ``options``; no retries, limits and budgets lifted explicitly."""
    return llm.Config.from_dict(
        {
            "provider": name,
            "retries": {"max_attempts": 1},
            "rate_limits": {
                "requests_per_minute": None,
                "tokens_per_minute": None,
                "concurrent_calls": None,
            },
            "cost_control": {"max_cost_per_request": None, "max_budget": None},
            "providers": {name: entry(name, server, options)},
        }
    )


@asynccontextmanager
async def client_with(
    name: str, options: dict[str, Any]
) -> AsyncGenerator[tuple[llm.Client, FakeServer]]:
    scenarios = Scenarios(Scenario(text="ok"))
    async with open_fake_server(scenarios) as server:
        config = config_for(name, server, options)
        async with llm.open_client(config) as client:
            yield client, server


async def sent(
    name: str, options: dict[str, Any], request: llm.Request | None = None, *, stream: bool
) -> RecordedRequest:
    """What the provider received for one call with these provider options."""
    request = request or llm.Request(model=f"{name}:m-1", messages=[llm.user("hello")])
    async with client_with(name, options) as (client, server):
        response = await client.invoke_sync(msgspec.structs.replace(request, stream=stream))
        assert response.text == "ok"
        (received,) = server.requests
    return received


STREAMS: Final = pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])


# -- known fields, sampling defaults and unknown fields on the wire -----------------------------


@STREAMS
async def test_openai_options_are_body_fields(stream: bool) -> None:
    options = {
        "user": "user-1",
        "service_tier": "flex",
        "seed": 42,
        "reasoning_effort": "low",
        "store": False,
        "metadata": {"team": "search"},
        "x_gateway_tag": {"route": "eu"},
    }
    body = (await sent("openai", options, stream=stream)).json
    assert {key: body[key] for key in options} == options
    assert body["model"] == "m-1"
    assert body.get("stream", False) is stream


@STREAMS
async def test_azure_openai_options_are_body_fields(stream: bool) -> None:
    options = {"user": "user-2", "seed": 7, "x_gateway_tag": "a"}
    received = await sent("azure", options, stream=stream)
    assert "/openai/deployments/m-1/chat/completions" in received.url
    assert {key: received.json[key] for key in options} == options


@STREAMS
async def test_a_compatible_server_takes_top_k_and_its_own_fields(stream: bool) -> None:
    options = {"top_k": 20, "repetition_penalty": 1.1}
    body = (await sent("vllm", options, stream=stream)).json
    assert body["top_k"] == 20
    assert body["repetition_penalty"] == 1.1


@STREAMS
async def test_mistral_s_seed_spelling_is_a_seed_default(stream: bool) -> None:
    body = (await sent("mistral", {"random_seed": 5, "safe_prompt": True}, stream=stream)).json
    assert body["random_seed"] == 5
    assert "seed" not in body
    assert body["safe_prompt"] is True


@STREAMS
async def test_anthropic_options_are_body_fields(stream: bool) -> None:
    options = {
        "top_k": 5,
        "metadata": {"user_id": "user-3"},
        "service_tier": "auto",
        "x_gateway_tag": 1,
    }
    body = (await sent("anthropic", options, stream=stream)).json
    assert {key: body[key] for key in options} == options


@STREAMS
async def test_anthropic_thinking_from_options_raises_the_default_max_tokens(stream: bool) -> None:
    thinking = {"type": "enabled", "budget_tokens": 5000}
    options = {"thinking": thinking, "default_max_tokens": 1000, "stop_sequences": ["END"]}
    body = (await sent("anthropic", options, stream=stream)).json
    assert body["thinking"] == thinking
    assert body["max_tokens"] > 5000
    assert body["stop_sequences"] == ["END"]
    assert "default_max_tokens" not in body


@STREAMS
async def test_gemini_options_go_to_the_top_level_or_generation_config(stream: bool) -> None:
    options = {
        "safety_settings": SAFETY,
        "top_k": 7,
        "candidateCount": 1,
        "generationConfig": {"responseLogprobs": False, "temperature": 0.25},
        "cachedContent": "cachedContents/abc",
    }
    body = (await sent("gemini", options, stream=stream)).json
    assert body["safetySettings"] == SAFETY
    assert body["cachedContent"] == "cachedContents/abc"
    generation = body["generationConfig"]
    assert generation["topK"] == 7
    assert generation["candidateCount"] == 1
    assert generation["responseLogprobs"] is False
    assert generation["temperature"] == 0.25


@STREAMS
async def test_settings_are_read_by_the_codec_and_never_sent(stream: bool) -> None:
    request = llm.Request(
        model="openai:gpt-4o",
        messages=[llm.user("hello")],
        options=llm.ModelOptions(max_tokens=10),
    )
    body = (await sent("openai", {"use_max_completion_tokens": True}, request, stream=stream)).json
    assert body["max_completion_tokens"] == 10
    assert "max_tokens" not in body
    assert "use_max_completion_tokens" not in body
    received = await sent("anthropic", {"betas": ["beta-1"]}, stream=stream)
    assert received.headers["anthropic-beta"] == "beta-1"
    assert "betas" not in received.json


# -- precedence ------------------------------------------------------------------------------------


@STREAMS
@pytest.mark.parametrize(
    ("name", "field", "wire"),
    [
        ("openai", "seed", ("seed",)),
        ("anthropic", "temperature", ("temperature",)),
        ("gemini", "top_k", ("generationConfig", "topK")),
    ],
)
async def test_the_request_s_options_win_over_provider_options(
    name: str, field: str, wire: tuple[str, ...], stream: bool
) -> None:
    ours, theirs = (1, 2) if field != "temperature" else (0.5, 1.5)
    request = llm.Request(
        model=f"{name}:m-1",
        messages=[llm.user("hello")],
        options=llm.ModelOptions(**{field: ours}),
    )
    value: Any = (await sent(name, {field: theirs}, request, stream=stream)).json
    for key in wire:
        value = value[key]
    assert value == ours


@STREAMS
async def test_request_provider_options_win_and_objects_merge_one_level(stream: bool) -> None:
    request = llm.Request(
        model="openai:m-1",
        messages=[llm.user("hello")],
        options=llm.ModelOptions(
            provider_options={"metadata": {"env": "dev"}, "service_tier": "priority"}
        ),
    )
    options = {"metadata": {"team": "search", "env": "prod"}, "service_tier": "flex"}
    body = (await sent("openai", options, request, stream=stream)).json
    assert body["metadata"] == {"team": "search", "env": "dev"}
    assert body["service_tier"] == "priority"


@STREAMS
async def test_parallel_tool_calls_go_only_with_tools(stream: bool) -> None:
    options = {"parallel_tool_calls": False}
    plain = (await sent("openai", options, stream=stream)).json
    assert "parallel_tool_calls" not in plain
    request = llm.Request(model="openai:m-1", messages=[llm.user("hello")], tools=[WEATHER])
    with_tools = (await sent("openai", options, request, stream=stream)).json
    assert with_tools["parallel_tool_calls"] is False


# -- refused at open -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("openai", {"messages": []}, "messages"),
        ("openai", {"stream": False}, "stream"),
        ("openai", {"tools": []}, "tools"),
        ("openai", {"top_k": 3}, "top_k"),
        ("openai", {"user": 5}, "user"),
        ("openai", {"temperature": 5}, "temperature"),
        ("openai", {"store": "yes"}, "store"),
        ("azure", {"response_format": {"type": "json_object"}}, "response_format"),
        ("mistral", {"model": "other"}, "model"),
        ("anthropic", {"seed": 1}, "seed"),
        ("anthropic", {"system": "be brief"}, "system"),
        ("anthropic", {"default_max_tokens": 0}, "default_max_tokens"),
        ("anthropic", {"betas": [1]}, "betas"),
        ("gemini", {"contents": []}, "contents"),
        ("gemini", {"response_mime_type": "application/json"}, "response_mime_type"),
        ("gemini", {"frobnicate": True}, "frobnicate"),
        ("gemini", {"generationConfig": {"responseSchema": {}}}, "generationConfig.responseSchema"),
        (
            "gemini",
            {"toolConfig": {"functionCallingConfig": {}}},
            "toolConfig.functionCallingConfig",
        ),
        ("gemini", {"stop": ["a", "b", "c", "d", "e", "f"]}, "stop"),
    ],
)
async def test_an_option_that_cannot_be_sent_fails_open_client_naming_provider_and_key(
    name: str, options: dict[str, Any], key: str
) -> None:
    with pytest.raises(llm.ConfigurationError) as caught:
        async with llm.open_client(config_for(name, None, options)):
            pytest.fail("the client opened")
    error = caught.value
    assert error.provider == name
    assert [problem.path for problem in error.problems] == [f"providers.{name}.options.{key}"]
    assert f"providers.{name}.options.{key}" in str(error)


async def test_every_refused_option_is_listed_at_once() -> None:
    options = {"messages": [], "user": 5, "top_k": 3}
    with pytest.raises(llm.ConfigurationError) as caught:
        async with llm.open_client(config_for("openai", None, options)):
            pytest.fail("the client opened")
    paths = sorted(problem.path for problem in caught.value.problems)
    assert paths == [f"providers.openai.options.{key}" for key in ("messages", "top_k", "user")]


async def test_a_refused_option_sends_nothing() -> None:
    async with open_fake_server(Scenarios(Scenario(text="ok"))) as server:
        with pytest.raises(llm.ConfigurationError):
            async with llm.open_client(config_for("anthropic", server, {"seed": 1})):
                pytest.fail("the client opened")
        assert server.requests == []


def test_a_problem_never_shows_a_secret_value() -> None:
    with pytest.raises(llm.ConfigurationError) as caught:
        make_codec("openai", ProviderConfig(options={"user": {"token": KEY}}, api_key=KEY))
    assert KEY not in str(caught.value)
    assert all(KEY not in problem.message for problem in caught.value.problems)
