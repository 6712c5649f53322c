"""The host's side of one MCP session: the SDK callbacks made from `MCPHost`.

`HostBridge` gives the SDK's ``ClientSession`` its callbacks for one server:

- ``logging_callback``: a server's ``notifications/message`` becomes a record of the Python
  logger ``llm_invocation.mcp.<server>``, at the mapped level (debug: DEBUG; info and
  notice: INFO; warning: WARNING; error: ERROR; critical, alert and emergency: CRITICAL),
  with ``mcp_server``, ``mcp_logger`` and ``mcp_data`` on the record;
- ``list_roots_callback``: the server's roots (declared with ``listChanged``);
- ``elicitation_callback``: the server's form, to the user's callback; without one, or for
  URL mode, it is declined; an answer that does not match the requested schema is declined
  (and logged);
- ``sampling_callback``: only when sampling is on for the server (else the capability is not
  declared and the SDK refuses the request): see ``_sampling``.

Progress does not go through the SDK's callback, which runs each notification in a task of
its own (in no particular order): a call is given a progress token of ours, and the
connection's relay hands each ``notifications/progress`` for it to `HostBridge.observe`, in
the order the server sent them; one task per call delivers them to the callbacks, in order,
and the call's result waits (a little) until they are delivered.

SDK behaviour relied on (mcp 2.3): a callback left None is not declared as a capability;
``set_logging_level`` and ``send_roots_list_changed`` are marked deprecated (gone in protocol
2026-07-28; the handshake this client makes negotiates 2025-11-25 at most).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import warnings
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, cast, final

import mcp_types
import trio
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.message import SessionMessage

from ...config import MCPServerConfig
from ._host import (
    LOG_LEVELS,
    MCPElicitation,
    MCPElicitationAnswer,
    MCPHost,
    MCPLogLevel,
    MCPProgress,
    MCPRoot,
    MCPSampling,
    ProgressCallback,
    call_maybe_async,
    roots_from_config,
)
from ._sampling import create_message

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator

    from ._servers import ServerSpec
    from ._session import Session

__all__ = [
    "LEVELS",
    "HostBridge",
    "check_answer",
    "send_roots_changed",
    "set_log_level",
]

log = logging.getLogger("llm_invocation.mcp")

LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}
"""MCP log levels as Python's."""

# How long a finished call waits for its progress events to reach the callbacks (seconds).
PROGRESS_DRAIN: Final = 1.0

_tokens = itertools.count(1)


@final
class _Route:
    __slots__ = ("send", "tool")

    def __init__(self, tool: str, send: trio.MemorySendChannel[MCPProgress]) -> None:
        self.tool = tool
        self.send = send


@final
class HostBridge:
    """The SDK callbacks of one server's session (see the module)."""

    __slots__ = ("_routes", "_spec", "host", "nursery", "server")

    def __init__(self, server: str, host: MCPHost, spec: ServerSpec) -> None:
        self.server = server
        self.host = host
        self.nursery: trio.Nursery | None = None  # the connection's: progress deliveries
        self._spec = spec
        self._routes: dict[str, _Route] = {}

    # -- the session's options

    def session_options(self) -> dict[str, Any]:
        """The keyword arguments of ``ClientSession`` for this server."""
        options: dict[str, Any] = {
            "logging_callback": self._on_log,
            "list_roots_callback": self._list_roots,
            "elicitation_callback": self._elicit,
        }
        if self._sampling() is not None:
            options["sampling_callback"] = self._sample
        return options

    def _sampling(self) -> MCPSampling | None:
        own = self.host.sampling.get(self.server)
        if own is not None:
            return own
        configured = getattr(self._spec, "sampling", None)
        if configured is None:
            return None
        return MCPSampling(
            model=configured.model, provider=configured.provider, max_tokens=configured.max_tokens
        )

    def _configured_roots(self) -> list[MCPRoot] | None:
        if not isinstance(self._spec, MCPServerConfig) or self._spec.roots is None:
            return None
        return roots_from_config(self._spec.roots)

    # -- after the handshake

    async def prepare(self, client: ClientSession, init: mcp_types.InitializeResult) -> None:
        """Set the server's log level (the last one set, else the configured one), if any.

        A server that does not declare logging is not asked (and that is logged); a server
        that refuses is logged too: neither ends the connection.
        """
        level: str | None = self.host.log_levels.get(self.server) or getattr(
            self._spec, "log_level", None
        )
        if level is None:
            return
        if init.capabilities.logging is None:
            log.warning(
                "MCP server %r does not support logging: its log level (%s) is not set",
                self.server,
                level,
            )
            return
        timeout: float = self._spec.timeout
        with trio.move_on_after(timeout) as scope:
            try:
                await set_log_level(client, level)
            except Exception as exc:  # noqa: BLE001 - the request boundary: the SDK's errors
                log.warning(
                    "MCP server %r refused log level %s: %s", self.server, level, _text(exc)
                )
        if scope.cancelled_caught:
            log.warning(
                "MCP server %r did not answer logging/setLevel within %gs", self.server, timeout
            )

    # -- logging

    async def _on_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        data: Any = params.data
        text = data if isinstance(data, str) else json.dumps(data, default=str)
        if params.logger:
            text = f"{params.logger}: {text}"
        logging.getLogger(f"llm_invocation.mcp.{self.server}").log(
            LEVELS.get(params.level, logging.INFO),
            "%s",
            text,
            extra={"mcp_server": self.server, "mcp_logger": params.logger, "mcp_data": data},
        )

    # -- roots

    async def _list_roots(self, context: ClientRequestContext) -> mcp_types.ListRootsResult:
        roots = self.host.roots_of(self.server, self._configured_roots())
        return mcp_types.ListRootsResult(
            roots=[mcp_types.Root(uri=root.uri, name=root.name) for root in roots]  # pyright: ignore[reportArgumentType] - pydantic reads the URI string
        )

    # -- elicitation

    async def _elicit(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult:
        decline = mcp_types.ElicitResult(action="decline")
        if isinstance(params, mcp_types.ElicitRequestURLParams):
            log.info("MCP server %r asked to open a URL: declined (not supported)", self.server)
            return decline
        callback = self.host.elicitation.get(self.server)
        if callback is None:
            log.info(
                "MCP server %r asked for input: declined (no elicitation callback)", self.server
            )
            return decline
        asked = MCPElicitation(
            server=self.server, message=params.message, schema=dict(params.requested_schema)
        )
        try:
            answer = await call_maybe_async(callback, asked)
        except Exception:
            log.exception("the elicitation callback of MCP server %r failed: declined", self.server)
            return decline
        if not isinstance(answer, MCPElicitationAnswer):
            log.warning(
                "the elicitation callback of MCP server %r returned a %s, not an "
                "MCPElicitationAnswer: declined",
                self.server,
                type(answer).__name__,
            )
            return decline
        if answer.action != "accept":
            return mcp_types.ElicitResult(action=answer.action)
        problem = check_answer(asked.schema, answer.content)
        if problem is not None:
            log.warning(
                "the answer to MCP server %r's form does not match its schema (%s): declined",
                self.server,
                problem,
            )
            return decline
        return mcp_types.ElicitResult(action="accept", content=answer.content)

    # -- sampling

    async def _sample(
        self, context: ClientRequestContext, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
        sampling = self._sampling()
        if sampling is None:  # turned off since the session was made
            return mcp_types.ErrorData(
                code=mcp_types.INVALID_REQUEST, message="sampling is not enabled"
            )
        return await create_message(
            self.server,
            params,
            sampling=sampling,
            policy=self.host.policies.get(self.server) or sampling.policy,
            sampler=self.host.sampler,
            default_model=self.host.default_model,
        )

    # -- progress

    def observe(self, item: SessionMessage | Exception) -> None:
        """Hand a ``notifications/progress`` for one of our calls to its route (in order)."""
        if not self._routes or not isinstance(item, SessionMessage):
            return
        message = item.message
        if not isinstance(message, mcp_types.JSONRPCNotification):
            return
        if message.method != "notifications/progress" or not message.params:
            return
        params = message.params
        route = self._routes.get(str(params.get("progressToken")))
        progress = params.get("progress")
        if route is None or isinstance(progress, bool) or not isinstance(progress, int | float):
            return
        total = params.get("total")
        text = params.get("message")
        event = MCPProgress(
            server=self.server,
            tool=route.tool,
            progress=float(progress),
            total=float(total)
            if isinstance(total, int | float) and not isinstance(total, bool)
            else None,
            message=text if isinstance(text, str) else None,
        )
        route.send.send_nowait(event)

    @asynccontextmanager
    async def progress(
        self, tool: str, extra: ProgressCallback | None
    ) -> AsyncGenerator[dict[str, Any] | None]:
        """For one call of ``tool``: the ``_meta`` carrying its progress token (None when no
        callback listens). Its events are delivered in order by a task of the connection;
        on leaving, the call waits until they are (at most `PROGRESS_DRAIN` seconds)."""
        callbacks = self.host.progress_callbacks(self.server, extra)
        nursery = self.nursery
        if not callbacks or nursery is None:
            yield None
            return
        token = f"llm-invocation-{next(_tokens)}"
        send, receive = trio.open_memory_channel[MCPProgress](math.inf)
        done = trio.Event()
        scope = trio.CancelScope()
        self._routes[token] = _Route(tool, send)
        nursery.start_soon(_deliver, receive, callbacks, scope, done, self.server)
        try:
            yield {"progressToken": token}
        finally:
            del self._routes[token]
            send.close()
            scope.deadline = trio.current_time() + PROGRESS_DRAIN
            with trio.move_on_after(PROGRESS_DRAIN * 2):
                await done.wait()


async def _deliver(
    receive: trio.MemoryReceiveChannel[MCPProgress],
    callbacks: list[ProgressCallback],
    scope: trio.CancelScope,
    done: trio.Event,
    server: str,
) -> None:
    """Call every callback with every event of one call, in order; a failing callback is
    logged once (for the call) and not called again for it."""
    failed: set[int] = set()
    with scope, receive:
        async for event in receive:
            for index, callback in enumerate(callbacks):
                if index in failed:
                    continue
                try:
                    await call_maybe_async(callback, event)
                except Exception:
                    failed.add(index)
                    log.exception(
                        "a progress callback of MCP server %r failed (tool %r)", server, event.tool
                    )
    if scope.cancelled_caught:
        log.warning(
            "MCP server %r: progress callbacks still busy %gs after the call ended: stopped",
            server,
            PROGRESS_DRAIN,
        )
    done.set()


def _text(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else f"{type(exc).__name__}: {exc}"


@contextmanager
def _deprecated_allowed() -> Generator[None]:
    with warnings.catch_warnings():  # only the coroutine is made here: no checkpoint
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


async def set_log_level(client: ClientSession, level: str) -> None:
    """Send ``logging/setLevel`` (see the module about the SDK's deprecation).

    Raises:
        Exception: whatever the SDK raised (the caller translates it).
    """
    chosen: MCPLogLevel = next(item for item in LOG_LEVELS if item == level)
    with _deprecated_allowed():
        pending: Awaitable[object] = client.set_logging_level(chosen)  # pyright: ignore[reportDeprecated] - see the module
    await pending


async def send_roots_changed(session: Session, timeout: float) -> None:
    """Send ``notifications/roots/list_changed`` to one server; a failure is logged."""
    with _deprecated_allowed():
        pending = session.sdk.send_roots_list_changed()  # pyright: ignore[reportDeprecated] - see the module
    with trio.move_on_after(timeout) as scope:
        try:
            await pending
        except Exception as exc:  # noqa: BLE001 - the request boundary: the SDK's errors
            log.warning(
                "MCP server %r could not be told that the roots changed: %s",
                session.server,
                _text(exc),
            )
    if scope.cancelled_caught:
        log.warning(
            "MCP server %r could not be told within %gs that the roots changed",
            session.server,
            timeout,
        )


# -- elicitation answers ------------------------------------------------------------------------

_JSON_TYPES: Final[dict[str, Callable[[object], bool]]] = {
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
}


def check_answer(schema: dict[str, Any], content: dict[str, Any] | None) -> str | None:
    """Why ``content`` does not match ``schema`` (a flat object schema), or None when it does.

    Checks the required properties, the basic type of each value, enums, and lists of
    strings; properties the schema does not name are refused.
    """
    if content is None:
        return "an accepted answer has no content"
    properties: dict[str, Any] = schema.get("properties") or {}
    required: list[str] = schema.get("required") or []
    missing = [name for name in required if name not in content]
    if missing:
        return f"missing: {', '.join(missing)}"
    for name, value in content.items():
        spec = properties.get(name)
        if not isinstance(spec, dict):
            return f"{name!r} is not asked for"
        problem = _check_value(name, value, spec)  # pyright: ignore[reportUnknownArgumentType] - JSON
        if problem is not None:
            return problem
    return None


def _offered(spec: dict[str, Any], choices: str) -> list[object]:
    """The values an enum property offers: its ``enum``, or the ``const`` of its choices."""
    found: object = spec.get("enum")
    if isinstance(found, list):
        return cast("list[object]", found)
    listed: object = spec.get(choices)
    if not isinstance(listed, list):
        return []
    return [
        cast("dict[str, object]", choice).get("const")
        for choice in cast("list[object]", listed)
        if isinstance(choice, dict)
    ]


def _check_value(name: str, value: object, spec: dict[str, Any]) -> str | None:
    kind = spec.get("type")
    if value is None:
        return f"{name!r} is null"
    if kind == "array":
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):  # pyright: ignore[reportUnknownVariableType] - JSON
            return f"{name!r} is not a list of strings"
        allowed = _offered(spec.get("items") or {}, "anyOf")
        if allowed and any(item not in allowed for item in value):  # pyright: ignore[reportUnknownVariableType] - JSON
            return f"{name!r} holds a value not offered"
        return None
    check = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    if check is None:
        return f"{name!r} has a type this client does not check ({kind!r})"
    if not check(value):
        return f"{name!r} is not of type {kind}"
    allowed = _offered(spec, "oneOf")
    if allowed and value not in allowed:
        return f"{name!r} is not one of the values offered"
    if kind == "number" and isinstance(value, int | float) and math.isnan(value):
        return f"{name!r} is not a number"
    return None
