"""The messages of an MCP connection actor (`MCPConnection`)."""

from __future__ import annotations

from typing import Any

import msgspec

from ...runtime import Call
from ...tools._core import ToolResult
from ._handle import FeatureMsg
from ._status import ConnectionState

__all__ = ["CallTool", "ListServerTools", "MCPMsg", "MCPServerInfo", "ServerInfo"]


class CallTool(Call[ToolResult], frozen=True, kw_only=True):
    """Call one of the server's tools; answered with its `ToolResult`.

    Attributes:
        name: the tool's registered (local) name; it labels the result.
        arguments: the JSON-able arguments object.
        call_id: the id of the model's tool call, copied into the result.
        remote_name: the tool's name on the server; looked up from ``name`` when omitted.
        retry: this is the one retry of a call that was not delivered (it is counted).
        timeout: seconds this call may take (default: the server's ``timeout``).
        on_progress: a `ProgressCallback` hearing this call's progress (with the server's).
    """

    name: str
    arguments: dict[str, Any]
    call_id: str = ""
    remote_name: str | None = None
    retry: bool = False
    timeout: float | None = None
    on_progress: Any = None


class ListServerTools(Call[list[str]], frozen=True, kw_only=True):
    """The registered names of the server's tools, sorted."""


class MCPServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What `ServerInfo` answers: the server, its connection and this connection's calls.

    Attributes:
        server: the configured name.
        transport: ``"stdio"``, ``"http"``, ``"sse"`` or ``"memory"`` (in-process).
        name, version: as the server reported them in its handshake.
        protocol_version: the MCP protocol version negotiated.
        tools: how many tools are registered.
        connected_since: when this connection was made (Unix time, seconds).
        calls, errors, timeouts: calls made over this connection, those that failed or
            returned an error, and those that timed out.
        instructions: the server's usage instructions, if any.
        state: ``"connecting"``, ``"ready"``, ``"reconnecting"`` or ``"failed"`` (the last
            attempt to reconnect failed; the next waits for its backoff).
        reconnects: how often the connection was made again after it was lost.
        retries: calls sent a second time because the first certainly was not delivered.
        last_error: why the connection was last lost or failed (None: never).
        last_error_at: when (Unix time, seconds).
        capabilities: the capabilities the server declared in its handshake.
    """

    server: str
    transport: str
    name: str
    version: str
    protocol_version: str
    tools: int
    connected_since: float
    calls: int
    errors: int
    timeouts: int
    instructions: str | None = None
    state: ConnectionState = "ready"
    reconnects: int = 0
    retries: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    capabilities: dict[str, Any] = {}


class ServerInfo(Call[MCPServerInfo], frozen=True, kw_only=True):
    """Statistics of the connection (see `MCPServerInfo`)."""


MCPMsg = CallTool | ListServerTools | ServerInfo | FeatureMsg
