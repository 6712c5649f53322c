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
``defaults``. `Config.default_provider` and `Config.default_model` give the result: when no
provider is named, it is inferred from the model and the keys (``LLM_API_KEY`` alone gives
``openai``), and only a configuration that names no provider and holds no key falls back to
the built-in mock (`Config.mock_fallback`); see ``_defaults.py``.

The defaults are the first specification's: 30 s, 3 retries, 60 requests and 100,000 tokens
per minute, 10 concurrent calls, $0.50 per request, $100 per 24 h. ``None`` or ``0`` lifts a
limit (``LLM_REQUESTS_PER_MINUTE=0``, ``rate_limits: {concurrent_calls: null}``), and
`Config.unlimited` makes a configuration without rate limits, cap or budget.

Durations accept seconds or strings (`parse_duration`); money is a `~decimal.Decimal` read
from a string, int or float through ``str``. API keys and tokens are
`~llm_invocation._secrets.Secret` values (plain strings are converted). The loose forms
(strings for durations, secrets and sections as dicts) are accepted at run time by the
constructors too; typed code passes the precise types.

Hostile input is bounded (64-bit integers, finite floats, durations of at most 100 years,
nesting of at most 32 levels, YAML of at most 1 MiB with aliases expanded at most 100,000
values...): every loader raises `ConfigurationError` and nothing else, whatever it is given.
Secret-bearing fields (keys, tokens, header values, MCP environments, the credentials of the
``proxy`` and ``store`` URLs) are masked by field, whatever their length or shape: a problem
at such a path names what was expected and the type of what was found, never the value, and
a repr, `Config.redacted` and `Config.to_json` mask them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from typing import Any, Final, Literal, cast, final

import msgspec

from ..errors import ConfigurationError, ProviderNotFound
from ._defaults import (
    DEFAULT_CONCURRENT_CALLS,
    DEFAULT_OPENAI_MODEL,
    DEFAULT_REQUESTS_PER_MINUTE,
    DEFAULT_TOKENS_PER_MINUTE,
    UNLIMITED,
    infer_provider,
)
from ._display import redacted_value
from ._durations import format_duration, parse_duration
from ._sections import (
    BudgetConfig,
    CostConfig,
    Credential,
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
    ProxyUrl,
    RateLimitConfig,
    RetryConfig,
    Section,
    StoreUrl,
    TimeoutConfig,
    ToolsConfig,
    WebSocketConfig,
)
from ._sources import Layer, bounded_layer, env_layer, keyword_layer, merge, plain
from ._walk import Walk, build, key_text, struct_info, unexpected
from ._yaml import YamlInput, yaml_layer

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


def _default_rate_limits() -> RateLimitConfig:
    return RateLimitConfig(
        requests_per_minute=DEFAULT_REQUESTS_PER_MINUTE,
        tokens_per_minute=DEFAULT_TOKENS_PER_MINUTE,
        concurrent_calls=DEFAULT_CONCURRENT_CALLS,
    )


@final
class Config(Section, frozen=True, kw_only=True):
    """The whole configuration of a client. See the module docstring for how to make one.

    Attributes:
        provider: the default provider (see also ``defaults.provider``); None: inferred
            (`default_provider`).
        model: the default model (see also ``defaults.model``); None: the provider's
            (`default_model`).
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

    provider: Name | None = None
    model: Name | None = None
    api_key: Credential | None = None
    base_url: HttpUrl | None = None
    timeout: PositiveSeconds = 30.0
    organization: str | None = None
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    timeouts: TimeoutConfig = msgspec.field(default_factory=TimeoutConfig)
    rate_limits: RateLimitConfig = msgspec.field(default_factory=_default_rate_limits)
    cost_control: CostConfig = msgspec.field(default_factory=CostConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict[str, ProviderConfig])
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    mcp: MCPConfig = msgspec.field(default_factory=MCPConfig)
    defaults: DefaultsConfig = msgspec.field(default_factory=DefaultsConfig)
    store: StoreUrl = "memory"
    store_fail_mode: Literal["open", "closed"] = "closed"
    ledger_path: FilePath | None = None
    cache_ttl: PositiveSeconds = 3600.0
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    proxy: ProxyUrl | None = None
    trust_env: bool = True

    def _finish(self, walk: Walk) -> None:
        del walk  # every field is valid on its own; nothing to check across them
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
            ConfigurationError: listing every unknown key, bad type and bad value; the only
                exception it raises, whatever ``data`` holds.
        """
        with _guard(source):
            return _assemble([keyword_layer(data, source)], default_source=source)

    @classmethod
    def from_yaml(
        cls, path_or_text: YamlInput, *, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Make a `Config` from a YAML file or YAML text.

        A string is a file name when it is one line ending in ``.yaml``, ``.yml`` or ``.json``
        or naming an existing file; otherwise it is YAML text (bytes are YAML text in UTF-8).
        ``${VAR}`` and ``${VAR:-default}`` in string values are read from ``environ``
        (default: the process environment); no other environment variable is consulted.

        Raises:
            ConfigurationError: when PyYAML is missing (install ``llm-invocation[yaml]``), the
                file cannot be read, the YAML is invalid or too large, deep or repetitive, a
                ``${VAR}`` is unset, or any value is invalid; the only exception it raises.
        """
        with _guard("yaml"):
            env = os.environ if environ is None else environ
            return _assemble([yaml_layer(path_or_text, env)])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Make a `Config` from ``LLM_CONFIG_FILE`` and the environment variables over it.

        Same as ``Config.load(environ=environ)``.

        Raises:
            ConfigurationError: naming the variable of every bad value; the only exception it
                raises.
        """
        return cls.load(environ=environ)

    @classmethod
    def load(
        cls,
        *,
        yaml: YamlInput | None = None,
        environ: Mapping[str, str] | None = None,
        **keywords: Any,
    ) -> Config:
        """Make a `Config` from defaults < YAML < environment variables < keywords.

        Args:
            yaml: a YAML file or text; None reads the file named by ``LLM_CONFIG_FILE``.
            environ: the environment to read; None reads ``os.environ``.
            **keywords: top-level fields; a dict for a section merges key by key.

        Raises:
            ConfigurationError: listing every problem of every layer; the only exception it
                raises, whatever the arguments hold.
        """
        with _guard(None):
            env = os.environ if environ is None else environ
            layers: list[Layer] = []
            if yaml is not None:
                layers.append(yaml_layer(yaml, env))
            elif isinstance(file := _config_file(env), str) and file:
                layers.append(yaml_layer(file, env, origin="env LLM_CONFIG_FILE"))
            configured = _provider_names(layers)
            layers.append(env_layer(env, configured))
            layers.append(keyword_layer(keywords, "keyword"))
            return _assemble(layers)

    @classmethod
    def unlimited(cls, **keywords: Any) -> Config:
        """Make a `Config` without rate limits, per-request cap or budget, from keywords.

        Like ``Config(**keywords)`` with ``rate_limits`` and ``cost_control`` lifted: no
        requests, tokens or concurrency limit, no ``max_cost_per_request`` and no
        ``max_budget``. Keywords merge over that key by key, so
        ``Config.unlimited(rate_limits={"concurrent_calls": 50})`` limits only concurrency.
        Nothing is read from the environment.

        Raises:
            ConfigurationError: listing every invalid keyword; the only exception it raises.
        """
        with _guard("keyword"):
            lifted = Layer({k: dict(v) for k, v in UNLIMITED.items()}, {}, [])
            return _assemble([lifted, keyword_layer(keywords, "keyword")], default_source="keyword")

    def replace(self, **changes: Any) -> Config:
        """Return a copy with top-level fields replaced (a section given as a dict is rebuilt
        from its defaults, not merged: use `merged_with` for that).

        Raises:
            ConfigurationError: listing every invalid change; the only exception it raises.
        """
        with _guard("keyword"):
            bounded = bounded_layer(changes, "keyword")
            data = _plain_dict(self)
            data.update(
                (k, v if isinstance(v, msgspec.Struct) else plain(v))
                for k, v in bounded.data.items()
            )
            sources = dict.fromkeys(changes, "keyword")
            walk = Walk(sources, "keyword")
            walk.problems.extend(bounded.problems)
            _sync_aliases(bounded.data, data, sources, walk)
            return _finish_load(data, walk)

    def merged_with(self, other: Mapping[str, Any], *, source: str = "dict") -> Config:
        """Return a copy with ``other`` (the YAML shape) merged over it key by key.

        Raises:
            ConfigurationError: listing every problem ``other`` brings; the only exception it
                raises.
        """
        with _guard(source):
            return _assemble([keyword_layer(other, source)], base=self, default_source=source)

    # ------------------------------------------------------------------------------ views

    @property
    def default_provider(self) -> str:
        """The provider of requests that name none.

        ``provider`` when set; else inferred: from the ``model`` (``gpt-*``, ``o1*``/``o3*``/
        ``o4*``, ``chatgpt-*``: ``openai``; ``claude-*``: ``anthropic``; ``gemini-*``:
        ``gemini``), else ``openai`` for a top-level ``api_key`` (``LLM_API_KEY``), else the
        configured provider with a key (OpenAI's first), else any configured provider; and
        ``mock`` when nothing is configured (`mock_fallback`).
        """
        if self.provider is not None:
            return self.provider
        return self._inferred() or "mock"

    @property
    def mock_fallback(self) -> bool:
        """Whether the built-in mock answers because no provider and no key is configured
        (not because it was asked for)."""
        return self.provider is None and self._inferred() is None

    @property
    def default_model(self) -> str | None:
        """The model of requests that name none: ``model``, else ``gpt-4`` for an OpenAI
        default provider, else None (the provider's first known model)."""
        if self.model is not None:
            return self.model
        provider = self.default_provider
        entry = self.providers.get(provider)
        if provider == "openai" and (entry is None or entry.kind in (None, "openai")):
            return DEFAULT_OPENAI_MODEL
        return None

    def _inferred(self) -> str | None:
        return infer_provider(
            model=self.model,
            api_key=self.api_key,
            base_url=self.base_url,
            organization=self.organization,
            providers=self.providers,
        )

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
        """Return the configuration as JSON-able builtins with every secret masked.

        Masking follows the fields, whatever the values look like: API keys, tokens and the
        values of ``mcp.servers.*.env`` show as their mask; HTTP header values as ``***``
        (``Bearer ***`` keeps the scheme); the user, password and ``password=`` parameter
        of the ``proxy`` and ``store`` URLs as ``***``. Other text is scrubbed of known
        secrets and key-shaped strings.
        """
        return cast("dict[str, Any]", redacted_value(struct_info(Config), self))

    def to_json(self) -> bytes:
        """Return `redacted` as JSON."""
        return msgspec.json.encode(self.redacted())


# ---------------------------------------------------------------------------------- loading


@contextmanager
def _guard(source: str | None) -> Generator[None]:
    """Turn an exception a loader did not foresee into a `ConfigurationError` (and log it)."""
    try:
        yield
    except ConfigurationError:
        raise
    except Exception as error:  # noqa: BLE001 - the loaders raise only ConfigurationError
        walk = Walk(default_source=source)
        unexpected(walk, "", error)
        raise walk.error() from None


def _config_file(environ: object) -> object:
    """``LLM_CONFIG_FILE`` (the environment layer reports a value that is not a string)."""
    return environ.get("LLM_CONFIG_FILE") if isinstance(environ, Mapping) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


def _plain_dict(value: object) -> dict[str, Any]:
    data = plain(value)
    assert isinstance(data, dict)
    return data  # pyright: ignore[reportUnknownVariableType]


def _provider_names(layers: list[Layer]) -> set[str]:
    names: set[str] = set()
    for layer in layers:
        providers: object = layer.data.get("providers")
        if isinstance(providers, Mapping):
            names.update(key_text(name) for name in cast("Mapping[object, object]", providers))
    return names


_MISSING: Final = object()


def _get(container: object, key: str) -> object:
    if isinstance(container, Mapping):
        value = container.get(key)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return _MISSING if value is None else value  # pyright: ignore[reportUnknownVariableType]
    if isinstance(container, DefaultsConfig):
        value = getattr(container, key)
        return _MISSING if value is None else value
    return _MISSING


def _differ(one: object, other: object) -> bool:
    if isinstance(one, str) and isinstance(other, str):
        return one != other
    return one is not other


def _sync_aliases(
    layer: Mapping[str, Any], data: dict[str, Any], sources: dict[str, str], walk: Walk
) -> None:
    """Make ``provider`` / ``model`` set in one layer, in either spelling, set both."""
    for name in ("provider", "model"):
        nested = f"defaults.{name}"
        top_value, nested_value = _get(layer, name), _get(_get(layer, "defaults"), name)
        if top_value is _MISSING and nested_value is _MISSING:
            continue
        given_both = top_value is not _MISSING and nested_value is not _MISSING
        if given_both and _differ(top_value, nested_value):
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
    if default_source is None:  # for a path no layer marked (a YAML key of an odd type)
        default_source = next((layer.sources[""] for layer in layers if "" in layer.sources), None)
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
