"""The provider registry: which codec serves a provider entry, and which provider a model.

A request names its provider explicitly (``request.provider``), or by prefix
(``"anthropic:claude-sonnet-4-5"``), or implicitly by a well-known model prefix
(``gpt-4o-mini`` is OpenAI's, ``claude-`` Anthropic's, ``gemini-`` Google's); otherwise the
default provider serves it. A provider that is not configured, or a model outside a
provider's configured ``models`` list, is a clear error naming what is available.

Providers of your own (`ProviderRegistry.register`, behind ``client.register_provider``)
join the registry while it is in use; a name is registered once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeAlias, final

from ..config import ProviderConfig
from ..errors import ConfigurationError, ModelNotSupported, ProviderNotFound
from ..types import ModelInfo, Request
from ._base import ProviderCodec

__all__ = [
    "DUPLICATE_PROVIDER",
    "MODEL_PREFIXES",
    "CodecFactory",
    "CodecSpec",
    "ProviderRegistry",
    "codec_kinds",
    "custom_codec",
    "duplicate_provider",
    "make_codec",
    "provider_name_problem",
]

log = logging.getLogger("llm_invocation.providers")

DUPLICATE_PROVIDER: Final = "duplicate_provider"
"""``details["reason"]`` of the `ConfigurationError` for a provider name registered twice."""

CodecFactory: TypeAlias = Callable[[str, ProviderConfig], ProviderCodec]
"""Makes the codec of a provider entry: called with the provider's name and its settings."""
CodecSpec: TypeAlias = "ProviderCodec | type[ProviderCodec] | CodecFactory"
"""What ``client.register_provider`` takes: a codec, a codec class or a codec factory."""

#: Model-id prefixes that identify a provider when the request does not name one.
MODEL_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-davinci", "openai"),
    ("davinci-", "openai"),
    ("babbage-", "openai"),
    ("ft:", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "gemini"),
    ("models/gemini-", "gemini"),
    ("mock", "mock"),
)

_KIND_ALIASES: Final = {
    "google": "gemini",
    "azure-openai": "azure",
    "compatible": "openai-compatible",
}


def codec_kinds() -> list[str]:
    """Every codec kind and preset a provider entry may name."""
    from .compatible import PRESETS

    return sorted({"openai", "anthropic", "gemini", "azure", "openai-compatible", "mock", *PRESETS})


def make_codec(name: str, config: ProviderConfig | None = None) -> ProviderCodec:
    """Build the codec for the provider entry ``name``.

    The entry's ``kind`` (or else its name) picks the codec: ``openai``, ``anthropic``,
    ``gemini``, ``azure``, ``mock``, ``openai-compatible`` (needs ``base_url``) or one of the
    compatible presets (``groq``, ``ollama``...).

    Raises:
        ProviderNotFound: the kind is unknown.
        ConfigurationError: the entry lacks what its kind needs (a base URL), or asks for
            ``api: responses`` on a provider that does not speak OpenAI's format.
    """
    config = config or ProviderConfig()
    codec = _kind_codec(name, config)
    if config.api != "chat":
        from .openai import OpenAICodec

        if not isinstance(codec, OpenAICodec):
            raise ConfigurationError(
                f"provider {name!r} is of kind {codec.kind!r}: api {config.api!r} is only "
                "for OpenAI-format providers (openai, azure, the compatible presets, mock)",
                provider=name,
                details={"field": f"providers.{name}.api"},
            )
        codec.api = config.api
    return codec


def _kind_codec(name: str, config: ProviderConfig) -> ProviderCodec:
    kind = config.kind or name
    kind = _KIND_ALIASES.get(kind, kind)
    headers = dict(config.headers)
    options = dict(config.options)
    base_url = config.base_url
    if kind == "openai":
        from .openai import OpenAICodec

        return OpenAICodec(
            name=name,
            base_url=base_url,
            headers=headers,
            options=options,
            organization=config.organization,
        )
    if kind == "anthropic":
        from .anthropic import AnthropicCodec

        return AnthropicCodec(name=name, base_url=base_url, headers=headers, options=options)
    if kind == "gemini":
        from .gemini import GeminiCodec

        return GeminiCodec(name=name, base_url=base_url, headers=headers, options=options)
    if kind == "mock":
        from .mock import MockCodec

        return MockCodec(name=name, base_url=base_url, headers=headers, options=options)
    if kind == "azure":
        from .compatible import AzureOpenAICodec

        if config.api_version:
            return AzureOpenAICodec(
                name=name,
                base_url=base_url,
                deployment=config.deployment,
                api_version=config.api_version,
                headers=headers,
                options=options,
            )
        return AzureOpenAICodec(
            name=name,
            base_url=base_url,
            deployment=config.deployment,
            headers=headers,
            options=options,
        )
    from .compatible import PRESETS, OpenAICompatibleCodec

    if kind == "openai-compatible" or kind in PRESETS:
        return OpenAICompatibleCodec(
            preset=PRESETS.get(kind),
            name=name,
            base_url=base_url,
            headers=headers,
            options=options,
        )
    raise ProviderNotFound(
        f"unknown provider kind {kind!r} for provider {name!r}",
        provider=name,
        details={"available": codec_kinds()},
    )


def provider_name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a provider name (None when nothing): it must be a
    non-empty string without ``:`` (it separates provider and model), ``/`` or whitespace."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if any(ch in name for ch in ":/") or any(ch.isspace() or not ch.isprintable() for ch in name):
        return "must not contain ':', '/', whitespace or control characters"
    return None


def _invalid_codec(name: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"the codec of provider {name!r} {problem}",
        provider=name,
        details={"reason": "invalid_codec", "provider": name},
    )


def custom_codec(
    name: str, codec: CodecSpec, config: ProviderConfig | None = None
) -> ProviderCodec:
    """The codec of provider ``name`` from a codec of your own.

    ``codec`` is a `ProviderCodec` (used as it is: its ``name`` must be ``name``), a
    `ProviderCodec` subclass (made with ``name`` and the entry's ``base_url``, ``headers``
    and ``options``), or a factory called as ``factory(name, config)``.

    Raises:
        ConfigurationError: ``name`` is not a valid provider name, the factory or the class
            raised, or what it made is not a `ProviderCodec` named ``name`` with a ``kind``
            (``details["reason"] == "invalid_codec"``).
    """
    if (problem := provider_name_problem(name)) is not None:
        raise ConfigurationError(
            f"provider name {name!r} {problem}", details={"reason": "invalid_provider_name"}
        )
    config = config or ProviderConfig()
    made: object = codec
    if not isinstance(codec, ProviderCodec):
        try:
            if isinstance(codec, type):
                made = codec(
                    name=name,
                    base_url=config.base_url,
                    headers=dict(config.headers),
                    options=dict(config.options),
                )
            elif callable(codec):
                made = codec(name, config)
            else:
                raise _invalid_codec(name, f"is a {type(codec).__name__}, not a codec")
        except ConfigurationError:
            raise
        except Exception as exc:
            raise _invalid_codec(name, f"could not be made: {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, ProviderCodec):
        raise _invalid_codec(name, f"is a {type(made).__name__}, not a ProviderCodec")
    if not isinstance(getattr(type(made), "kind", None), str):
        raise _invalid_codec(name, f"class {type(made).__name__} sets no 'kind'")
    if made.name != name:
        raise _invalid_codec(name, f"is named {made.name!r}: make it with name={name!r}")
    return made


def duplicate_provider(name: str) -> ConfigurationError:
    """The error for registering provider ``name`` a second time."""
    return ConfigurationError(
        f"provider {name!r} is already registered",
        provider=name,
        details={"reason": DUPLICATE_PROVIDER, "provider": name},
    )


def _known_models(codec: ProviderCodec) -> list[ModelInfo]:
    """``codec.known_models()``; a codec that fails there knows none (logged)."""
    try:
        return list(codec.known_models())
    except Exception as exc:  # noqa: BLE001 - a custom codec's bug must not break resolution
        log.warning("%s: known_models() failed (%s); none assumed", codec.name, exc)
        return []


@final
class ProviderRegistry:
    """The configured providers, and how a request's model selects one of them."""

    def __init__(
        self,
        codecs: Mapping[str, ProviderCodec],
        *,
        default_provider: str,
        models: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._codecs = dict(codecs)
        self.default_provider = default_provider
        self._models = {name: frozenset(ids) for name, ids in (models or {}).items() if ids}

    def names(self) -> list[str]:
        """The configured provider names, sorted."""
        return sorted(self._codecs)

    def __contains__(self, name: object) -> bool:
        return name in self._codecs

    def register(self, codec: ProviderCodec, *, models: Iterable[str] = ()) -> None:
        """Add ``codec`` under its name (``codec.name``); ``models`` restricts it as a
        configured ``models`` list does.

        Raises:
            ConfigurationError: the name is taken (``details["reason"]`` is
                ``"duplicate_provider"``) or is not a valid provider name.
        """
        name = codec.name
        if (problem := provider_name_problem(name)) is not None:
            raise ConfigurationError(
                f"provider name {name!r} {problem}", details={"reason": "invalid_provider_name"}
            )
        if name in self._codecs:
            raise duplicate_provider(name)
        self._codecs[name] = codec
        allowed = frozenset(models)
        if allowed:
            self._models[name] = allowed

    def codec(self, name: str) -> ProviderCodec:
        """The codec of provider ``name``.

        Raises:
            ProviderNotFound: no provider of that name is configured.
        """
        codec = self._codecs.get(name)
        if codec is None:
            raise self._not_found(name)
        return codec

    def _not_found(self, name: str, model: str | None = None) -> ProviderNotFound:
        available = self.names()
        hint = f" for model {model!r}" if model else ""
        return ProviderNotFound(
            f"provider {name!r}{hint} is not configured; available: {', '.join(available)}",
            provider=name,
            details={"available": available},
        )

    def resolve(self, request: Request) -> tuple[str, str]:
        """The provider name and the provider's own model id for ``request``.

        Raises:
            ProviderNotFound: the named or implied provider is not configured.
            ModelNotSupported: the provider's configured ``models`` list excludes the model.
        """
        model = request.model
        provider = request.provider
        if provider is None:
            head, sep, tail = model.partition(":")
            if sep and head in self._codecs:
                provider, model = head, tail
            elif sep and (head in codec_kinds() or not self._takes_colons(model)):
                raise self._not_found(head, tail)
        elif model.startswith(provider + ":"):
            model = model[len(provider) + 1 :]
        if provider is None:
            provider = self._by_prefix(model)
        if provider not in self._codecs:
            raise self._not_found(provider, model)
        allowed = self._models.get(provider)
        if allowed is not None and model not in allowed:
            raise ModelNotSupported(
                f"model {model!r} is not among provider {provider!r}'s configured models: "
                f"{', '.join(sorted(allowed))}",
                provider=provider,
                details={"available": sorted(allowed)},
            )
        if not model:
            raise ModelNotSupported("the request names no model", provider=provider)
        return provider, model

    def _takes_colons(self, model: str) -> bool:
        """Whether ``model``, which has a colon but names no configured provider before it,
        is still a model id: an OpenAI fine-tune (``ft:gpt-4o-mini:org::id``), a model the
        default provider knows or is configured with, or any model of a compatible server
        (Ollama's ``llama3:8b``). Otherwise the text before the colon is an unknown provider.
        """
        if model.startswith("ft:"):
            return True
        default = self._codecs.get(self.default_provider)
        if default is None:
            return False
        if model in self._models.get(self.default_provider, ()):
            return True
        if default.kind == "openai-compatible":
            return True
        return any(info.id == model for info in _known_models(default))

    def _by_prefix(self, model: str) -> str:
        default = self.default_provider
        if default in self._codecs:
            codec = self._codecs[default]
            if any(info.id == model for info in _known_models(codec)):
                return default
        for prefix, provider in MODEL_PREFIXES:
            if model.startswith(prefix):
                # A configured provider of that kind under another name serves it too.
                if provider in self._codecs:
                    return provider
                for name, codec in self._codecs.items():
                    if codec.kind == provider:
                        return name
                # An aggregating default (OpenRouter, a local server) may serve any model;
                # otherwise the implied provider is reported as missing.
                if default in self._codecs and self._codecs[default].kind == "openai-compatible":
                    return default
                return provider
        return default
