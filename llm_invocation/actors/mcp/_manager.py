"""MCP servers as supervised actors: one `MCPConnection` per server, its tools in the registry.

Each connection actor owns one MCP server: its lifespan starts a task that opens the
transport (a stdio subprocess, streamable HTTP, legacy SSE, or in-memory streams to an SDK
server object run in this process: `InProcessMCPServer`), performs the handshake, lists
the server's tools and registers one `MCPTool` per remote tool in the shared `ToolRegistry`,
named ``<server>__<tool>``. It follows ``notifications/tools/list_changed``. When the
connection breaks (the server exits or crashes, a network error, unanswered pings) the
incarnation ends with an error and the ``mcp`` supervisor reconnects with backoff. On every
exit, crash or stop, the server's tools leave the registry, and a stdio server process is
stopped (the SDK closes its stdin, then terminates its process group).

::

    spec = mcp_supervisor_spec(config.mcp.servers, registry)
    async with open_runtime(SupervisorSpec(children=[ChildSpec.supervisor(spec)])) as rt:
        result = await registry.get("files__read").execute({"path": "README.md"})

The ``mcp`` SDK is imported lazily, in a worker thread, when the first connection starts:
``import llm_invocation`` stays cheap. Everything the SDK raises is translated in
``_mcp_session``: a connection failure is `ToolExecutionFailed` with
``details["reason"] == "mcp_connection_failed"`` (it crashes the incarnation); a call's
failure is `ToolExecutionFailed` or an error `ToolResult` (see `MCPTool.execute`).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

import msgspec
import trio

from ...errors import ConfigurationError, ToolExecutionFailed
from ...runtime import (
    Actor,
    ActorCrashed,
    ActorDead,
    ActorRef,
    Backoff,
    ChildSpec,
    Context,
    SupervisorSpec,
)
from ...tools._core import ToolRegistry, ToolResult
from ._handle import answer, listeners_for, notify, resubscribe
from ._host import host_for
from ._messages import CallTool, ListServerTools, MCPMsg, MCPServerInfo, ServerInfo
from ._models import MCPToolAnnotations, TaskSupport, same_tool, tool_metadata
from ._servers import ServerSpec
from ._status import (
    ConnectionStatus,
    Ending,
    Handshake,
    serve_routinely,
    statuses_for,
)

if TYPE_CHECKING:
    import mcp_types

    from ._auth import MCPAuth
    from ._session import RemoteTool, Session

__all__ = [
    "MCP_BACKOFF",
    "MCP_MAX_RESTARTS",
    "MCP_RESTART_WINDOW",
    "MIN_CONNECT_TIMEOUT",
    "PING_INTERVAL",
    "CallTool",
    "ListServerTools",
    "MCPConnection",
    "MCPMsg",
    "MCPServerInfo",
    "MCPTool",
    "ServerInfo",
    "local_tool_name",
    "mcp_child_spec",
    "mcp_supervisor_spec",
]

log = logging.getLogger("llm_invocation.mcp")

# Restart policy of the ``mcp`` supervisor. A server that keeps failing is retried after
# 0.2 s, 0.4 s, 0.8 s ... up to 10 s (each delay drawn from [d/2, d]). At that pace one
# server restarts at most about 17 times a minute, so 100 restarts within 60 s are only
# reached when several servers fail at once for a long time: a broken MCP server keeps
# retrying in the background instead of escalating and taking the client down with it.
# (The supervisor counts the restarts of all its children in one window, and the backoff
# step follows that count: while one server flaps, another's first restart also waits.)
MCP_BACKOFF: Final = Backoff(initial=0.2, maximum=10.0, multiplier=2.0, jitter=0.5)
MCP_MAX_RESTARTS: Final = 100
MCP_RESTART_WINDOW: Final = 60.0
# Network servers are pinged this often (seconds) so a dead one is noticed while idle; a
# stdio server's exit is noticed at once (its stdout ends).
PING_INTERVAL: Final = 30.0
# The handshake waits at least this long (seconds), or the server's ``timeout`` when longer:
# a stdio server starts its process first (``npx`` or ``uvx`` may even install it).
MIN_CONNECT_TIMEOUT: Final = 30.0
# Time allowed beyond the connect timeout for a connection actor to start (the first import
# of the SDK, the subprocess starting).
_START_MARGIN: Final = 10.0

# How much longer than the server's timeout `MCPTool.execute` waits for an answer.
_CALL_GRACE: Final = 1.0

_INVALID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME: Final = 64
_SESSION_MODULE: Final = "llm_invocation.actors.mcp._session"


# -- tools --------------------------------------------------------------------------------------


@final
class MCPTool:
    """A tool of an MCP server, as the registry offers it (satisfies `Tool`).

    Made by the connection actor for each remote tool; ``execute`` goes through the actor,
    so it can be called from any task.

    Attributes:
        server: the configured name of the MCP server.
        remote_name: the tool's name on the server.
        title: its human-readable title (its ``title``, else its annotations').
        annotations: the server's hints (`MCPToolAnnotations`), if any.
        output_schema: the JSON schema of its structured results, if any: a result that
            does not match is an error result saying why.
        meta: its ``_meta``, if any.
        task_support: its ``execution.taskSupport``; tools that require tasks are not
            registered (this client does not run tasks).
    """

    __slots__ = (
        "_description",
        "_name",
        "_parameters",
        "_ref",
        "_timeout",
        "annotations",
        "meta",
        "output_schema",
        "remote_name",
        "server",
        "task_support",
        "title",
    )

    def __init__(
        self,
        *,
        name: str,
        description: str,
        parameters: dict[str, Any],
        server: str,
        remote_name: str,
        ref: ActorRef[MCPMsg],
        timeout: float,
        title: str | None = None,
        annotations: MCPToolAnnotations | None = None,
        output_schema: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        task_support: TaskSupport | None = None,
    ) -> None:
        self.title = title
        self.annotations = annotations
        self.output_schema = output_schema
        self.meta = meta
        self.task_support = task_support
        self._name = name
        self._description = description
        self._parameters = parameters
        self.server = server
        self.remote_name = remote_name
        self._ref = ref
        self._timeout = timeout

    @property
    def name(self) -> str:
        """The registered name: ``<server>__<tool>``, sanitised, maybe with a ``_2`` suffix."""
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        """The remote tool's ``inputSchema`` (do not modify it)."""
        return self._parameters

    def __repr__(self) -> str:
        return f"<MCPTool {self._name!r} ({self.server}:{self.remote_name})>"

    async def execute(
        self, arguments: dict[str, Any], *, call_id: str = "", timeout: float | None = None
    ) -> ToolResult:
        """Call the remote tool with ``arguments``.

        Errors the tool reports come back as an error `ToolResult`
        (``error_code="tool_execution_failed"``), so does a call that outlives ``timeout``
        (seconds; default: the server's) (``error_code="timeout"``; it is cancelled at the
        server). A call made
        while the server is reconnecting waits for it, up to that timeout (and a little).
        Cancelling the caller cancels the request at the server.

        A call that certainly did not reach the server (it refused the session we had, which
        it no longer knows, or could not be connected) is sent once more, on the next
        connection; the retry is counted (`MCPServerInfo.retries`) and logged. A call that
        may have been delivered is never sent again.

        Raises:
            ToolExecutionFailed: the server is not running, the connection broke during the
                call, or the server answered with a protocol error.
        """
        msg = CallTool(
            name=self._name,
            arguments=dict(arguments),
            call_id=call_id,
            remote_name=self.remote_name,
            timeout=timeout,
        )
        limit = (self._timeout if timeout is None else timeout) + _CALL_GRACE
        start = trio.current_time()
        try:
            # The handler times the call out after `timeout` (and cancels it at the
            # server); this bound only catches a call that waited for a reconnection.
            with trio.move_on_after(limit):
                try:
                    return await self._ref.call(msg)
                except ToolExecutionFailed as exc:
                    if exc.details.get("delivered") is not False:
                        raise
                    log.info(
                        "MCP server %r: sending the call of %r again, once: %s",
                        self.server,
                        self.remote_name,
                        exc,
                    )
                    return await self._ref.call(msgspec.structs.replace(msg, retry=True))
        except ActorCrashed as exc:
            raise ToolExecutionFailed(
                f"the connection to MCP server {self.server!r} broke during the call of "
                f"{self.remote_name!r}",
                details={"server": self.server, "reason": "mcp_connection_failed"},
                retryable=True,
            ) from exc
        except ActorDead as exc:
            raise ToolExecutionFailed(
                f"MCP server {self.server!r} is not running",
                details={"server": self.server, "reason": "mcp_connection_failed"},
            ) from exc
        return ToolResult(
            call_id=call_id,
            name=self._name,
            content=f"MCP server {self.server!r} did not answer within {limit:g}s",
            is_error=True,
            error_code="timeout",
            duration=trio.current_time() - start,
        )


def local_tool_name(server: str, tool: str) -> str:
    """The registry name of ``tool`` of ``server``: ``<server>__<tool>``.

    Characters outside ``[a-zA-Z0-9_-]`` become ``_`` and the name is cut to 64 characters.
    """
    return _INVALID_CHARS.sub("_", f"{server}__{tool}")[:_MAX_NAME]


def _suffixed(base: str, n: int) -> str:
    suffix = f"_{n}"
    return base[: _MAX_NAME - len(suffix)] + suffix


@final
class _NameLog:
    """Renames already logged for one server; shared by its incarnations (log them once)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def needs_tasks(self, server: str, remote: str) -> bool:
        """Log once that ``remote`` requires tasks (not run here); False, to filter it out."""
        if (remote, "") not in self._seen:
            self._seen.add((remote, ""))
            log.warning("tool %r of MCP server %r requires tasks: not offered", remote, server)
        return False

    def renamed(self, server: str, remote: str, local: str) -> None:
        if (remote, local) in self._seen:
            return
        self._seen.add((remote, local))
        log.warning(
            "tool %r of MCP server %r is registered as %r: %r is taken",
            remote,
            server,
            local,
            local_tool_name(server, remote),
        )


# -- the connection actor -----------------------------------------------------------------------


@final
class MCPConnection(Actor[MCPMsg]):
    """One MCP server: its connection, its tools in the registry, calls to them.

    Calls run concurrently (each is its own JSON-RPC request). Use `mcp_child_spec` to
    supervise one; a new instance is made for every (re)connection.
    """

    max_concurrency: ClassVar[int] = 64
    _nursery: trio.Nursery | None = None
    reply_errors: ClassVar[tuple[type[Exception], ...]] = (ToolExecutionFailed,)

    def __init__(
        self,
        server: str,
        config: ServerSpec,
        registry: ToolRegistry,
        *,
        ping_interval: float | None = None,
        names: _NameLog | None = None,
        status: ConnectionStatus | None = None,
        auth: MCPAuth | None = None,
    ) -> None:
        self.server = server
        self.config = config
        self.registry = registry
        self.ping_interval = ping_interval
        self._names = names or _NameLog()
        self.status = status or ConnectionStatus(server)
        self.auth = auth
        self._end: Ending | None = None
        self._ref: ActorRef[MCPMsg] | None = None
        self._session: Session | None = None
        self._lost: str | None = None  # why the session, now gone, was lost (if known)
        self._tools: dict[str, MCPTool] = {}  # local name -> tool
        self._local: dict[str, str] = {}  # remote name -> local name
        self._connected_since = 0.0
        self._calls = 0
        self._errors = 0
        self._timeouts = 0

    def _ending(self, ctx: Context) -> Ending:
        self._end = Ending(self.status, ctx.stop)
        return self._end

    def lifespan(self, ctx: Context) -> AbstractAsyncContextManager[object]:
        """Connect and register the tools (see the module); the connection is a task here."""
        return self._lifespan(ctx)

    @asynccontextmanager
    async def _lifespan(self, ctx: Context) -> AsyncGenerator[None]:
        self._ref = ctx.self_ref
        self._nursery = ctx.nursery
        try:
            await _load_sdk()
            from . import _session as _mcp_session
            from ._bridge import HostBridge

            # The connection lives in its own task: a broken connection raises there, which
            # ends this incarnation with that error (and the supervisor reconnects).
            serve = partial(
                _mcp_session.serve_connection,
                self.server,
                self.config,
                self,
                connect_timeout=_connect_timeout(self.config),
                ping_interval=self.ping_interval,
                auth=self.auth,
                bridge=HostBridge(self.server, host_for(self.registry), self.config),
            )
            await ctx.nursery.start(serve_routinely, serve, self.status, self._ending(ctx))
            yield
        finally:
            self.disconnected()

    async def handle(self, msg: MCPMsg, ctx: Context) -> Any:
        match msg:
            case CallTool():
                return await self._call(msg, ctx)
            case ListServerTools():
                return sorted(self._tools)
            case ServerInfo():
                return self._info()
            case _:  # resources, prompts, completion, log level: see ``_handle``
                hub = listeners_for(self.registry)
                timeout = self.config.timeout
                return await answer(msg, self._session, hub, server=self.server, timeout=timeout)

    async def _call(self, msg: CallTool, ctx: Context) -> ToolResult:
        session = self._session
        lost = session.lost if session is not None else self._lost
        if session is None or lost is not None:
            # Not sent: the connection is gone, and the next incarnation takes the calls
            # (this one stops taking them now, with the reason the connection was lost for).
            if self._end is not None:
                self._end(lost or "the connection ended", connected=True)
            raise ToolExecutionFailed(
                f"MCP server {self.server!r} is not connected",
                details={
                    "server": self.server,
                    "reason": "mcp_connection_failed",
                    "delivered": False,
                },
            )
        if msg.retry:
            self.status.retried()
        remote = msg.remote_name or self._remote_name(msg.name)
        if remote is None:
            return ToolResult(
                call_id=msg.call_id,
                name=msg.name,
                content=f"MCP server {self.server!r} has no tool {msg.name!r}",
                is_error=True,
                error_code="tool_not_found",
            )
        self._calls += 1
        try:
            result = await session.call_tool(
                remote,
                msg.arguments,
                name=msg.name,
                call_id=msg.call_id,
                timeout=self.config.timeout if msg.timeout is None else msg.timeout,
                on_progress=msg.on_progress,
            )
        except ToolExecutionFailed as exc:
            self._errors += 1
            # Not delivered: stop taking calls now, so that a retry waits for the next
            # connection.
            if exc.details.get("delivered") is False and self._end is not None:
                self._end(session.lost or str(exc), connected=True)
            raise
        if result.error_code == "timeout":
            self._timeouts += 1
        elif result.is_error:
            self._errors += 1
        return result

    def _remote_name(self, local: str) -> str | None:
        tool = self._tools.get(local)
        return tool.remote_name if tool is not None else None

    def _info(self) -> MCPServerInfo:
        session = self._session
        return MCPServerInfo(
            server=self.server,
            transport=self.config.transport,
            name=session.server_name if session else "",
            version=session.server_version if session else "",
            protocol_version=session.protocol_version if session else "",
            tools=len(self._tools),
            connected_since=self._connected_since,
            calls=self._calls,
            errors=self._errors,
            timeouts=self._timeouts,
            instructions=session.instructions if session else None,
            state=self.status.state,
            reconnects=self.status.reconnects,
            retries=self.status.retries,
            last_error=self.status.last_error,
            last_error_at=self.status.last_error_at,
            capabilities=session.capabilities if session else {},
        )

    # -- the connection's listener (called by _mcp_session.serve_connection) -------------------

    def connected(self, session: Session, tools: list[RemoteTool]) -> None:
        self._session = session
        self._connected_since = time.time()
        self._sync(tools)
        self.status.connected(
            Handshake(
                name=session.server_name,
                version=session.server_version,
                protocol_version=session.protocol_version,
                instructions=session.instructions,
                capabilities=session.capabilities,
                connected_since=self._connected_since,
            )
        )
        host_for(self.registry).attach(session)
        if self._nursery is not None:
            hub = listeners_for(self.registry)
            resubscribe(session, hub, self._nursery, timeout=self.config.timeout)
        log.info(
            "connected to MCP server %r (%s %s, %s): %d tools",
            self.server,
            session.server_name,
            session.server_version,
            self.config.transport,
            len(self._tools),
        )

    def tools_changed(self, tools: list[RemoteTool]) -> None:
        self._sync(tools)
        log.info("MCP server %r changed its tools: %d now", self.server, len(self._tools))

    def notified(self, message: mcp_types.ServerNotification) -> None:
        if self._nursery is not None:
            notify(self.server, message, listeners_for(self.registry), self._nursery)

    def disconnected(self) -> None:
        if self._session is not None:
            host_for(self.registry).detach(self._session)
            self._lost = self._session.lost
        self._session = None
        self.status.disconnected()
        for local in list(self._tools):
            self._unregister(local)

    # -- registry bookkeeping ----------------------------------------------------------------------

    def _sync(self, tools: list[RemoteTool]) -> None:
        """Make the registry hold exactly ``tools`` for this server."""
        ref = self._ref
        assert ref is not None
        wanted = {
            tool.name: tool
            for tool in tools
            if tool.task_support != "required" or self._names.needs_tasks(self.server, tool.name)
        }
        for remote, local in list(self._local.items()):
            if remote not in wanted:
                self._unregister(local)
        for remote, spec in wanted.items():
            current = self._tools.get(self._local.get(remote, ""))
            if current is not None and same_tool(current, spec):
                continue
            local = current.name if current is not None else self._allocate(remote)
            tool = MCPTool(
                name=local,
                description=spec.description,
                parameters=spec.parameters,
                server=self.server,
                remote_name=remote,
                ref=ref,
                timeout=self.config.timeout,
                **tool_metadata(spec),
            )
            self.registry.register(tool, replace=current is not None)
            self._tools[local] = tool
            self._local[remote] = local

    def _allocate(self, remote: str) -> str:
        base = local_tool_name(self.server, remote)
        local, n = base, 1
        while local in self.registry:
            n += 1
            local = _suffixed(base, n)
        if local != base:
            self._names.renamed(self.server, remote, local)
        return local

    def _unregister(self, local: str) -> None:
        tool = self._tools.pop(local, None)
        if tool is None:
            return
        self._local.pop(tool.remote_name, None)
        if local in self.registry and self.registry.get(local) is tool:
            self.registry.unregister(local)


def _connect_timeout(config: ServerSpec) -> float:
    return max(config.timeout, MIN_CONNECT_TIMEOUT)


async def _load_sdk() -> None:
    """Import the SDK facade, and with it the ``mcp`` SDK, once.

    The import takes about half a second; a worker thread keeps the event loop running.
    """
    if _SESSION_MODULE not in sys.modules:
        await trio.to_thread.run_sync(importlib.import_module, _SESSION_MODULE)


# -- supervision --------------------------------------------------------------------------------


def mcp_child_spec(
    server: str,
    config: ServerSpec,
    registry: ToolRegistry,
    *,
    ping_interval: float | None = PING_INTERVAL,
    auth: MCPAuth | None = None,
) -> ChildSpec:
    """The supervised connection to one MCP server, for an ``mcp`` supervisor.

    The actor is named ``mcp.<server>`` and restarted whenever it ends (``permanent``);
    ``runtime.start_child(spec, supervisor="mcp")`` adds a server at run time and
    ``runtime.terminate_child("mcp.<server>", supervisor="mcp")`` removes it. ``enabled`` is
    not looked at here (`mcp_supervisor_spec` skips disabled servers).

    Args:
        config: the server's configuration, or an `InProcessMCPServer`.
        ping_interval: seconds between pings of an ``http`` or ``sse`` server (None: never).
            A stdio or in-process server is never pinged: its end is noticed at once.
        auth: for an ``http`` or ``sse`` server, an ``httpx2.Auth`` or a header provider
            called once per connection (`MCPAuth`).

    Raises:
        UsageError: ``server`` contains a ``/``.
        ConfigurationError: ``auth`` is given for a stdio or in-process server.
    """
    if auth is not None and config.transport not in ("http", "sse"):
        raise ConfigurationError(
            f"auth is for http and sse MCP servers, not {config.transport}",
            details={"server": server, "reason": "invalid_mcp_auth"},
        )
    names = _NameLog()
    status = ConnectionStatus(server, config.transport)
    statuses_for(registry)[server] = status
    configured: float | None = getattr(config, "ping_interval", None)
    ping = None if config.transport in ("stdio", "memory") else configured or ping_interval

    def factory() -> MCPConnection:
        return MCPConnection(
            server, config, registry, ping_interval=ping, names=names, status=status, auth=auth
        )

    return ChildSpec.actor(
        f"mcp.{server}",
        factory,
        restart="permanent",
        init_timeout=_connect_timeout(config) + _START_MARGIN,
    )


def mcp_supervisor_spec(
    servers: Mapping[str, ServerSpec],
    registry: ToolRegistry,
    *,
    name: str = "mcp",
    ping_interval: float | None = PING_INTERVAL,
) -> SupervisorSpec:
    """A one_for_one supervisor with a connection per enabled server (disabled are skipped).

    Restarts back off from 0.2 s to 10 s (`MCP_BACKOFF`), and the intensity
    (`MCP_MAX_RESTARTS` within `MCP_RESTART_WINDOW` seconds) is generous, so a server that
    keeps failing is retried in the background rather than escalating. A server that cannot
    be reached when the tree starts fails the start (like any child); add such servers later
    with `mcp_child_spec` and ``runtime.start_child``.

    Raises:
        UsageError: a server's name contains a ``/``, or ``name`` is empty or does.
    """
    children = [
        mcp_child_spec(server, config, registry, ping_interval=ping_interval)
        for server, config in servers.items()
        if config.enabled
    ]
    return SupervisorSpec(
        name=name,
        strategy="one_for_one",
        children=children,
        max_restarts=MCP_MAX_RESTARTS,
        within=MCP_RESTART_WINDOW,
        backoff=MCP_BACKOFF,
    )
