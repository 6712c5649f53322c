"""Which providers need an API key, and the `MissingAPIKey` check made before a client opens.

A provider entry without a key is refused (`MissingAPIKey`, before anything is sent) when its
kind needs one: ``openai``, ``anthropic``, ``gemini``, ``azure``, the hosted compatible
presets (``groq``, ``together``, ``openrouter``, ``deepseek``, ``mistral``) and a plain
``openai-compatible`` server. No key is needed by:

- the built-in ``mock``;
- the local presets (``ollama``, ``vllm``: `Preset.requires_key` is false);
- a server on a loopback ``base_url`` (``localhost``, ``127.0.0.0/8``, ``::1``): a local
  server or a test double;
- an entry whose ``headers`` carry credentials (``Authorization``, ``api-key``,
  ``x-api-key``, ``x-goog-api-key``);
- an entry with ``api_key_required: false``; ``api_key_required: true`` asks for a key
  whatever the rest says;
- a codec of a kind this module does not know: it authenticates its own way.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Final

from ..config import Config, ProviderConfig
from ..config._defaults import key_sources
from ..errors import MissingAPIKey
from ..providers._base import ProviderCodec
from ..providers.compatible import PRESETS, Preset

__all__ = ["check_keys", "is_local_preset", "needs_key"]

_KEYED_KINDS: Final = frozenset({"openai", "anthropic", "gemini", "azure"})
_AUTH_HEADERS: Final = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})


def _loopback(url: str) -> bool:
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _preset_of(codec: ProviderCodec) -> Preset | None:
    """The known preset ``codec`` serves (not the plain one of an unnamed server)."""
    preset = getattr(codec, "preset", None)
    known = PRESETS.get(getattr(preset, "name", ""))
    return known if known is not None and known is preset else None


def _plain_server(codec: ProviderCodec) -> bool:
    return codec.kind == "openai-compatible" and _preset_of(codec) is None


def is_local_preset(codec: ProviderCodec) -> bool:
    """Whether ``codec`` serves a local preset (``ollama``, ``vllm``): no key, and no price
    per token."""
    preset = _preset_of(codec) if codec.kind == "openai-compatible" else None
    return preset is not None and not preset.requires_key


def needs_key(entry: ProviderConfig, codec: ProviderCodec) -> bool:
    """Whether the provider of ``entry`` (served by ``codec``) must be given a key: it has
    none and its kind needs one (see the module docstring)."""
    if entry.keys():
        return False
    if entry.api_key_required is not None:
        return entry.api_key_required
    if any(name.lower() in _AUTH_HEADERS for name in entry.headers):
        return False
    if _loopback(codec.base_url):
        return False
    if codec.kind == "openai-compatible":
        preset = _preset_of(codec)
        # A plain server elsewhere: api_key_required: false says it takes no key.
        return preset.requires_key if preset is not None else True
    return codec.kind in _KEYED_KINDS


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_keys(
    config: Config, entries: Mapping[str, ProviderConfig], codecs: Mapping[str, ProviderCodec]
) -> None:
    """Refuse to open a client whose providers lack a key they need.

    Raises:
        MissingAPIKey: naming every such provider, the default one first, and where its key
            would come from (variables and fields; never a value).
    """
    default = config.default_provider
    missing = sorted(
        (name for name, codec in codecs.items() if needs_key(entries[name], codec)),
        key=lambda name: (name != default, name),
    )
    if not missing:
        return
    variables: list[str] = []
    fields: list[str] = []
    parts: list[str] = []
    for name in missing:
        env, paths = key_sources(name, default=name == default)
        variables.extend(env)
        fields.extend(paths)
        where = f"{_either(paths)} in the configuration"
        if env:
            where = f"{_either(env)}, or {where}"
        parts.append(f"provider {name!r} needs an API key and has none: set {where}")
        if _plain_server(codecs[name]):
            parts[-1] += (
                f" (a server that takes none: set providers.{name}.api_key_required: false)"
            )
    raise MissingAPIKey(
        "; ".join(parts),
        provider=missing[0],
        details={"providers": missing, "variables": variables, "fields": fields},
    )
