"""The MCP SDK behind a small typed facade: the only module that imports ``mcp``.

`serve_connection` opens one server's transport (a stdio subprocess, streamable HTTP, legacy
SSE, or in-memory streams to an SDK server object run in this process), runs the SDK's
``ClientSession`` over it, performs the handshake, lists the tools and then watches the
connection until it breaks. `Session` is what the connection actor's handlers call tools
through.

Errors of the SDK and everything under it (anyio, httpx2, pydantic, OS errors of the
subprocess) are translated here and nowhere else, at two boundaries:

- the connection (`serve_connection`): any failure to connect, a broken connection or a
  server that stops answering pings becomes `ToolExecutionFailed` with
  ``details["reason"] == "mcp_connection_failed"``; it ends the actor's incarnation, so the
  supervisor reconnects with backoff;
- a call (`Session.call_tool`): an error the server reports in its result is an error
  `ToolResult`; a timeout is an error result with ``error_code="timeout"``; anything that
  went wrong on the way (a protocol error, a broken connection, a result the SDK rejects)
  raises `ToolExecutionFailed`.

SDK behaviour this module relies on (mcp 2.3, checked under trio):

- the stdio client closes the server's stdin on exit, waits 2 s, then SIGTERMs and SIGKILLs
  the process group, all shielded and bounded: no orphan survives the client;
- the stdio client passes only a safe subset of our environment (HOME, PATH, ...) plus the
  configured ``env`` to the server;
- when a call is cancelled (the caller gave up, or our timeout fired) the session sends
  ``notifications/cancelled`` for it (shielded, bounded) before the cancellation propagates;
- ``InMemoryTransport`` (the SDK's in-memory transport, used by its own ``Client`` for a
  server object) runs the server in a task of its own inside our task tree, over a pair of
  memory streams: a server whose task fails takes the transport down with it (the error
  comes out of the transport's context), and leaving the context ends the server (EOF,
  then cancellation after 2 s, or at once when we are being cancelled). A tool that raises
  in an ``MCPServer`` is an ``isError`` result; a low-level handler that raises is a
  JSON-RPC error (``raise_exceptions=False``);
- the session never reports a closed connection by itself: a stdio or SSE server's EOF only
  ends the read stream, so the read stream is relayed here and its end raises; a failed
  POST of the streamable HTTP client crashes that transport's task group, which comes out
  of the transport's context; a server that just stops answering is found by pings.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, NoReturn, Protocol, cast, final

import anyio
import httpx2
import mcp_types
import trio
from anyio.streams.memory import MemoryObjectSendStream
from mcp.client._memory import InMemoryTransport
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from ..._version import __version__
from ...errors import LLMError, ToolExecutionFailed
from ...tools._core import ToolResult
from ._auth import MCPAuth
from ._bridge import HostBridge
from ._convert import RemoteTool, remote_tool
from ._features import NOTIFICATIONS, ToolOutput, checked_call_tool, tool_result
from ._host import ProgressCallback
from ._http_session import open_sse, open_streamable_http, tracking_delivery
from ._launcher import launch_command
from ._servers import InProcessMCPServer, ServerSpec

__all__ = ["ConnectionListener", "RemoteTool", "Session", "serve_connection"]

log = logging.getLogger("llm_invocation.mcp")

# How long a legacy SSE stream may stay silent before it counts as broken (and reconnects).
SSE_READ_TIMEOUT: Final = 300.0
# How long a lost connection waits for its calls in flight before it is closed (seconds).
SETTLE_GRACE: Final = 2.0
# Pages of tools/list followed at most (a server whose cursor never ends cannot hang us).
MAX_TOOL_PAGES: Final = 100

_CLIENT_INFO: Final = mcp_types.Implementation(name="llm-invocation", version=__version__)


class ConnectionListener(Protocol):
    """What `serve_connection` tells the connection actor (synchronously, never raising)."""

    def connected(self, session: Session, tools: list[RemoteTool]) -> None: ...

    def tools_changed(self, tools: list[RemoteTool]) -> None: ...

    def disconnected(self) -> None: ...

    def notified(self, message: mcp_types.ServerNotification) -> None:
        """A notification other than ``tools/list_changed`` (resources, prompts)."""
        ...


class _ConnectionFailed(Exception):
    """The connection failed, as its message says; translated at the boundary."""


@final
class _Signals:
    """Wakes the connection's watcher: the tool list changed, or the session is dead."""

    __slots__ = ("calls", "idle", "listening", "lost", "tools_changed", "wake")

    def __init__(self) -> None:
        self.wake = trio.Event()
        self.tools_changed = False
        self.lost: str | None = None
        self.calls = 0  # tool calls in flight
        self.idle = trio.Event()
        self.idle.set()
        # Set once what the server sends of its own accord can reach us: at once for
        # stdio, SSE and in-process servers; for streamable HTTP once the server answered
        # the standalone GET stream.
        self.listening = trio.Event()

    def call_started(self) -> None:
        self.calls += 1
        self.idle = trio.Event()

    def call_ended(self) -> None:
        self.calls -= 1
        if not self.calls:
            self.idle.set()

    def notify_tools_changed(self) -> None:
        self.tools_changed = True
        self.wake.set()

    def notify_lost(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        self.wake.set()

    def failure(self, reason: str) -> _ConnectionFailed:
        """The error that ends the connection for ``reason``, or for one known first."""
        self.notify_lost(reason)
        return _ConnectionFailed(self.lost or reason)


@final
class Session:
    """A connected, initialised MCP session (a typed facade over the SDK's ClientSession).

    Safe to use from many tasks at once: each call is its own JSON-RPC request.
    """

    __slots__ = ("_bridge", "_client", "_init", "_signals", "server", "transport")

    def __init__(
        self,
        server: str,
        transport: str,
        client: ClientSession,
        init: mcp_types.InitializeResult,
        signals: _Signals,
        bridge: HostBridge | None = None,
    ) -> None:
        self.server = server
        self.transport = transport
        self._client = client
        self._init = init
        self._signals = signals
        self._bridge = bridge

    @property
    def server_name(self) -> str:
        """The name the server reported in its handshake."""
        return self._init.server_info.name

    @property
    def server_version(self) -> str:
        return self._init.server_info.version

    @property
    def protocol_version(self) -> str:
        return self._init.protocol_version

    @property
    def instructions(self) -> str | None:
        return self._init.instructions

    @property
    def lost(self) -> str | None:
        """Why the connection is known to be lost, or None while it is good."""
        return self._signals.lost

    @property
    def capabilities(self) -> dict[str, Any]:
        """The capabilities the server declared, as JSON (``{"tools": {...}, ...}``)."""
        return self._init.capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)

    @property
    def sdk(self) -> ClientSession:
        """The SDK session (for ``_features``: resources, prompts, completion)."""
        return self._client

    async def call_tool(
        self,
        remote_name: str,
        arguments: Mapping[str, Any],
        *,
        name: str,
        call_id: str,
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> ToolResult:
        """Call ``remote_name`` and convert its result; ``name`` labels the result.

        Cancelling the caller cancels the request at the server (``notifications/cancelled``).
        The call carries a progress token when ``on_progress`` or a callback of the server
        listens (see ``_bridge``).

        Returns:
            The result; an error result when the tool reported an error (``isError``:
            ``error_code="tool_execution_failed"``) or did not answer within ``timeout``
            seconds (``error_code="timeout"``, and the request is cancelled at the server).

        Raises:
            ToolExecutionFailed: the server answered with a protocol error, the connection
                broke, or the SDK rejected the result (``__cause__`` says which).
        """
        start = trio.current_time()
        raw: ToolOutput | None = None
        self._signals.call_started()
        with tracking_delivery() as delivery:
            try:
                with trio.move_on_after(timeout):
                    raw = await self._checked_call(remote_name, dict(arguments), on_progress)
            except MCPError as exc:
                failure = self._call_failure(remote_name, exc, exc.message, delivery.refused)
                raise failure from exc
            except Exception as exc:  # the call boundary: anyio, httpx2, pydantic, the SDK's
                text = f"{type(exc).__name__}: {exc}"
                raise self._call_failure(remote_name, exc, text, delivery.refused) from exc
            finally:
                self._signals.call_ended()
        duration = trio.current_time() - start
        if raw is None:
            return ToolResult(
                call_id=call_id,
                name=name,
                content=f"the MCP tool {remote_name!r} of server {self.server!r} did not answer "
                f"within {timeout:g}s; the call was cancelled",
                is_error=True,
                error_code="timeout",
                duration=duration,
            )
        return tool_result(raw, remote_name, name=name, call_id=call_id, duration=duration)

    async def _checked_call(
        self, remote_name: str, arguments: dict[str, Any], on_progress: ProgressCallback | None
    ) -> ToolOutput:
        if self._bridge is None:
            return await checked_call_tool(self._client, remote_name, arguments)
        async with self._bridge.progress(remote_name, on_progress) as meta:
            return await checked_call_tool(self._client, remote_name, arguments, meta=meta)

    def _call_failure(
        self, remote_name: str, exc: Exception, text: str, refused: str | None = None
    ) -> ToolExecutionFailed:
        """The typed error of a failed call.

        ``details["delivered"]`` is False when the request certainly did not reach the
        server (it refused our lost session, or could not be connected): such a call may be
        sent again once, on the next connection.
        """
        details: dict[str, Any] = {"server": self.server, "tool": remote_name}
        connection_gone = refused is not None or (
            isinstance(exc, MCPError)
            and (
                exc.code == mcp_types.CONNECTION_CLOSED
                # Streamable HTTP: the server no longer knows our session (it restarted).
                or exc.message == "Session terminated"
            )
        )
        if isinstance(exc, MCPError):
            details["mcp_code"] = exc.code
        if refused is not None:
            details["delivered"] = False
            text = f"{text} (not delivered: {refused})"
        if connection_gone:
            details["reason"] = "mcp_connection_failed"
            self._signals.notify_lost(f"the connection broke during a call: {text}")
        return ToolExecutionFailed(
            f"calling {remote_name!r} on MCP server {self.server!r} failed: {text}",
            details=details,
            retryable=connection_gone,
        )


def _tools(result: mcp_types.ListToolsResult) -> list[RemoteTool]:
    return [remote_tool(tool) for tool in result.tools]


async def _list_tools(client: ClientSession) -> list[RemoteTool]:
    """Every tool of the server, following pagination."""
    result = await client.list_tools()
    tools = _tools(result)
    pages = 1
    while result.next_cursor is not None and pages < MAX_TOOL_PAGES:
        params = mcp_types.PaginatedRequestParams(cursor=result.next_cursor)
        result = await client.list_tools(params=params)
        tools.extend(_tools(result))
        pages += 1
    return tools


def _executable(command: str, env: Mapping[str, str], cwd: str | None) -> str:
    """``command`` when it can be run: found on the server's PATH, or an executable file.

    Raises:
        FileNotFoundError: it cannot (the launcher would only find out in the server).
    """
    if os.sep in command:
        path = os.path.join(cwd or os.curdir, command)  # an absolute command stays itself
        found = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    else:
        found = shutil.which(command, path=env.get("PATH", os.environ.get("PATH")))
    if found is None:
        raise FileNotFoundError(f"No such executable file: {command!r}")
    return command


def _transport(
    config: ServerSpec, signals: _Signals, auth: MCPAuth | None = None
) -> AbstractAsyncContextManager[TransportStreams]:
    """The SDK transport for ``config``; secrets are revealed here and only here."""
    if isinstance(config, InProcessMCPServer):
        return InMemoryTransport(config.server)
    headers = {key: value.reveal() for key, value in config.headers.items()}
    match config.transport:
        case "stdio":
            assert config.command is not None  # MCPServerConfig checks it
            env = {key: value.reveal() for key, value in config.env.items()}
            command, args = launch_command(
                _executable(config.command, env, config.cwd), list(config.args)
            )
            params = StdioServerParameters(
                command=command, args=args, env=env or None, cwd=config.cwd
            )
            return stdio_client(params, errlog=sys.stderr)
        case "http":
            assert config.url is not None  # MCPServerConfig checks it
            return open_streamable_http(
                config.url,
                headers=headers,
                timeout=config.timeout,
                on_lost=signals.notify_lost,
                on_listening=signals.listening.set,
                auth=auth,
            )
        case "sse":
            assert config.url is not None  # MCPServerConfig checks it
            return open_sse(
                config.url,
                headers=headers,
                timeout=config.timeout,
                read_timeout=max(SSE_READ_TIMEOUT, config.timeout),
                auth=auth,
            )


async def _relay(
    source: ReadStream[SessionMessage | Exception],
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    signals: _Signals,
    bridge: HostBridge | None = None,
) -> NoReturn:
    """Forward the transport's read stream to the session; its end is a lost connection.

    The bridge sees every message first, in order (progress of our calls). When the
    connection was already known lost (the stream then ends as it is closed), the error
    carries that first reason.
    """
    async with sink:
        async for item in source:
            if bridge is not None:
                bridge.observe(item)
            await sink.send(item)
    raise signals.failure("the server closed the connection")


async def _keepalive(
    client: ClientSession, signals: _Signals, interval: float, timeout: float
) -> NoReturn:
    """Ping every ``interval`` seconds; a failed or unanswered ping ends the connection."""
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(timeout) as scope:
            await client.send_ping()
        if scope.cancelled_caught:
            raise signals.failure(f"no answer to a ping within {timeout:g}s")


async def serve_connection(
    server: str,
    config: ServerSpec,
    listener: ConnectionListener,
    *,
    connect_timeout: float,
    ping_interval: float | None = None,
    auth: MCPAuth | None = None,
    bridge: HostBridge | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Connect to ``server`` and keep the connection until it breaks; for ``nursery.start``.

    Connects, initialises and lists the tools (all within ``connect_timeout``: a stdio
    server starts its process first), tells the listener, reports started, then follows
    ``notifications/tools/list_changed``. The listener hears
    `ConnectionListener.disconnected` as soon as the connection ends, before the transport
    is closed (for stdio: before the server process is stopped). ``bridge`` gives the session
    its host callbacks (logging, roots, elicitation, sampling, progress) and sets the
    server's log level after the handshake.

    Raises:
        ToolExecutionFailed: connecting failed, or the connection broke
            (``details["reason"] == "mcp_connection_failed"``); never returns otherwise.
    """
    try:
        signals = _Signals()
        async with _transport(config, signals, auth) as (read, write):
            relay_send, relay_receive = anyio.create_memory_object_stream[
                SessionMessage | Exception
            ](0)

            async def on_message(message: IncomingMessage) -> None:
                if isinstance(message, mcp_types.ToolListChangedNotification):
                    signals.notify_tools_changed()
                elif isinstance(message, NOTIFICATIONS):
                    listener.notified(message)
                elif isinstance(message, Exception):
                    log.warning("MCP server %r sent an unreadable message: %s", server, message)

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_relay, read, relay_send, signals, bridge)
                    host = bridge.session_options() if bridge is not None else {}
                    async with ClientSession(
                        relay_receive,
                        write,
                        message_handler=on_message,
                        client_info=_CLIENT_INFO,
                        **host,
                    ) as client:
                        init, tools = await _handshake(client, connect_timeout)
                        await _until_listening(server, config, signals, connect_timeout)
                        if bridge is not None:
                            bridge.nursery = nursery
                            await bridge.prepare(client, init)
                        session = Session(server, config.transport, client, init, signals, bridge)
                        try:
                            listener.connected(session, tools)
                            task_status.started()
                            if ping_interval is not None:
                                nursery.start_soon(
                                    _keepalive, client, signals, ping_interval, config.timeout
                                )
                            await _follow(client, signals, listener, config.timeout)
                        finally:
                            listener.disconnected()
            finally:
                relay_send.close()
                relay_receive.close()
    except BaseException as exc:
        error = _connection_failure(server, config, exc)
        if error is None:
            raise
        if isinstance(error, LLMError):
            # Ours (the listener's), not the SDK's: out of its group, as it was raised.
            context = error.__context__
            try:
                raise error
            finally:
                error.__context__ = context
        raise _translate(server, config, error) from exc


async def _until_listening(
    server: str, config: ServerSpec, signals: _Signals, timeout: float
) -> None:
    """Wait (bounded) until the server can reach us of its own accord, so that nothing it
    sends right after the handshake (a log, a roots request) is lost; a server that never
    answers the standalone stream is used without it."""
    if config.transport != "http":
        return
    with trio.move_on_after(timeout):
        await signals.listening.wait()
        return
    log.debug("MCP server %r did not answer the standalone stream within %gs", server, timeout)


async def _handshake(
    client: ClientSession, timeout: float
) -> tuple[mcp_types.InitializeResult, list[RemoteTool]]:
    """Initialise the session and list the tools, within ``timeout``.

    A server that does not declare the tools capability (only resources or prompts) has
    no tools: it is not asked for them.
    """
    with trio.move_on_after(timeout):
        init = await client.initialize()
        if init.capabilities.tools is None:
            return init, []
        return init, await _list_tools(client)
    raise _ConnectionFailed(f"no answer to the handshake within {timeout:g}s")


async def _follow(
    client: ClientSession, signals: _Signals, listener: ConnectionListener, timeout: float
) -> NoReturn:
    """Refresh the tools on every list change, until the session is found dead."""
    while True:
        await signals.wake.wait()
        signals.wake = trio.Event()
        if signals.lost is not None:
            # Let calls in flight hear their own answers first (a call the server refused is
            # then known not delivered, and can be retried); bounded, then they are cut.
            with trio.move_on_after(SETTLE_GRACE):
                await signals.idle.wait()
            raise _ConnectionFailed(signals.lost)
        if signals.tools_changed:
            signals.tools_changed = False
            tools: list[RemoteTool] | None = None
            with trio.move_on_after(timeout):
                tools = await _list_tools(client)
            if tools is None:
                raise _ConnectionFailed(f"no answer to tools/list within {timeout:g}s")
            listener.tools_changed(tools)


def _connection_failure(server: str, config: ServerSpec, exc: BaseException) -> Exception | None:
    """The one error that ended the connection, or None to let ``exc`` through as it is.

    Exception groups (the SDK and trio nest task groups) are searched for their real errors:
    our own `LLMError` first, then `_ConnectionFailed`, then the first error. Cancellations
    alone, and a KeyboardInterrupt or SystemExit anywhere, go through as they are.
    """
    errors: list[Exception] = []
    fatal = False

    def collect(item: BaseException) -> None:
        nonlocal fatal
        if isinstance(item, BaseExceptionGroup):
            group = cast("BaseExceptionGroup[BaseException]", item)
            for member in group.exceptions:
                collect(member)
        elif isinstance(item, Exception):
            errors.append(item)
        elif not isinstance(item, trio.Cancelled):
            fatal = True

    collect(exc)
    if fatal or not errors:
        return None
    for kind in (LLMError, _ConnectionFailed):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]


def _translate(server: str, config: ServerSpec, error: Exception) -> ToolExecutionFailed:
    """The connection boundary: what ended the connection, as `ToolExecutionFailed`."""
    if isinstance(config, InProcessMCPServer):
        where = f"the in-process server {config.name!r}"
    else:
        where = config.command if config.transport == "stdio" else config.url
    match error:
        case _ConnectionFailed():
            text = str(error)
        case OSError() if config.transport == "stdio":
            text = f"could not start {where!r}: {error}"
        case httpx2.HTTPError():
            text = f"HTTP error talking to {where}: {type(error).__name__}: {error}"
        case MCPError():
            text = f"protocol error: {error.message}"
        case _:
            text = f"{type(error).__name__}: {error}"
    return ToolExecutionFailed(
        f"MCP server {server!r} ({config.transport}): {text}",
        details={"server": server, "reason": "mcp_connection_failed"},
        retryable=True,
    )
