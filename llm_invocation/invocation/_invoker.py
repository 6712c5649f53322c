"""The `Invoker`: every invocation, from request to settled result, goes through it.

One component owns an invocation whatever asked for it (`Client.invoke`, `invoke_sync`, the
seed API's ``chat`` and ``complete``, the tool loop, the WebSocket front): the request's
defaults and tools, provider and model resolution with the fallbacks, the response cache,
admission (budget and rate limits), the attempts and retries, fallback, settlement and the
usage record. Streamed calls return an `InvocationStream`; non-streamed calls wait for the
whole response; both run through the same `Run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, final, overload

import msgspec

from ..actors.provider_session import ProviderSession, SessionMsg
from ..actors.tools import ExecuteTools, ToolExecutor
from ..config import Config
from ..errors import ConfigurationError, InvalidRequest, LLMError, ProviderNotFound
from ..observability._observer import Observer
from ..runtime import ActorError, ActorRef, Runtime
from ..store._base import StoreUnavailable
from ..tools import Tool, ToolRegistry, ToolResult
from ..types import (
    Feature,
    ModelOptions,
    NamedToolChoice,
    Request,
    Response,
    ToolCall,
    ToolSpec,
    Usage,
    from_json,
    to_json,
)
from ._governance import Governance
from ._middleware import Middleware, MiddlewareChain
from ._run import RetryPolicy, Run
from ._stream import InvocationStream
from ._toolloop import ToolLoopStream

if TYPE_CHECKING:
    from ..providers._registry import ProviderRegistry
    from ..store.cache import ResponseCache

__all__ = ["InvocationStatistics", "Invoker"]

SESSION_PREFIX = "provider."
"""Provider sessions are named ``provider.<name>`` in the supervision tree."""


class InvocationStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What the invoker has done so far."""

    invocations: int
    """Invocations started (a tool loop counts one per step)."""
    retries: int
    """Attempts made after a failed one, on the same provider."""
    fallbacks: int
    """Times a fallback provider took over."""
    cache_hits: int
    usage: Usage
    """Usage and cost of every invocation so far."""
    lost_casts: int = 0
    """Settlements (or give-backs of a reservation or lease) that could not be handed to
    their actor: their reservation or lease keeps the worst case until it expires."""


def _parse_target(text: str, *, where: str) -> tuple[str, str]:
    provider, sep, model = text.partition(":")
    if not sep or not provider or not model:
        raise ConfigurationError(f"{where}: fallback {text!r} is not 'provider:model'")
    return provider, model


@final
class Invoker:
    """Runs invocations on a running supervision tree: see the module documentation."""

    def __init__(
        self,
        runtime: Runtime,
        config: Config,
        registry: ProviderRegistry,
        *,
        governance: Governance | None,
        cache: ResponseCache | None,
        tools: ToolRegistry,
        executor: ActorRef[Any] | None = None,
        middleware: Sequence[Middleware] = (),
        observer: Observer | None = None,
    ) -> None:
        self._runtime = runtime
        self._config = config
        self._registry = registry
        self.governance = governance
        self._cache = cache
        self.tools = tools
        self._executor = executor
        retries = config.retries
        self.retry_policy = RetryPolicy(
            max_attempts=retries.max_attempts,
            initial_delay=retries.initial_delay,
            max_delay=retries.max_delay,
            multiplier=retries.multiplier,
            jitter=retries.jitter,
        )
        self._usage = Usage.zero()
        self._invocations = 0
        self._retries = 0
        self._fallbacks = 0
        self._cache_hits = 0
        self._not_offered: set[tuple[str, str]] = set()
        self.middleware = MiddlewareChain(middleware)
        """The client's middleware (replaced, never changed, when one is added)."""
        self.observer = observer if observer is not None else Observer()
        """The client's audit log, spans and metrics."""
        self._log = self.observer.invocation_log

    @property
    def config(self) -> Config:
        return self._config

    def add_middleware(self, middleware: Middleware) -> None:
        """Run ``middleware``'s hooks around every invocation started from now on (innermost:
        after the middleware added before it).

        Raises:
            TypeError: ``middleware`` is not a `Middleware`.
            ValueError: it was added already.
        """
        self.middleware = self.middleware.added(middleware)

    def remove_middleware(self, middleware: Middleware) -> None:
        """Stop running ``middleware``'s hooks for invocations started from now on.

        Raises:
            ValueError: it is not added.
        """
        self.middleware = self.middleware.removed(middleware)

    # -- what callers use ----------------------------------------------------------------------

    def prepare(self, request: Request) -> tuple[Request, list[tuple[str, str]]]:
        """The request with the configured default options, and its candidates: the
        provider and model it resolves to, then the configured fallbacks.

        Raises:
            ProviderNotFound, ModelNotSupported: the request's provider or model is not
                available.
        """
        defaults = self._config.defaults
        if defaults.options:
            base: ModelOptions = defaults.model_options()
            request = msgspec.structs.replace(request, options=base.merged(request.options))
        provider, model = self._registry.resolve(request)
        candidates = [(provider, model)]
        entry = self._config.providers.get(provider)
        if entry is not None:
            for target in entry.fallback:
                candidate = _parse_target(target, where=f"providers.{provider}")
                if candidate[0] not in self._registry.names():
                    self._log.warning("fallback %s skipped: provider not configured", target)
                    continue
                candidates.append(candidate)
        return request, candidates

    def offer_tools(
        self,
        request: Request,
        tools: Sequence[Tool | str] | None = None,
        *,
        auto: bool = False,
    ) -> Request:
        """``request`` with the tools it offers the model (see ``docs/tools.md``).

        - ``request.tools`` or ``tools`` given (even empty): exactly those, the request's
          specs then the tools named or passed (objects are registered first);
        - neither given: every registered tool (local and MCP) when ``auto`` (the tool
          loop) or when ``tools.offer`` is ``"registered"`` (the default) and the model
          takes tools (not a legacy completion, and its provider supports function
          calling); none when ``tools.offer`` is ``"none"``.

        Nothing offered leaves ``tools`` None (no tools are sent).

        Raises:
            InvalidRequest: a name is not registered, a tool object's name is taken by
                another tool, or a `NamedToolChoice` names a tool that is not offered.
            ProviderNotFound, ModelNotSupported: (registered tools only) the request's
                provider or model is not available.
        """
        specs: list[ToolSpec]
        if request.tools is not None or tools is not None:
            specs = list(request.tools or [])
            known = {spec.name for spec in specs}
            for item in tools or ():
                if isinstance(item, str):
                    spec = self.tools.spec(item)
                else:
                    self.tools.register(item)
                    spec = self.tools.spec(item.name)
                if spec.name not in known:
                    known.add(spec.name)
                    specs.append(spec)
        elif auto:
            specs = self.tools.specs()
        elif self._config.tools.offer == "registered" and len(self.tools):
            specs = self.tools.specs() if self._takes_tools(request) else []
        else:
            specs = []
        choice = request.tool_choice
        if isinstance(choice, NamedToolChoice) and all(s.name != choice.name for s in specs):
            raise InvalidRequest(
                f"tool_choice names {choice.name!r}, which is not offered",
                details={"field": "tool_choice", "name": choice.name},
            )
        if not specs and request.tools is None:
            return request
        return msgspec.structs.replace(request, tools=specs or None)

    def _takes_tools(self, request: Request) -> bool:
        """Whether registered tools may be offered to ``request`` by default: not to a legacy
        completion, nor to a model whose provider says it has no function calling (said
        once per model in the log)."""
        metadata = request.metadata
        if metadata is not None and metadata.get("endpoint") == "completions":
            return False
        provider, model = self._registry.resolve(request)
        if self._registry.codec(provider).supports(Feature.FUNCTION_CALLING, model):
            return True
        if (provider, model) not in self._not_offered:
            self._not_offered.add((provider, model))
            self._log.info(
                "registered tools are not offered to %s:%s: it does not support function calling",
                provider,
                model,
            )
        return False

    def _timeout(self, timeout: float | None) -> float:
        return self._config.timeout if timeout is None else timeout

    def stream(
        self, request: Request, *, timeout: float | None = None, step: int | None = None
    ) -> InvocationStream:
        """An invocation of ``request`` as a stream (``async with`` it, then iterate), with
        the tools it offers as they are (see `offer_tools`). A request with ``stream=False``
        is sent non-streamed and its whole answer comes as one chunk.

        ``step`` is the tool loop's step, for the middleware.

        Raises:
            ProviderNotFound, ModelNotSupported: the request's provider or model is not
                available.
        """
        prepared, candidates = self.prepare(request)
        self._invocations += 1
        chain = self.middleware
        timeout = self._timeout(timeout)
        run = Run(self, prepared, candidates, timeout=timeout, chain=chain, step=step)
        return InvocationStream(self, run, cache_key=self.cache_key(prepared), chain=chain)

    def tool_loop(
        self, request: Request, *, max_steps: int | None = None, timeout: float | None = None
    ) -> ToolLoopStream:
        """The automatic tool loop over ``request`` (its tools as offered).

        Raises:
            ValueError: ``max_steps`` is below 1.
        """
        steps = self._config.tools.max_steps if max_steps is None else max_steps
        return ToolLoopStream(self, request, max_steps=steps, timeout=timeout)

    @overload
    def invoke(self, request: Request, /) -> InvocationStream: ...
    @overload
    def invoke(
        self, request: Request, /, *, tool_mode: Literal["auto"], max_steps: int | None = None
    ) -> ToolLoopStream: ...
    def invoke(
        self,
        request: Request,
        /,
        *,
        tool_mode: Literal["auto"] | None = None,
        max_steps: int | None = None,
    ) -> InvocationStream | ToolLoopStream:
        """An invocation of ``request`` with the tools it offers by `offer_tools`'s rule, or
        with ``tool_mode="auto"`` the tool loop (what the WebSocket front runs).

        Raises:
            ProviderNotFound, ModelNotSupported: the request's provider or model is not
                available.
            InvalidRequest: a `NamedToolChoice` names a tool that is not offered.
        """
        if tool_mode == "auto":
            return self.tool_loop(self.offer_tools(request, auto=True), max_steps=max_steps)
        return self.stream(self.offer_tools(request))

    async def complete(self, request: Request, *, timeout: float | None = None) -> Response:
        """One non-streamed invocation of ``request`` (its tools as they are): the whole
        response.

        Raises:
            LLMError: the invocation failed.
        """
        if request.stream:
            request = msgspec.structs.replace(request, stream=False)
        async with self.stream(request, timeout=timeout) as stream:
            return await stream.aggregate()

    async def execute_tools(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Run tool calls in parallel through the executor, results in call order.

        A failing, slow or unknown tool gives an error result, not an exception.

        Raises:
            ActorError: the executor is not running.
        """
        executor = self._executor
        if executor is None:
            executor = self._runtime.ref("tools", ToolExecutor)
        telemetry = self.observer.telemetry
        parent = telemetry.parent_of_tools() if telemetry is not None else None
        return await executor.call(ExecuteTools(calls=list(calls), trace=parent))

    def session_ref(self, provider: str) -> ActorRef[SessionMsg]:
        """The session actor of ``provider``.

        Raises:
            ProviderNotFound: no such provider is configured.
        """
        try:
            return self._runtime.ref(SESSION_PREFIX + provider, ProviderSession)
        except ActorError:
            raise ProviderNotFound(
                f"provider {provider!r} is not configured", provider=provider
            ) from None

    # -- the response cache --------------------------------------------------------------------

    def cache_key(self, request: Request) -> str | None:
        """The cache key of ``request`` when it asks for the cache (``cache=True``)."""
        if not request.cache or self._cache is None:
            return None
        from ..store.cache import cache_key

        return cache_key(request)

    async def cache_get(self, key: str) -> Response | None:
        """A cached response (marked ``metadata["cache"] == "hit"``), or None."""
        assert self._cache is not None
        try:
            data = await self._cache.get(key)
        except StoreUnavailable as exc:
            # The connection logs the outage once; a cache miss is the safe side.
            self._log.debug("response cache unreachable: %s", exc)
            return None
        if data is None:
            return None
        try:
            response = from_json(data, Response)
        except LLMError:
            self._log.warning("an unreadable cached response was ignored (key %s)", key[:12])
            return None
        self._cache_hits += 1
        metadata = {**(response.metadata or {}), "cache": "hit"}
        usage = response.usage
        if usage is not None:  # nothing was sent: a hit costs nothing
            usage = msgspec.structs.replace(usage, cost=Decimal(0))
        return msgspec.structs.replace(response, metadata=metadata, usage=usage)

    async def cache_put(self, key: str, response: Response) -> None:
        """Keep ``response`` for ``config.cache_ttl`` seconds."""
        assert self._cache is not None
        try:
            await self._cache.set(key, to_json(response), self._config.cache_ttl)
        except StoreUnavailable as exc:
            # The connection logs the outage once; a cache miss is the safe side.
            self._log.debug("response cache unreachable: %s", exc)

    # -- the record ----------------------------------------------------------------------------

    def record_usage(self, usage: Usage) -> None:
        self._usage = self._usage + usage

    def note_retry(self, provider: str, attempt: int, error: LLMError, delay: float) -> None:
        self._retries += 1
        self._log.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            provider,
            attempt,
            error.code.value,
            delay,
        )

    def note_fallback(self, provider: str, error: LLMError) -> None:
        self._fallbacks += 1
        self._log.warning(
            "%s failed (%s: %s); falling back", provider, error.code.value, error.message
        )

    @property
    def usage(self) -> Usage:
        return self._usage

    def statistics(self) -> InvocationStatistics:
        return InvocationStatistics(
            invocations=self._invocations,
            retries=self._retries,
            fallbacks=self._fallbacks,
            cache_hits=self._cache_hits,
            usage=self._usage,
            lost_casts=self.governance.lost_casts if self.governance is not None else 0,
        )
