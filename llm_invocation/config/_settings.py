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
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, cast, final
from urllib.parse import urlsplit

import msgspec

from .._secrets import Secret, register_secret
from ..errors import ProviderNotFound
from ._sources import Layer, env_layer, keyword_layer, yaml_layer
from ._walk import (
    Walk,
    build,
    check_fields,
    format_duration,
    merge,
    parse_duration,
    plain,
    scrub,
    show,
    struct_info,
)

if TYPE_CHECKING:
    from ..types import ModelOptions

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
    "proxy_url_problem",
]

_log = logging.getLogger("llm_invocation.config._settings")

_DURATION: Final = {"format": "duration"}
_Seconds = Annotated[float, msgspec.Meta(ge=0, extra=_DURATION)]
_PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, extra=_DURATION)]
_AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_HttpUrl = Annotated[str, msgspec.Meta(extra={"format": "http-url"})]
_FilePath = Annotated[str, msgspec.Meta(extra={"format": "path"})]
_Name = Annotated[str, msgspec.Meta(min_length=1)]
_Threshold = Annotated[float, msgspec.Meta(gt=0, le=1)]
_Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
if TYPE_CHECKING:
    _Verify = bool | str
else:
    # The configuration walker converts ``X | None`` unions only: this field is checked and
    # normalised by `ProviderConfig._finish` instead.
    _Verify = Any

_PROXY_HOST: Final = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.]+")


def proxy_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable proxy URL, or None when it is one.

    A proxy URL is ``http://`` or ``https://``, a host, optionally credentials and a port,
    and nothing more. The message never repeats the URL (it may hold credentials).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a valid proxy URL (expected http://[user:password@]host[:port])"
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        return "SOCKS proxies are not supported: use an http:// or https:// proxy"
    if scheme not in ("http", "https"):
        return "expected an http:// or https:// proxy URL"
    if not parts.hostname or not _PROXY_HOST.fullmatch(parts.hostname):
        return "has no valid host (expected http://[user:password@]host[:port])"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be scheme://[user:password@]host[:port], without a path or query"
    return None


def _check_proxy(url: str | None, walk: Walk) -> None:
    """Check a ``proxy`` field; its credentials become secrets, masked in every message."""
    if url is None:
        return
    problem = proxy_url_problem(url)
    if problem is not None:
        walk.add("proxy", problem)
        return
    parts = urlsplit(url)
    for part in (parts.username, parts.password):
        if part:
            register_secret(part)


ProviderKind = Literal[
    "openai",
    "anthropic",
    "gemini",
    "openai-compatible",
    "azure",
    "mock",
    # OpenAI-compatible presets (llm_invocation.providers.compatible.PRESETS)
    "ollama",
    "vllm",
    "groq",
    "together",
    "openrouter",
    "deepseek",
    "mistral",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the sections: validates on construction and never shows a secret."""

    def __post_init__(self) -> None:
        walk = Walk()
        check_fields(self, walk)
        if not walk.problems:
            self._finish(walk)
        if walk.problems:
            raise walk.error()

    def _finish(self, walk: Walk) -> None:
        """Normalise and check across fields once every field is valid."""

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={_safe_repr(getattr(self, name))}" for name in self.__struct_fields__
        )
        return f"{type(self).__name__}({fields})"


@final
class RetryConfig(_Section, frozen=True, kw_only=True):
    """Retries with exponential backoff.

    Attributes:
        max_attempts: attempts in all, the first included (``LLM_MAX_RETRIES`` + 1).
        initial_delay: the wait before the first retry.
        max_delay: the longest wait between attempts.
        multiplier: how much each wait grows, at least 1.
        jitter: randomise each wait (full jitter).
        max_retry_after: the longest ``Retry-After`` honoured; longer ones fail at once.
    """

    max_attempts: _AtLeastOne = 3
    initial_delay: _Seconds = 0.1
    max_delay: _Seconds = 2.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    jitter: bool = True
    max_retry_after: _Seconds = 60.0

    def _finish(self, walk: Walk) -> None:
        if self.max_delay < self.initial_delay:
            limit = format_duration(self.initial_delay)
            walk.add("max_delay", f"must be >= initial_delay ({limit})")


@final
class TimeoutConfig(_Section, frozen=True, kw_only=True):
    """Watchdogs of one streaming call, in seconds (the whole call is `Config.timeout`)."""

    connect: _PositiveSeconds = 10.0
    first_chunk: _PositiveSeconds = 60.0
    idle_chunk: _PositiveSeconds = 30.0


@final
class RateLimitConfig(_Section, frozen=True, kw_only=True):
    """Local limits per provider; ``None`` means unlimited.

    Attributes:
        requests_per_minute: requests started per minute.
        tokens_per_minute: prompt plus completion tokens per minute.
        concurrent_calls: calls in flight at once.
        max_wait: how long a call may queue for capacity before `RateLimited`.
        max_queue: how many calls may queue; more fail at once.
    """

    requests_per_minute: _AtLeastOne | None = None
    tokens_per_minute: _AtLeastOne | None = None
    concurrent_calls: _AtLeastOne | None = None
    max_wait: _Seconds = 30.0
    max_queue: _NonNegative = 10_000


@final
class PriceOverride(_Section, frozen=True, kw_only=True):
    """A model's prices in a currency unit per million tokens, overriding the price table."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


@final
class CostConfig(_Section, frozen=True, kw_only=True):
    """Cost caps and budgets.

    Attributes:
        max_cost_per_request: refuse a request whose estimate exceeds this; None: no cap.
        max_budget: the spend allowed per budget period; None: no budget.
        budget_period: the rolling window in seconds (``budget_calendar="rolling"``).
        budget_calendar: ``"rolling"``, or reset at each calendar ``day``/``week``/``month``.
        alert_thresholds: fractions of the budget, in (0, 1], that raise an alert.
        prices: per-model price overrides, keyed ``"provider:model"`` or ``"model"``.
        budgets: more budgets, per provider, model or metadata tag (see `BudgetConfig`).
    """

    max_cost_per_request: Decimal | None = None
    max_budget: Decimal | None = None
    budget_period: _PositiveSeconds | None = 86400.0
    budget_calendar: Literal["rolling", "day", "week", "month"] = "rolling"
    alert_thresholds: list[_Threshold] = msgspec.field(default_factory=lambda: [0.5, 0.8, 1.0])
    prices: dict[str, PriceOverride] = {}
    budgets: list[BudgetConfig] = []


@final
class BudgetConfig(_Section, frozen=True, kw_only=True):
    """A budget on one scope.

    Attributes:
        scope: ``"global"``, ``"provider:<name>"``, ``"model:<provider>:<model>"`` or
            ``"tag:<metadata key>=<value>"`` (e.g. ``"tag:team=search"``; ``"tag:user=*"``
            gives every value of the tag its own budget).
        limit: dollars per period.
        period: the rolling window (``calendar="rolling"``).
        calendar: ``"rolling"`` or a UTC ``day``/``week``/``month``.
    """

    scope: str
    limit: Decimal
    period: _PositiveSeconds = 86400.0
    calendar: Literal["rolling", "day", "week", "month"] = "rolling"


@final
class LoggingConfig(_Section, frozen=True, kw_only=True):
    """Logging of the runtime; tool arguments are redacted unless asked otherwise."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["text", "json"] = "text"
    redact_tool_arguments: bool = True


@final
class ProviderConfig(_Section, frozen=True, kw_only=True):
    """One entry of ``providers``.

    Attributes:
        enabled: whether the runtime starts a session for it.
        api_key: the key; `keys` adds ``api_keys`` for rotation.
        api_keys: more keys, used in turn.
        base_url: the API's base URL; None: the codec's default.
        models: the models it serves, when you want to restrict or announce them.
        options: codec-specific settings, passed through.
        kind: the codec (``"openai"``, ``"anthropic"``, ``"gemini"``,
            ``"openai-compatible"``, ``"azure"``, ``"mock"``); None: the entry's name.
        organization: the OpenAI organization (``OPENAI_ORG_ID``).
        api_version: the Azure OpenAI API version.
        deployment: the Azure OpenAI deployment.
        headers: extra HTTP headers for every request.
        fallback: ``"provider:model"`` alternatives to try when this provider fails.
        max_connections: the HTTP connection pool size.
        rate_limits: limits of this provider alone, on top of the global ``rate_limits``.
        proxy: the proxy for every request of this provider (``http://`` or ``https://``,
            credentials in the URL); overrides the global ``proxy`` and the environment.
        trust_env: read ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``,
            ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``; None: the global ``trust_env``.
        verify: check the server's certificate: True (certifi's CA bundle, or
            ``SSL_CERT_FILE``/``SSL_CERT_DIR``), False (no check: a warning is logged), or
            the path of a CA bundle file or of a directory of hashed CA certificates.
        client_cert: a PEM file with the client certificate for mutual TLS (and its key,
            unless ``client_key`` is set).
        client_key: a PEM file with the client certificate's private key.
        client_key_password: the password of an encrypted private key.
    """

    enabled: bool = True
    api_key: Secret | None = None
    api_keys: list[Secret] = []
    base_url: _HttpUrl | None = None
    models: list[_Name] = []
    options: dict[str, Any] = {}
    kind: ProviderKind | None = None
    organization: str | None = None
    api_version: str | None = None
    deployment: str | None = None
    headers: dict[str, str] = {}
    fallback: list[str] = []
    max_connections: _AtLeastOne = 256
    rate_limits: RateLimitConfig | None = None
    proxy: str | None = None
    trust_env: bool | None = None
    verify: _Verify = True
    client_cert: _FilePath | None = None
    client_key: _FilePath | None = None
    client_key_password: Secret | None = None

    def keys(self) -> list[Secret]:
        """Return ``api_key`` then ``api_keys``, without duplicates."""
        first = [self.api_key] if self.api_key is not None else []
        return list(dict.fromkeys([*first, *self.api_keys]))

    def _finish(self, walk: Walk) -> None:
        for index, target in enumerate(self.fallback):
            provider, _, model = target.partition(":")
            if not provider or not model:
                walk.add(f"fallback[{index}]", f"expected 'provider:model', got {target!r}")
        _check_proxy(self.proxy, walk)
        self._finish_tls(walk)

    def _finish_tls(self, walk: Walk) -> None:
        verify = cast("object", self.verify)
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):
            msgspec.structs.force_setattr(self, "verify", verify.strip().lower() == "true")
        elif isinstance(verify, os.PathLike):
            msgspec.structs.force_setattr(
                self, "verify", os.fspath(cast("os.PathLike[str]", verify))
            )
        elif not isinstance(verify, bool | str):
            walk.add("verify", f"expected true, false or a CA bundle path, got {show(verify)}")
        if isinstance(self.verify, str) and not os.path.exists(self.verify):
            walk.add("verify", f"no CA bundle file or directory at {self.verify!r}")
        for name in ("client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                walk.add(name, f"no such file: {path!r}")
        if self.client_cert is None:
            if self.client_key is not None:
                walk.add("client_key", "needs client_cert")
            if self.client_key_password is not None:
                walk.add("client_key_password", "needs client_cert")


@final
class ToolsConfig(_Section, frozen=True, kw_only=True):
    """Tool calling: the automatic loop and the executor."""

    max_steps: _AtLeastOne = 8
    timeout: _PositiveSeconds = 60.0
    max_concurrency: _AtLeastOne = 16
    sandbox: bool = False


@final
class MCPServerConfig(_Section, frozen=True, kw_only=True):
    """One MCP server: a subprocess (``stdio``) or a URL (``http``, ``sse``).

    Attributes:
        transport: ``"stdio"`` needs ``command``; ``"http"`` and ``"sse"`` need ``url``.
        command: the program to run (stdio).
        args: its arguments.
        env: extra environment variables for it; values are secrets.
        cwd: its working directory.
        url: the server's http:// or https:// URL.
        headers: HTTP headers (http, sse); values are secrets.
        timeout: the timeout of one request to the server.
        enabled: whether the runtime connects to it.
    """

    transport: Literal["stdio", "http", "sse"]
    command: str | None = None
    args: list[str] = []
    env: dict[str, Secret] = {}
    cwd: _FilePath | None = None
    url: _HttpUrl | None = None
    headers: dict[str, Secret] = {}
    timeout: _PositiveSeconds = 30.0
    enabled: bool = True

    def _finish(self, walk: Walk) -> None:
        if self.transport == "stdio" and not self.command:
            walk.add("command", "is required for the stdio transport")
        if self.transport != "stdio" and self.url is None:
            walk.add("url", f"is required for the {self.transport} transport")


@final
class MCPConfig(_Section, frozen=True, kw_only=True):
    """MCP servers by name."""

    servers: dict[str, MCPServerConfig] = {}


class _ModelOptionsSchema(msgspec.Struct, frozen=True, kw_only=True):
    """The names and ranges of `llm_invocation.types.ModelOptions`, for ``defaults.options``."""

    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: _AtLeastOne | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: _AtLeastOne | None = None
    frequency_penalty: _Penalty | None = None
    presence_penalty: _Penalty | None = None
    stop: Annotated[list[_Name], msgspec.Meta(max_length=16)] | None = None
    seed: int | None = None
    provider_options: dict[str, Any] | None = None


@final
class DefaultsConfig(_Section, frozen=True, kw_only=True):
    """Defaults for requests that do not say (the second specification's ``defaults``).

    Attributes:
        provider: the default provider; see the module docstring for the two spellings.
        model: the default model.
        options: default `~llm_invocation.types.ModelOptions` fields (``temperature``,
            ``max_tokens``, ``top_p``, ``top_k``, ``frequency_penalty``,
            ``presence_penalty``, ``stop``, ``seed``, ``provider_options``), validated.
    """

    provider: _Name | None = None
    model: _Name | None = None
    options: Annotated[dict[str, Any], msgspec.Meta(extra={"schema": _ModelOptionsSchema})] = {}

    def model_options(self) -> ModelOptions:
        """Return ``options`` as a `~llm_invocation.types.ModelOptions`."""
        from ..types import ModelOptions

        return ModelOptions(**self.options)


@final
class WebSocketConfig(_Section, frozen=True, kw_only=True):
    """The optional WebSocket front.

    Attributes:
        host: the address to listen on.
        port: the port; 0 picks a free one.
        tokens: bearer tokens clients must present; empty: no authentication.
        allowed_origins: ``Origin`` values accepted; empty: any.
        max_message_size: the largest frame accepted, in bytes.
        max_concurrent_per_connection: invocations one connection may run at once.
        client_requests_per_minute: invocations one connection may start per minute.
    """

    host: _Name = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8765
    tokens: list[Secret] = []
    allowed_origins: list[_Name] = []
    max_message_size: _AtLeastOne = 1 << 20
    max_concurrent_per_connection: _AtLeastOne = 16
    client_requests_per_minute: _AtLeastOne | None = None


@final
class Config(_Section, frozen=True, kw_only=True):
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

    provider: _Name = "mock"
    model: _Name | None = None
    api_key: Secret | None = None
    base_url: _HttpUrl | None = None
    timeout: _PositiveSeconds = 30.0
    organization: str | None = None
    retries: RetryConfig = msgspec.field(default_factory=RetryConfig)
    timeouts: TimeoutConfig = msgspec.field(default_factory=TimeoutConfig)
    rate_limits: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    cost_control: CostConfig = msgspec.field(default_factory=CostConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    providers: dict[str, ProviderConfig] = {}
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    mcp: MCPConfig = msgspec.field(default_factory=MCPConfig)
    defaults: DefaultsConfig = msgspec.field(default_factory=DefaultsConfig)
    store: Annotated[str, msgspec.Meta(extra={"format": "store"})] = "memory"
    store_fail_mode: Literal["open", "closed"] = "closed"
    ledger_path: _FilePath | None = None
    cache_ttl: _PositiveSeconds = 3600.0
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    proxy: str | None = None
    trust_env: bool = True

    def _finish(self, walk: Walk) -> None:
        _check_proxy(self.proxy, walk)
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


def _safe_repr(value: object) -> str:
    """Repr a field value; free-form text (headers, options, URLs) is scrubbed of secrets."""
    if isinstance(value, str):
        return scrub(repr(value))
    if isinstance(value, dict):
        items = cast("dict[object, object]", value).items()
        return "{" + ", ".join(_safe_pair(repr(k), v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_safe_repr(v) for v in cast("list[object]", value)) + "]"
    return repr(value)  # Secrets mask themselves, sections scrub their own fields


def _safe_pair(key: str, value: object) -> str:
    if isinstance(value, str):  # scrub with the key, so ``Authorization: Bearer ...`` masks
        return scrub(f"{key}: {value!r}")
    return f"{scrub(key)}: {_safe_repr(value)}"


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
