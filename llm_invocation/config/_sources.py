"""Private: the configuration layers read from keywords, mappings and environment variables.

Each reader returns a `Layer`: plain data in the shape `Config.from_dict` takes, the source of
every path in it (``"env LLM_TIMEOUT"``, ``"keyword"``) and the problems found while reading
(a bad ``LLM_MAX_RETRIES``, a value nested without end). Values are converted and validated
later, by the walker, which names these sources in its problems. The YAML layer is in
``_yaml.py``; `merge` lays the layers over one another.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from typing import Any, Final, NamedTuple, cast

import msgspec

from ..errors import ConfigProblem
from ._checks import MAX_NODES, oversize
from ._walk import join, key_text, show

__all__ = [
    "ENV_FIELDS",
    "Layer",
    "PROVIDER_ENV",
    "bounded_layer",
    "env_layer",
    "keyword_layer",
    "label_all",
    "merge",
    "plain",
]


class Layer(NamedTuple):
    """One source of configuration, before conversion."""

    data: dict[str, Any]
    sources: dict[str, str]
    problems: list[ConfigProblem]


def bounded_layer(data: object, label: str) -> Layer:
    """Return ``data`` as a layer without sources; a setting nested too deeply (or holding
    itself) or too large is left out and reported, and so is ``data`` if not a mapping.
    """
    if not isinstance(data, Mapping):
        message = f"expected a mapping of settings, got {show(data)}"
        return Layer({}, {}, [ConfigProblem(path="<root>", message=message, source=label)])
    given = cast("Mapping[object, object]", data)
    if len(given) > MAX_NODES:
        message = f"holds more than {MAX_NODES} settings"
        return Layer({}, {}, [ConfigProblem(path="<root>", message=message, source=label)])
    kept: dict[Any, Any] = {}
    problems: list[ConfigProblem] = []
    for key, value in given.items():
        found = oversize(value, key_text(key))
        if found is None:
            kept[key] = value
        else:
            problems.append(ConfigProblem(path=found.path, message=found.message, source=label))
    return Layer(kept, {}, problems)


def keyword_layer(data: object, label: str) -> Layer:
    """Return a layer whose every path comes from ``label`` (keywords, a dict).

    ``data`` is checked with `bounded_layer` first.
    """
    layer = bounded_layer(data, label)
    return Layer(layer.data, label_all(layer.data, label), layer.problems)


# --------------------------------------------------------------------------------- environ

#: Environment variables of the first specification and the path each one sets.
ENV_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "LLM_API_KEY": ("api_key",),
    "LLM_PROVIDER": ("provider",),
    "LLM_MODEL": ("model",),
    "LLM_BASE_URL": ("base_url",),
    "LLM_TIMEOUT": ("timeout",),
    "LLM_REQUESTS_PER_MINUTE": ("rate_limits", "requests_per_minute"),
    "LLM_MAX_TOKENS_PER_MINUTE": ("rate_limits", "tokens_per_minute"),
    "LLM_MAX_CONCURRENT_CALLS": ("rate_limits", "concurrent_calls"),
    "LLM_MAX_COST_PER_REQUEST": ("cost_control", "max_cost_per_request"),
    "LLM_MAX_BUDGET": ("cost_control", "max_budget"),
    "LLM_BUDGET_PERIOD": ("cost_control", "budget_period"),
    "LLM_LOG_LEVEL": ("logging", "level"),
    "LLM_LOG_FORMAT": ("logging", "format"),
    "LLM_STORE": ("store",),
    "LLM_PROXY": ("proxy",),
    "LLM_WS_HOST": ("websocket", "host"),
    "LLM_WS_PORT": ("websocket", "port"),
}

#: Variables holding comma-separated lists, and the path each one sets.
ENV_LISTS: Final[dict[str, tuple[str, ...]]] = {
    "LLM_WS_TOKENS": ("websocket", "tokens"),
    "LLM_WS_ALLOWED_ORIGINS": ("websocket", "allowed_origins"),
}

#: Per-provider variables: provider -> field -> variables, the first one set wins.
PROVIDER_ENV: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "openai": {
        "api_key": ("OPENAI_API_KEY",),
        "base_url": ("OPENAI_BASE_URL",),
        "organization": ("OPENAI_ORG_ID",),
    },
    "anthropic": {"api_key": ("ANTHROPIC_API_KEY",), "base_url": ("ANTHROPIC_BASE_URL",)},
    "gemini": {"api_key": ("GEMINI_API_KEY", "GOOGLE_API_KEY")},
    "groq": {"api_key": ("GROQ_API_KEY",)},
    "together": {"api_key": ("TOGETHER_API_KEY",)},
    "openrouter": {"api_key": ("OPENROUTER_API_KEY",)},
    "deepseek": {"api_key": ("DEEPSEEK_API_KEY",)},
    "mistral": {"api_key": ("MISTRAL_API_KEY",)},
    "azure": {
        "api_key": ("AZURE_OPENAI_API_KEY",),
        "base_url": ("AZURE_OPENAI_ENDPOINT",),
        "api_version": ("OPENAI_API_VERSION",),
    },
}


def env_layer(environ: Mapping[str, str], configured: Container[str] = ()) -> Layer:
    """Read the ``LLM_*`` and provider variables of ``environ``; empty values count as unset.

    A provider's key variable creates its ``providers`` entry; its other variables (base URL,
    organization, API version) apply only with the key or to an entry a lower layer made, so a
    stray ``OPENAI_API_VERSION`` does not conjure an Azure provider. A value that is not a
    string (in a mapping passed as ``environ``) is a problem, and so is an ``environ`` that is
    not a mapping.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    if not isinstance(cast("object", environ), Mapping):
        message = f"the environment must be a mapping of names to strings, got {show(environ)}"
        return Layer(data, sources, [ConfigProblem(path="<root>", message=message, source="env")])
    environ = _strings(environ, problems)

    def put(path: tuple[str, ...], value: object, variable: str) -> None:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        sources[".".join(path)] = f"env {variable}"

    for variable, path in ENV_FIELDS.items():
        if value := environ.get(variable):
            put(path, value, variable)
    for variable, path in ENV_LISTS.items():
        if value := environ.get(variable):
            put(path, [item.strip() for item in value.split(",") if item.strip()], variable)
    if retries := environ.get("LLM_MAX_RETRIES"):
        source = "env LLM_MAX_RETRIES"
        try:
            count = int(retries.strip())
        except ValueError:
            count = -1
        if count < 0:
            message = f"expected a whole number of retries >= 0, got {show(retries)}"
            problems.append(
                ConfigProblem(path="retries.max_attempts", message=message, source=source)
            )
        else:  # the variable counts retries; the setting counts attempts
            put(("retries", "max_attempts"), count + 1, "LLM_MAX_RETRIES")
    for provider, fields in PROVIDER_ENV.items():
        found = {
            field: (value, variable)
            for field, variables in fields.items()
            for variable in reversed(variables)  # the first variable set wins below
            if (value := environ.get(variable))
        }
        if "api_key" in found or provider in configured:
            for field, (value, variable) in found.items():
                put(("providers", provider, field), value, variable)
    return Layer(data, sources, problems)


_PATHS: Final[dict[str, str]] = {
    **{variable: ".".join(path) for variable, path in (ENV_FIELDS | ENV_LISTS).items()},
    "LLM_MAX_RETRIES": "retries.max_attempts",
    "LLM_CONFIG_FILE": "<root>",
    **{
        variable: f"providers.{provider}.{field}"
        for provider, fields in PROVIDER_ENV.items()
        for field, variables in fields.items()
        for variable in variables
    },
}


def _strings(environ: Mapping[str, str], problems: list[ConfigProblem]) -> dict[str, str]:
    """The variables this layer reads, those set to a string; the others are problems."""
    found: dict[str, str] = {}
    for variable, path in _PATHS.items():
        value = cast("object", environ.get(variable))
        if value is None or value == "":
            continue
        if isinstance(value, str):
            found[variable] = value
        else:  # the value may be a key: name only its type
            kind = type(value).__name__
            message = f"expected a string, as environment variables are, got a {kind}"
            problems.append(ConfigProblem(path=path, message=message, source=f"env {variable}"))
    return found


# ---------------------------------------------------------------------------------- layers


def plain(value: object) -> object:
    """Return a deep copy of ``value`` with Structs and mappings as dicts, sequences as lists.

    Call it on bounded data only (see `~._checks.oversize`): it recurses.
    """
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in cast("Mapping[object, object]", value).items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in cast("list[object] | tuple[object, ...]", value)]
    return value


def label_all(
    value: object, label: str, path: str = "", out: dict[str, str] | None = None
) -> dict[str, str]:
    """Return a sources map giving ``label`` to ``path`` and every path below it."""
    out = {} if out is None else out
    out[path] = label
    if isinstance(value, Mapping):
        for key, item in cast("Mapping[object, object]", value).items():
            label_all(item, label, join(path, key_text(key)), out)
    elif isinstance(value, list):
        for index, item in enumerate(cast("list[object]", value)):
            label_all(item, label, f"{path}[{index}]", out)
    return out


def merge(
    target: dict[str, Any],
    sources: dict[str, str],
    layer: Mapping[str, Any],
    layer_sources: Mapping[str, str],
    path: str = "",
) -> None:
    """Merge ``layer`` over ``target`` key by key; mappings merge, anything else replaces.

    ``sources`` follows along: a replaced subtree takes the layer's sources. The work is
    proportional to the size of the layer and of what it replaces.
    """
    for key, value in layer.items():
        here = join(path, key_text(key))
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            if here in layer_sources:
                sources[here] = layer_sources[here]
            merge(
                cast("dict[str, Any]", current),
                sources,
                cast("Mapping[str, Any]", value),
                layer_sources,
                here,
            )
            continue
        _each_path(cast("object", current), here, lambda p: sources.pop(p, None))
        target[key] = plain(cast("object", value))
        _each_path(cast("object", value), here, lambda p: _adopt(sources, layer_sources, p))


def _adopt(sources: dict[str, str], layer_sources: Mapping[str, str], path: str) -> None:
    source = layer_sources.get(path)
    if source is not None:
        sources[path] = source


def _each_path(value: object, path: str, visit: Callable[[str], object]) -> None:
    """Call ``visit`` on ``path`` and on the path of everything below ``value``."""
    visit(path)
    if isinstance(value, Mapping):
        for key, item in cast("Mapping[object, object]", value).items():
            _each_path(item, join(path, key_text(key)), visit)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(cast("list[object] | tuple[object, ...]", value)):
            _each_path(item, f"{path}[{index}]", visit)
