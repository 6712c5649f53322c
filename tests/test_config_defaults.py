"""The first specification's defaults, the default provider inferred from the environment,
how limits are lifted, `MissingAPIKey`, and the zero price of local presets."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Final

import httpx
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import llm_invocation as llm
from llm_invocation.actors.governor import Governor, GovernorStats
from llm_invocation.config import Config, CostConfig, RateLimitConfig, RetryConfig
from llm_invocation.errors import error_from_info
from llm_invocation.pricing import LOCAL_PRICE, PriceBook
from llm_invocation.testing import MockTransport, Scenario, Scenarios, open_fake_server

KEY: Final = "sk-test-DEFAULTS-0123456789abcdef"
OTHER_KEY: Final = "sk-ant-test-OTHER-fedcba9876543210"
LIMITS: Final = ("requests_per_minute", "tokens_per_minute", "concurrent_calls")
COSTS: Final = ("max_cost_per_request", "max_budget")


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment configures nothing (tests pass ``environ`` explicitly)."""
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.startswith(("LLM_", "OPENAI_", "AZURE_OPENAI_")):
            monkeypatch.delenv(name, raising=False)


def everything_said(error: llm.LLMError) -> str:
    """Every text an error shows: str, repr, args, details, wire form."""
    parts = [str(error), repr(error), *map(str, error.args), json.dumps(error.details)]
    parts.append(msgspec.json.encode(error.info()).decode())
    return "\n".join(parts)


def ask(model: str = "mock") -> llm.Request:
    return llm.Request(
        model=model, messages=[llm.user("hi")], options=llm.ModelOptions(max_tokens=20)
    )


# -- the defaults table -------------------------------------------------------------------------


def test_the_built_in_defaults_are_the_first_specifications_table() -> None:
    config = Config()
    assert config.timeout == 30.0
    assert config.retries.max_attempts == 4  # the first attempt and 3 retries
    limits = config.rate_limits
    assert (limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_calls) == (
        60,
        100_000,
        10,
    )
    cost = config.cost_control
    assert (cost.max_cost_per_request, cost.max_budget, cost.budget_period) == (
        Decimal("0.50"),
        Decimal("100.00"),
        86400.0,
    )
    assert config.logging.level == "info"


def test_with_a_key_the_default_provider_is_openai_and_its_model_gpt_4() -> None:
    config = Config(api_key=KEY)
    assert (config.default_provider, config.default_model) == ("openai", "gpt-4")


def test_the_specifications_environment_block_spells_the_built_in_defaults() -> None:
    written = {
        "LLM_API_KEY": KEY,
        "LLM_PROVIDER": "openai",
        "LLM_MODEL": "gpt-4",
        "LLM_TIMEOUT": "30s",
        "LLM_MAX_RETRIES": "3",
        "LLM_REQUESTS_PER_MINUTE": "60",
        "LLM_MAX_TOKENS_PER_MINUTE": "100000",
        "LLM_MAX_CONCURRENT_CALLS": "10",
        "LLM_MAX_COST_PER_REQUEST": "0.50",
        "LLM_MAX_BUDGET": "100.00",
        "LLM_BUDGET_PERIOD": "24h",
        "LLM_LOG_LEVEL": "info",
    }
    spelled = Config.from_env(written)
    assert spelled == Config(
        provider="openai", model="gpt-4", api_key=KEY, defaults=spelled.defaults
    )


def test_a_provider_without_a_model_of_the_specification_uses_its_codecs_first_model() -> None:
    config = Config(provider="anthropic", api_key=KEY)
    assert config.default_model is None  # the client asks the codec for its first model


# -- the default provider, from the environment --------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "provider"),
    [
        ({}, "mock"),
        ({"LLM_API_KEY": KEY}, "openai"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "gpt-4"}, "openai"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "o3-mini"}, "openai"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "o1"}, "openai"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "o4-mini"}, "openai"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "chatgpt-4o-latest"}, "openai"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "claude-sonnet-4-5"}, "anthropic"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "gemini-2.5-flash"}, "gemini"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "anthropic:claude-sonnet-4-5"}, "anthropic"),
        ({"LLM_API_KEY": KEY, "LLM_MODEL": "some-model"}, "openai"),
        ({"OPENAI_API_KEY": KEY}, "openai"),
        ({"ANTHROPIC_API_KEY": OTHER_KEY}, "anthropic"),
        ({"GEMINI_API_KEY": KEY}, "gemini"),
        ({"GOOGLE_API_KEY": KEY}, "gemini"),
        ({"GROQ_API_KEY": KEY}, "groq"),
        ({"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": OTHER_KEY}, "openai"),
        ({"GEMINI_API_KEY": KEY, "ANTHROPIC_API_KEY": OTHER_KEY}, "anthropic"),
        ({"ANTHROPIC_API_KEY": OTHER_KEY, "LLM_MODEL": "gpt-4o"}, "openai"),
        ({"OPENAI_API_KEY": KEY, "LLM_PROVIDER": "gemini"}, "gemini"),
        ({"LLM_API_KEY": KEY, "LLM_PROVIDER": "anthropic", "LLM_MODEL": "gpt-4"}, "anthropic"),
        ({"OPENAI_API_KEY": KEY, "LLM_PROVIDER": "mock"}, "mock"),
        ({"LLM_MODEL": "gpt-4"}, "openai"),
        ({"LLM_MODEL": "llama3"}, "mock"),
        ({"LLM_BASE_URL": "http://127.0.0.1:8080/v1"}, "openai"),
    ],
)
def test_the_default_provider_follows_the_environment(
    environ: dict[str, str], provider: str
) -> None:
    config = Config.load(environ=environ)
    assert config.default_provider == provider
    assert config.mock_fallback is (environ == {} or environ == {"LLM_MODEL": "llama3"})


def test_llm_api_key_with_llm_model_gpt_4_is_openais_key_and_model() -> None:
    config = Config.load(environ={"LLM_API_KEY": KEY, "LLM_MODEL": "gpt-4"})
    assert (config.default_provider, config.default_model) == ("openai", "gpt-4")
    assert config.provider_config("openai").keys() == [llm.Secret(KEY)]


def test_an_entry_of_the_models_kind_under_another_name_serves_it() -> None:
    config = Config(
        model="claude-sonnet-4-5",
        providers={"claude-eu": {"kind": "anthropic", "api_key": OTHER_KEY}},
    )
    assert config.default_provider == "claude-eu"


def test_a_configured_entry_without_a_key_is_the_default_rather_than_the_mock() -> None:
    config = Config(providers={"local": {"kind": "ollama"}})
    assert (config.default_provider, config.mock_fallback) == ("local", False)


def test_explicit_settings_win_over_inference_in_every_spelling() -> None:
    environ = {"OPENAI_API_KEY": KEY, "LLM_MODEL": "claude-sonnet-4-5"}
    assert Config.load(environ=environ, provider="gemini").default_provider == "gemini"
    assert Config.load(environ=environ, defaults={"provider": "mock"}).default_provider == "mock"
    yaml_file = "defaults:\n  provider: gemini\n"
    assert Config.load(yaml=yaml_file, environ=environ).default_provider == "gemini"
    assert Config(provider="mock").mock_fallback is False


# -- lifting the limits -------------------------------------------------------------------------


def test_zero_in_the_environment_lifts_each_limit() -> None:
    config = Config.from_env(
        {
            "LLM_REQUESTS_PER_MINUTE": "0",
            "LLM_MAX_TOKENS_PER_MINUTE": "0",
            "LLM_MAX_CONCURRENT_CALLS": "0",
            "LLM_MAX_COST_PER_REQUEST": "0",
            "LLM_MAX_BUDGET": "0",
        }
    )
    assert all(getattr(config.rate_limits, name) is None for name in LIMITS)
    assert all(getattr(config.cost_control, name) is None for name in COSTS)


def load_with(loader: str, rate_limits: dict[str, Any], cost: dict[str, Any]) -> Config:
    sections = {"rate_limits": rate_limits, "cost_control": cost}
    if loader == "keywords":
        return Config.load(environ={}, **sections)
    if loader == "dict":
        return Config.from_dict(sections)
    if loader == "direct":
        return Config(**sections)
    if loader == "yaml":
        return Config.from_yaml(json.dumps(sections), environ={})  # JSON is YAML
    assert loader == "env"
    names = {
        "requests_per_minute": "LLM_REQUESTS_PER_MINUTE",
        "tokens_per_minute": "LLM_MAX_TOKENS_PER_MINUTE",
        "concurrent_calls": "LLM_MAX_CONCURRENT_CALLS",
        "max_cost_per_request": "LLM_MAX_COST_PER_REQUEST",
        "max_budget": "LLM_MAX_BUDGET",
    }
    given_values = {**rate_limits, **cost}
    return Config.from_env({names[k]: str(v) for k, v in given_values.items()})


@given(
    loader=st.sampled_from(["keywords", "dict", "direct", "yaml", "env"]),
    lifted=st.dictionaries(st.sampled_from(LIMITS + COSTS), st.sampled_from([0, None])),
)
def test_none_or_zero_lifts_exactly_the_limits_named_by_every_loader(
    loader: str, lifted: dict[str, int | None]
) -> None:
    if loader == "env":  # a variable cannot be None: unset is the default
        lifted = dict.fromkeys(lifted, 0)
    rate_limits = {k: v for k, v in lifted.items() if k in LIMITS}
    cost = {k: v for k, v in lifted.items() if k in COSTS}
    config = load_with(loader, rate_limits, cost)
    defaults = Config()
    for name in LIMITS:
        expected = None if name in lifted else getattr(defaults.rate_limits, name)
        assert getattr(config.rate_limits, name) == expected, (loader, name)
    for name in COSTS:
        expected = None if name in lifted else getattr(defaults.cost_control, name)
        assert getattr(config.cost_control, name) == expected, (loader, name)


def test_a_limit_given_alone_keeps_the_other_defaults() -> None:
    config = Config.from_env({"LLM_REQUESTS_PER_MINUTE": "120"})
    assert config.rate_limits == RateLimitConfig(
        requests_per_minute=120, tokens_per_minute=100_000, concurrent_calls=10
    )
    assert Config(rate_limits={"concurrent_calls": 3}).rate_limits.requests_per_minute == 60  # type: ignore[arg-type]


def test_a_section_object_holds_what_it_is_given() -> None:
    assert RateLimitConfig(requests_per_minute=0).requests_per_minute is None
    assert CostConfig(max_budget=Decimal(0)).max_budget is None
    config = Config(rate_limits=RateLimitConfig(requests_per_minute=5))
    assert (config.rate_limits.tokens_per_minute, config.rate_limits.concurrent_calls) == (
        None,
        None,
    )


def test_a_negative_limit_is_still_a_problem() -> None:
    with pytest.raises(llm.ConfigurationError) as error:
        Config.from_env({"LLM_MAX_CONCURRENT_CALLS": "-1"})
    assert [p.path for p in error.value.problems] == ["rate_limits.concurrent_calls"]


def test_unlimited_has_no_rate_limits_cap_or_budget_and_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_REQUESTS_PER_MINUTE", "5")
    config = Config.unlimited()
    assert all(getattr(config.rate_limits, name) is None for name in LIMITS)
    assert all(getattr(config.cost_control, name) is None for name in COSTS)
    assert config.retries == RetryConfig()  # everything else keeps its default


def test_unlimited_takes_keywords_merged_key_by_key() -> None:
    config = Config.unlimited(
        provider="openai",
        api_key=KEY,
        rate_limits={"concurrent_calls": 50},
        cost_control={"prices": {"m": {"input_per_mtok": 1, "output_per_mtok": 2}}},
    )
    assert config.default_provider == "openai"
    assert config.rate_limits == RateLimitConfig(concurrent_calls=50)
    assert config.cost_control.max_budget is None
    assert "m" in config.cost_control.prices
    with pytest.raises(llm.ConfigurationError):
        Config.unlimited(rate_limits={"concurrent_calls": -1})


# -- the defaults reach the client --------------------------------------------------------------


async def governor_stats(client: llm.Client) -> Any:
    return await client.runtime.ref("governor", Governor).call(GovernorStats())


async def holding(client: llm.Client, calls: int) -> Any:
    """Start ``calls`` calls that never finish (the clock stands still), wait until each has
    its lease or waits for one, and return the governor's statistics; then cancel them."""
    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(client.invoke_sync, ask())
        stats = await governor_stats(client)
        while stats.active + stats.waiting < calls:
            await trio.testing.wait_all_tasks_blocked()
            stats = await governor_stats(client)
        nursery.cancel_scope.cancel()
    return stats


async def test_a_default_client_runs_ten_calls_at_once_and_queues_the_eleventh(
    mock_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios(Scenario(text="late", ttft=1.0))  # the clock does not move
    async with llm.open_client(Config(provider="mock"), scenarios=scenarios) as client:
        stats = await holding(client, 11)
    assert (stats.active, stats.waiting) == (10, 1)


async def test_an_unlimited_client_runs_them_all_at_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios(Scenario(text="late", ttft=1.0))
    async with llm.open_client(Config.unlimited(provider="mock"), scenarios=scenarios) as client:
        stats = await holding(client, 100)
    assert (stats.active, stats.waiting) == (100, 0)


async def test_the_mock_client_for_tests_is_unlimited_unless_told(
    mock_clock: trio.testing.MockClock,
) -> None:
    scenarios = Scenarios(Scenario(text="late", ttft=1.0))
    async with llm.open_mock_client(scenarios) as client:
        stats = await holding(client, 100)
        assert client.config.cost_control.max_budget is None
    assert (stats.active, stats.waiting) == (100, 0)
    async with llm.open_mock_client(scenarios, rate_limits={"concurrent_calls": 2}) as client:
        stats = await holding(client, 3)
    assert (stats.active, stats.waiting) == (2, 1)


class Capturing(httpx.AsyncBaseTransport):
    """Records the Authorization header and the model of each request, then delegates."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str | None, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content).get("model", "")
        self.seen.append((request.headers.get("authorization"), model))
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("model", [None, "gpt-4"])
async def test_llm_api_key_opens_an_openai_client_that_sends_that_key(model: str | None) -> None:
    environ = {"LLM_API_KEY": KEY} | ({"LLM_MODEL": model} if model else {})
    transport = Capturing(MockTransport(Scenarios(Scenario(text="from openai"))))
    config = Config.load(environ=environ)
    async with llm.open_client(config, transports={"openai": lambda: transport}) as client:
        assert client.providers == ["openai"]
        reply = await client.chat([llm.user("hi")])
    assert reply.messages[-1].text == "from openai"
    assert transport.seen == [(f"Bearer {KEY}", "gpt-4")]


async def test_the_mock_fallback_says_so_once_naming_how_to_configure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llm_invocation.client")
    async with llm.open_client(Config.load(environ={})) as client:
        assert client.providers == ["mock"]
        await client.invoke_sync(ask())
        await client.invoke_sync(ask())
    notes = [r for r in caplog.records if "built-in mock" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelno == logging.WARNING
    assert "LLM_API_KEY" in notes[0].getMessage()


async def test_a_mock_asked_for_answers_without_a_note(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llm_invocation.client")
    async with llm.open_client(Config(provider="mock")) as client:
        await client.invoke_sync(ask())
    assert not [r for r in caplog.records if "built-in mock" in r.getMessage()]


# -- MissingAPIKey ------------------------------------------------------------------------------


def test_missing_api_key_is_a_configuration_error_with_its_own_code() -> None:
    error = llm.MissingAPIKey("no key", provider="openai")
    assert isinstance(error, llm.ConfigurationError)
    assert error.code == llm.ErrorCode.MISSING_API_KEY == "missing_api_key"
    rebuilt = error_from_info(error.info())
    assert type(rebuilt) is llm.MissingAPIKey
    assert rebuilt.provider == "openai"


async def test_a_provider_without_a_key_is_refused_before_anything_is_sent() -> None:
    transport = MockTransport(Scenarios())
    made: list[MockTransport] = []

    def factory() -> MockTransport:
        made.append(transport)
        return transport

    with pytest.raises(llm.MissingAPIKey) as info:
        async with llm.open_client(Config(provider="openai"), transports={"openai": factory}):
            pytest.fail("the client opened")
    error = info.value
    assert error.provider == "openai"
    for source in ("LLM_API_KEY", "OPENAI_API_KEY", "providers.openai.api_key"):
        assert source in error.message
    assert error.details["variables"] == ["LLM_API_KEY", "OPENAI_API_KEY"]
    assert (made, transport.requests) == ([], [])


async def test_a_fake_server_gets_no_request_from_a_client_refused_for_its_key() -> None:
    async with open_fake_server(Scenarios()) as server:
        entry = {"base_url": server.base_url("openai"), "api_key_required": True}
        config = Config(provider="openai", providers={"openai": entry})
        with pytest.raises(llm.MissingAPIKey):
            async with llm.open_client(config) as client:
                await client.invoke_sync(ask("gpt-4"))
        assert server.requests == []


@pytest.mark.parametrize(
    ("opener", "variables"),
    [
        (llm.open_openai_client, ["LLM_API_KEY", "OPENAI_API_KEY"]),
        (llm.open_anthropic_client, ["LLM_API_KEY", "ANTHROPIC_API_KEY"]),
        (llm.open_gemini_client, ["LLM_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"]),
    ],
)
async def test_the_provider_shortcuts_refuse_an_empty_key(
    opener: Any, variables: list[str]
) -> None:
    with pytest.raises(llm.MissingAPIKey) as info:
        async with opener(""):
            pytest.fail("the client opened")
    assert info.value.details["variables"] == variables


@pytest.mark.parametrize("empty", ["", "   ", llm.Secret("")])
async def test_an_empty_key_given_to_a_shortcut_is_no_key(empty: str | llm.Secret) -> None:
    with pytest.raises(llm.MissingAPIKey):
        async with llm.open_openai_client(empty):
            pytest.fail("the client opened")


@pytest.mark.parametrize("variable", ["LLM_API_KEY", "OPENAI_API_KEY"])
async def test_an_empty_key_given_to_a_shortcut_leaves_the_environments(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, KEY)
    async with llm.open_openai_client("") as client:
        assert client.providers == ["openai"]


async def test_a_model_of_a_provider_without_a_key_names_that_provider() -> None:
    config = Config.load(environ={"ANTHROPIC_API_KEY": OTHER_KEY, "LLM_MODEL": "gpt-4o"})
    with pytest.raises(llm.MissingAPIKey) as info:
        async with llm.open_client(config):
            pytest.fail("the client opened")
    assert info.value.provider == "openai"
    assert OTHER_KEY not in everything_said(info.value)


async def test_another_entry_without_a_key_names_its_own_sources_and_shows_no_key() -> None:
    config = Config(
        provider="openai",
        api_key=KEY,
        providers={"groq": {}, "azure": {"base_url": "https://res.openai.azure.com"}},
    )
    with pytest.raises(llm.MissingAPIKey) as info:
        async with llm.open_client(config):
            pytest.fail("the client opened")
    error = info.value
    assert error.details["providers"] == ["azure", "groq"]
    assert error.details["variables"] == ["AZURE_OPENAI_API_KEY", "GROQ_API_KEY"]
    assert "LLM_API_KEY" not in error.message  # the top-level key is the default provider's
    said = everything_said(error)
    assert KEY not in said
    assert KEY[:12] not in said


async def test_a_remote_compatible_server_without_a_key_names_the_way_out() -> None:
    entry = {"kind": "openai-compatible", "base_url": "https://llm.internal.example/v1"}
    with pytest.raises(llm.MissingAPIKey) as info:
        async with llm.open_client(Config(provider="internal", providers={"internal": entry})):
            pytest.fail("the client opened")
    assert "api_key_required" in info.value.message


@pytest.mark.parametrize(
    "entry",
    [
        {"kind": "ollama"},
        {"kind": "vllm"},
        {"kind": "vllm", "base_url": "http://gpu-box.internal:8000/v1"},
        {"kind": "mock"},
        {"kind": "openai-compatible", "base_url": "http://localhost:1234/v1"},
        {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        {"kind": "anthropic", "base_url": "http://[::1]:9/v1"},
        {"kind": "openai", "headers": {"Authorization": "Bearer gateway-token-0451"}},
        {"kind": "gemini", "headers": {"x-goog-api-key": "gateway-token-0451"}},
        {"kind": "azure", "base_url": "https://res.openai.azure.com", "headers": {"api-key": "t"}},
        {
            "kind": "openai-compatible",
            "base_url": "https://gw.example/v1",
            "api_key_required": False,
        },
    ],
    ids=lambda entry: "-".join(str(v) for v in entry.values())[:40],
)
async def test_providers_that_need_no_key_open_without_one(entry: dict[str, Any]) -> None:
    config = Config(provider="p", providers={"p": entry})
    async with llm.open_client(config) as client:
        assert client.providers == ["p"]


async def test_api_key_required_true_asks_for_a_key_even_on_loopback() -> None:
    entry = {"kind": "ollama", "api_key_required": True}
    with pytest.raises(llm.MissingAPIKey):
        async with llm.open_client(Config(provider="ollama", providers={"ollama": entry})):
            pytest.fail("the client opened")


# -- prices under the default cap and budget ----------------------------------------------------


@asynccontextmanager
async def scripted(config: Config, name: str) -> AsyncGenerator[llm.Client]:
    transport = MockTransport(Scenarios(Scenario(text="ok")))
    async with llm.open_client(config, transports={name: lambda: transport}) as client:
        yield client


@pytest.mark.parametrize("preset", ["ollama", "vllm"])
async def test_a_local_preset_is_priced_at_zero_under_the_default_cap_and_budget(
    preset: str,
) -> None:
    async with scripted(Config(provider=preset), preset) as client:
        response = await client.invoke_sync(ask(f"{preset}:llama3"))
    assert response.usage is not None
    assert response.usage.cost == 0


async def test_the_mock_keeps_its_demonstration_price_under_the_defaults() -> None:
    async with llm.open_client(Config(provider="mock")) as client:
        response = await client.invoke_sync(ask())
    assert response.usage is not None and response.usage.cost is not None
    assert response.usage.cost > 0


async def test_a_real_providers_unknown_model_is_refused_naming_the_fix() -> None:
    async with scripted(Config(provider="openai", api_key=KEY), "openai") as client:
        with pytest.raises(llm.CostExceeded) as info:
            await client.invoke_sync(ask("openai:my-finetune-x"))
    assert info.value.details["reason"] == "unknown_price"
    assert "cost_control.prices" in info.value.message
    assert "unknown_price" in info.value.message


def test_an_override_prices_a_free_provider_and_free_is_zero_otherwise() -> None:
    overrides = {
        "vllm:big": llm.config.PriceOverride(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))
    }
    book = PriceBook(overrides, free_providers=["ollama", "vllm"])
    usage = llm.Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert book.price("ollama", "llama3") == LOCAL_PRICE
    assert book.cost(usage, provider="ollama", model="llama3") == 0
    assert book.cost(usage, provider="vllm", model="big") == 2
    assert book.cost(usage, provider="groq", model="no-such-model") is None
