"""Private: the configuration layers read from YAML and from environment variables.

Each reader returns a `Layer`: plain data in the shape `Config.from_dict` takes, the source of
every path in it (``"yaml config.yaml:12"``, ``"env LLM_TIMEOUT"``) and the problems found
while reading (a YAML syntax error, an unset ``${VAR}``, a bad ``LLM_MAX_RETRIES``). Values
are converted and validated later, by the walker, which names these sources in its problems.
"""

from __future__ import annotations

import os
import re
from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple, cast

from ..errors import ConfigProblem, ConfigurationError
from ._walk import join, label_all, show

__all__ = ["ENV_FIELDS", "Layer", "PROVIDER_ENV", "env_layer", "keyword_layer", "yaml_layer"]


class Layer(NamedTuple):
    """One source of configuration, before conversion."""

    data: dict[str, Any]
    sources: dict[str, str]
    problems: list[ConfigProblem]


def keyword_layer(data: Mapping[str, Any], label: str) -> Layer:
    """Return a layer whose every path comes from ``label`` (keywords, a dict)."""
    return Layer(dict(data), label_all(data, label), [])


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
    stray ``OPENAI_API_VERSION`` does not conjure an Azure provider.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[ConfigProblem] = []

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


# ------------------------------------------------------------------------------------ yaml

_INTERPOLATION: Final = re.compile(
    r"\$(?P<escaped>\$)\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{)"
)
_MISSING_YAML: Final = (
    "reading YAML configuration needs PyYAML: install 'llm-invocation[yaml]'"
    " (pip install 'llm-invocation[yaml]')"
)


def _is_file(path_or_text: str | os.PathLike[str]) -> bool:
    if not isinstance(path_or_text, str):
        return True
    if "\n" in path_or_text:
        return False
    return path_or_text.strip().endswith((".yaml", ".yml", ".json")) or Path(path_or_text).is_file()


def yaml_layer(
    path_or_text: str | os.PathLike[str],
    environ: Mapping[str, str],
    *,
    origin: str | None = None,
) -> Layer:
    """Read YAML from a file or from text, interpolating ``${VAR}`` and ``${VAR:-default}``.

    A string is a file name when it is one line that ends in ``.yaml``, ``.yml`` or ``.json``
    or names an existing file; anything else is YAML text.

    Raises:
        ConfigurationError: when PyYAML is not installed.
    """
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(_MISSING_YAML) from None
    problems: list[ConfigProblem] = []
    if _is_file(path_or_text):
        label = f"yaml {os.fspath(path_or_text)}"
        try:
            text = Path(path_or_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error.__class__.__name__)
            message = f"cannot read the YAML file {os.fspath(path_or_text)!r}: {reason}"
            problems.append(ConfigProblem(path="<root>", message=message, source=origin or label))
            return Layer({}, {}, problems)
    else:
        label, text = "yaml <text>", str(path_or_text)
    lines: dict[str, str] = {"": label}
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = cast("object", loader.construct_document(node)) if node is not None else None  # pyright: ignore[reportUnknownMemberType] - the stub leaves it untyped
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        # Only the parser's reason: its snippet of the offending line could hold a key.
        reason = getattr(error, "problem", None) or "not valid YAML"
        problems.append(
            ConfigProblem(path="<root>", message=f"invalid YAML: {reason}", source=where)
        )
        return Layer({}, {}, problems)
    finally:
        loader.dispose()  # pyright: ignore[reportUnknownMemberType] - the stub leaves it untyped
    if data is None:
        return Layer({}, lines, problems)
    if not isinstance(data, dict):
        message = f"the top level must be a mapping, got {show(data)}"
        problems.append(ConfigProblem(path="<root>", message=message, source=label))
        return Layer({}, lines, problems)
    _line_marks(node, "", label, lines)
    interpolated = _interpolate(cast("dict[str, object]", data), "", environ, lines, problems)
    return Layer(cast("dict[str, Any]", interpolated), lines, problems)


def _line_marks(node: Any, path: str, label: str, out: dict[str, str]) -> None:
    """Record ``"<label>:<line>"`` for every key and list item under ``node``."""
    value = getattr(node, "value", None)
    if node.id == "mapping":
        for key_node, value_node in cast("list[tuple[Any, Any]]", value):
            here = join(path, str(key_node.value))
            out[here] = f"{label}:{key_node.start_mark.line + 1}"
            _line_marks(value_node, here, label, out)
    elif node.id == "sequence":
        for index, item in enumerate(cast("list[Any]", value)):
            here = f"{path}[{index}]"
            out[here] = f"{label}:{item.start_mark.line + 1}"
            _line_marks(item, here, label, out)


def _interpolate(
    value: object,
    path: str,
    environ: Mapping[str, str],
    lines: Mapping[str, str],
    problems: list[ConfigProblem],
) -> object:
    if isinstance(value, dict):
        return {
            key: _interpolate(item, join(path, str(key)), environ, lines, problems)
            for key, item in cast("dict[object, object]", value).items()
        }
    if isinstance(value, list):
        return [
            _interpolate(item, f"{path}[{index}]", environ, lines, problems)
            for index, item in enumerate(cast("list[object]", value))
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "${"
        name = match.group("name")
        if name is None:
            message = "invalid ${...} reference: use ${NAME}, ${NAME:-default} or $${ for '${'"
            problems.append(ConfigProblem(path=path, message=message, source=lines.get(path)))
            return ""
        found = environ.get(name)
        default = match.group("default")
        if default is not None and not found:
            return default
        if found is None:
            message = f"environment variable {name} is not set (write ${{{name}:-default}})"
            problems.append(ConfigProblem(path=path, message=message, source=lines.get(path)))
            return ""
        return found

    return _INTERPOLATION.sub(substitute, value)
