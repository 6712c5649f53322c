"""The client facade: `open_client` starts the supervision tree, `Client` is what users call.

::

    async with open_client(Config.from_env()) as client:
        async with client.invoke(Request(model="openai:gpt-4o-mini", messages=[user("Hi")])) as s:
            async for chunk in s:
                print(chunk.text, end="")
        reply = await client.chat([user("Hi")], model="anthropic:claude-sonnet-4-5")

Every name of both specifications exists: ``invoke`` (streams by default), ``invoke_sync``,
``list_models``; ``complete``, ``stream_complete``, ``chat``, ``stream_chat``,
``get_usage``; and provider shortcuts (`open_openai_client`...).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, final, overload

import msgspec
import trio

from . import tokens
from ._secrets import Secret
from .actors.accountant import Accountant, AlertCallback, BudgetLevels, GetReport
from .actors.governor import Governor, Observe, RateLimitSettings
from .actors.provider_session import (
    CountTokens,
    ListModels,
    ProviderSession,
    ResponseInfo,
    SessionSettings,
    SessionStatistics,
    SessionStats,
)
from .actors.tools import ToolExecutor
from .config import Config, CostConfig, MCPServerConfig, ProviderConfig, RateLimitConfig
from .errors import ConfigurationError, LLMError, ProviderNotFound
from .http import TransportFactory
from .http import settings_for as http_settings_for
from .invocation import DeltaStream, Governance, InvocationStream, Invoker, ToolLoopStream
from .invocation._invoker import SESSION_PREFIX
from .invocation._stream import chat_delta, chat_error, completion_delta
from .providers._base import ProviderCodec
from .providers._registry import ProviderRegistry, make_codec
from .providers.mock import MockTransport, Scenarios
from .runtime import (
    ActorError,
    ActorRef,
    Backoff,
    ChildSpec,
    MailboxFull,
    Runtime,
    RuntimeStatistics,
    SupervisorSpec,
    open_runtime,
)
from .store._base import (
    Budget,
    BudgetLevel,
    BudgetStore,
    RateObservation,
    RateStore,
)
from .store.memory import MemoryBudgetStore, MemoryRateStore
from .tools import Tool, ToolRegistry, ToolResult
from .types import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    Message,
    ModelInfo,
    Request,
    Response,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from .pricing import PriceBook
    from .store.cache import ResponseCache
    from .store.ledger import SQLiteLedger, UsageReport

__all__ = [
    "Client",
    "ClientStatistics",
    "TransportFactory",
    "open_anthropic_client",
    "open_client",
    "open_gemini_client",
    "open_mock_client",
    "open_openai_client",
]

log = logging.getLogger("llm_invocation.client")

MODELS_TTL: Final = 300.0
_GOVERNOR: Final = "governor"
_ACCOUNTANT: Final = "accountant"
_TOOLS: Final = "tools"
_MCP: Final = "mcp"


def _session_settings(config: Config, provider: ProviderConfig) -> SessionSettings:
    timeouts = config.timeouts
    return SessionSettings(
        first_chunk_timeout=timeouts.first_chunk,
        idle_chunk_timeout=timeouts.idle_chunk,
        max_retry_after=config.retries.max_retry_after,
        http=http_settings_for(config, provider),
    )


@final
class Client:
    """The facade over a running supervision tree. Made by `open_client`; do not construct.

    Every invocation goes through the invocation layer (`llm_invocation.invocation`), which
    owns it from request to settled result; the client builds requests and delegates.
    """

    def __init__(
        self,
        runtime: Runtime,
        config: Config,
        registry: ProviderRegistry,
        invoker: Invoker,
        *,
        scenarios: Scenarios | None = None,
    ) -> None:
        self._runtime = runtime
        self._config = config
        self._registry = registry
        self._invoker = invoker
        self._models: dict[str, tuple[float, list[ModelInfo]]] = {}
        self.scenarios = scenarios
        """The mock provider's `llm_invocation.testing.Scenarios` (script it in tests)."""

    @property
    def config(self) -> Config:
        return self._config

    @property
    def runtime(self) -> Runtime:
        """The supervision tree (for statistics and advanced embedding)."""
        return self._runtime

    @property
    def providers(self) -> list[str]:
        """The configured provider names."""
        return self._registry.names()

    @property
    def tools(self) -> ToolRegistry:
        """The tools invocations can use: registered locally or by MCP servers."""
        return self._invoker.tools

    def codec(self, provider: str) -> ProviderCodec:
        """The codec of ``provider``.

        Raises:
            ProviderNotFound: no such provider is configured.
        """
        return self._registry.codec(provider)

    # -- building requests ---------------------------------------------------------------------

    def _default_model(self) -> str:
        model = self._config.default_model
        if model:
            return model
        provider = self._config.default_provider
        try:
            known = self._registry.codec(provider).known_models()
        except ProviderNotFound:
            known = []
        if known:
            return f"{provider}:{known[0].id}"
        raise ConfigurationError(
            "no model given and no default model configured (set LLM_MODEL or model=)"
        )

    def _build(
        self,
        request: Request | None,
        messages: Sequence[Message] | None,
        model: str | None,
        options: Mapping[str, Any],
    ) -> Request:
        if request is not None:
            if messages is not None or model is not None or options:
                raise TypeError("pass a Request, or messages and keywords, not both")
            return request
        if messages is None:
            raise TypeError("invoke() needs a Request or messages=")
        return Request(model=model or self._default_model(), messages=list(messages), **options)

    # -- the second specification --------------------------------------------------------------

    @overload
    def invoke(
        self,
        request: Request | None = None,
        /,
        *,
        messages: Sequence[Message] | None = None,
        model: str | None = None,
        timeout: float | None = None,
        tools: Sequence[Tool | str] | None = None,
        tool_mode: None = None,
        max_steps: int | None = None,
        **options: Any,
    ) -> InvocationStream: ...
    @overload
    def invoke(
        self,
        request: Request | None = None,
        /,
        *,
        messages: Sequence[Message] | None = None,
        model: str | None = None,
        timeout: float | None = None,
        tools: Sequence[Tool | str] | None = None,
        tool_mode: Literal["auto"],
        max_steps: int | None = None,
        **options: Any,
    ) -> ToolLoopStream: ...
    def invoke(
        self,
        request: Request | None = None,
        /,
        *,
        messages: Sequence[Message] | None = None,
        model: str | None = None,
        timeout: float | None = None,
        tools: Sequence[Tool | str] | None = None,
        tool_mode: Literal["auto"] | None = None,
        max_steps: int | None = None,
        **options: Any,
    ) -> InvocationStream | ToolLoopStream:
        """Start a streaming invocation: ``async with client.invoke(request) as stream``.

        ``timeout`` (default: the configured ``timeout``) bounds the upstream call once it is
        admitted, retries and fallbacks included; the caller's own deadline applies too (and
        a caller cancelled by it sees its own cancellation, never a timeout). A failed
        attempt before any content is retried as ``retries`` says; fallback providers
        configured for the provider take over on retryable and overload errors before any
        content has arrived.

        Tools: ``tools`` offers these tools (objects are registered on the client; names
        must be registered already); with ``tool_mode="auto"`` and no ``tools``, every
        registered tool (local and MCP) is offered. With ``tool_mode="auto"`` the result is
        a `ToolLoopStream` that runs the tools the model calls and calls the model again,
        up to ``max_steps`` requests (default ``tools.max_steps``).

        Raises:
            ProviderNotFound, ModelNotSupported: when the request's provider or model is
                not available.
            InvalidRequest: a tool object's name is taken by another tool.
            LLMError: while iterating, the invocation's failure.
        """
        invoker = self._invoker
        built = self._build(request, messages, model, options)
        if tools is not None or tool_mode == "auto":
            built = invoker.offer_tools(built, tools)
        if tool_mode == "auto":
            return invoker.tool_loop(built, max_steps=max_steps, timeout=timeout)
        return invoker.stream(built, timeout=timeout)

    # -- tools and MCP servers (the second specification) ---------------------------------------

    def register_tool(self, tool: Tool, *, replace: bool = False) -> None:
        """Make ``tool`` available to invocations (and to the model in ``tool_mode="auto"``).

        Registering the same object again is a no-op.

        Raises:
            InvalidRequest: another tool has that name (unless ``replace``).
        """
        self._invoker.tools.register(tool, replace=replace)

    async def register_mcp_server(
        self, name: str, server: MCPServerConfig | Mapping[str, Any]
    ) -> list[str]:
        """Connect an MCP server and offer its tools (named ``<name>__<tool>``).

        The connection is supervised: it reconnects with backoff when it drops, and its tools
        follow the server's ``tools/list_changed`` notifications.

        Returns:
            The local names of the server's tools.

        Raises:
            ConfigurationError: ``server`` is not a valid MCP server configuration.
            ToolExecutionFailed: the server could not be reached now.
        """
        from .actors.mcp import ListServerTools, MCPConnection, mcp_child_spec

        config = server if isinstance(server, MCPServerConfig) else _mcp_config(name, server)
        await self._runtime.start_child(mcp_child_spec(name, config, self.tools), supervisor=_MCP)
        ref = self._runtime.ref(f"mcp.{name}", MCPConnection)
        return await ref.call(ListServerTools())

    async def unregister_mcp_server(self, name: str) -> None:
        """Disconnect an MCP server (ending its process for stdio) and drop its tools.

        Raises:
            UsageError: no such server is registered.
        """
        await self._runtime.terminate_child(f"mcp.{name}", supervisor=_MCP)

    async def execute_tools(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Run tool calls in parallel through the executor, results in call order.

        A failing, slow or unknown tool gives an error result, not an exception.
        """
        return await self._invoker.execute_tools(calls)

    async def invoke_sync(
        self,
        request: Request | None = None,
        /,
        *,
        messages: Sequence[Message] | None = None,
        model: str | None = None,
        timeout: float | None = None,
        tools: Sequence[Tool | str] | None = None,
        tool_mode: Literal["auto"] | None = None,
        max_steps: int | None = None,
        **options: Any,
    ) -> Response:
        """Invoke and wait for the whole response.

        A streaming request (the default) is streamed and aggregated, with every stream
        watchdog; ``stream=False`` sends one non-streamed HTTP request per attempt.
        ``tools``, ``tool_mode="auto"`` and ``max_steps`` work as for `invoke`: the automatic
        tool loop returns its final response with the usage of every step.

        Raises:
            LLMError: the invocation failed.
        """
        built = self._build(request, messages, model, options)
        if tool_mode == "auto":
            async with self.invoke(
                built, timeout=timeout, tools=tools, tool_mode="auto", max_steps=max_steps
            ) as loop:
                return await loop.aggregate()
        if tools is not None:
            built = self._invoker.offer_tools(built, tools)
        if built.stream:
            async with self._invoker.stream(built, timeout=timeout) as stream:
                return await stream.aggregate()
        return await self._invoker.complete(built, timeout=timeout)

    async def list_models(
        self, provider: str | None = None, *, refresh: bool = False
    ) -> list[ModelInfo]:
        """The models of one provider (or of every configured one), cached for 5 minutes.

        A provider that cannot list its models contributes the ones its codec knows.

        Raises:
            ProviderNotFound: ``provider`` is not configured.
        """
        names = [provider] if provider is not None else self._registry.names()
        out: list[ModelInfo] = []
        now = time.monotonic()
        for name in names:
            codec = self._registry.codec(name)
            cached = self._models.get(name)
            if cached is not None and not refresh and now - cached[0] < MODELS_TTL:
                out.extend(cached[1])
                continue
            ref = self._invoker.session_ref(name)
            try:
                models = await ref.call(ListModels())
            except LLMError as error:
                if provider is not None and not codec.known_models():
                    raise
                log.info("%s: listing models failed (%s); using known models", name, error)
                models = codec.known_models()
            self._models[name] = (now, models)
            out.extend(models)
        return out

    async def count_tokens(self, request: Request) -> int:
        """Prompt tokens of ``request`` from the provider's count endpoint.

        Raises:
            ProviderError: the provider has no such endpoint.
        """
        prepared, candidates = self._invoker.prepare(request)
        provider, model = candidates[0]
        ref = self._invoker.session_ref(provider)
        message = CountTokens(
            request=msgspec.structs.replace(prepared, provider=provider, model=model)
        )
        return await ref.call(message)

    # -- the first specification ---------------------------------------------------------------

    def _completion_request(
        self, request: CompletionRequest | str, model: str | None, options: Mapping[str, Any]
    ) -> Request:
        if isinstance(request, str):
            request = CompletionRequest(prompt=request, **options)
        elif options:
            raise TypeError("pass a CompletionRequest, or a prompt and keywords, not both")
        return request.to_request(model or request.model or self._default_model())

    def _chat_request(
        self,
        request: ChatRequest | Sequence[Message],
        model: str | None,
        options: Mapping[str, Any],
    ) -> Request:
        if not isinstance(request, ChatRequest):
            request = ChatRequest(messages=list(request), **options)
        elif options:
            raise TypeError("pass a ChatRequest, or messages and keywords, not both")
        return request.to_request(model or request.model or self._default_model())

    async def complete(
        self, request: CompletionRequest | str, *, model: str | None = None, **options: Any
    ) -> CompletionResponse:
        """Complete a prompt (OpenAI's legacy completions endpoint where the provider has it).

        Raises:
            LLMError: the invocation failed.
        """
        response = await self.invoke_sync(self._completion_request(request, model, options))
        return response.to_completion_response()

    def stream_complete(
        self, request: CompletionRequest | str, *, model: str | None = None, **options: Any
    ) -> DeltaStream[CompletionResponse]:
        """Stream a completion as ``CompletionResponse`` deltas (``async with`` + ``async for``).

        Raises:
            LLMError: while iterating, the invocation's failure.
        """
        stream = self.invoke(self._completion_request(request, model, options))
        return DeltaStream(stream, completion_delta, None)

    async def chat(
        self,
        request: ChatRequest | Sequence[Message],
        *,
        model: str | None = None,
        **options: Any,
    ) -> ChatResponse:
        """Chat: the whole reply as a ``ChatResponse`` (its messages hold the reply).

        Raises:
            LLMError: the invocation failed.
        """
        response = await self.invoke_sync(self._chat_request(request, model, options))
        return response.to_chat_response()

    def stream_chat(
        self,
        request: ChatRequest | Sequence[Message],
        *,
        model: str | None = None,
        raise_errors: bool = False,
        **options: Any,
    ) -> DeltaStream[ChatResponse]:
        """Stream a chat as ``ChatResponse`` deltas.

        As in the first specification, a failure ends the stream with one delta whose
        ``error`` is set; with ``raise_errors=True`` the error is raised instead.
        """
        stream = self.invoke(self._chat_request(request, model, options))
        return DeltaStream(stream, chat_delta, None if raise_errors else chat_error)

    def get_usage(self) -> Usage:
        """Usage of every invocation of this client so far (cost None when unknown)."""
        return self._invoker.usage

    async def usage(
        self,
        *,
        group_by: Sequence[str] = ("provider", "model"),
        since: float | None = None,
        until: float | None = None,
    ) -> UsageReport:
        """A usage report from the ledger, grouped by provider, model, ``tag:<name>`` or
        ``period:hour|day|month`` (see `llm_invocation.store.UsageReport`).

        Raises:
            CostExceeded: no ledger is configured.
        """
        return await self._runtime.ref(_ACCOUNTANT, Accountant).call(
            GetReport(group_by=list(group_by), since=since, until=until)
        )

    async def budget_levels(self) -> list[BudgetLevel]:
        """Spend against every configured budget in its current period."""
        return await self._runtime.ref(_ACCOUNTANT, Accountant).call(BudgetLevels())

    async def session_statistics(self) -> dict[str, SessionStatistics]:
        """Every provider session's counters: attempts, retries, failures, breakers, pool."""
        out: dict[str, SessionStatistics] = {}
        for name in self._registry.names():
            out[name] = await self._invoker.session_ref(name).call(SessionStats())
        return out

    def statistics(self) -> ClientStatistics:
        """Invocations, retries, fallbacks, cache hits, usage and the runtime's statistics."""
        stats = self._invoker.statistics()
        return ClientStatistics(
            invocations=stats.invocations,
            retries=stats.retries,
            fallbacks=stats.fallbacks,
            cache_hits=stats.cache_hits,
            usage=stats.usage,
            runtime=self._runtime.statistics(),
        )


class ClientStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A client's counters (see `Client.statistics`)."""

    invocations: int
    retries: int
    fallbacks: int
    cache_hits: int
    usage: Usage
    runtime: RuntimeStatistics


def _providers(config: Config) -> dict[str, ProviderConfig]:
    """The provider entries to run: the enabled ones and the default one.

    The built-in mock provider runs only when it is configured: as an entry, or as the
    default provider (which it is when no provider and no key is configured, so the offline
    demo works out of the box; the client says so once when it starts).
    """
    entries = {name: entry for name, entry in config.providers.items() if entry.enabled}
    default = config.default_provider
    try:
        entries[default] = config.provider_config(default)
    except ProviderNotFound:
        entries[default] = ProviderConfig()
    return entries


def _client_spec(
    config: Config,
    codecs: Mapping[str, ProviderCodec],
    entries: Mapping[str, ProviderConfig],
    transports: Mapping[str, TransportFactory],
    stores: _Stores,
    on_alert: Sequence[AlertCallback],
    observer: _Observer,
    registry: ToolRegistry,
    runtime_box: _RuntimeBox,
) -> SupervisorSpec:
    sessions: list[ChildSpec] = []
    for name, codec in sorted(codecs.items()):
        entry = entries[name]
        keys: list[Secret] = entry.keys()
        settings = _session_settings(config, entry)
        transport = transports.get(name)

        def factory(
            codec: ProviderCodec = codec,
            keys: list[Secret] = keys,
            settings: SessionSettings = settings,
            transport: TransportFactory | None = transport,
        ) -> ProviderSession:
            return ProviderSession(
                codec, keys=keys, settings=settings, transport=transport, on_response=observer
            )

        sessions.append(ChildSpec.actor(SESSION_PREFIX + name, factory, mailbox=65536))
    providers = SupervisorSpec(
        name="providers",
        strategy="one_for_one",
        max_restarts=10,
        within=60,
        backoff=Backoff(initial=0.05, maximum=2.0),
        children=sessions,
    )
    limits = config.rate_limits
    provider_limits = {
        name: _rate_settings(entry.rate_limits)
        for name, entry in entries.items()
        if entry.rate_limits is not None
    }
    fail_mode = config.store_fail_mode

    def governor() -> Governor:
        return Governor(
            stores.rate,
            global_limits=_rate_settings(limits),
            provider_limits=provider_limits,
            max_wait=limits.max_wait,
            max_queue=limits.max_queue,
            fail_mode=fail_mode,
        )

    cost = config.cost_control

    def accountant() -> Accountant:
        return Accountant(
            stores.budget,
            stores.prices,
            ledger=stores.ledger,
            budgets=_budgets(cost),
            max_cost_per_request=cost.max_cost_per_request,
            thresholds=cost.alert_thresholds,
            on_alert=on_alert,
            fail_mode=fail_mode,
            reservation_ttl=max(600.0, config.timeout * 2),
        )

    tools_config = config.tools
    redact = config.logging.redact_tool_arguments

    def executor() -> ToolExecutor:
        return ToolExecutor.from_config(registry, tools_config, redact_tool_arguments=redact)

    from .actors.mcp import mcp_supervisor_spec

    servers = {name: s for name, s in config.mcp.servers.items() if s.enabled}

    async def connect_configured_servers(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Servers of the configuration connect in the background: one that is down at
        # start does not keep the client from starting; it is retried with backoff.
        task_status.started()
        async with trio.open_nursery() as nursery:
            for name, server in servers.items():
                nursery.start_soon(_connect_with_retries, runtime_box, name, server, registry)

    children = [
        ChildSpec.actor(_GOVERNOR, governor, mailbox=65536),
        ChildSpec.actor(_ACCOUNTANT, accountant, mailbox=65536),
        ChildSpec.actor(_TOOLS, executor, mailbox=65536),
        ChildSpec.supervisor(mcp_supervisor_spec({}, registry, name=_MCP)),
        ChildSpec.supervisor(providers),
    ]
    if servers:
        children.append(
            ChildSpec.service("mcp-connect", connect_configured_servers, restart="temporary")
        )
    return SupervisorSpec(name="client", children=children)


@final
class _RuntimeBox:
    """The runtime, for children that need it once the tree has started."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._ready = trio.Event()

    def set(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._ready.set()

    async def get(self) -> Runtime:
        await self._ready.wait()
        assert self._runtime is not None
        return self._runtime


async def _connect_with_retries(
    runtime_box: _RuntimeBox, name: str, server: MCPServerConfig, registry: ToolRegistry
) -> None:
    from .actors.mcp import mcp_child_spec

    runtime = await runtime_box.get()
    delay = 0.5
    while True:
        try:
            await runtime.start_child(mcp_child_spec(name, server, registry), supervisor=_MCP)
        except (LLMError, ActorError) as exc:
            log.warning("MCP server %r unreachable (%s); retrying in %.1fs", name, exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)
        else:
            return


def _mcp_config(name: str, data: Mapping[str, Any]) -> MCPServerConfig:
    config = Config.from_dict({"mcp": {"servers": {name: dict(data)}}})
    return config.mcp.servers[name]


def _rate_settings(limits: RateLimitConfig) -> RateLimitSettings:
    return RateLimitSettings(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        concurrency=limits.concurrent_calls,
    )


def _budgets(cost: CostConfig) -> list[Budget]:
    budgets: list[Budget] = []
    if cost.max_budget is not None:
        budgets.append(
            Budget(
                scope="global",
                limit=cost.max_budget,
                period=cost.budget_period or 86400.0,
                calendar=cost.budget_calendar,
            )
        )
    budgets.extend(
        Budget(scope=b.scope, limit=b.limit, period=b.period, calendar=b.calendar)
        for b in cost.budgets
    )
    return budgets


@final
class _Stores:
    """What outlives the actors: shared state, the ledger and the price book."""

    def __init__(
        self,
        rate: RateStore,
        budget: BudgetStore,
        ledger: SQLiteLedger | None,
        prices: PriceBook,
        cache: ResponseCache,
    ) -> None:
        self.rate = rate
        self.budget = budget
        self.ledger = ledger
        self.prices = prices
        self.cache = cache


@final
class _Observer:
    """Turns each provider response's rate-limit headers into a cast to the governor."""

    def __init__(self) -> None:
        self.governor: ActorRef[Any] | None = None

    def __call__(self, info: ResponseInfo) -> None:
        governor = self.governor
        limits = info.rate_limits
        if governor is None or (limits is None and info.retry_after is None):
            return
        observation = RateObservation(
            requests_limit=limits.requests_limit if limits else None,
            requests_remaining=limits.requests_remaining if limits else None,
            requests_reset=limits.requests_reset if limits else None,
            tokens_limit=limits.tokens_limit if limits else None,
            tokens_remaining=limits.tokens_remaining if limits else None,
            tokens_reset=limits.tokens_reset if limits else None,
            retry_after=info.retry_after if info.status == 429 else None,
        )
        try:
            governor.send_nowait(
                Observe(provider=info.provider, model=info.model, observation=observation)
            )
        except (MailboxFull, ActorError):
            pass  # headers are advisory; the next response says it again


async def _open_stores(config: Config, stack: AsyncExitStack) -> _Stores:
    from .pricing import PriceBook
    from .store.cache import MemoryResponseCache, RedisResponseCache
    from .store.ledger import open_ledger

    store = config.store
    rate: RateStore
    budget: BudgetStore
    cache: ResponseCache
    if store == "memory":
        rate, budget = MemoryRateStore(), MemoryBudgetStore()
        cache = MemoryResponseCache()
    else:
        from .store.redis import open_redis_stores

        url, prefix = _split_prefix(store)
        rate, budget = await stack.enter_async_context(open_redis_stores(url, prefix=prefix))
        cache = await stack.enter_async_context(RedisResponseCache(url, prefix=prefix))
    ledger = await stack.enter_async_context(open_ledger(config.ledger_path))
    prices = PriceBook(config.cost_control.prices)
    await prices.load()
    # Load the tokenizer now, in a worker thread, rather than on the first request.
    await trio.to_thread.run_sync(tokens.get_encoding, tokens.DEFAULT_ENCODING)
    return _Stores(rate, budget, ledger, prices, cache)


def _split_prefix(url: str, default: str = "llm:") -> tuple[str, str]:
    """Take a ``prefix=`` query parameter (the Redis key prefix) out of a store URL."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix = default
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        else:
            kept.append((key, value))
    rest = parts._replace(query=urllib.parse.urlencode(kept))
    return urllib.parse.urlunsplit(rest), prefix


def _price_provider(name: str, codec: ProviderCodec) -> str:
    """The provider id prices are looked up under: the entry's name if it is a known one."""
    preset = getattr(codec, "preset", None)
    if codec.kind == "openai-compatible" and preset is not None:
        return str(getattr(preset, "name", name))
    if codec.kind in ("openai", "anthropic", "gemini", "azure", "mock"):
        return codec.kind
    return name


@asynccontextmanager
async def open_client(
    config: Config | None = None,
    *,
    transports: Mapping[str, TransportFactory] | None = None,
    scenarios: Scenarios | None = None,
    on_alert: Sequence[AlertCallback] = (),
) -> AsyncGenerator[Client]:
    """Start the client's supervision tree for the ``async with`` block.

    Args:
        config: the configuration (default: `Config.load()`, from the environment).
        transports: per provider name, a factory of httpx transports (tests, proxies).
        scenarios: the mock provider's scripted answers (`llm_invocation.testing.Scenarios`;
            a fresh default set when omitted).
        on_alert: called with a `BudgetAlert` when a budget crosses an alert threshold
            (sync or async; once per budget, threshold and period).

    Raises:
        ConfigurationError: the configuration is invalid or names an unknown provider kind.
        StoreUnavailable: the configured Redis store cannot be reached at start.
    """
    config = config if config is not None else Config.load()
    entries = _providers(config)
    codecs = {name: make_codec(name, entry) for name, entry in entries.items()}
    all_transports = dict(transports or {})
    mock_names = [name for name, codec in codecs.items() if codec.kind == "mock"]
    if mock_names:
        scenarios = scenarios if scenarios is not None else Scenarios()
        for name in mock_names:
            all_transports.setdefault(name, lambda: MockTransport(scenarios, format="openai"))
        if codecs[config.default_provider].kind == "mock":
            log.info(
                "the default provider is the built-in mock: answers are scripted and offline "
                "(configure a provider and its key to call a real model)"
            )
    registry = ProviderRegistry(
        codecs,
        default_provider=config.default_provider,
        models={name: entry.models for name, entry in entries.items()},
    )
    observer = _Observer()
    async with AsyncExitStack() as stack:
        stores = await _open_stores(config, stack)
        tools = ToolRegistry()
        runtime_box = _RuntimeBox()
        spec = _client_spec(
            config, codecs, entries, all_transports, stores, on_alert, observer, tools, runtime_box
        )
        runtime = await stack.enter_async_context(open_runtime(spec))
        runtime_box.set(runtime)
        governor = runtime.ref(_GOVERNOR, Governor)
        observer.governor = governor
        governance = Governance(
            governor,
            runtime.ref(_ACCOUNTANT, Accountant),
            price_providers={name: _price_provider(name, c) for name, c in codecs.items()},
            token_providers={name: _price_provider(name, c) for name, c in codecs.items()},
        )
        invoker = Invoker(
            runtime,
            config,
            registry,
            governance=governance,
            cache=stores.cache,
            tools=tools,
            executor=runtime.ref(_TOOLS, ToolExecutor),
        )
        yield Client(runtime, config, registry, invoker, scenarios=scenarios)


def _shortcut(provider: str, api_key: str | Secret | None, overrides: dict[str, Any]) -> Config:
    config = (
        Config.load(provider=provider, **overrides) if overrides else Config.load(provider=provider)
    )
    if api_key is not None:
        config = config.replace(api_key=api_key)
    return config


@asynccontextmanager
async def open_openai_client(
    api_key: str | Secret | None = None, **config: Any
) -> AsyncGenerator[Client]:
    """`open_client` with OpenAI as the default provider (key from the argument or env)."""
    async with open_client(_shortcut("openai", api_key, config)) as client:
        yield client


@asynccontextmanager
async def open_anthropic_client(
    api_key: str | Secret | None = None, **config: Any
) -> AsyncGenerator[Client]:
    """`open_client` with Anthropic as the default provider."""
    async with open_client(_shortcut("anthropic", api_key, config)) as client:
        yield client


@asynccontextmanager
async def open_gemini_client(
    api_key: str | Secret | None = None, **config: Any
) -> AsyncGenerator[Client]:
    """`open_client` with Google Gemini as the default provider."""
    async with open_client(_shortcut("gemini", api_key, config)) as client:
        yield client


@asynccontextmanager
async def open_mock_client(scenarios: Any = None, **config: Any) -> AsyncGenerator[Client]:
    """`open_client` on the built-in mock provider: no key, no network."""
    base = (
        Config(provider="mock", model="mock", **config)
        if config
        else Config(provider="mock", model="mock")
    )
    async with open_client(base, scenarios=scenarios) as client:
        yield client
