"""`Client`: the facade users call; `open_client` (``_tree``) makes it.

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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, final, overload

import msgspec

from ..actors.accountant import Accountant, BudgetLevels, GetReport
from ..actors.provider_session import (
    CountTokens,
    ListModels,
    SessionStatistics,
    SessionStats,
)
from ..config import Config
from ..errors import ConfigurationError, LLMError, ProviderNotFound
from ..invocation import DeltaStream, InvocationStream, Invoker, Middleware, ToolLoopStream
from ..invocation._stream import chat_delta, chat_error, completion_delta
from ..providers._base import ProviderCodec
from ..providers._registry import ProviderRegistry
from ..providers.mock import Scenarios
from ..runtime import (
    Runtime,
    RuntimeStatistics,
)
from ..store._base import (
    BudgetLevel,
)
from ..tools import Tool, ToolRegistry, ToolResult
from ..types import (
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
from ._mcp import MCP as MCP
from ._mcp import MCPMethods

if TYPE_CHECKING:
    from ..actors._keys import ApiKeys
    from ..config import ProviderConfig
    from ..providers._registry import CodecSpec
    from ..store.ledger import UsageReport
    from ._providers import ProviderSessions

__all__ = ["Client", "ClientStatistics"]

log = logging.getLogger("llm_invocation.client")

MODELS_TTL: Final = 300.0
# The names of the supervision tree's children.
GOVERNOR: Final = "governor"
ACCOUNTANT: Final = "accountant"
TOOLS: Final = "tools"


@final
class Client(MCPMethods):
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
        sessions: ProviderSessions | None = None,
    ) -> None:
        self._runtime = runtime
        self._sessions = sessions
        self._config = config
        self._registry = registry
        self._invoker = invoker
        self._models: dict[str, tuple[float, list[ModelInfo]]] = {}
        # Configured MCP servers unregistered at run time: their names may be registered.
        self._released_mcp: set[str] = set()
        self.scenarios = scenarios
        """The mock provider's `llm_invocation.testing.Scenarios` (script it in tests)."""

    @property
    def config(self) -> Config:
        return self._config

    @property
    def logger(self) -> logging.Logger:
        """The client's logger (``open_client(logger=...)``, default ``llm_invocation``):
        its child ``audit`` has one record per invocation (see ``docs/observability.md``),
        its child ``invocation`` the invocation layer's warnings."""
        return self._invoker.observer.logger

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

    # -- providers of your own and API keys ----------------------------------------------------

    def _provider_sessions(self) -> ProviderSessions:
        if self._sessions is None:
            raise ConfigurationError("this client was not made by open_client")
        return self._sessions

    async def register_provider(
        self, name: str, codec: CodecSpec, *, config: ProviderConfig | None = None
    ) -> ProviderCodec:
        """Add a provider of your own to the running client (the second specification's
        ``ProviderRegistry.Register``).

        ``codec`` is a `llm_invocation.providers.ProviderCodec` named ``name``, a codec
        class (made with ``name`` and the settings' ``base_url``, ``headers`` and
        ``options``), or a factory called as ``factory(name, settings)``. The provider gets a
        supervised session like the configured ones, and is governed alike: the client's
        rate limits and budgets apply to it by name (``providers.<name>.rate_limits``,
        ``model_rate_limits`` and ``fallback`` of the client's configuration; with
        ``enabled: false`` there, nothing starts before it is registered).

        Args:
            config: its settings (keys, ``api_key_file``, base URL, headers, options, models,
                pool, proxy, TLS); default: the client configuration's
                ``providers.<name>`` entry, if any.

        Returns:
            The codec that serves it.

        Raises:
            ConfigurationError: ``name`` is registered already (``details["reason"] ==
                "duplicate_provider"``, code ``configuration``) or is not a valid name
                (empty, or with ``:``, ``/`` or whitespace); ``codec`` does not make a
                `ProviderCodec` named ``name`` (``"invalid_codec"``); ``config`` sets
                ``kind``, or ``rate_limits``, ``model_rate_limits`` or ``fallback`` other
                than the client's configuration (``"client_setting"``).
        """
        return await self._provider_sessions().register(name, codec, config)

    def set_api_keys(self, provider: str, keys: ApiKeys) -> None:
        """Replace the API keys of ``provider`` while the client runs.

        ``keys`` is a key, a list of keys (`str` or `llm_invocation.Secret`), or a function
        giving them (sync or async; called when a key is first needed and again after a
        401, for rotation by a secret manager). It replaces every current source (the
        configured keys and ``api_key_file``). Calls in flight finish with the key they
        have; new attempts use the new keys; what was set aside for a removed key is
        forgotten.

        Raises:
            ProviderNotFound: no such provider runs.
            ConfigurationError: ``keys`` is empty, or an item is not a non-empty string
                without control characters (the error names its index, never a value).
        """
        self._provider_sessions().set_api_keys(provider, keys)

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

        ``stream=False`` (on the request or as a keyword) sends one non-streamed HTTP
        request per attempt: the whole answer then comes as one chunk, through the same
        stream object.

        Tools (see ``docs/tools.md``): a request that names no tools offers every
        registered tool, local and MCP (``tools.offer: "none"`` turns that off); a request
        whose ``tools`` is set, or a ``tools`` keyword (objects are registered on the
        client; names must be registered already), offers exactly those, and ``tools=[]``
        none. The model's tool calls come back to the caller, unless ``tool_mode="auto"``:
        then the result is a `ToolLoopStream` that runs the tools the model calls and calls
        the model again, up to ``max_steps`` requests (default ``tools.max_steps``).

        Raises:
            ProviderNotFound, ModelNotSupported: when the request's provider or model is
                not available.
            InvalidRequest: a tool name is not registered, a tool object's name is taken by
                another tool, or ``tool_choice`` names a tool that is not offered.
            LLMError: while iterating, the invocation's failure.
        """
        invoker = self._invoker
        built = self._build(request, messages, model, options)
        built = invoker.offer_tools(built, tools, auto=tool_mode == "auto")
        if tool_mode == "auto":
            return invoker.tool_loop(built, max_steps=max_steps, timeout=timeout)
        return invoker.stream(built, timeout=timeout)

    # -- middleware ----------------------------------------------------------------------------

    def add_middleware(self, middleware: Middleware) -> None:
        """Run ``middleware``'s hooks around every invocation started from now on.

        Middleware added first is the outermost layer: its ``before_*`` hooks run first,
        its ``after_*``, ``on_chunk`` and ``on_error`` hooks last (see ``docs/middleware.md``).

        Raises:
            TypeError: ``middleware`` is not an `llm_invocation.Middleware`.
            ValueError: it was added already.
        """
        self._invoker.add_middleware(middleware)

    def remove_middleware(self, middleware: Middleware) -> None:
        """Stop running ``middleware``'s hooks (invocations already started keep them).

        Raises:
            ValueError: it is not added.
        """
        self._invoker.remove_middleware(middleware)

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The middleware, outermost first."""
        return self._invoker.middleware.items

    # -- tools and MCP servers (the second specification) ---------------------------------------

    def register_tool(self, tool: Tool, *, replace: bool = False) -> None:
        """Make ``tool`` available to invocations (and to the model in ``tool_mode="auto"``).

        Registering the same object again is a no-op.

        Raises:
            InvalidRequest: another tool has that name (unless ``replace``).
        """
        self._invoker.tools.register(tool, replace=replace)

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
        ``tools``, ``tool_mode="auto"`` and ``max_steps`` work as for `invoke` (registered
        tools are offered alike): the automatic tool loop returns its final response with
        the usage of every step.

        Raises:
            LLMError: the invocation failed.
        """
        built = self._build(request, messages, model, options)
        if tool_mode == "auto":
            async with self.invoke(
                built, timeout=timeout, tools=tools, tool_mode="auto", max_steps=max_steps
            ) as loop:
                return await loop.aggregate()
        async with self.invoke(built, timeout=timeout, tools=tools) as stream:
            return await stream.aggregate()

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
        """Usage of every invocation of this client so far (cost None when unknown).

        An invocation is counted as soon as it has returned (its usage is priced by the
        caller, without a round trip).
        """
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

        Every invocation that returned before this call is in it: the report first waits
        for the settlements already sent to be committed.

        Raises:
            CostExceeded: no ledger is configured.
            ValueError: a group key is not one of the report's.
            LedgerError: the ledger's database failed.
        """
        return await self._runtime.ref(ACCOUNTANT, Accountant).call(
            GetReport(group_by=list(group_by), since=since, until=until)
        )

    async def budget_levels(self) -> list[BudgetLevel]:
        """Spend against every configured budget in its current period.

        Every invocation that returned before this call is counted: the levels are read
        once the settlements already sent are applied.

        Raises:
            CostExceeded: the budget store is unreachable (``details["reason"]`` is
                ``"store_unavailable"``).
        """
        return await self._runtime.ref(ACCOUNTANT, Accountant).call(BudgetLevels())

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
            lost_casts=stats.lost_casts,
        )


class ClientStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A client's counters (see `Client.statistics`)."""

    invocations: int
    retries: int
    fallbacks: int
    cache_hits: int
    usage: Usage
    runtime: RuntimeStatistics
    lost_casts: int = 0
    """Settlements (or give-backs) that could not be handed to their actor; see
    `llm_invocation.invocation.InvocationStatistics.lost_casts`."""
