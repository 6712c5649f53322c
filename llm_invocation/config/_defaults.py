"""Private: the first specification's defaults, and which provider serves when none is named.

The built-in defaults (``LLM_*`` variables and their defaults)::

    provider  openai, when a key is configured (see below); model gpt-4 for OpenAI
    timeout   30 s                  retries  3 (4 attempts)
    limits    60 RPM, 100,000 TPM, 10 concurrent calls
    costs     $0.50 per request, $100 per 24 h          log level  info

The default provider, when neither ``provider`` nor ``defaults.provider`` names one, is the
first that applies of:

1. the provider the default ``model`` names: a ``"provider:model"`` prefix, or a well-known
   family (`MODEL_FAMILIES`: ``gpt-*``, ``chatgpt-*``, ``o1*``, ``o3*``, ``o4*`` are
   OpenAI's, ``claude-*`` Anthropic's, ``gemini-*`` Gemini's); an enabled entry of that name,
   else of that kind, else the family's own name;
2. ``openai`` when the top-level ``api_key`` (``LLM_API_KEY``), ``base_url`` or
   ``organization`` is set;
3. the enabled ``providers`` entry with a key or a key file (``OPENAI_API_KEY``,
   ``ANTHROPIC_API_KEY``... make one), OpenAI's first, then Anthropic's, Gemini's and the
   others by name;
4. the enabled ``providers`` entry without a key, in the same order;
5. nothing is configured: the built-in ``mock`` provider (`Config.mock_fallback`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Final, get_args

if TYPE_CHECKING:
    from .._secrets import Secret
    from ._sections import ProviderConfig

__all__ = [
    "DEFAULT_CONCURRENT_CALLS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_BUDGET",
    "DEFAULT_MAX_COST_PER_REQUEST",
    "DEFAULT_OPENAI_MODEL",
    "DEFAULT_REQUESTS_PER_MINUTE",
    "DEFAULT_TOKENS_PER_MINUTE",
    "MODEL_FAMILIES",
    "UNLIMITED",
    "family_provider",
    "infer_provider",
    "key_sources",
]

DEFAULT_REQUESTS_PER_MINUTE: Final = 60
DEFAULT_TOKENS_PER_MINUTE: Final = 100_000
DEFAULT_CONCURRENT_CALLS: Final = 10
DEFAULT_MAX_COST_PER_REQUEST: Final = Decimal("0.50")
DEFAULT_MAX_BUDGET: Final = Decimal("100.00")
DEFAULT_MAX_ATTEMPTS: Final = 4
"""Attempts in all: the first one and ``LLM_MAX_RETRIES`` (3) retries."""
DEFAULT_OPENAI_MODEL: Final = "gpt-4"
"""The first specification's default model, for an OpenAI default provider."""

UNLIMITED: Final[Mapping[str, Mapping[str, None]]] = {
    "rate_limits": {
        "requests_per_minute": None,
        "tokens_per_minute": None,
        "concurrent_calls": None,
    },
    "cost_control": {"max_cost_per_request": None, "max_budget": None},
}
"""The settings that lift the default limits (`Config.unlimited`)."""

#: Model-id prefixes that name a provider when the configuration names none.
MODEL_FAMILIES: Final[tuple[tuple[str, str], ...]] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "gemini"),
    ("mock", "mock"),
)

_PREFERENCE: Final = ("openai", "anthropic", "gemini")


def _known_kinds() -> frozenset[str]:
    from ._sections import ProviderKind

    return frozenset(get_args(ProviderKind))


def family_provider(model: str) -> str | None:
    """The provider a well-known model id belongs to (``gpt-4`` is ``openai``), or None."""
    for prefix, provider in MODEL_FAMILIES:
        if model.startswith(prefix):
            return provider
    return None


def _ordered(names: list[str]) -> list[str]:
    rank = {name: index for index, name in enumerate(_PREFERENCE)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def _entry_for(family: str, providers: Mapping[str, ProviderConfig]) -> str:
    """The entry that serves ``family``: its own name, else an entry of that kind."""
    if family in providers:
        return family
    kinds = [name for name, entry in providers.items() if entry.kind == family]
    return _ordered(kinds)[0] if kinds else family


def infer_provider(
    *,
    model: str | None,
    api_key: Secret | None,
    base_url: str | None,
    organization: str | None,
    providers: Mapping[str, ProviderConfig],
) -> str | None:
    """The default provider when the configuration names none (see the module docstring);
    None when nothing is configured."""
    enabled = {name: entry for name, entry in providers.items() if entry.enabled}
    if model:
        head, sep, tail = model.partition(":")
        if sep and (head in enabled or head in _known_kinds()):
            return head
        family = family_provider(tail if sep else model)
        if family is not None:
            return _entry_for(family, enabled)
    if api_key is not None or base_url is not None or organization is not None:
        return "openai"
    keyed = [name for name, entry in enabled.items() if entry.keys() or entry.api_key_file]
    if keyed:
        return _ordered(keyed)[0]
    if enabled:
        return _ordered(list(enabled))[0]
    return None


def key_sources(name: str, *, default: bool) -> tuple[list[str], list[str]]:
    """The environment variables and the configuration fields that supply provider
    ``name``'s key; ``default``: it is the default provider (``LLM_API_KEY`` applies)."""
    from ._sources import PROVIDER_ENV

    variables = ["LLM_API_KEY"] if default else []
    variables.extend(PROVIDER_ENV.get(name, {}).get("api_key", ()))
    fields = ["api_key"] if default else []
    fields.extend([f"providers.{name}.api_key", f"providers.{name}.api_keys"])
    return variables, fields
