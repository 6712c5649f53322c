"""`open_client`: assembles the supervision tree and hands out the `Client` facade."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

import trio

from .. import tokens
from .._secrets import Secret
from ..actors._keys import ApiKeys
from ..actors.accountant import Accountant, AlertCallback, Flush
from ..actors.governor import Governor, Observe
from ..actors.provider_session import ResponseInfo
from ..actors.tools import ToolExecutor
from ..config import Config, MCPServerConfig, ProviderConfig
from ..config._checks import store_timeout
from ..errors import ConfigurationError, LLMError, ProviderNotFound
from ..http import TransportFactory
from ..invocation import Governance, Invoker, Middleware
from ..observability._observer import open_observer
from ..providers._base import ProviderCodec
from ..providers._registry import CodecSpec, ProviderRegistry, custom_codec, make_codec
from ..providers.mock import MockTransport, Scenarios
from ..runtime import (
    ActorError,
    ActorRef,
    Backoff,
    ChildSpec,
    MailboxFull,
    Runtime,
    SupervisorSpec,
    open_runtime,
)
from ..store._base import (
    BudgetStore,
    RateObservation,
    RateStore,
)
from ..store.memory import MemoryBudgetStore, MemoryRateStore
from ..tools import ToolRegistry
from ._facade import ACCOUNTANT, GOVERNOR, MCP, TOOLS, Client
from ._keys import check_keys, is_local_preset
from ._providers import PROVIDERS, ProviderSessions, custom_entry

if TYPE_CHECKING:
    from ..observability._telemetry import Telemetry
    from ..pricing import PriceBook
    from ..store._ledger_writer import LedgerWriter
    from ..store.cache import ResponseCache
    from ..store.ledger import SQLiteLedger

__all__ = [
    "open_anthropic_client",
    "open_client",
    "open_gemini_client",
    "open_mock_client",
    "open_openai_client",
]

log = logging.getLogger("llm_invocation.client")


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
    sessions: list[ChildSpec],
    stores: _Stores,
    on_alert: Sequence[AlertCallback],
    registry: ToolRegistry,
    runtime_box: _RuntimeBox,
    telemetry: Telemetry | None = None,
) -> SupervisorSpec:
    providers = SupervisorSpec(
        name=PROVIDERS,
        strategy="one_for_one",
        max_restarts=10,
        within=60,
        backoff=Backoff(initial=0.05, maximum=2.0),
        children=sessions,
    )

    def governor() -> Governor:
        return Governor.from_config(stores.rate, config)

    def accountant() -> Accountant:
        return Accountant.from_config(
            stores.budget,
            stores.prices,
            config,
            ledger=stores.ledger,
            writer=stores.writer,
            on_alert=on_alert,
        )

    tools_config = config.tools
    redact = config.logging.redact_tool_arguments

    def executor() -> ToolExecutor:
        return ToolExecutor.from_config(
            registry, tools_config, redact_tool_arguments=redact, telemetry=telemetry
        )

    from ..actors.mcp import mcp_supervisor_spec

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
        ChildSpec.actor(GOVERNOR, governor, mailbox=65536),
        ChildSpec.actor(ACCOUNTANT, accountant, mailbox=65536),
        ChildSpec.actor(TOOLS, executor, mailbox=65536),
        ChildSpec.supervisor(mcp_supervisor_spec({}, registry, name=MCP)),
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
    from ..actors.mcp import mcp_child_spec

    runtime = await runtime_box.get()
    delay = 0.5
    failures = 0
    while True:
        try:
            await runtime.start_child(mcp_child_spec(name, server, registry), supervisor=MCP)
        except (LLMError, ActorError) as exc:
            # One WARNING per outage; the attempts after it are routine (DEBUG).
            level = logging.WARNING if failures == 0 else logging.DEBUG
            log.log(level, "MCP server %r unreachable (%s); retrying in %.1fs", name, exc, delay)
            failures += 1
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)
        else:
            if failures:
                log.info("MCP server %r connected after %d failed attempts", name, failures)
            return


@final
class _Stores:
    """What outlives the actors: shared state, the ledger and its writer, the price book."""

    def __init__(
        self,
        rate: RateStore,
        budget: BudgetStore,
        ledger: SQLiteLedger | None,
        writer: LedgerWriter | None,
        prices: PriceBook,
        cache: ResponseCache,
    ) -> None:
        self.rate = rate
        self.budget = budget
        self.ledger = ledger
        self.writer = writer
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
        message = Observe(provider=info.provider, model=info.model, observation=observation)
        try:
            try:
                governor.cast_nowait(message)  # taken at once when it can be
            except trio.WouldBlock:
                governor.send_nowait(message)
        except (MailboxFull, ActorError):
            pass  # headers are advisory; the next response says it again


def _preload(
    config: Config, codecs: Mapping[str, ProviderCodec], priced: Mapping[str, str]
) -> None:
    """Start loading, in worker threads and without waiting, the data the first calls will
    need: the price table when a provider is priced from it, and the tokenizer of the
    default model when a real provider is configured. Both load once per process; the
    first use that needs one waits for it off the event loop. The mock provider needs
    neither until it is called (its calls are counted with ``o200k_base``)."""
    from .. import pricing

    real = [name for name, codec in codecs.items() if codec.kind != "mock"]
    if not real:
        return
    if any(pricing.needs_table(priced[name]) for name in real):
        pricing.preload()
    tokens.preload_encodings({tokens.encoding_name_for_model(config.default_model or "")})


async def _open_stores(
    config: Config, stack: AsyncExitStack, free_providers: frozenset[str] = frozenset()
) -> _Stores:
    from ..pricing import PriceBook
    from ..store._ledger_writer import open_ledger_writer
    from ..store.cache import MemoryResponseCache, RedisResponseCache
    from ..store.ledger import open_ledger

    store = config.store
    rate: RateStore
    budget: BudgetStore
    cache: ResponseCache
    if store == "memory":
        rate, budget = MemoryRateStore(), MemoryBudgetStore()
        cache = MemoryResponseCache()
    else:
        from ..store.redis import open_redis_stores

        url, prefix, timeout = _store_options(store)
        rate, budget = await stack.enter_async_context(
            open_redis_stores(url, prefix=prefix, timeout=timeout, fail_mode=config.store_fail_mode)
        )
        # The cache shares the stores' connection: one pool, one log line per outage.
        redis_cache = RedisResponseCache.sharing(rate)
        stack.push_async_callback(redis_cache.aclose)
        cache = redis_cache
    ledger = await stack.enter_async_context(open_ledger(config.ledger_path))
    # The writer outlives the accountant's restarts; it commits what it holds when it closes.
    writer = await stack.enter_async_context(open_ledger_writer(ledger))
    # The price table and the tokenizers load once per process, off the event loop, when
    # first needed (`_preload` starts them): opening a client does not wait for them.
    prices = PriceBook(config.cost_control.prices, free_providers=free_providers)
    return _Stores(rate, budget, ledger, writer, prices, cache)


FLUSH_LIMIT: Final = 10.0
"""How long closing a client waits for the settlements already sent to be applied."""


async def _flush(accountant: ActorRef[Any]) -> None:
    """Before the tree stops: let the accountant take every settlement already cast (the
    ones still in its mailbox would be dropped with it); bounded, and shielded so that a
    cancelled block still records its calls."""
    with trio.move_on_after(FLUSH_LIMIT, shield=True) as bounded:
        try:
            await accountant.call(Flush())
        except (ActorError, LLMError) as exc:
            log.error("the last settlements could not be applied before closing: %s", exc)
    if bounded.cancelled_caught:
        log.error(
            "the last settlements were not applied within %gs of closing the client", FLUSH_LIMIT
        )


def _store_options(url: str, default: str = "llm:") -> tuple[str, str, float]:
    """Take our parameters out of a store URL: ``prefix=`` (the Redis key prefix) and
    ``timeout=`` (seconds an operation may take, 1 by default; checked by the config)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix, timeout = default, 1.0
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        elif key == "timeout":
            timeout = store_timeout(value) or timeout
        else:
            kept.append((key, value))
    rest = parts._replace(query=urllib.parse.urlencode(kept))
    return urllib.parse.urlunsplit(rest), prefix, timeout


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
    providers: Mapping[str, CodecSpec] | None = None,
    api_keys: Mapping[str, ApiKeys] | None = None,
    middleware: Sequence[Middleware] = (),
    logger: logging.Logger | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> AsyncGenerator[Client]:
    """Start the client's supervision tree for the ``async with`` block.

    Args:
        config: the configuration (default: `Config.load()`, from the environment).
        transports: per provider name, a factory of httpx transports (tests, proxies).
        scenarios: the mock provider's scripted answers (`llm_invocation.testing.Scenarios`;
            a fresh default set when omitted).
        on_alert: called with a `BudgetAlert` when a budget crosses an alert threshold
            (sync or async; once per budget, threshold and period).
        providers: providers of your own, by name: a `ProviderCodec`, a codec class or a
            factory ``(name, settings) -> codec`` (see `Client.register_provider`). The
            configuration's ``providers.<name>`` entry, if any, gives their settings (keys,
            base URL, limits; ``kind`` must be unset).
        api_keys: per provider name, its keys or a function giving them (sync or async;
            called when a key is first needed and after a 401), instead of the configured
            ones (see `Client.set_api_keys`).
        middleware: hooks around every invocation and attempt, outermost first (see
            `Client.add_middleware`).
        logger: the client's logger (`Client.logger`; default ``llm_invocation``): its
            audit records go to its child ``audit``, the invocation layer's records to its
            child ``invocation``. Opening the client sets the level of the
            ``llm_invocation`` loggers from ``logging.level`` unless the application set
            it; a logger of yours keeps its own level.
        tracer_provider: an OpenTelemetry tracer provider for the client's spans (default:
            the global one, when set; see ``docs/observability.md``).
        meter_provider: an OpenTelemetry meter provider for its metrics (default: the
            global one, when set).

    Raises:
        ConfigurationError: the configuration is invalid or names an unknown provider kind;
            a codec of ``providers`` is not one, or ``api_keys`` names an unknown provider
            or holds an empty list or something that is not a key.
        MissingAPIKey: a provider that needs an API key has none (nothing is sent).
        StoreUnavailable: the configured Redis store cannot be reached at start.
        TypeError, ValueError: ``middleware`` holds something that is not a `Middleware`,
            or one twice; ``logger`` is not a `logging.Logger`.
    """
    config = config if config is not None else Config.load()
    entries = _providers(config)
    custom = dict(providers or {})
    for name in custom:
        entries[name] = custom_entry(config, name)
    codecs = {
        name: custom_codec(name, custom[name], entry) if name in custom else make_codec(name, entry)
        for name, entry in entries.items()
    }
    keys = dict(api_keys or {})
    for name in keys:
        if name not in codecs:
            raise ConfigurationError(
                f"api_keys names provider {name!r}, which is not configured",
                provider=name,
                details={"available": sorted(codecs)},
            )
    # Keys from a file or a function are checked when they are needed, not here.
    sourced = {name for name, entry in entries.items() if entry.api_key_file} | set(keys)
    check_keys(config, entries, {n: c for n, c in codecs.items() if n not in sourced})
    free = frozenset(_price_provider(n, c) for n, c in codecs.items() if is_local_preset(c))
    # A provider of one's own is priced under its name, as when registered at run time.
    priced = {n: n if n in custom else _price_provider(n, c) for n, c in codecs.items()}
    _preload(config, {n: c for n, c in codecs.items() if _price_provider(n, c) not in free}, priced)
    observation = open_observer(
        config,
        logger=logger,
        servers={n: getattr(c, "base_url", None) for n, c in codecs.items()},
        systems={n: n if n in custom else _price_provider(n, c) for n, c in codecs.items()},
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    telemetry = observation.telemetry
    all_transports = dict(transports or {})
    mock_names = [name for name, codec in codecs.items() if codec.kind == "mock"]
    if mock_names:
        scenarios = scenarios if scenarios is not None else Scenarios()
        for name in mock_names:
            all_transports.setdefault(name, lambda: MockTransport(scenarios, format="openai"))
        if config.mock_fallback:
            observation.logger.getChild("client").warning(
                "no provider and no API key configured: the built-in mock provider answers, "
                "scripted and offline (set LLM_API_KEY, or OPENAI_API_KEY, ANTHROPIC_API_KEY "
                "or GEMINI_API_KEY, or name a provider with LLM_PROVIDER, to call a real model)",
                extra={"mock_fallback": True},  # the command line says it its own way
            )
    registry = ProviderRegistry(
        codecs,
        default_provider=config.default_provider,
        models={name: entry.models for name, entry in entries.items()},
    )
    observer = _Observer()
    sessions = ProviderSessions(config, registry, transports=all_transports, observer=observer)
    session_specs = sessions.specs(codecs, entries, keys)
    async with AsyncExitStack() as stack:
        stores = await _open_stores(config, stack, free)
        tools = ToolRegistry()
        from ..actors.mcp._host import host_for, roots_from_config

        mcp_host = host_for(tools)  # what MCP servers are offered as their host
        mcp_host.roots = roots_from_config(config.mcp.roots)
        mcp_host.default_model = config.default_model
        runtime_box = _RuntimeBox()
        spec = _client_spec(config, session_specs, stores, on_alert, tools, runtime_box, telemetry)
        runtime = await stack.enter_async_context(open_runtime(spec))
        runtime_box.set(runtime)
        sessions.bind(runtime)
        governor = runtime.ref(GOVERNOR, Governor)
        observer.governor = governor
        accountant = runtime.ref(ACCOUNTANT, Accountant)
        governance = Governance(
            governor,
            accountant,
            price_providers=priced,
            token_providers=dict(priced),
            prices=stores.prices,
            codecs=codecs,
            default_max_tokens=config.cost_control.default_max_tokens,
        )
        invoker = Invoker(
            runtime,
            config,
            registry,
            governance=governance,
            cache=stores.cache,
            tools=tools,
            executor=runtime.ref(TOOLS, ToolExecutor),
            middleware=middleware,
            observer=observation,
        )
        mcp_host.sampler = invoker.complete  # MCP sampling goes through the governed path
        if telemetry is not None:
            telemetry.watch_restarts(runtime.statistics)
            stack.callback(telemetry.watch_restarts, None)
        try:
            yield Client(runtime, config, registry, invoker, scenarios=scenarios, sessions=sessions)
        finally:
            await _flush(accountant)


def _shortcut(provider: str, api_key: str | Secret | None, overrides: dict[str, Any]) -> Config:
    config = (
        Config.load(provider=provider, **overrides) if overrides else Config.load(provider=provider)
    )
    text = api_key.reveal() if isinstance(api_key, Secret) else api_key
    if text is not None and text.strip():  # an empty key is none: the environment's, if any
        config = config.replace(api_key=api_key)
    return config


@asynccontextmanager
async def open_openai_client(
    api_key: str | Secret | None = None, **config: Any
) -> AsyncGenerator[Client]:
    """`open_client` with OpenAI as the default provider.

    The key is the argument, or when it is None or empty the environment's (``LLM_API_KEY``,
    ``OPENAI_API_KEY``).

    Raises:
        MissingAPIKey: no key from either (nothing is sent).
    """
    async with open_client(_shortcut("openai", api_key, config)) as client:
        yield client


@asynccontextmanager
async def open_anthropic_client(
    api_key: str | Secret | None = None, **config: Any
) -> AsyncGenerator[Client]:
    """`open_client` with Anthropic as the default provider (key as `open_openai_client`).

    Raises:
        MissingAPIKey: no key from the argument, ``LLM_API_KEY`` or ``ANTHROPIC_API_KEY``.
    """
    async with open_client(_shortcut("anthropic", api_key, config)) as client:
        yield client


@asynccontextmanager
async def open_gemini_client(
    api_key: str | Secret | None = None, **config: Any
) -> AsyncGenerator[Client]:
    """`open_client` with Google Gemini as the default provider (key as `open_openai_client`).

    Raises:
        MissingAPIKey: no key from the argument, ``LLM_API_KEY``, ``GEMINI_API_KEY`` or
            ``GOOGLE_API_KEY``.
    """
    async with open_client(_shortcut("gemini", api_key, config)) as client:
        yield client


@asynccontextmanager
async def open_mock_client(scenarios: Any = None, **config: Any) -> AsyncGenerator[Client]:
    """`open_client` on the built-in mock provider: no key, no network, and no rate limits,
    cap or budget (`Config.unlimited`): scripted answers cost nothing real. ``config``
    keywords are `Config` fields; a section given as a mapping merges over that, so
    ``rate_limits={"concurrent_calls": 2}`` tests one limit.

    Raises:
        ConfigurationError: a keyword is invalid.
    """
    base = Config.unlimited(provider="mock", model="mock", **config)
    async with open_client(base, scenarios=scenarios) as client:
        yield client
