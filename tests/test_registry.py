"""Which codec serves a provider entry, and which provider serves a request's model."""

from __future__ import annotations

import pytest

from llm_invocation.config import ProviderConfig
from llm_invocation.errors import ConfigurationError, ModelNotSupported, ProviderNotFound
from llm_invocation.providers._registry import (
    ProviderRegistry,
    codec_kinds,
    make_codec,
    provider_name_problem,
)
from llm_invocation.providers.openai import OpenAICodec
from llm_invocation.types import ModelInfo, Request, user


def req(model: str, provider: str | None = None) -> Request:
    return Request(model=model, provider=provider, messages=[user("hi")])


@pytest.mark.parametrize(
    ("name", "entry", "kind"),
    [
        ("openai", None, "openai"),
        ("anthropic", None, "anthropic"),
        ("gemini", None, "gemini"),
        ("google", ProviderConfig(kind="gemini"), "gemini"),
        ("fast", ProviderConfig(kind="groq"), "openai-compatible"),
        ("mock", None, "mock"),
        ("groq", None, "openai-compatible"),
        (
            "local",
            ProviderConfig(kind="openai-compatible", base_url="http://x/v1"),
            "openai-compatible",
        ),
        ("azure", ProviderConfig(base_url="https://r.openai.azure.com"), "azure"),
    ],
)
def test_make_codec_picks_the_codec_by_kind_or_name(
    name: str, entry: ProviderConfig | None, kind: str
) -> None:
    codec = make_codec(name, entry)
    assert codec.kind == kind
    assert codec.name == name


def test_an_unknown_kind_names_the_available_ones() -> None:
    with pytest.raises(ProviderNotFound) as info:
        make_codec("nope")
    assert "anthropic" in info.value.details["available"]
    assert "groq" in codec_kinds()


def test_a_compatible_entry_without_base_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        make_codec("local", ProviderConfig(kind="openai-compatible"))


def registry(*names: str, default: str = "openai", models: dict[str, list[str]] | None = None):
    return ProviderRegistry(
        {name: make_codec(name) for name in names}, default_provider=default, models=models
    )


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("anthropic:claude-sonnet-4-5", None, ("anthropic", "claude-sonnet-4-5")),
        ("claude-sonnet-4-5", None, ("anthropic", "claude-sonnet-4-5")),
        ("gpt-4o-mini", None, ("openai", "gpt-4o-mini")),
        ("o3-mini", None, ("openai", "o3-mini")),
        ("gemini-2.5-flash", None, ("gemini", "gemini-2.5-flash")),
        ("mock", None, ("mock", "mock")),
        ("whatever-model", None, ("openai", "whatever-model")),
        ("claude-x", "mock", ("mock", "claude-x")),
        ("mock:mock-large", "mock", ("mock", "mock-large")),
    ],
)
def test_resolve_by_explicit_provider_prefix_or_model_family(
    model: str, provider: str | None, expected: tuple[str, str]
) -> None:
    reg = registry("openai", "anthropic", "gemini", "mock")
    assert reg.resolve(req(model, provider)) == expected


def test_a_model_name_with_a_colon_is_kept_when_the_prefix_is_no_provider() -> None:
    reg = registry("ollama", default="ollama")
    assert reg.resolve(req("llama3:8b")) == ("ollama", "llama3:8b")


def test_an_unconfigured_provider_is_reported_with_the_available_ones() -> None:
    reg = registry("mock", default="mock")
    with pytest.raises(ProviderNotFound) as info:
        reg.resolve(req("claude-sonnet-4-5"))
    assert info.value.details["available"] == ["mock"]
    assert "anthropic" in str(info.value)
    with pytest.raises(ProviderNotFound):
        reg.resolve(req("openai:gpt-4o"))
    with pytest.raises(ProviderNotFound):
        reg.resolve(req("x", provider="nope"))


def test_an_aggregating_default_serves_models_of_unconfigured_families() -> None:
    reg = registry("openrouter", default="openrouter")
    assert reg.resolve(req("gpt-4o")) == ("openrouter", "gpt-4o")


def test_a_configured_models_list_restricts_the_provider() -> None:
    reg = registry("openai", models={"openai": ["gpt-4o-mini"]})
    assert reg.resolve(req("gpt-4o-mini")) == ("openai", "gpt-4o-mini")
    with pytest.raises(ModelNotSupported) as info:
        reg.resolve(req("gpt-4o"))
    assert info.value.details["available"] == ["gpt-4o-mini"]


def test_a_provider_of_the_family_under_another_name_serves_it() -> None:
    reg = ProviderRegistry(
        {"work": make_codec("work", ProviderConfig(kind="anthropic"))}, default_provider="work"
    )
    assert reg.resolve(req("claude-haiku-4-5")) == ("work", "claude-haiku-4-5")


@pytest.mark.parametrize("default", ["mock", "openai", "anthropic"])
def test_an_unknown_provider_prefix_is_provider_not_found(default: str) -> None:
    reg = registry("openai", "anthropic", "mock", default=default)
    with pytest.raises(ProviderNotFound) as info:
        reg.resolve(req("foo:bar"))
    assert info.value.provider == "foo"
    assert info.value.details["available"] == ["anthropic", "mock", "openai"]


def test_an_openai_fine_tune_id_keeps_its_colons() -> None:
    reg = registry("openai", "mock", default="mock")
    model = "ft:gpt-4o-mini-2024-07-18:acme::B1x2y3"
    assert reg.resolve(req(model)) == ("openai", model)


def test_a_configured_model_with_a_colon_is_served_by_the_default_provider() -> None:
    reg = registry("openai", default="openai", models={"openai": ["team:gpt-4o"]})
    assert reg.resolve(req("team:gpt-4o")) == ("openai", "team:gpt-4o")


# -- providers of one's own --------------------------------------------------------------------


class _Broken(OpenAICodec):  # a codec whose model list is a bug
    kind = "broken"

    def known_models(self) -> list[ModelInfo]:
        raise RuntimeError("bug")


def test_registering_a_provider_adds_it_once() -> None:
    reg = registry("openai")
    reg.register(make_codec("extra", ProviderConfig(kind="groq")), models=["m1"])
    assert reg.names() == ["extra", "openai"]
    assert reg.resolve(req("extra:m1")) == ("extra", "m1")
    with pytest.raises(ModelNotSupported):
        reg.resolve(req("extra:m2"))
    with pytest.raises(ConfigurationError) as info:
        reg.register(make_codec("extra", ProviderConfig(kind="groq")))
    assert info.value.details["reason"] == "duplicate_provider"


def test_a_codec_whose_known_models_raise_does_not_break_resolution() -> None:
    reg = ProviderRegistry({"b": _Broken(name="b")}, default_provider="b")
    assert reg.resolve(req("anything")) == ("b", "anything")
    with pytest.raises(ProviderNotFound):  # it knows no model "x:y": "x" names a provider
        reg.resolve(req("x:y"))


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a/b", "tab\t"])
def test_a_provider_name_must_be_plain(name: str) -> None:
    assert provider_name_problem(name) is not None
    assert provider_name_problem("my-provider_2") is None
