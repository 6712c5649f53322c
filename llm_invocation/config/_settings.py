"""Configuration: one validated, immutable `Config` from keywords, YAML and the environment.

`Config` and its sections are frozen, keyword-only `msgspec.Struct` values. Every way of
making one validates it and reports *every* problem at once as a
`~llm_invocation.errors.ConfigurationError` whose ``problems`` name the field path, what is
wrong and where the value came from (``"env LLM_TIMEOUT"``, ``"yaml llm.yaml:12"``,
``"keyword"``)::

    Config.load(yaml=..., environ=..., **keywords)   the layered loader (below)
    Config.from_env(environ)                          LLM_CONFIG_FILE, then the variables
    Config.from_yaml(path_or_text, environ=...)       one YAML file or text
    Config.from_dict(data, source="dict")             the YAML shape as a mapping
    Config(...)                                       direct construction
    config.replace(**changes) / config.merged_with(mapping)

Precedence, lowest to highest (`Config.load` and `Config.from_env`):

1. the built-in defaults of the Structs below;
2. a YAML file: the ``yaml`` argument, else the file named by ``LLM_CONFIG_FILE``;
3. environment variables (``LLM_*`` and the providers' own, such as ``OPENAI_API_KEY``);
4. keyword arguments.

Layers merge key by key: ``rate_limits={"requests_per_minute": 10}`` as a keyword changes that
one limit and keeps the YAML file's other limits. Lists and scalars replace. Empty
environment variables count as unset; in YAML, ``${VAR}`` and ``${VAR:-default}`` in string
values read the environment (``$${`` writes a literal ``${``) so keys stay out of files.

The default provider and model have two spellings, the top-level ``provider`` / ``model`` of
the first specification and ``defaults.provider`` / ``defaults.model`` of the second. Within
one layer either spelling sets both (two different values in one layer are a problem), so the
precedence above decides between layers; a `Config` made directly with both spellings takes
``defaults``. `Config.default_provider` and `Config.default_model` give the result.

Durations accept seconds or strings (`parse_duration`); money is a `~decimal.Decimal` read
from a string, int or float through ``str``. API keys and tokens are
`~llm_invocation._secrets.Secret` values (plain strings are converted): they never appear in a
repr, an error message, `Config.redacted` or `Config.to_json`. The loose forms (strings for
durations, secrets and sections as dicts) are accepted at run time by the constructors too;
typed code passes the precise types.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, cast, final

import msgspec

from .._secrets import Secret
from ..errors import ProviderNotFound
from ._sections import (
    BudgetConfig,
    CostConfig,
    DefaultsConfig,
    FilePath,
    HttpUrl,
    LoggingConfig,
    MCPConfig,
    MCPServerConfig,
    Name,
    PositiveSeconds,
    PriceOverride,
    ProviderConfig,
    ProviderKind,
    RateLimitConfig,
    RetryConfig,
    Section,
    TimeoutConfig,
    ToolsConfig,
    WebSocketConfig,
    check_proxy,
)
from ._sources import Layer, env_layer, keyword_layer, yaml_layer
from ._walk import (
    Walk,
    build,
    format_duration,
    merge,
    parse_duration,
    plain,
    scrub,
    struct_info,
)

__all__ = [
    "BudgetConfig",
    "Config",
    "CostConfig",
    "DefaultsConfig",
    "LoggingConfig",
    "MCPConfig",
    "MCPServerConfig",
    "PriceOverride",
    "ProviderConfig",
    "ProviderKind",
    "RateLimitConfig",
    "RetryConfig",
    "TimeoutConfig",
    "ToolsConfig",
    "WebSocketConfig",
    "format_duration",
    "parse_duration",
]

_log = logging.getLogger("llm_invocation.config")


@final
class Config(Section, frozen=True, kw_only=True):
    """The whole configuration of a client. See the module docstring for how to make one.

    Attributes:
        provider: the default provider (see also ``defaults.provider``).
        model: the default model (see also ``defaults.model``).
        api_key: the default provider's key (``LLM_API_KEY``).
        base_url: the default provider's base URL (``LLM_BASE_URL``).
        timeout: the whole-call timeout in seconds.
        organization: the default provider's organization (OpenAI).
        store: ``"memory"`` or a ``redis://`` / ``rediss://`` URL for shared limits and budgets.
        store_fail_mode: when the store is unreachable, ``"closed"`` refuses calls and
            ``"open"`` lets them through on local limits.
        ledger_path: the SQLite usage ledger; None keeps it in memory.
        cache_ttl: how long a cached response (for requests with ``cache=True``) is kept.
        proxy: the proxy for every provider's requests (``LLM_PROXY``; ``http://`` or
            ``https://``, credentials in the URL); a provider's own ``proxy`` overrides it.
            None: the environment's ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and
            ``NO_PROXY`` decide (when ``trust_env``).
        trust_env: read the proxy and CA variables of the environment (``HTTP_PROXY``,
            ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``,
            ``SSL_CERT_DIR``); a provider's own ``trust_env`` overrides it.

    Raises:
        ConfigurationError: on construction, listing every invalid field.
    """

    provider: Name = "mock"
    model: Name | None = None
    api_key: Secret | None = None
    base_url: HttpUrl | None = None
    timeout: PositiveSeconds = 30.0
    organization: str | None = None
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    timeouts: TimeoutConfig = msgspec.field(default_factory=TimeoutConfig)
    rate_limits: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    cost_control: CostConfig = msgspec.field(default_factory=CostConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict[str, ProviderConfig])
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    mcp: MCPConfig = msgspec.field(default_factory=MCPConfig)
    defaults: DefaultsConfig = msgspec.field(default_factory=DefaultsConfig)
    store: Annotated[str, msgspec.Meta(extra={"format": "store"})] = "memory"
    store_fail_mode: Literal["open", "closed"] = "closed"
    ledger_path: FilePath | None = None
    cache_ttl: PositiveSeconds = 3600.0
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    proxy: str | None = None
    trust_env: bool = True

    def _finish(self, walk: Walk) -> None:
        check_proxy(self.proxy, walk)
        # ``defaults`` is the more specific spelling: it wins in a directly made Config.
        if self.defaults.provider is not None:
            msgspec.structs.force_setattr(self, "provider", self.defaults.provider)
        if self.defaults.model is not None:
            msgspec.structs.force_setattr(self, "model", self.defaults.model)

    # ------------------------------------------------------------------------ constructors

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "dict") -> Config:
        """Make a `Config` from a mapping of the YAML shape.

        Args:
            data: the mapping; sections are nested mappings.
            source: how problems name where the values came from.

        Raises:
            ConfigurationError: listing every unknown key, bad type and bad value.
        """
        return _assemble([keyword_layer(data, source)], default_source=source)

    @classmethod
    def from_yaml(
        cls, path_or_text: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Make a `Config` from a YAML file or YAML text.

        A string is a file name when it is one line ending in ``.yaml``, ``.yml`` or ``.json``
        or naming an existing file; otherwise it is YAML text. ``${VAR}`` and
        ``${VAR:-default}`` in string values are read from ``environ`` (default: the process
        environment); no other environment variable is consulted.

        Raises:
            ConfigurationError: when PyYAML is missing (install ``llm-invocation[yaml]``), the
                file cannot be read, the YAML is invalid, a ``${VAR}`` is unset, or any value
                is invalid.
        """
        env = os.environ if environ is None else environ
        return _assemble([yaml_layer(path_or_text, env)])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Make a `Config` from ``LLM_CONFIG_FILE`` and the environment variables over it.

        Same as ``Config.load(environ=environ)``.

        Raises:
            ConfigurationError: naming the variable of every bad value.
        """
        return cls.load(environ=environ)

    @classmethod
    def load(
        cls,
        *,
        yaml: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **keywords: Any,
    ) -> Config:
        """Make a `Config` from defaults < YAML < environment variables < keywords.

        Args:
            yaml: a YAML file or text; None reads the file named by ``LLM_CONFIG_FILE``.
            environ: the environment to read; None reads ``os.environ``.
            **keywords: top-level fields; a dict for a section merges key by key.

        Raises:
            ConfigurationError: listing every problem of every layer.
        """
        env = os.environ if environ is None else environ
        layers: list[Layer] = []
        if yaml is not None:
            layers.append(yaml_layer(yaml, env))
        elif file := env.get("LLM_CONFIG_FILE"):
            layers.append(yaml_layer(file, env, origin="env LLM_CONFIG_FILE"))
        configured = _provider_names(layers)
        layers.append(env_layer(env, configured))
        layers.append(keyword_layer(keywords, "keyword"))
        return _assemble(layers)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with top-level fields replaced (a section given as a dict is rebuilt
        from its defaults, not merged: use `merged_with` for that).

        Raises:
            ConfigurationError: listing every invalid change.
        """
        data = _plain_dict(self)
        data.update(
            {k: v if isinstance(v, msgspec.Struct) else plain(v) for k, v in changes.items()}
        )
        sources = dict.fromkeys(changes, "keyword")
        walk = Walk(sources)
        _sync_aliases(changes, data, sources, walk)
        return _finish_load(data, walk)

    def merged_with(self, other: Mapping[str, Any], *, source: str = "dict") -> Config:
        """Return a copy with ``other`` (the YAML shape) merged over it key by key.

        Raises:
            ConfigurationError: listing every problem ``other`` brings.
        """
        return _assemble([keyword_layer(other, source)], base=self, default_source=source)

    # ------------------------------------------------------------------------------ views

    @property
    def default_provider(self) -> str:
        """The provider of requests that name none."""
        return self.provider

    @property
    def default_model(self) -> str | None:
        """The model of requests that name none, when configured."""
        return self.model

    def provider_config(self, name: str) -> ProviderConfig:
        """Return the settings of provider ``name``.

        For the default provider, the top-level ``api_key``, ``base_url`` and
        ``organization``, where set, override its ``providers`` entry (or make one).

        Raises:
            ProviderNotFound: when ``name`` is neither in ``providers`` nor the default.
        """
        entry = self.providers.get(name)
        if name == self.default_provider:
            entry = entry or ProviderConfig()
            top = {
                "api_key": self.api_key,
                "base_url": self.base_url,
                "organization": self.organization,
            }
            overrides = {key: value for key, value in top.items() if value is not None}
            return msgspec.structs.replace(entry, **overrides) if overrides else entry
        if entry is None:
            available = sorted({*self.providers, self.default_provider})
            raise ProviderNotFound(
                f"no provider named {name!r} is configured", details={"available": available}
            )
        return entry

    def redacted(self) -> dict[str, Any]:
        """Return the configuration as JSON-able builtins with every secret masked."""
        return cast("dict[str, Any]", _redact(self))

    def to_json(self) -> bytes:
        """Return `redacted` as JSON."""
        return msgspec.json.encode(self.redacted())


# ---------------------------------------------------------------------------------- loading


def _redact(value: object) -> Any:
    """Return ``value`` as JSON-able builtins with secrets masked and free text scrubbed."""
    if isinstance(value, msgspec.Struct):
        return {name: _redact(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, Secret | Decimal):
        return str(value)
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_redact(item) for item in cast("list[object]", value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in cast("dict[str, object]", value).items():
            if isinstance(item, str):  # scrub with the key, as in a header line
                head = f"{key}: "
                line = scrub(head + item)
                out[key] = line[len(head) :] if line.startswith(head) else scrub(item)
            else:
                out[key] = _redact(item)
        return out
    return value


def _plain_dict(value: object) -> dict[str, Any]:
    data = plain(value)
    assert isinstance(data, dict)
    return data  # pyright: ignore[reportUnknownVariableType]


def _provider_names(layers: list[Layer]) -> set[str]:
    names: set[str] = set()
    for layer in layers:
        providers: object = layer.data.get("providers")
        if isinstance(providers, Mapping):
            names.update(str(name) for name in cast("Mapping[object, object]", providers))
    return names


_MISSING: Final = object()


def _get(container: object, key: str) -> object:
    if isinstance(container, Mapping):
        return container.get(key, _MISSING)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if isinstance(container, DefaultsConfig):
        value = getattr(container, key)
        return _MISSING if value is None else value
    return _MISSING


def _sync_aliases(
    layer: Mapping[str, Any], data: dict[str, Any], sources: dict[str, str], walk: Walk
) -> None:
    """Make ``provider`` / ``model`` set in one layer, in either spelling, set both."""
    for name in ("provider", "model"):
        nested = f"defaults.{name}"
        top_value, nested_value = _get(layer, name), _get(_get(layer, "defaults"), name)
        if top_value is _MISSING and nested_value is _MISSING:
            continue
        if _MISSING not in (top_value, nested_value) and top_value != nested_value:
            walk.add(nested, f"conflicts with the top-level {name!r} given with it")
            continue
        if not isinstance(top_value if top_value is not _MISSING else nested_value, str):
            continue  # an invalid value is reported once, where it was written
        if top_value is not _MISSING:
            defaults = data.setdefault("defaults", {})
            if isinstance(defaults, dict):
                defaults[name] = top_value
            origin, copy = name, nested
        else:
            data[name] = nested_value
            origin, copy = nested, name
        if (source := walk.source_of(origin)) is not None:
            sources[copy] = source


def _assemble(
    layers: list[Layer], *, base: Config | None = None, default_source: str | None = None
) -> Config:
    data: dict[str, Any] = _plain_dict(base) if base is not None else {}
    sources: dict[str, str] = {}
    walk = Walk(sources, default_source)
    for layer in layers:
        walk.problems.extend(layer.problems)
        merge(data, sources, layer.data, layer.sources)
        _sync_aliases(layer.data, data, sources, walk)
    return _finish_load(data, walk)


def _finish_load(data: dict[str, Any], walk: Walk) -> Config:
    config = build(struct_info(Config), data, "", walk)
    if walk.problems:
        raise walk.error()
    assert isinstance(config, Config)
    _log.debug("configuration loaded: %r", config)
    return config
