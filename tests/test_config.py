"""Specification of `llm_invocation.config`: the layers, the validation and the secrets."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import sys
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from llm_invocation._secrets import Secret
from llm_invocation.config import (
    Config,
    CostConfig,
    DefaultsConfig,
    MCPServerConfig,
    PriceOverride,
    ProviderConfig,
    RateLimitConfig,
    RetryConfig,
    TimeoutConfig,
    WebSocketConfig,
    format_duration,
    parse_duration,
)
from llm_invocation.errors import ConfigProblem, ConfigurationError, ProviderNotFound

KEY = "sk-test-SECRET-0123456789abcdef"
OTHER_KEY = "sk-ant-other-SECRET-fedcba9876543210"
HEADER_TOKEN = "gateway-token-0451"  # not key-shaped: masked only by its header name


def problems_of(error: pytest.ExceptionInfo[ConfigurationError]) -> dict[str, ConfigProblem]:
    return {problem.path: problem for problem in error.value.problems}


def everything_said(error: ConfigurationError) -> str:
    """Every text an error shows: str, repr, args, problems, details."""
    parts = [str(error), repr(error), *map(str, error.args), json.dumps(error.details)]
    parts += [f"{p.path} {p.message} {p.source}" for p in error.problems]
    parts.append(msgspec.json.encode(error.info()).decode())
    return "\n".join(parts)


# ------------------------------------------------------------------------------- defaults


def test_defaults_follow_the_specification() -> None:
    config = Config()
    assert (config.provider, config.model, config.api_key, config.timeout) == (
        None,
        None,
        None,
        30.0,
    )
    assert (config.default_provider, config.mock_fallback) == ("mock", True)
    assert config.retries == RetryConfig(
        max_attempts=4,
        initial_delay=0.1,
        max_delay=2.0,
        multiplier=2.0,
        jitter=True,
        max_retry_after=60.0,
    )
    assert config.timeouts == TimeoutConfig(connect=10.0, first_chunk=60.0, idle_chunk=30.0)
    assert config.rate_limits == RateLimitConfig(
        requests_per_minute=60, tokens_per_minute=100_000, concurrent_calls=10
    )
    assert config.rate_limits.max_queue is None  # inherited: the global default, 10,000
    assert config.cost_control.budget_period == 86400.0
    assert config.cost_control.max_cost_per_request == Decimal("0.50")
    assert config.cost_control.max_budget == Decimal(100)
    assert config.cost_control.alert_thresholds == [0.5, 0.8, 1.0]
    assert config.cost_control.budget_calendar == "rolling"
    assert (config.logging.level, config.logging.format) == ("info", "text")
    assert config.logging.redact_tool_arguments is True
    assert config.providers == {}
    assert (config.tools.max_steps, config.tools.timeout, config.tools.max_concurrency) == (
        8,
        60.0,
        16,
    )
    assert config.mcp.servers == {}
    assert (config.store, config.store_fail_mode, config.ledger_path) == (
        "memory",
        "closed",
        None,
    )
    assert (config.websocket.host, config.websocket.port) == ("127.0.0.1", 8765)
    assert config.websocket.max_message_size == 1 << 20


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.timeout = 5.0  # type: ignore[misc]


def test_default_alert_thresholds_are_not_shared_between_instances() -> None:
    assert CostConfig().alert_thresholds is not CostConfig().alert_thresholds


# ---------------------------------------------------------------------- direct construction


def test_direct_construction_converts_a_plain_key_to_a_secret() -> None:
    config = Config(api_key=KEY)  # type: ignore[arg-type]
    assert isinstance(config.api_key, Secret)
    assert config.api_key.reveal() == KEY


def test_direct_construction_accepts_duration_strings() -> None:
    assert TimeoutConfig(connect="1.5s").connect == 1.5  # type: ignore[arg-type]


def test_direct_construction_accepts_a_section_as_a_dict() -> None:
    config = Config(retries={"max_attempts": 5})  # type: ignore[arg-type]
    assert config.retries == RetryConfig(max_attempts=5)


def test_direct_construction_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ConfigurationError) as error:
        TimeoutConfig(connect=0)
    assert problems_of(error)["connect"].message == "must be > 0, got 0"


def test_direct_construction_reports_every_problem_of_a_section() -> None:
    with pytest.raises(ConfigurationError) as error:
        RetryConfig(max_attempts=0, multiplier=0.5, initial_delay=-1)
    assert set(problems_of(error)) == {"max_attempts", "multiplier", "initial_delay"}


def test_direct_construction_of_config_prefixes_the_section_path() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config(rate_limits={"requests_per_minute": -1})  # type: ignore[arg-type]
    assert "rate_limits.requests_per_minute" in problems_of(error)


def test_max_delay_below_initial_delay_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        RetryConfig(initial_delay=5, max_delay=1)
    assert problems_of(error)["max_delay"].message == "must be >= initial_delay (5s)"


def test_msgspec_replace_validates_too() -> None:
    with pytest.raises(ConfigurationError):
        msgspec.structs.replace(RetryConfig(), max_attempts=0)


def test_price_override_requires_input_and_output_prices() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"cost_control": {"prices": {"gpt-4o": {"input_per_mtok": "2.5"}}}})
    problem = problems_of(error)["cost_control.prices.gpt-4o.output_per_mtok"]
    assert problem.message == "is required"


def test_price_override_reads_money_as_decimal() -> None:
    price = PriceOverride(input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal(10))
    config = Config.from_dict(
        {"cost_control": {"prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}}}}
    )
    assert config.cost_control.prices["gpt-4o"] == price


# ------------------------------------------------------------------------------- from_dict

SEED_000_YAML_SHAPE: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4",
    "timeout": "30s",
    "retries": {
        "max_attempts": 3,
        "initial_delay": "100ms",
        "max_delay": "2s",
        "multiplier": 2.0,
    },
    "rate_limits": {
        "requests_per_minute": 60,
        "tokens_per_minute": 100000,
        "concurrent_calls": 10,
    },
    "cost_control": {"max_cost_per_request": 0.50, "max_budget": 100.00, "budget_period": "24h"},
    "logging": {"level": "info", "format": "json"},
}


def test_from_dict_reads_the_yaml_shape_of_the_first_specification() -> None:
    config = Config.from_dict(SEED_000_YAML_SHAPE)
    assert (config.provider, config.model, config.timeout) == ("openai", "gpt-4", 30.0)
    assert config.retries == RetryConfig(
        max_attempts=3, initial_delay=0.1, max_delay=2.0, multiplier=2.0
    )
    assert config.rate_limits == RateLimitConfig(
        requests_per_minute=60, tokens_per_minute=100000, concurrent_calls=10
    )
    assert config.cost_control.max_cost_per_request == Decimal("0.5")
    assert config.cost_control.max_budget == Decimal("100.0")
    assert config.cost_control.budget_period == 86400.0
    assert config.logging.format == "json"


def test_from_dict_reads_the_sections_of_the_second_specification() -> None:
    config = Config.from_dict(
        {
            "providers": {
                "openai": {"enabled": True, "api_key": KEY, "models": ["gpt-4o"]},
                "local": {
                    "kind": "openai-compatible",
                    "base_url": "http://127.0.0.1:11434/v1",
                    "options": {"keep_alive": "5m"},
                },
            },
            "tools": {"max_steps": 4, "timeout": "10s", "max_concurrency": 2, "sandbox": True},
            "mcp": {"servers": {"files": {"transport": "stdio", "command": "mcp-files"}}},
            "defaults": {
                "provider": "openai",
                "model": "gpt-4o",
                "options": {"temperature": 0.2},
            },
        }
    )
    assert config.providers["openai"].api_key == Secret(KEY)
    assert config.providers["openai"].models == ["gpt-4o"]
    assert config.providers["local"].kind == "openai-compatible"
    assert config.providers["local"].options == {"keep_alive": "5m"}
    assert (config.tools.max_steps, config.tools.timeout, config.tools.sandbox) == (4, 10.0, True)
    assert config.mcp.servers["files"].command == "mcp-files"
    assert config.defaults.options == {"temperature": 0.2}
    assert (config.default_provider, config.default_model) == ("openai", "gpt-4o")


def test_from_dict_reads_the_extended_sections() -> None:
    config = Config.from_dict(
        {
            "organization": "org-1",
            "retries": {"jitter": False, "max_retry_after": "2m"},
            "timeouts": {"connect": "5s", "first_chunk": "1m", "idle_chunk": "15s"},
            "rate_limits": {"max_wait": "10s", "max_queue": 5},
            "cost_control": {"budget_calendar": "month", "alert_thresholds": [0.9]},
            "logging": {"redact_tool_arguments": False},
            "store": "rediss://cache.example:6380/0",
            "store_fail_mode": "open",
            "ledger_path": "/var/lib/llm/ledger.sqlite",
            "websocket": {
                "host": "::1",
                "port": 0,
                "tokens": ["tok-1234567"],
                "allowed_origins": ["https://app.example"],
                "max_message_size": 4096,
                "max_concurrent_per_connection": 2,
                "client_requests_per_minute": 30,
            },
        }
    )
    assert config.organization == "org-1"
    assert (config.retries.jitter, config.retries.max_retry_after) == (False, 120.0)
    assert config.timeouts == TimeoutConfig(connect=5.0, first_chunk=60.0, idle_chunk=15.0)
    assert (config.rate_limits.max_wait, config.rate_limits.max_queue) == (10.0, 5)
    assert config.cost_control.budget_calendar == "month"
    assert config.cost_control.alert_thresholds == [0.9]
    assert config.logging.redact_tool_arguments is False
    assert (config.store, config.store_fail_mode) == ("rediss://cache.example:6380/0", "open")
    assert config.ledger_path == "/var/lib/llm/ledger.sqlite"
    assert config.websocket == WebSocketConfig(
        host="::1",
        port=0,
        tokens=[Secret("tok-1234567")],
        allowed_origins=["https://app.example"],
        max_message_size=4096,
        max_concurrent_per_connection=2,
        client_requests_per_minute=30,
    )


def test_unknown_key_is_a_problem_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"rate_limit": {"requests_per_minute": 10}})
    assert problems_of(error)["rate_limit"].message == (
        "unknown field 'rate_limit' - did you mean 'rate_limits'?"
    )


def test_unknown_nested_key_is_a_problem_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"retries": {"max_attempt": 2}})
    assert problems_of(error)["retries.max_attempt"].message == (
        "unknown field 'max_attempt' - did you mean 'max_attempts'?"
    )


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"zzz": 1})
    assert problems_of(error)["zzz"].message == "unknown field 'zzz'"


def test_type_error_names_the_path_and_the_source() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"rate_limits": {"requests_per_minute": "many"}}, source="app.json")
    problem = problems_of(error)["rate_limits.requests_per_minute"]
    assert problem.message == "expected an integer, got 'many'"
    assert problem.source == "app.json"


def test_section_that_is_not_a_mapping_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"retries": [1, 2]})
    assert problems_of(error)["retries"].message == "expected a mapping, got a list"


def test_non_string_key_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"providers": {1: {}}})
    assert "providers.1" in problems_of(error)


def test_every_problem_is_reported_at_once_with_paths_and_sources() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict(
            {
                "timeout": "soon",
                "retries": {"max_attempts": 0},
                "logging": {"level": "loud"},
                "mcp": {"servers": {"db": {"transport": "http"}}},
                "cost_control": {"max_budget": "lots"},
            },
            source="settings",
        )
    found = problems_of(error)
    assert set(found) == {
        "timeout",
        "retries.max_attempts",
        "logging.level",
        "mcp.servers.db.url",
        "cost_control.max_budget",
    }
    assert {problem.source for problem in found.values()} == {"settings"}
    assert str(error.value).startswith("5 configuration problems")


def test_integer_field_rejects_a_fraction_and_a_bool() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"retries": {"max_attempts": 2.5}, "tools": {"max_steps": True}})
    assert set(problems_of(error)) == {"retries.max_attempts", "tools.max_steps"}


def test_integer_field_accepts_a_numeric_string() -> None:
    assert Config.from_dict({"tools": {"max_steps": " 12 "}}).tools.max_steps == 12


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("FALSE", False), ("yes", True), ("off", False)]
)
def test_boolean_field_accepts_common_words(text: str, expected: bool) -> None:
    assert Config.from_dict({"retries": {"jitter": text}}).retries.jitter is expected


def test_boolean_field_rejects_other_values() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"tools": {"sandbox": "maybe"}})
    assert problems_of(error)["tools.sandbox"].message == "expected true or false, got 'maybe'"


def test_float_field_rejects_infinity() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"retries": {"multiplier": math.inf}})
    assert "retries.multiplier" in problems_of(error)


def test_empty_string_means_unset_for_optional_fields() -> None:
    config = Config.from_dict({"model": "", "rate_limits": {"requests_per_minute": ""}})
    assert (config.model, config.rate_limits.requests_per_minute) == (None, None)


def test_literal_is_case_insensitive() -> None:
    assert Config.from_dict({"logging": {"level": "DEBUG"}}).logging.level == "debug"


def test_bad_literal_lists_the_choices_and_suggests_one() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"logging": {"format": "jsn"}})
    assert problems_of(error)["logging.format"].message == (
        "must be one of 'json', 'text', got 'jsn' - did you mean 'json'?"
    )


# ----------------------------------------------------------------------- money and budgets


def test_money_is_read_through_str_so_floats_stay_exact() -> None:
    config = Config.from_dict({"cost_control": {"max_cost_per_request": 0.1}})
    assert config.cost_control.max_cost_per_request == Decimal("0.1")


@pytest.mark.parametrize("bad", ["lots", "NaN", "Infinity", True, [1]])
def test_money_that_is_not_an_amount_is_a_problem(bad: object) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"cost_control": {"max_budget": bad}})
    assert "cost_control.max_budget" in problems_of(error)


def test_negative_money_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"cost_control": {"max_budget": "-1"}})
    assert problems_of(error)["cost_control.max_budget"].message == "must not be negative, got -1"


@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_alert_threshold_outside_zero_to_one_is_a_problem(bad: float) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"cost_control": {"alert_thresholds": [0.5, bad]}})
    assert "cost_control.alert_thresholds[1]" in problems_of(error)


def test_budget_calendar_must_be_known() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"cost_control": {"budget_calendar": "year"}})
    assert "cost_control.budget_calendar" in problems_of(error)


def test_budget_period_may_be_null() -> None:
    config = Config.from_dict({"cost_control": {"budget_period": None}})
    assert config.cost_control.budget_period is None


# ----------------------------------------------------------------------------- providers


def test_provider_kind_must_be_a_known_codec() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"providers": {"x": {"kind": "openia"}}})
    assert "did you mean 'openai'?" in problems_of(error)["providers.x.kind"].message


def test_provider_base_url_must_be_http() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"providers": {"x": {"base_url": "localhost:8000"}}})
    assert problems_of(error)["providers.x.base_url"].message == (
        "expected an http:// or https:// URL, got 'localhost:8000'"
    )


def test_provider_fallback_must_name_provider_and_model() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"providers": {"x": {"fallback": ["anthropic:claude", "gpt-4o"]}}})
    assert set(problems_of(error)) == {"providers.x.fallback[1]"}


def test_provider_keys_lists_the_key_then_the_rotation_without_duplicates() -> None:
    entry = ProviderConfig(api_key=Secret("key-aaaaaa"), api_keys=["key-bbbbbb", "key-aaaaaa"])  # type: ignore[list-item]
    assert entry.keys() == [Secret("key-aaaaaa"), Secret("key-bbbbbb")]


def test_empty_key_in_a_rotation_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"providers": {"x": {"api_keys": ["key-aaaaaa", " "]}}})
    assert problems_of(error)["providers.x.api_keys[1]"].message == "must not be empty"


def test_azure_settings_are_read() -> None:
    config = Config.from_dict(
        {
            "providers": {
                "azure": {
                    "base_url": "https://res.openai.azure.com",
                    "api_version": "2024-10-21",
                    "deployment": "gpt4o-prod",
                    "headers": {"x-ms-client": "app"},
                    "max_connections": 20,
                }
            }
        }
    )
    entry = config.providers["azure"]
    assert (entry.api_version, entry.deployment, entry.max_connections) == (
        "2024-10-21",
        "gpt4o-prod",
        20,
    )
    assert entry.headers == {"x-ms-client": "app"}


def test_provider_config_is_synthesised_for_the_default_provider() -> None:
    config = Config(
        provider="openai",
        api_key=Secret(KEY),
        base_url="https://proxy.example/v1",
        organization="org-1",
    )
    entry = config.provider_config("openai")
    assert entry == ProviderConfig(
        api_key=Secret(KEY), base_url="https://proxy.example/v1", organization="org-1"
    )


def test_top_level_settings_override_the_default_providers_entry() -> None:
    config = Config.from_dict(
        {
            "provider": "openai",
            "api_key": KEY,
            "providers": {"openai": {"api_key": OTHER_KEY, "api_keys": ["key-cccccc"]}},
        }
    )
    entry = config.provider_config("openai")
    assert entry.keys() == [Secret(KEY), Secret("key-cccccc")]


def test_provider_config_of_another_provider_is_its_entry() -> None:
    config = Config.from_dict(
        {"provider": "openai", "api_key": KEY, "providers": {"anthropic": {"api_key": OTHER_KEY}}}
    )
    assert config.provider_config("anthropic") == config.providers["anthropic"]


def test_provider_config_of_an_unknown_provider_raises_provider_not_found() -> None:
    config = Config.from_dict({"providers": {"anthropic": {}}})
    with pytest.raises(ProviderNotFound) as error:
        config.provider_config("gemini")
    assert error.value.details["available"] == ["anthropic"]  # the default: the one entry


def test_default_provider_entry_without_top_level_settings_is_returned_as_is() -> None:
    config = Config.from_dict({"provider": "anthropic", "providers": {"anthropic": {}}})
    assert config.provider_config("anthropic") is config.providers["anthropic"]


# ------------------------------------------------------------------------------ defaults


def test_defaults_beat_the_top_level_in_a_directly_made_config() -> None:
    config = Config(
        provider="openai", model="gpt-4o", defaults=DefaultsConfig(provider="anthropic")
    )
    assert (config.default_provider, config.default_model) == ("anthropic", "gpt-4o")


def test_either_spelling_in_one_source_sets_both() -> None:
    config = Config.from_dict({"defaults": {"provider": "gemini"}, "model": "gemini-2.0-flash"})
    assert (config.provider, config.defaults.provider) == ("gemini", "gemini")
    assert (config.model, config.defaults.model) == ("gemini-2.0-flash", "gemini-2.0-flash")


def test_two_different_spellings_in_one_source_are_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"provider": "openai", "defaults": {"provider": "anthropic"}})
    assert problems_of(error)["defaults.provider"].message == (
        "conflicts with the top-level 'provider' given with it"
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_p", 1.5),
        ("frequency_penalty", -3),
        ("presence_penalty", 2.1),
        ("max_tokens", 0),
        ("top_k", 0),
        ("stop", "END"),
        ("seed", "x"),
        ("provider_options", []),
    ],
)
def test_default_option_out_of_range_is_a_problem(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"defaults": {"options": {option: value}}})
    assert f"defaults.options.{option}" in problems_of(error)


def test_default_options_accept_the_model_option_names() -> None:
    options = {
        "temperature": 0,
        "max_tokens": 256,
        "top_p": 0.9,
        "top_k": 40,
        "frequency_penalty": -2,
        "presence_penalty": 2,
        "stop": ["END"],
        "seed": 7,
        "provider_options": {"reasoning_effort": "low"},
    }
    config = Config.from_dict({"defaults": {"options": options}})
    assert config.defaults.options == {**options, "temperature": 0.0}


def test_unknown_default_option_is_a_problem_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"defaults": {"options": {"temprature": 1}}})
    assert problems_of(error)["defaults.options.temprature"].message == (
        "unknown field 'temprature' - did you mean 'temperature'?"
    )


def test_defaults_make_model_options() -> None:
    from llm_invocation.types import ModelOptions

    defaults = DefaultsConfig(options={"temperature": 0.5, "stop": ["END"]})
    assert defaults.model_options() == ModelOptions(temperature=0.5, stop=["END"])


# ------------------------------------------------------------------------------------ mcp


def test_mcp_stdio_server_requires_a_command() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"mcp": {"servers": {"files": {"transport": "stdio"}}}})
    assert problems_of(error)["mcp.servers.files.command"].message == (
        "is required for the stdio transport"
    )


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_mcp_http_and_sse_servers_require_a_url(transport: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        MCPServerConfig(transport=transport)  # type: ignore[arg-type]
    assert problems_of(error)["url"].message == f"is required for the {transport} transport"


def test_mcp_url_must_be_http_or_https() -> None:
    with pytest.raises(ConfigurationError) as error:
        MCPServerConfig(transport="sse", url="ws://mcp.example")
    assert "url" in problems_of(error)


def test_mcp_transport_is_required_and_must_be_known() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"mcp": {"servers": {"a": {"command": "x"}, "b": {"transport": "tcp"}}}})
    assert set(problems_of(error)) == {"mcp.servers.a.transport", "mcp.servers.b.transport"}


def test_mcp_env_and_headers_are_secrets() -> None:
    server = MCPServerConfig(
        transport="http",
        url="https://mcp.example/mcp",
        headers={"Authorization": f"Bearer {KEY}"},  # type: ignore[dict-item]
        env={"TOKEN": KEY},  # type: ignore[dict-item]
    )
    assert server.headers["Authorization"].reveal() == f"Bearer {KEY}"
    assert server.env["TOKEN"] == Secret(KEY)


def test_mcp_server_reads_every_field() -> None:
    config = Config.from_dict(
        {
            "mcp": {
                "servers": {
                    "files": {
                        "transport": "stdio",
                        "command": "uvx",
                        "args": ["mcp-server-files", "--root", "."],
                        "cwd": Path("/tmp"),
                        "timeout": "5s",
                        "enabled": False,
                    }
                }
            }
        }
    )
    server = config.mcp.servers["files"]
    assert (server.args, server.cwd, server.timeout, server.enabled) == (
        ["mcp-server-files", "--root", "."],
        "/tmp",
        5.0,
        False,
    )


# ------------------------------------------------------------------ tools, store, websocket


def test_tools_section_is_validated() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"tools": {"max_steps": 0, "timeout": 0, "max_concurrency": -1}})
    assert set(problems_of(error)) == {"tools.max_steps", "tools.timeout", "tools.max_concurrency"}


@pytest.mark.parametrize("store", ["memory", "redis://localhost:6379/0", "rediss://h:6380"])
def test_store_accepts_memory_and_redis_urls(store: str) -> None:
    assert Config.from_dict({"store": store}).store == store


@pytest.mark.parametrize("store", ["sqlite", "http://localhost:6379", "redis://"])
def test_store_rejects_anything_else(store: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"store": store})
    assert problems_of(error)["store"].message == "expected 'memory' or a redis:// or rediss:// URL"


def test_store_fail_mode_must_be_open_or_closed() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"store_fail_mode": "ajar"})
    assert "store_fail_mode" in problems_of(error)


def test_ledger_path_accepts_a_path(tmp_path: Path) -> None:
    config = Config.from_dict({"ledger_path": tmp_path / "ledger.sqlite"})
    assert config.ledger_path == str(tmp_path / "ledger.sqlite")


def test_websocket_section_is_validated() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict(
            {"websocket": {"port": 70000, "max_message_size": 0, "tokens": [5], "host": ""}}
        )
    assert set(problems_of(error)) == {
        "websocket.port",
        "websocket.max_message_size",
        "websocket.tokens[0]",
        "websocket.host",
    }


# ------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("0.25", 0.25),
        ("100ms", 0.1),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("6m0s", 360.0),
        ("1h 30m", 5400.0),
        (" 10s ", 10.0),
        ("500us", 0.0005),
        ("250µs", 0.00025),
        ("1000000ns", 0.001),
        ("0s", 0.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration_reads(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    "text", ["", "soon", "-5s", "5x", "1h30", "h", "1.2.3s", "5 m s", "1e3s", -1, math.nan]
)
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_duration_rejects_a_bool() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(True)  # noqa: FBT003 - the bool is the point


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.1, "100ms"),
        (0.0015, "1.5ms"),
        (1.5, "1.5s"),
        (30, "30s"),
        (90, "1m30s"),
        (300, "5m"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
    ],
)
def test_format_duration_writes(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, math.inf, math.nan])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=10**11))
def test_format_duration_round_trips_through_parse_duration(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-6)


def test_bad_duration_in_config_is_a_problem_at_its_path() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"timeouts": {"idle_chunk": "5x"}})
    message = problems_of(error)["timeouts.idle_chunk"].message
    assert message.startswith("expected seconds or a duration such as '100ms'")
    assert message.endswith("got '5x'")


# ------------------------------------------------------------------------------------ yaml

YAML_TEXT = """\
provider: openai
model: gpt-4
timeout: 30s
retries:
  max_attempts: 3
  initial_delay: 100ms
  max_delay: 2s
  multiplier: 2.0
rate_limits:
  requests_per_minute: 60
  tokens_per_minute: 100000
  concurrent_calls: 10
cost_control:
  max_cost_per_request: 0.50
  max_budget: 100.00
  budget_period: 24h
logging:
  level: info
  format: json
"""


def test_from_yaml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text(YAML_TEXT)
    assert Config.from_yaml(str(path)) == Config.from_dict(SEED_000_YAML_SHAPE)


def test_from_yaml_reads_a_path_object(tmp_path: Path) -> None:
    path = tmp_path / "settings.conf"
    path.write_text("model: gpt-4o\n")
    assert Config.from_yaml(path).model == "gpt-4o"


def test_from_yaml_reads_text() -> None:
    assert Config.from_yaml(YAML_TEXT) == Config.from_dict(SEED_000_YAML_SHAPE)


def test_empty_yaml_gives_the_defaults() -> None:
    assert Config.from_yaml("# nothing yet\n") == Config()


def test_yaml_interpolates_environment_variables() -> None:
    text = "api_key: ${MY_KEY}\nmodel: ${MODEL:-gpt-4o}\nbase_url: https://${HOST}/v1\n"
    config = Config.from_yaml(text, environ={"MY_KEY": KEY, "HOST": "proxy.example"})
    assert config.api_key == Secret(KEY)
    assert config.model == "gpt-4o"
    assert config.base_url == "https://proxy.example/v1"


def test_yaml_interpolation_default_applies_to_an_empty_variable() -> None:
    config = Config.from_yaml("model: ${MODEL:-gpt-4o}\n", environ={"MODEL": ""})
    assert config.model == "gpt-4o"


def test_yaml_interpolation_default_may_be_empty() -> None:
    config = Config.from_yaml("api_key: ${MY_KEY:-}\n", environ={})
    assert config.api_key is None


def test_yaml_dollar_dollar_brace_writes_a_literal() -> None:
    config = Config.from_yaml("providers:\n  x:\n    options: {t: '$${HOME}'}\n", environ={})
    assert config.providers["x"].options == {"t": "${HOME}"}


def test_yaml_interpolation_applies_in_lists() -> None:
    config = Config.from_yaml('websocket:\n  tokens: ["${TOKEN}"]\n', environ={"TOKEN": KEY})
    assert config.websocket.tokens == [Secret(KEY)]


def test_yaml_unset_variable_is_a_problem_with_its_line() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml("model: gpt-4o\nbase_url: ${NOPE}\n", environ={})
    problem = problems_of(error)["base_url"]
    assert "NOPE is not set" in problem.message
    assert problem.source == "yaml <text>:2"


def test_yaml_malformed_reference_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml("model: ${1abc}\n", environ={})
    assert "invalid ${...} reference" in problems_of(error)["model"].message


def test_yaml_problem_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text("provider: openai\nrate_limits:\n  requests_per_minute: lots\n")
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(path)
    problem = problems_of(error)["rate_limits.requests_per_minute"]
    assert problem.source == f"yaml {path}:3"


def test_yaml_list_item_problem_names_its_line() -> None:
    text = "cost_control:\n  alert_thresholds:\n    - 0.5\n    - 7\n"
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(text)
    assert problems_of(error)["cost_control.alert_thresholds[1]"].source == "yaml <text>:4"


def test_yaml_syntax_error_is_a_problem_with_its_line_and_no_snippet() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(f"provider: openai\napi_key: {KEY}: [\n")
    problem = problems_of(error)["<root>"]
    assert problem.message.startswith("invalid YAML: ")
    assert problem.source == "yaml <text>:2"
    assert KEY not in everything_said(error.value)


def test_missing_yaml_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(tmp_path / "absent.yaml")
    assert "cannot read the YAML file" in problems_of(error)["<root>"].message


def test_yaml_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml("- a\n- b\n")
    assert problems_of(error)["<root>"].message == "the top level must be a mapping, got a list"


def test_missing_pyyaml_asks_for_the_yaml_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigurationError, match=r"llm-invocation\[yaml\]"):
        Config.from_yaml("model: x\n")


# ------------------------------------------------------------------------------------- env


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("LLM_PROVIDER", "anthropic", "provider", "anthropic"),
        ("LLM_MODEL", "gpt-4", "model", "gpt-4"),
        ("LLM_BASE_URL", "https://gw.example/v1", "base_url", "https://gw.example/v1"),
        ("LLM_TIMEOUT", "45s", "timeout", 45.0),
        ("LLM_MAX_RETRIES", "5", "retries.max_attempts", 6),
        ("LLM_REQUESTS_PER_MINUTE", "60", "rate_limits.requests_per_minute", 60),
        ("LLM_MAX_TOKENS_PER_MINUTE", "1000", "rate_limits.tokens_per_minute", 1000),
        ("LLM_MAX_CONCURRENT_CALLS", "10", "rate_limits.concurrent_calls", 10),
        (
            "LLM_MAX_COST_PER_REQUEST",
            "0.50",
            "cost_control.max_cost_per_request",
            Decimal("0.50"),
        ),
        ("LLM_MAX_BUDGET", "100.00", "cost_control.max_budget", Decimal(100)),
        ("LLM_BUDGET_PERIOD", "24h", "cost_control.budget_period", 86400.0),
        ("LLM_LOG_LEVEL", "DEBUG", "logging.level", "debug"),
        ("LLM_LOG_FORMAT", "json", "logging.format", "json"),
        ("LLM_STORE", "redis://cache:6379", "store", "redis://cache:6379"),
        ("LLM_WS_HOST", "192.0.2.10", "websocket.host", "192.0.2.10"),
        ("LLM_WS_PORT", "9000", "websocket.port", 9000),
        (
            "LLM_WS_ALLOWED_ORIGINS",
            "https://a.example, https://b.example,",
            "websocket.allowed_origins",
            ["https://a.example", "https://b.example"],
        ),
    ],
)
def test_environment_variable_sets_its_field(
    variable: str, value: str, field: str, expected: object
) -> None:
    assert attrgetter(field)(Config.from_env({variable: value})) == expected


def test_llm_api_key_is_the_default_providers_key() -> None:
    config = Config.from_env({"LLM_API_KEY": KEY, "LLM_PROVIDER": "anthropic"})
    assert config.api_key == Secret(KEY)
    assert config.provider_config("anthropic").api_key == Secret(KEY)


def test_llm_ws_tokens_is_a_comma_separated_list_of_secrets() -> None:
    config = Config.from_env({"LLM_WS_TOKENS": f"{KEY}, other-token-123456"})
    assert config.websocket.tokens == [Secret(KEY), Secret("other-token-123456")]
    assert KEY not in repr(config) and KEY not in str(config.redacted())


def test_llm_max_retries_counts_retries_so_zero_means_one_attempt() -> None:
    assert Config.from_env({"LLM_MAX_RETRIES": "0"}).retries.max_attempts == 1


@pytest.mark.parametrize("value", ["-1", "three", "1.5"])
def test_bad_llm_max_retries_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({"LLM_MAX_RETRIES": value})
    assert problems_of(error)["retries.max_attempts"].source == "env LLM_MAX_RETRIES"


@pytest.mark.parametrize(
    ("variable", "value", "path"),
    [
        ("LLM_TIMEOUT", "soon", "timeout"),
        ("LLM_REQUESTS_PER_MINUTE", "lots", "rate_limits.requests_per_minute"),
        ("LLM_MAX_TOKENS_PER_MINUTE", "-1", "rate_limits.tokens_per_minute"),
        ("LLM_MAX_CONCURRENT_CALLS", "1.5", "rate_limits.concurrent_calls"),
        ("LLM_MAX_COST_PER_REQUEST", "cheap", "cost_control.max_cost_per_request"),
        ("LLM_MAX_BUDGET", "-5", "cost_control.max_budget"),
        ("LLM_BUDGET_PERIOD", "weekly", "cost_control.budget_period"),
        ("LLM_LOG_LEVEL", "chatty", "logging.level"),
        ("LLM_LOG_FORMAT", "xml", "logging.format"),
        ("LLM_STORE", "postgres://db", "store"),
        ("LLM_BASE_URL", "gw.example", "base_url"),
        ("LLM_WS_PORT", "70000", "websocket.port"),
    ],
)
def test_bad_environment_value_is_a_problem_naming_the_variable(
    variable: str, value: str, path: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({variable: value})
    assert problems_of(error)[path].source == f"env {variable}"


def test_every_bad_environment_variable_is_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({"LLM_TIMEOUT": "soon", "LLM_LOG_LEVEL": "chatty", "LLM_STORE": "x"})
    assert {p.source for p in error.value.problems} == {
        "env LLM_TIMEOUT",
        "env LLM_LOG_LEVEL",
        "env LLM_STORE",
    }


def test_empty_environment_variable_counts_as_unset() -> None:
    assert Config.from_env({"LLM_TIMEOUT": "", "LLM_MODEL": ""}) == Config()


def test_no_environment_gives_the_defaults() -> None:
    assert Config.from_env({}) == Config()


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("OPENAI_API_KEY", "openai"),
        ("ANTHROPIC_API_KEY", "anthropic"),
        ("GEMINI_API_KEY", "gemini"),
        ("GOOGLE_API_KEY", "gemini"),
        ("GROQ_API_KEY", "groq"),
        ("TOGETHER_API_KEY", "together"),
        ("OPENROUTER_API_KEY", "openrouter"),
        ("DEEPSEEK_API_KEY", "deepseek"),
        ("MISTRAL_API_KEY", "mistral"),
        ("AZURE_OPENAI_API_KEY", "azure"),
    ],
)
def test_provider_key_variable_enables_that_provider(variable: str, provider: str) -> None:
    config = Config.from_env({variable: KEY})
    assert list(config.providers) == [provider]
    assert config.providers[provider].enabled is True
    assert config.providers[provider].api_key == Secret(KEY)


def test_gemini_api_key_beats_google_api_key() -> None:
    config = Config.from_env({"GEMINI_API_KEY": KEY, "GOOGLE_API_KEY": OTHER_KEY})
    assert config.providers["gemini"].api_key == Secret(KEY)


def test_openai_variables_set_base_url_and_organization() -> None:
    config = Config.from_env(
        {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": "https://proxy.example/v1",
            "OPENAI_ORG_ID": "org-42",
        }
    )
    entry = config.providers["openai"]
    assert (entry.base_url, entry.organization) == ("https://proxy.example/v1", "org-42")


def test_anthropic_base_url_variable_is_read() -> None:
    config = Config.from_env(
        {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "https://claude.example"}
    )
    assert config.providers["anthropic"].base_url == "https://claude.example"


def test_azure_variables_set_endpoint_and_api_version() -> None:
    config = Config.from_env(
        {
            "AZURE_OPENAI_API_KEY": KEY,
            "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
            "OPENAI_API_VERSION": "2024-10-21",
        }
    )
    entry = config.providers["azure"]
    assert (entry.base_url, entry.api_version) == ("https://res.openai.azure.com", "2024-10-21")


def test_provider_settings_without_its_key_create_no_provider() -> None:
    config = Config.from_env({"OPENAI_API_VERSION": "2024-10-21", "OPENAI_ORG_ID": "org-1"})
    assert config.providers == {}


def test_provider_settings_apply_to_a_provider_from_yaml() -> None:
    config = Config.load(
        yaml="providers:\n  openai:\n    api_keys: [key-aaaaaa]\n",
        environ={"OPENAI_BASE_URL": "https://proxy.example/v1"},
    )
    assert config.providers["openai"].base_url == "https://proxy.example/v1"


def test_provider_key_variable_keeps_an_explicit_disable_from_yaml() -> None:
    config = Config.load(
        yaml="providers:\n  openai:\n    enabled: false\n", environ={"OPENAI_API_KEY": KEY}
    )
    assert config.providers["openai"].enabled is False
    assert config.providers["openai"].api_key == Secret(KEY)


def test_bad_provider_variable_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "claude.example"})
    problem = problems_of(error)["providers.anthropic.base_url"]
    assert problem.source == "env ANTHROPIC_BASE_URL"


def test_llm_config_file_is_loaded_under_the_variables(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text("model: from-file\ntimeout: 10s\n")
    config = Config.from_env({"LLM_CONFIG_FILE": str(path), "LLM_TIMEOUT": "20s"})
    assert (config.model, config.timeout) == ("from-file", 20.0)


def test_missing_llm_config_file_is_a_problem_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({"LLM_CONFIG_FILE": str(tmp_path / "absent.yaml")})
    assert problems_of(error)["<root>"].source == "env LLM_CONFIG_FILE"


# ------------------------------------------------------------------------------ precedence


def test_precedence_yaml_beats_the_defaults() -> None:
    assert Config.load(yaml="timeout: 10s\n", environ={}).timeout == 10.0


def test_precedence_environment_beats_yaml() -> None:
    config = Config.load(yaml="timeout: 10s\n", environ={"LLM_TIMEOUT": "20s"})
    assert config.timeout == 20.0


def test_precedence_keywords_beat_the_environment() -> None:
    config = Config.load(yaml="timeout: 10s\n", environ={"LLM_TIMEOUT": "20s"}, timeout=40)
    assert config.timeout == 40.0


def test_precedence_keeps_what_higher_layers_leave_alone() -> None:
    config = Config.load(
        yaml="timeout: 10s\nmodel: from-yaml\nprovider: openai\n",
        environ={"LLM_MODEL": "from-env"},
        provider="anthropic",
    )
    assert (config.timeout, config.model, config.provider) == (10.0, "from-env", "anthropic")


def test_nested_keywords_merge_key_by_key_into_lower_layers() -> None:
    config = Config.load(
        yaml="rate_limits:\n  requests_per_minute: 60\n  tokens_per_minute: 1000\n",
        environ={"LLM_MAX_CONCURRENT_CALLS": "4"},
        rate_limits={"requests_per_minute": 10},
    )
    assert config.rate_limits == RateLimitConfig(
        requests_per_minute=10, tokens_per_minute=1000, concurrent_calls=4
    )


def test_a_section_instance_as_a_keyword_replaces_the_section() -> None:
    config = Config.load(
        yaml="retries:\n  initial_delay: 1s\n", environ={}, retries=RetryConfig(max_attempts=5)
    )
    assert config.retries == RetryConfig(max_attempts=5)


def test_yaml_argument_beats_llm_config_file(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text("model: from-file\n")
    config = Config.load(yaml="model: from-argument\n", environ={"LLM_CONFIG_FILE": str(path)})
    assert config.model == "from-argument"


def test_environment_provider_beats_defaults_provider_from_yaml() -> None:
    config = Config.load(
        yaml="defaults:\n  provider: openai\n  model: gpt-4o\n",
        environ={"LLM_PROVIDER": "anthropic", "LLM_MODEL": "claude-sonnet-4-5"},
    )
    assert (config.default_provider, config.default_model) == ("anthropic", "claude-sonnet-4-5")
    assert config.defaults.provider == "anthropic"


def test_keyword_defaults_provider_beats_environment_provider() -> None:
    config = Config.load(environ={"LLM_PROVIDER": "anthropic"}, defaults={"provider": "gemini"})
    assert (config.provider, config.default_provider) == ("gemini", "gemini")


def test_a_higher_layer_can_fix_a_bad_lower_value() -> None:
    assert Config.load(environ={"LLM_TIMEOUT": "soon"}, timeout=5).timeout == 5.0


def test_problems_name_the_layer_each_value_came_from(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text("retries:\n  max_attempts: 0\n")
    with pytest.raises(ConfigurationError) as error:
        Config.load(
            environ={"LLM_CONFIG_FILE": str(path), "LLM_TIMEOUT": "soon"},
            rate_limits={"max_queue": -1},
        )
    sources = {p.path: p.source for p in error.value.problems}
    assert sources == {
        "retries.max_attempts": f"yaml {path}:2",
        "timeout": "env LLM_TIMEOUT",
        "rate_limits.max_queue": "keyword",
    }


def test_unknown_keyword_is_a_problem_from_keyword() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.load(environ={}, timout=5)
    problem = problems_of(error)["timout"]
    assert (problem.message, problem.source) == (
        "unknown field 'timout' - did you mean 'timeout'?",
        "keyword",
    )


# ---------------------------------------------------------------- replace and merged_with


def test_replace_changes_a_field_and_validates() -> None:
    config = Config().replace(timeout="5s", api_key=KEY)
    assert (config.timeout, config.api_key) == (5.0, Secret(KEY))
    with pytest.raises(ConfigurationError) as error:
        config.replace(timeout=-1)
    assert problems_of(error)["timeout"].source == "keyword"


def test_replace_rebuilds_a_section_given_as_a_dict() -> None:
    config = Config.from_dict({"rate_limits": {"requests_per_minute": 5}})
    replaced = config.replace(rate_limits={"tokens_per_minute": 100})
    # rebuilt from the section's defaults (the first specification's), not from ``config``
    assert replaced.rate_limits == RateLimitConfig(
        requests_per_minute=60, tokens_per_minute=100, concurrent_calls=10
    )


def test_replace_of_the_provider_moves_the_default_provider() -> None:
    config = Config.from_dict({"defaults": {"provider": "openai"}})
    assert config.replace(provider="anthropic").default_provider == "anthropic"


def test_replace_leaves_the_original_alone() -> None:
    config = Config.from_dict({"providers": {"x": {"models": ["a"]}}})
    config.replace(providers={"y": {}})
    assert list(config.providers) == ["x"]


def test_merged_with_merges_key_by_key() -> None:
    config = Config.from_dict({"rate_limits": {"requests_per_minute": 60}, "model": "a"})
    merged = config.merged_with({"rate_limits": {"tokens_per_minute": 100}})
    assert merged.rate_limits == RateLimitConfig(
        requests_per_minute=60, tokens_per_minute=100, concurrent_calls=10
    )
    assert merged.model == "a"


def test_merged_with_adds_to_the_providers_map() -> None:
    config = Config.from_dict({"providers": {"openai": {"api_key": KEY}}})
    merged = config.merged_with({"providers": {"openai": {"models": ["gpt-4o"]}, "mock": {}}})
    assert merged.providers["openai"] == ProviderConfig(api_key=Secret(KEY), models=["gpt-4o"])
    assert set(merged.providers) == {"openai", "mock"}


def test_merged_with_reports_problems_with_its_source() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config().merged_with({"retries": {"max_delay": "1ms"}}, source="overrides")
    problem = problems_of(error)["retries.max_delay"]
    assert problem.source == "overrides"


# --------------------------------------------------------------------------------- secrets


def secret_config() -> Config:
    return Config.from_dict(
        {
            "provider": "openai",
            "api_key": KEY,
            "store": f"redis://:{KEY}@cache:6379/0",
            "providers": {
                "anthropic": {
                    "api_key": OTHER_KEY,
                    "api_keys": [KEY],
                    "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"},
                }
            },
            "mcp": {
                "servers": {
                    "remote": {
                        "transport": "http",
                        "url": "https://mcp.example/mcp",
                        "headers": {"Authorization": f"Bearer {KEY}"},
                        "env": {"TOKEN": KEY},
                    }
                }
            },
            "websocket": {"tokens": [KEY]},
        }
    )


def test_repr_and_str_of_config_never_show_a_key() -> None:
    config = secret_config()
    for text in (repr(config), str(config), f"{config}", f"{config!r}"):
        assert KEY not in text
        assert OTHER_KEY not in text
        assert HEADER_TOKEN not in text
    assert "Secret('sk-***')" in repr(config)


def test_repr_of_every_section_never_shows_a_key() -> None:
    config = secret_config()
    sections = [
        config.providers["anthropic"],
        config.mcp,
        config.mcp.servers["remote"],
        config.websocket,
        config.provider_config("openai"),
    ]
    for section in sections:
        assert KEY not in repr(section)
        assert OTHER_KEY not in repr(section)
        assert HEADER_TOKEN not in repr(section)


def test_redacted_masks_every_secret_and_is_json_able() -> None:
    redacted = secret_config().redacted()
    text = json.dumps(redacted)
    assert KEY not in text
    assert OTHER_KEY not in text
    assert HEADER_TOKEN not in text
    assert redacted["api_key"] == "sk-***"
    assert redacted["store"] == "redis://:***@cache:6379/0"
    assert redacted["providers"]["anthropic"]["headers"] == {"Authorization": "Bearer ***"}


def test_to_json_masks_every_secret() -> None:
    encoded = secret_config().to_json()
    assert KEY.encode() not in encoded
    assert OTHER_KEY.encode() not in encoded


def test_json_round_trip_keeps_everything_but_the_keys() -> None:
    config = Config.from_dict(
        {
            **SEED_000_YAML_SHAPE,
            "api_key": KEY,
            "providers": {"anthropic": {"api_key": OTHER_KEY}},
            "defaults": {"provider": "openai", "model": "gpt-4", "options": {"top_p": 0.5}},
        }
    )
    back = Config.from_dict(json.loads(config.to_json()))
    assert back.api_key is not None
    assert back.api_key.reveal() == "sk-***"
    restored = back.replace(api_key=config.api_key, providers={"anthropic": {"api_key": OTHER_KEY}})
    assert restored == config


def test_plain_msgspec_encoding_refuses_rather_than_leaks() -> None:
    with pytest.raises(TypeError) as error:
        msgspec.json.encode(Config(api_key=Secret(KEY)))
    assert KEY not in str(error.value)


def test_errors_never_show_a_key_put_in_the_wrong_place() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict(
            {
                "model": 5,
                "timeout": KEY,
                "base_url": KEY,
                "apikey": KEY,
                KEY: "x",
                "rate_limits": {"requests_per_minute": KEY},
                "cost_control": {"max_budget": KEY},
                "logging": {"level": KEY},
                "providers": {"openai": {"api_key": 12345, "kind": KEY, "fallback": [KEY]}},
                "store": KEY,
            }
        )
    assert len(error.value.problems) == 11
    said = everything_said(error.value)
    assert KEY not in said
    assert KEY[3:] not in said


def test_errors_never_show_a_key_from_the_environment() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({"LLM_TIMEOUT": KEY, "LLM_MAX_RETRIES": KEY, "LLM_STORE": KEY})
    assert KEY not in everything_said(error.value)


def test_errors_never_show_an_unshaped_secret_in_a_long_value() -> None:
    unshaped = "hunter2-correct-horse-battery-staple"
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"timeout": unshaped, "model": 1})
    assert unshaped not in everything_said(error.value)


def test_log_capture_never_shows_a_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llm_invocation.config")
    config = Config.load(environ={"LLM_API_KEY": KEY, "OPENAI_API_KEY": OTHER_KEY})
    logging.getLogger("test").warning("using %s / %r", config, config.provider_config("openai"))
    try:
        Config.from_dict({"timeout": KEY, "api_key": KEY, "retries": {"max_delay": KEY}})
    except ConfigurationError:
        logging.getLogger("test").exception("configuration failed")
    assert "configuration loaded" in caplog.text
    assert "configuration failed" in caplog.text
    assert KEY not in caplog.text
    assert OTHER_KEY not in caplog.text


def test_secrets_compare_by_value_so_configs_compare() -> None:
    assert Config.from_dict({"api_key": KEY}) == Config(api_key=Secret(KEY))


def test_redacted_writes_money_as_a_string() -> None:
    config = Config.from_dict({"cost_control": {"max_budget": "12.50"}})
    assert config.redacted()["cost_control"]["max_budget"] == "12.50"


# ------------------------------------------------------------------------------ odd inputs


def test_keyword_section_instance_that_conflicts_with_a_keyword_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.load(environ={}, provider="openai", defaults=DefaultsConfig(provider="gemini"))
    assert problems_of(error)["defaults.provider"].source == "keyword"


def test_keyword_section_instance_sets_the_default_provider() -> None:
    config = Config.load(environ={"LLM_PROVIDER": "openai"}, defaults=DefaultsConfig(model="m"))
    assert (config.default_provider, config.default_model) == ("openai", "m")


def test_too_many_stop_sequences_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"defaults": {"options": {"stop": ["x"] * 17}}})
    assert problems_of(error)["defaults.options.stop"].message == "takes at most 16 items, got 17"


def test_non_string_top_level_key_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({1: "x"})  # type: ignore[dict-item]
    assert problems_of(error)["1"].message == "keys must be strings, got 1"


# ------------------------------------------------------------------------------ hostile input


def only_problem(error: pytest.ExceptionInfo[ConfigurationError]) -> ConfigProblem:
    (problem,) = error.value.problems
    return problem


@pytest.mark.parametrize(
    ("environ", "path"),
    [
        ({"LLM_REQUESTS_PER_MINUTE": "9" * 400}, "rate_limits.requests_per_minute"),
        ({"LLM_MAX_TOKENS_PER_MINUTE": "1" + "0" * 4400}, "rate_limits.tokens_per_minute"),
        ({"LLM_TIMEOUT": "9" * 400}, "timeout"),
        ({"LLM_BUDGET_PERIOD": "9" * 400 + "h"}, "cost_control.budget_period"),
        ({"LLM_MAX_BUDGET": "1e999999"}, "cost_control.max_budget"),
        ({"LLM_MAX_RETRIES": "9" * 400}, "retries.max_attempts"),
        ({"LLM_WS_PORT": "9" * 5000}, "websocket.port"),
        ({"LLM_STORE": "redis://[::1"}, "store"),
        ({"LLM_STORE": "redis://cache:99999/0"}, "store"),
        ({"LLM_STORE": "redis://cache/notadb"}, "store"),
        ({"LLM_BASE_URL": "http://[::1"}, "base_url"),
        ({"LLM_BASE_URL": "http://exa mple.com/v1"}, "base_url"),
        ({"LLM_PROXY": "http://[::1"}, "proxy"),
        ({"LLM_PROXY": "http://proxy:99999"}, "proxy"),
        ({"LLM_MODEL": "gpt\udcff"}, "model"),
    ],
)
def test_a_hostile_environment_variable_is_a_problem_of_its_path_and_variable(
    environ: dict[str, str], path: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env(environ)
    problem = problems_of(error)[path]
    assert problem.source == f"env {next(iter(environ))}"


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"timeout": 10**400}, "timeout", "expected seconds or a duration"),
        ({"timeout": math.nan}, "timeout", "expected seconds or a duration"),
        ({"timeout": "36526d"}, "timeout", "is too long: at most 100 years"),
        ({"retries": {"multiplier": 10**400}}, "retries.multiplier", "expected a finite"),
        ({"retries": {"multiplier": 1000}}, "retries.multiplier", "between 1 and 100"),
        ({"rate_limits": {"max_queue": 2**63}}, "rate_limits.max_queue", "64-bit"),
        ({"cost_control": {"max_budget": 10**5000}}, "cost_control.max_budget", "too large"),
        ({"cost_control": {"max_budget": "1e-30"}}, "cost_control.max_budget", "decimal places"),
        ({"defaults": {"options": {"seed": 2**64}}}, "defaults.options.seed", "64-bit"),
        ({"ledger_path": "usage\x00.sqlite3"}, "ledger_path", "NUL"),
        ({"providers": {"p": {"options": {"x": object()}}}}, "providers.p.options.x", "JSON"),
        (
            {"providers": {"p": {"headers": {"X-A": "v\r\nB: 1"}}}},
            "providers.p.headers.X-A",
            "line",
        ),
        ({"providers": {"p": {"headers": {"X A": "v"}}}}, "providers.p.headers.X A", "header name"),
        (
            {
                "mcp": {
                    "servers": {"s": {"transport": "stdio", "command": "x", "env": {"A=B": "v"}}}
                }
            },
            "mcp.servers.s.env.A=B",
            "environment variable name",
        ),
    ],
)
def test_a_hostile_keyword_is_a_problem_of_its_path(
    changes: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.load(environ={}, **changes)
    problem = problems_of(error)[path]
    assert message in problem.message
    assert problem.source == "keyword"


def test_direct_construction_with_a_huge_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config(timeout=10**400)
    assert (only_problem(error).path, only_problem(error).source) == ("timeout", "keyword")


def test_direct_construction_with_an_unknown_keyword_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config(timeuot=5)  # type: ignore[call-arg]
    assert only_problem(error).message == "unknown field 'timeuot' - did you mean 'timeout'?"


def test_direct_construction_with_positional_arguments_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as error:
        RetryConfig(3)  # type: ignore[misc]
    assert only_problem(error).message == "RetryConfig takes keyword arguments only"


def test_direct_construction_without_a_required_field_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as error:
        PriceOverride(input_per_mtok=Decimal(1))  # type: ignore[call-arg]
    assert problems_of(error)["output_per_mtok"].message == "is required"


@pytest.mark.parametrize("value", [5, None, "provider: openai", ["provider"], b"{}"])
def test_a_whole_input_that_is_not_a_mapping_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict(value)
    assert only_problem(error).message.startswith("expected a mapping of settings")
    with pytest.raises(ConfigurationError):
        Config().merged_with(value)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_value_nested_a_thousand_levels_deep_is_a_problem() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict({"providers": {"p": {"options": {"x": nested(1000)}}}})
    problem = only_problem(error)
    assert problem.path.startswith("providers.p.options.x[0]")
    assert "nests deeper than 32 levels" in problem.message


def test_a_value_that_holds_itself_is_a_problem() -> None:
    loop: list[object] = []
    loop.append(loop)
    for load in (
        lambda: Config.from_dict({"providers": {"p": {"options": {"x": loop}}}}),
        lambda: Config(providers={"p": {"options": {"x": loop}}}),  # type: ignore[dict-item]
        lambda: Config().replace(defaults={"options": {"provider_options": {"x": loop}}}),
    ):
        with pytest.raises(ConfigurationError) as error:
            load()
        assert "or holds itself" in only_problem(error).message


def test_an_environment_value_that_is_not_a_string_is_a_problem_that_does_not_show_it() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({"LLM_API_KEY": 86753091})  # type: ignore[dict-item]
    problem = only_problem(error)
    assert (problem.path, problem.source) == ("api_key", "env LLM_API_KEY")
    assert "86753091" not in everything_said(error.value)


def test_an_environment_that_is_not_a_mapping_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env(["LLM_TIMEOUT=5"])  # type: ignore[arg-type]
    assert only_problem(error).source == "env"


def test_parse_duration_says_value_error_for_a_huge_number() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(10**400)
    with pytest.raises(ValueError, match="duration"):
        format_duration(10**400)


# ------------------------------------------------------------------------------ hostile YAML


def yaml_problem(text: str | bytes) -> ConfigProblem:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(text, environ={})
    return only_problem(error)


def test_yaml_with_a_nul_byte_is_a_problem_naming_the_line() -> None:
    problem = yaml_problem("provider: openai\nmodel: gpt\x00\n")
    assert problem.message.startswith("invalid YAML: unacceptable character #x0000")
    assert problem.source == "yaml <text>:2"


def test_yaml_bytes_of_invalid_utf8_are_a_problem() -> None:
    problem = yaml_problem(b"provider: openai\nmodel: \xff\xfe\n")
    assert problem.message == "the YAML is not valid UTF-8 (line 2, byte 24)"


def test_a_yaml_file_of_invalid_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "llm.yaml"
    path.write_bytes(b"model: \xc3\x28\n")
    problem = yaml_problem(str(path))
    assert problem.message.startswith("the YAML file is not valid UTF-8")
    assert problem.source == f"yaml {path}"


def test_yaml_larger_than_a_mebibyte_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 110_000)
    assert yaml_problem(str(path)).message == "the YAML file is larger than 1024 KiB"


@pytest.mark.parametrize("text", ["[" * 100_000, "a: " + "[" * 40 + "]" * 40])
def test_yaml_nested_too_deeply_is_a_problem(text: str) -> None:
    assert "nests deeper than 32 levels" in yaml_problem(text).message


def test_a_yaml_alias_bomb_is_a_problem() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    problem = yaml_problem("\n".join(lines) + "\n")
    assert (
        problem.message == "invalid YAML: holds more than 100000 values once aliases are expanded"
    )


def test_a_yaml_alias_inside_its_own_anchor_is_a_problem() -> None:
    assert "an alias refers to itself" in yaml_problem("providers: &p {a: *p}\n").message


def test_a_yaml_number_too_long_to_read_is_a_problem_naming_the_line() -> None:
    problem = yaml_problem("model: m\nrate_limits: {requests_per_minute: " + "9" * 5000 + "}\n")
    assert problem.message.startswith("invalid YAML: cannot read the value")
    assert problem.source == "yaml <text>:2"


def test_a_yaml_key_written_twice_is_a_problem() -> None:
    problem = yaml_problem("timeout: 5\nmodel: m\ntimeout: 6\n")
    assert (problem.path, problem.source) == ("timeout", "yaml <text>:3")


def test_yaml_that_is_neither_a_file_nor_text_is_a_problem() -> None:
    assert yaml_problem(5).message == "expected a YAML file name or YAML text, got 5"  # type: ignore[arg-type]


def test_a_yaml_file_name_with_a_nul_byte_is_a_problem() -> None:
    problem = yaml_problem("llm\x00.yaml")
    assert problem.message.startswith("cannot read the YAML file")
    assert problem.source == "yaml 'llm\\x00.yaml'"


# ------------------------------------------------------------------------- secrets by path

# Tokens of six characters: never masked for their look, and each used by one test only.
SHAPE_CASES: Final = [
    ("websocket.tokens", "tq6Wz1", lambda t: {"websocket": {"tokens": t}}),
    ("providers.openai.api_keys", "kb7Xy2", lambda t: {"providers": {"openai": {"api_keys": t}}}),
    ("providers.openai.api_key", "ka3Vn8", lambda t: {"providers": {"openai": {"api_key": [t]}}}),
    ("api_key", "km4Qp9", lambda t: {"api_key": {"value": t}}),
    (
        "providers.openai.client_key_password",
        "pw5Rt3",
        lambda t: {"providers": {"openai": {"client_key_password": [t]}}},
    ),
    (
        "providers.openai.headers.Authorization",
        "hd8Lm2",
        lambda t: {"providers": {"openai": {"headers": {"Authorization": [f"Bearer {t}"]}}}},
    ),
    (
        "mcp.servers.s.env",
        "ev2Jk7",
        lambda t: {"mcp": {"servers": {"s": {"transport": "stdio", "command": "x", "env": t}}}},
    ),
    (
        "mcp.servers.s.headers",
        "mh9Cd4",
        lambda t: {
            "mcp": {"servers": {"s": {"transport": "http", "url": "http://h", "headers": t}}}
        },
    ),
    ("proxy", "px6Fg1", lambda t: {"proxy": [f"http://user:{t}@proxy:3128"]}),
    ("store", "st3Hj8", lambda t: {"store": {"url": f"redis://:{t}@cache:6379/0"}}),
]


@pytest.mark.parametrize(("path", "token", "shape"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_a_secret_of_the_wrong_shape_is_never_shown_from_a_dict(
    path: str, token: str, shape: Any
) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_dict(shape(token))
    assert path in problems_of(error)
    assert token not in everything_said(error.value)


@pytest.mark.parametrize(("path", "token", "shape"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_a_secret_of_the_wrong_shape_is_never_shown_from_yaml(
    path: str, token: str, shape: Any
) -> None:
    text = yaml.safe_dump(shape("${SECRET}"))
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(text, environ={"SECRET": token.upper()})
    assert path in problems_of(error)
    assert token.upper() not in everything_said(error.value)


@pytest.mark.parametrize(("path", "token", "shape"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_a_secret_of_the_wrong_shape_is_never_shown_from_keywords(
    path: str, token: str, shape: Any
) -> None:
    ((top, value),) = shape(token[::-1]).items()
    for load in (lambda: Config.load(environ={}, **{top: value}), lambda: Config(**{top: value})):
        with pytest.raises(ConfigurationError) as error:
            load()
        assert path.removeprefix("<root>") in {p.path for p in error.value.problems}
        assert token[::-1] not in everything_said(error.value)


def test_a_websocket_token_from_yaml_where_a_list_is_expected_is_not_shown() -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_yaml(
            "websocket:\n  tokens: ${LLM_WS_TOKEN}\n", environ={"LLM_WS_TOKEN": "Yt4kQ7"}
        )
    problem = only_problem(error)
    assert str(problem) == "websocket.tokens: expected a list, got a string (from yaml <text>:2)"


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        ("LLM_API_KEY", "  \n", None),
        ("LLM_API_KEY", "eK7mZ2\r\n", "eK7mZ2"),
        ("OPENAI_API_KEY", "oK5nW3\x00", "oK5nW3"),
        ("LLM_WS_TOKENS", "wT8pL4\x7f", "wT8pL4"),
        ("LLM_PROXY", "http://pU2:pP9xV6@[::1", "pP9xV6"),
        ("LLM_PROXY", "socks5://sU4rT7:sP3mN8@proxy:1080", "sP3mN8"),
        ("LLM_STORE", "redis://:rP6qH2@[::1", "rP6qH2"),
        ("LLM_STORE", "redis://rU5sK9:rQ4wE1@cache:6379/x", "rQ4wE1"),
    ],
)
def test_a_secret_variable_with_a_bad_value_is_a_problem_that_does_not_show_it(
    variable: str, value: str, secret: str | None
) -> None:
    with pytest.raises(ConfigurationError) as error:
        Config.from_env({variable: value})
    assert only_problem(error).source == f"env {variable}"
    if secret is not None:
        assert secret not in everything_said(error.value)
        assert secret[:3] not in only_problem(error).message


def config_with_short_secrets(tmp_path: Path, secret: str) -> Config:
    cert = tmp_path / "client.pem"
    cert.write_text("not checked here")
    return Config.from_dict(
        {
            "api_key": f"{secret}a",
            "proxy": f"http://{secret}b@proxy:3128",
            "store": f"redis://{secret}c:{secret}d@cache:6379/0?password={secret}e",
            "providers": {
                "p": {
                    "api_key": f"{secret}f",
                    "api_keys": [f"{secret}g"],
                    "client_cert": str(cert),
                    "client_key_password": f"{secret}h",
                    "headers": {"X-Gateway": f"{secret}i", "Authorization": f"Bearer {secret}j"},
                    "proxy": f"https://{secret}k:{secret}l@proxy:3128",
                }
            },
            "mcp": {
                "servers": {
                    "s": {
                        "transport": "http",
                        "url": "http://mcp.example/mcp",
                        "headers": {"X-Token": f"{secret}m"},
                        "env": {"TOKEN": f"{secret}n"},
                    }
                }
            },
            "websocket": {"tokens": [f"{secret}o"]},
        }
    )


@pytest.mark.parametrize("secret", ["Q", "Qz", "Qz7", "Qz7w"])
def test_no_view_of_a_config_shows_a_short_secret_at_any_secret_path(
    tmp_path: Path, secret: str
) -> None:
    config = config_with_short_secrets(tmp_path, secret)
    views = [repr(config), str(config), config.to_json().decode(), json.dumps(config.redacted())]
    views += [repr(config.providers["p"]), repr(config.mcp.servers["s"]), repr(config.websocket)]
    for suffix in "abcdefghijklmno":
        assert not any(f"{secret}{suffix}" in view for view in views), suffix


def test_redacted_masks_proxy_and_store_credentials_whatever_their_length(tmp_path: Path) -> None:
    redacted = config_with_short_secrets(tmp_path, "Qz").redacted()
    assert redacted["proxy"] == "http://***@proxy:3128"
    assert redacted["store"] == "redis://***:***@cache:6379/0?password=***"
    assert redacted["providers"]["p"]["proxy"] == "https://***:***@proxy:3128"
    assert redacted["providers"]["p"]["headers"] == {
        "X-Gateway": "***",
        "Authorization": "Bearer ***",
    }


def run_cli(*argv: str) -> tuple[int, str, str]:
    from llm_invocation.cli import main

    logger = logging.getLogger("llm_invocation")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out=out, err=err)
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    return code, out.getvalue(), err.getvalue()


def test_config_check_never_shows_a_token_of_the_wrong_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "llm.yaml"
    path.write_text("websocket:\n  tokens: ${LLM_WS_TOKEN}\n")
    monkeypatch.setenv("LLM_WS_TOKEN", "cQ3vR8")
    code, out, err = run_cli("--config", str(path), "config", "check")
    assert code == 1
    assert "websocket.tokens: expected a list, got a string" in err
    assert "cQ3vR8" not in out + err


def test_config_check_never_shows_a_short_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("LLM_") or n.endswith("_API_KEY")]:
        monkeypatch.delenv(name)
    path = tmp_path / "llm.yaml"
    path.write_text(
        "proxy: http://cU1:cP2@proxy:3128\n"
        "store: redis://:cS3@cache:6379/0\n"
        "providers:\n  p:\n    kind: mock\n    headers: {X-Gateway: cH4}\n    api_keys: [cK5]\n"
        "mcp: {servers: {s: {transport: stdio, command: x, env: {T: cE6}}}}\n"
        "websocket: {tokens: [cT7]}\n"
    )
    code, out, err = run_cli("--config", str(path), "config", "check")
    assert code == 0, err
    assert json.loads(out)["proxy"] == "http://***:***@proxy:3128"
    for secret in ("cU1", "cP2", "cS3", "cH4", "cK5", "cE6", "cT7"):
        assert secret not in out + err


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1e400", "601", "nan"])
def test_a_store_urls_timeout_must_be_a_sensible_number_of_seconds(value: str) -> None:
    with pytest.raises(ConfigurationError, match="timeout= must be a number of seconds"):
        Config(store=f"redis://127.0.0.1:6379/0?timeout={value}")


def test_a_store_urls_timeout_and_prefix_are_accepted() -> None:
    store = "redis://127.0.0.1:6379/0?timeout=2.5&prefix=app:"
    assert Config(store=store).store == store
