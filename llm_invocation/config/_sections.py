"""The sections of `Config`: retries, timeouts, limits, costs, providers, tools, MCP, the
front; the field types they share and the proxy URL check."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, cast, final

import msgspec

from .._secrets import Secret
from ..errors import ConfigurationError
from ._checks import proxy_url_problem, text_problem
from ._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BUDGET, DEFAULT_MAX_COST_PER_REQUEST
from ._display import safe_repr
from ._durations import format_duration
from ._walk import Walk, check_fields, show, struct_info, unexpected, unknown_field

if TYPE_CHECKING:
    from ..types import ModelOptions

__all__ = [
    "BudgetConfig",
    "CostConfig",
    "DefaultsConfig",
    "LoggingConfig",
    "MCPConfig",
    "MCPRootConfig",
    "MCPSamplingConfig",
    "MCPServerConfig",
    "PriceOverride",
    "ProviderConfig",
    "ProviderKind",
    "RateLimitConfig",
    "RetryConfig",
    "TimeoutConfig",
    "ToolsConfig",
    "WebSocketConfig",
    "proxy_url_problem",
]

DURATION: Final = {"format": "duration"}
Seconds = Annotated[float, msgspec.Meta(ge=0, extra=DURATION)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, extra=DURATION)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Limit = Annotated[int, msgspec.Meta(ge=0)]
"""A rate limit: 0 (like None) means unlimited."""
HttpUrl = Annotated[str, msgspec.Meta(extra={"format": "http-url"})]
FilePath = Annotated[str, msgspec.Meta(extra={"format": "path"})]
Name = Annotated[str, msgspec.Meta(min_length=1)]
Threshold = Annotated[float, msgspec.Meta(gt=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
# Secret-bearing: a problem there never shows the value, a repr or `Config.redacted` masks it.
ProxyUrl = Annotated[str, msgspec.Meta(extra={"format": "proxy"})]
StoreUrl = Annotated[str, msgspec.Meta(extra={"format": "store"})]
Credential = Annotated[Secret, msgspec.Meta(extra={"format": "header-value"})]
HeaderName = Annotated[str, msgspec.Meta(extra={"format": "header-name"})]
HeaderValue = Annotated[str, msgspec.Meta(extra={"format": "header-value", "secret": True})]
EnvName = Annotated[str, msgspec.Meta(extra={"format": "env-name"})]
if TYPE_CHECKING:
    Verify = bool | str
else:
    # The configuration walker converts ``X | None`` unions only: this field is checked and
    # normalised by `ProviderConfig._finish` instead.
    Verify = Any


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


class _SectionMeta(msgspec.StructMeta):
    """Makes a bad call of a section's constructor a `ConfigurationError`, like a bad value."""

    if not TYPE_CHECKING:  # keep the typed signatures of the constructors for type checkers

        def __call__(cls, *args, **kwargs):
            walk = Walk(default_source="keyword")
            if args:
                walk.add("", f"{cls.__name__} takes keyword arguments only")
            info = struct_info(cls)
            names = [field.name for field in info.fields]
            for key in kwargs:
                if key not in names:
                    walk.add(key, unknown_field(key, names))
            for field in info.fields:
                if field.required and field.name not in kwargs:
                    walk.add(field.name, "is required")
            if walk.problems:
                raise walk.error()
            try:
                return super().__call__(**kwargs)
            except ConfigurationError:
                raise
            except Exception as error:  # noqa: BLE001 - a constructor raises ConfigurationError only
                unexpected(walk, "", error)
                raise walk.error() from None


class Section(msgspec.Struct, frozen=True, kw_only=True, metaclass=_SectionMeta):
    """Base of the sections: validates on construction and never shows a secret.

    Raises:
        ConfigurationError: on construction, listing every invalid, unknown or missing field.
    """

    def __post_init__(self) -> None:
        walk = Walk(default_source="keyword")
        check_fields(self, walk)
        if not walk.problems:
            try:
                self._finish(walk)
            except Exception as error:  # noqa: BLE001 - a constructor raises ConfigurationError only
                unexpected(walk, "", error)
        if walk.problems:
            raise walk.error()

    def _finish(self, walk: Walk) -> None:
        """Normalise and check across fields once every field is valid."""

    def __repr__(self) -> str:
        info = struct_info(type(self))
        fields = ", ".join(
            f"{f.name}={safe_repr(f.type, getattr(self, f.name))}" for f in info.fields
        )
        return f"{type(self).__name__}({fields})"


@final
class RetryConfig(Section, frozen=True, kw_only=True):
    """Retries with exponential backoff.

    Attributes:
        max_attempts: attempts in all, the first included (``LLM_MAX_RETRIES`` + 1); the
            default, 4, is the first specification's 3 retries.
        initial_delay: the wait before the first retry.
        max_delay: the longest wait between attempts.
        multiplier: how much each wait grows, at least 1.
        jitter: randomise each wait (full jitter).
        max_retry_after: the longest ``Retry-After`` honoured; longer ones fail at once.
    """

    max_attempts: AtLeastOne = DEFAULT_MAX_ATTEMPTS
    initial_delay: Seconds = 0.1
    max_delay: Seconds = 2.0
    multiplier: Annotated[float, msgspec.Meta(ge=1, le=100)] = 2.0
    jitter: bool = True
    max_retry_after: Seconds = 60.0

    def _finish(self, walk: Walk) -> None:
        if self.max_delay < self.initial_delay:
            limit = format_duration(self.initial_delay)
            walk.add("max_delay", f"must be >= initial_delay ({limit})")


@final
class TimeoutConfig(Section, frozen=True, kw_only=True):
    """Watchdogs of one streaming call, in seconds (the whole call is `Config.timeout`)."""

    connect: PositiveSeconds = 10.0
    first_chunk: PositiveSeconds = 60.0
    idle_chunk: PositiveSeconds = 30.0


@final
class RateLimitConfig(Section, frozen=True, kw_only=True):
    """Local rate limits; ``None`` or ``0`` means unlimited (``0`` is stored as ``None``).

    The fields default to unlimited: a section made with ``RateLimitConfig(...)`` holds what
    it is given. The global ``Config.rate_limits`` defaults to the first specification's
    60 requests and 100,000 tokens per minute and 10 concurrent calls; a mapping given for it
    (keywords, a dict, YAML, ``LLM_*`` variables) changes only the keys it names.

    Attributes:
        requests_per_minute: requests started per minute.
        tokens_per_minute: prompt plus completion tokens per minute.
        concurrent_calls: calls in flight at once.
        max_wait: how long a call may queue for capacity before `RateLimited`; None: the
            broader section's (a model's falls back to its provider's, then the global
            one, which defaults to 30 s).
        max_queue: how many calls may queue, more fail at once; None: the broader
            section's (the global default is 10,000).
    """

    requests_per_minute: Limit | None = None
    tokens_per_minute: Limit | None = None
    concurrent_calls: Limit | None = None
    max_wait: Seconds | None = None
    max_queue: NonNegative | None = None

    def _finish(self, walk: Walk) -> None:
        del walk  # every value is valid; 0 is spelled None
        for name in ("requests_per_minute", "tokens_per_minute", "concurrent_calls"):
            if getattr(self, name) == 0:
                msgspec.structs.force_setattr(self, name, None)


@final
class PriceOverride(Section, frozen=True, kw_only=True):
    """A model's prices in a currency unit per million tokens, overriding the price table.

    A missing cache price is the input price; a missing ``cache_write_1h_per_mtok`` (cache
    writes that live an hour, Anthropic's ``"1h"`` TTL) is ``cache_write_per_mtok``.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None


@final
class CostConfig(Section, frozen=True, kw_only=True):
    """Cost caps and budgets.

    Attributes:
        max_cost_per_request: refuse a request whose worst case exceeds this (default
            $0.50); None or 0: no cap.
        max_budget: the spend allowed per budget period (default $100); None or 0: no
            budget.
        budget_period: the rolling window in seconds (``budget_calendar="rolling"``).
        budget_calendar: ``"rolling"``, or reset at each calendar ``day``/``week``/``month``.
        alert_thresholds: fractions of the budget, in (0, 1], that raise an alert.
        prices: per-model price overrides, keyed ``"provider:model"`` or ``"model"``.
        budgets: more budgets, per provider, model or metadata tag (see `BudgetConfig`).
        unknown_price: when a cap or a budget applies and a model's price is unknown,
            ``"refuse"`` the call (`CostExceeded`, reason ``unknown_price``) or ``"allow"``
            it; an unknown cost is never counted as zero.
        default_max_tokens: the completion tokens reserved for a request that sets no
            ``max_tokens`` (the model's own output limit, when smaller, wins).
    """

    max_cost_per_request: Decimal | None = DEFAULT_MAX_COST_PER_REQUEST
    max_budget: Decimal | None = DEFAULT_MAX_BUDGET
    budget_period: PositiveSeconds | None = 86400.0
    budget_calendar: Literal["rolling", "day", "week", "month"] = "rolling"
    alert_thresholds: list[Threshold] = msgspec.field(default_factory=lambda: [0.5, 0.8, 1.0])
    prices: dict[str, PriceOverride] = {}
    budgets: list[BudgetConfig] = []
    unknown_price: Literal["refuse", "allow"] = "refuse"
    default_max_tokens: AtLeastOne = 4096

    def _finish(self, walk: Walk) -> None:
        del walk  # every value is valid; 0 is spelled None
        for name in ("max_cost_per_request", "max_budget"):
            if getattr(self, name) == 0:
                msgspec.structs.force_setattr(self, name, None)


@final
class BudgetConfig(Section, frozen=True, kw_only=True):
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
    period: PositiveSeconds = 86400.0
    calendar: Literal["rolling", "day", "week", "month"] = "rolling"


@final
class LoggingConfig(Section, frozen=True, kw_only=True):
    """Logging of the runtime; tool arguments are redacted unless asked otherwise.

    Attributes:
        level: the level of the ``llm_invocation`` logger tree, set when a client opens
            (unless the application set that logger's level itself).
        format: ``"json"``: one JSON object per line, where the library installs a handler
            (`llm_invocation.observability.configure_logging`, the command line).
        redact_tool_arguments: leave tool arguments out of the tool audit log.
        capture_content: put prompts and completions in spans and in the audit log
            (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` turns it on too).
        trace_propagation: send each HTTP attempt's W3C ``traceparent`` header to the
            providers (when tracing is on).
    """

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["text", "json"] = "text"
    redact_tool_arguments: bool = True
    capture_content: bool = False
    trace_propagation: bool = False


@final
class ProviderConfig(Section, frozen=True, kw_only=True):
    """One entry of ``providers``.

    Attributes:
        enabled: whether the runtime starts a session for it.
        api_key: the key; `keys` adds ``api_keys`` for rotation.
        api_key_required: whether the client refuses to open (`MissingAPIKey`) when the
            entry has no key; None: by its kind (see ``docs/configuration.md``): OpenAI,
            Anthropic, Gemini, Azure and the hosted presets need one, the mock, the local
            presets (``ollama``, ``vllm``), a server on a loopback ``base_url`` and an entry
            whose ``headers`` carry credentials do not.
        api_keys: more keys, used in turn.
        api_key_file: a file of keys, one a line (blank lines and ``#`` comments skipped),
            read again when it changes (for rotation by a secret manager); its keys come
            before ``api_key`` and ``api_keys``.
        key_backoff: how long a key the provider rejected (HTTP 401) is set aside for the
            model family it failed on; it doubles with each consecutive rejection.
        key_backoff_max: the longest a rejected key is set aside.
        base_url: the API's base URL; None: the codec's default.
        models: the models it serves, when you want to restrict or announce them.
        options: codec-specific settings, passed through.
        kind: the codec (``"openai"``, ``"anthropic"``, ``"gemini"``,
            ``"openai-compatible"``, ``"azure"``, ``"mock"``); None: the entry's name.
        organization: the OpenAI organization (``OPENAI_ORG_ID``).
        api: the API of an OpenAI-format provider (``openai``, ``azure``, the compatible
            presets, ``mock``): ``"chat"`` (Chat Completions, the default) or
            ``"responses"`` (the Responses API); a request's ``provider_options["api"]``
            overrides it.
        api_version: the Azure OpenAI API version.
        deployment: the Azure OpenAI deployment.
        headers: extra HTTP headers for every request.
        fallback: ``"provider:model"`` alternatives to try when this provider fails.
        max_connections: the HTTP connection pool size.
        rate_limits: limits of this provider alone, on top of the global ``rate_limits``.
        model_rate_limits: limits of one model of this provider (keyed by the model id), on
            top of the provider's and the global ones.
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
    api_key: Credential | None = None
    api_key_required: bool | None = None
    api_keys: list[Credential] = []
    api_key_file: FilePath | None = None
    key_backoff: Seconds = 1.0
    key_backoff_max: Seconds = 60.0
    base_url: HttpUrl | None = None
    models: list[Name] = []
    options: dict[str, Any] = {}
    kind: ProviderKind | None = None
    organization: str | None = None
    api: Literal["chat", "responses"] = "chat"
    api_version: str | None = None
    deployment: str | None = None
    headers: dict[HeaderName, HeaderValue] = {}
    fallback: list[str] = []
    max_connections: AtLeastOne = 256
    rate_limits: RateLimitConfig | None = None
    model_rate_limits: dict[str, RateLimitConfig] = {}
    proxy: ProxyUrl | None = None
    trust_env: bool | None = None
    verify: Verify = True
    client_cert: FilePath | None = None
    client_key: FilePath | None = None
    client_key_password: Secret | None = None

    def keys(self) -> list[Secret]:
        """Return ``api_key`` then ``api_keys``, without duplicates."""
        first = [self.api_key] if self.api_key is not None else []
        return list(dict.fromkeys([*first, *self.api_keys]))

    def _finish(self, walk: Walk) -> None:
        for index, target in enumerate(self.fallback):
            provider, _, model = target.partition(":")
            if not provider or not model:
                walk.add(f"fallback[{index}]", f"expected 'provider:model', got {show(target)}")
        if self.api_key_file is not None and not os.path.isfile(self.api_key_file):
            walk.add("api_key_file", f"no such file: {self.api_key_file!r}")
        if self.key_backoff_max < self.key_backoff:
            walk.add("key_backoff_max", f"must be >= key_backoff ({self.key_backoff:g}s)")
        self._finish_tls(walk)

    def _finish_tls(self, walk: Walk) -> None:
        verify = cast("object", self.verify)
        if isinstance(verify, os.PathLike):
            verify = os.fspath(cast("os.PathLike[str]", verify))
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):
            verify = verify.strip().lower() == "true"
        if not isinstance(verify, bool | str):
            walk.add("verify", f"expected true, false or a CA bundle path, got {show(verify)}")
        elif isinstance(verify, str) and (problem := text_problem(verify)) is not None:
            walk.add("verify", problem)
        else:
            msgspec.structs.force_setattr(self, "verify", verify)
            if isinstance(verify, str) and not os.path.exists(verify):
                walk.add("verify", f"no CA bundle file or directory at {verify!r}")
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
class ToolsConfig(Section, frozen=True, kw_only=True):
    """Tool calling: which tools are offered, the automatic loop and the executor.

    Attributes:
        offer: what a request that names no tools offers the model: ``"registered"``
            (every registered and MCP tool, when the model takes tools) or ``"none"``.
    """

    max_steps: AtLeastOne = 8
    timeout: PositiveSeconds = 60.0
    max_concurrency: AtLeastOne = 16
    sandbox: bool = False
    offer: Literal["registered", "none"] = "registered"


MCPLogLevel = Literal[
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"
]


@final
class MCPRootConfig(Section, frozen=True, kw_only=True):
    """A root offered to MCP servers.

    Attributes:
        uri: a ``file://`` URI, or a path (made absolute and turned into one).
        name: a human-readable name.
    """

    uri: Name
    name: Name | None = None

    def _finish(self, walk: Walk) -> None:
        scheme, sep, _ = self.uri.partition("://")
        if sep and scheme != "file":
            walk.add("uri", "must be a file:// URI or a path")


@final
class MCPSamplingConfig(Section, frozen=True, kw_only=True):
    """Lets an MCP server ask this client's models for completions (``sampling``).

    Attributes:
        model: the model that answers (default: the client's default model).
        provider: its provider (default: as the model resolves).
        max_tokens: the most tokens one answer may have (the server's ``maxTokens`` is
            capped to it).
    """

    model: Name | None = None
    provider: Name | None = None
    max_tokens: AtLeastOne = 1024


@final
class MCPServerConfig(Section, frozen=True, kw_only=True):
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
        ping_interval: seconds between keep-alive pings of an ``http`` or ``sse`` server
            (default 30; a stdio server is never pinged: its exit is noticed at once).
        log_level: the level of the server's log messages to receive (``debug`` ...
            ``emergency``), set at each connection when the server supports logging.
        sampling: lets the server ask this client's models for completions (off: None).
        roots: the roots this server is told (None: the client's ``mcp.roots``).
    """

    transport: Literal["stdio", "http", "sse"]
    command: str | None = None
    args: list[str] = []
    env: dict[EnvName, Secret] = {}
    cwd: FilePath | None = None
    url: HttpUrl | None = None
    headers: dict[HeaderName, Credential] = {}
    timeout: PositiveSeconds = 30.0
    enabled: bool = True
    ping_interval: PositiveSeconds | None = None
    log_level: MCPLogLevel | None = None
    sampling: MCPSamplingConfig | None = None
    roots: list[MCPRootConfig] | None = None

    def _finish(self, walk: Walk) -> None:
        if self.transport == "stdio" and not self.command:
            walk.add("command", "is required for the stdio transport")
        if self.transport != "stdio" and self.url is None:
            walk.add("url", f"is required for the {self.transport} transport")


@final
class MCPConfig(Section, frozen=True, kw_only=True):
    """MCP servers by name, and the roots they are told (``file://`` URIs or paths)."""

    servers: dict[str, MCPServerConfig] = {}
    roots: list[MCPRootConfig] = []


class ModelOptionsSchema(msgspec.Struct, frozen=True, kw_only=True):
    """The names and ranges of `llm_invocation.types.ModelOptions`, for ``defaults.options``."""

    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: AtLeastOne | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: AtLeastOne | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: Annotated[list[Name], msgspec.Meta(max_length=16)] | None = None
    seed: int | None = None
    provider_options: dict[str, Any] | None = None


@final
class DefaultsConfig(Section, frozen=True, kw_only=True):
    """Defaults for requests that do not say (the second specification's ``defaults``).

    Attributes:
        provider: the default provider; see the module docstring for the two spellings.
        model: the default model.
        options: default `~llm_invocation.types.ModelOptions` fields (``temperature``,
            ``max_tokens``, ``top_p``, ``top_k``, ``frequency_penalty``,
            ``presence_penalty``, ``stop``, ``seed``, ``provider_options``), validated.
    """

    provider: Name | None = None
    model: Name | None = None
    options: Annotated[dict[str, Any], msgspec.Meta(extra={"schema": ModelOptionsSchema})] = {}

    def model_options(self) -> ModelOptions:
        """Return ``options`` as a `~llm_invocation.types.ModelOptions`."""
        from ..types import ModelOptions

        return ModelOptions(**self.options)


@final
class WebSocketConfig(Section, frozen=True, kw_only=True):
    """The optional WebSocket front.

    Attributes:
        host: the address to listen on.
        port: the port; 0 picks a free one.
        tokens: bearer tokens clients must present; empty: no authentication. A mapping
            names each token (name -> token); a list names them ``token-1``,
            ``token-2``... (see `named_tokens`). The gateway tags each call with the
            name of the token it came with.
        allowed_origins: ``Origin`` values accepted; empty: without tokens, only the
            front's own loopback origins (``http://127.0.0.1:<port>``, ``localhost``,
            ``[::1]``); with tokens, any.
        max_message_size: the largest frame accepted, in bytes.
        max_concurrent_per_connection: invocations one connection may run at once.
        client_requests_per_minute: invocations one connection may start per minute.
        grace: seconds the invocations in flight may take to finish when the front stops.
        insecure_no_auth: let the front listen on a non-loopback address without tokens
            (refused otherwise).
        max_body_size: the largest request body the OpenAI-compatible gateway reads, in
            bytes (larger: 413).
    """

    host: Name = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8765
    tokens: list[Credential] | dict[Name, Credential] = []
    allowed_origins: list[Name] = []
    max_message_size: AtLeastOne = 1 << 20
    max_concurrent_per_connection: AtLeastOne = 16
    client_requests_per_minute: AtLeastOne | None = None
    grace: Seconds = 5.0
    insecure_no_auth: bool = False
    max_body_size: AtLeastOne = 8 << 20

    def named_tokens(self) -> dict[str, Secret]:
        """The tokens by name: a mapping's as given, a list's as ``token-1``, ``token-2``..."""
        if isinstance(self.tokens, dict):
            return dict(self.tokens)
        return {f"token-{n}": token for n, token in enumerate(self.tokens, 1)}
