"""The state of one MCP server's connection, kept across its reconnections.

A connection actor is a new instance on every (re)connection; `ConnectionStatus` is made
once per server (by `mcp_child_spec`) and shared by its incarnations. It counts the
reconnections and the retried calls, remembers the last error and logs a lost connection
once, as one WARNING line with the reason (the attempts that follow while the server stays
away are logged at DEBUG; the reconnection at INFO).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

import msgspec
import trio

from ...errors import ToolExecutionFailed

if TYPE_CHECKING:
    from ...tools._core import ToolRegistry

__all__ = [
    "ConnectionState",
    "ConnectionStatus",
    "Ending",
    "Handshake",
    "serve_routinely",
    "statuses_for",
]

log = logging.getLogger("llm_invocation.mcp")

ConnectionState: TypeAlias = Literal["connecting", "ready", "reconnecting", "failed"]
"""``connecting``: the first connection is being made; ``ready``: connected;
``reconnecting``: the connection was lost and is being made again; ``failed``: the last
attempt to (re)connect failed, the next one waits for its backoff."""


class Handshake(msgspec.Struct, frozen=True, kw_only=True):
    """What the server said of itself in its last handshake."""

    name: str = ""
    version: str = ""
    protocol_version: str = ""
    instructions: str | None = None
    capabilities: dict[str, Any] = {}
    connected_since: float = 0.0


@final
class ConnectionStatus:
    """The state, counters and last error of one server's connection (see the module)."""

    __slots__ = (
        "attempts",
        "connects",
        "handshake",
        "last_error",
        "last_error_at",
        "reconnects",
        "retries",
        "server",
        "state",
        "transport",
    )

    def __init__(self, server: str, transport: str = "") -> None:
        self.server = server
        self.transport = transport
        self.handshake = Handshake()
        self.state: ConnectionState = "connecting"
        self.connects = 0
        self.reconnects = 0
        self.retries = 0
        self.attempts = 0  # failed attempts since the connection was lost
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def connected(self, handshake: Handshake | None = None) -> None:
        """The handshake is done; a reconnection is counted and logged at INFO."""
        if handshake is not None:
            self.handshake = handshake
        if self.connects:
            self.reconnects += 1
            log.info(
                "reconnected to MCP server %r (reconnection %d, after %d failed attempts)",
                self.server,
                self.reconnects,
                self.attempts,
            )
        self.connects += 1
        self.attempts = 0
        self.state = "ready"

    def disconnected(self) -> None:
        """The connection ended (its reason, if it was lost, follows through `lost`)."""
        if self.state == "ready":
            self.state = "reconnecting"

    def lost(self, reason: str) -> None:
        """The connection broke: one WARNING line with the reason."""
        self._error(reason)
        self.state = "reconnecting"
        log.warning("MCP server %r: connection lost (%s); reconnecting", self.server, reason)

    def failed(self, reason: str) -> None:
        """An attempt to reconnect failed (logged at DEBUG: the loss was logged already)."""
        self._error(reason)
        self.attempts += 1
        self.state = "failed"
        log.debug("MCP server %r: reconnecting failed (%s)", self.server, reason)

    def retried(self) -> None:
        """A call that was not delivered is sent again (once)."""
        self.retries += 1

    def _error(self, reason: str) -> None:
        self.last_error = reason
        self.last_error_at = time.time()


_STATUSES: weakref.WeakKeyDictionary[ToolRegistry, dict[str, ConnectionStatus]] = (
    weakref.WeakKeyDictionary()
)


def statuses_for(registry: ToolRegistry) -> dict[str, ConnectionStatus]:
    """The connection statuses of the client whose tool registry is ``registry``, by server.

    `mcp_child_spec` adds each server's status here; an entry outlives its server (the
    client lists only the servers that run).
    """
    statuses = _STATUSES.get(registry)
    if statuses is None:
        statuses = _STATUSES[registry] = {}
    return statuses


@final
class Ending:
    """The end of one incarnation's connection: recorded once, then the incarnation stops."""

    __slots__ = ("_status", "_stop", "ended")

    def __init__(self, status: ConnectionStatus, stop: Callable[[], None]) -> None:
        self._status = status
        self._stop = stop
        self.ended = False

    def __call__(self, reason: str, *, connected: bool) -> None:
        """Record why (a lost connection, or a failed attempt) and stop normally."""
        if self.ended:
            return
        self.ended = True
        if connected:
            self._status.lost(reason)
        else:
            self._status.failed(reason)
        self._stop()


@final
class _Started:
    """A task status that tells its owner when the connection reported started."""

    __slots__ = ("_started",)

    def __init__(self, started: Callable[[None], None]) -> None:
        self._started = started

    def started(self, value: None = None) -> None:
        self._started(value)


async def serve_routinely(
    serve: Callable[..., Awaitable[object]],
    status: ConnectionStatus,
    end: Ending,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a connection (``serve``); once it ever connected, losing it is routine.

    The first connection's failure fails the start (as for any child). Later, a lost
    connection or a failed attempt to reconnect goes to ``end`` (logged by the status, and
    the incarnation stops normally): the supervisor starts the next one after its backoff,
    without an error report, and calls wait in the mailbox meanwhile.
    """
    up = False

    def started(value: None = None) -> None:
        nonlocal up
        up = True
        task_status.started(value)

    try:
        await serve(task_status=_Started(started))
    except ToolExecutionFailed as exc:
        if not status.connects:
            raise
        end(str(exc), connected=up)
        if not up:
            task_status.started()
