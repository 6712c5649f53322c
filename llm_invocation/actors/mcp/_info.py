"""The status of the MCP servers as the client reports it (`server_info`)."""

from __future__ import annotations

from typing import Final

import trio

from ...errors import ConfigurationError
from ...runtime import Runtime
from ...tools._core import ToolRegistry
from ._manager import MCPConnection, MCPServerInfo, ServerInfo
from ._status import ConnectionStatus, statuses_for

__all__ = ["server_info", "servers_info"]

# How long a connected server's actor may take to answer for its statistics (seconds).
_ASK_TIMEOUT: Final = 5.0


def _snapshot(status: ConnectionStatus) -> MCPServerInfo:
    """What is known without the connection: its state, errors and last handshake."""
    handshake = status.handshake
    return MCPServerInfo(
        server=status.server,
        transport=status.transport,
        name=handshake.name,
        version=handshake.version,
        protocol_version=handshake.protocol_version,
        tools=0,
        connected_since=handshake.connected_since,
        calls=0,
        errors=0,
        timeouts=0,
        instructions=handshake.instructions,
        state=status.state,
        reconnects=status.reconnects,
        retries=status.retries,
        last_error=status.last_error,
        last_error_at=status.last_error_at,
        capabilities=handshake.capabilities,
    )


async def server_info(runtime: Runtime, registry: ToolRegistry, name: str) -> MCPServerInfo:
    """The status of MCP server ``name`` (see `MCPServerInfo`).

    A ready server's actor answers with this connection's counters too; a server that is
    connecting or reconnecting is reported at once from its status (counters 0, the last
    handshake's details).

    Raises:
        ConfigurationError: no server of that name is registered
            (``details["reason"] == "unknown_mcp_server"``).
    """
    status = statuses_for(registry).get(name)
    if status is None or f"mcp.{name}" not in runtime.names():
        raise ConfigurationError(
            f"no MCP server named {name!r} is registered",
            details={"server": name, "reason": "unknown_mcp_server"},
        )
    if status.state == "ready":
        with trio.move_on_after(_ASK_TIMEOUT):
            return await runtime.ref(f"mcp.{name}", MCPConnection).call(ServerInfo())
    return _snapshot(status)


async def servers_info(runtime: Runtime, registry: ToolRegistry) -> dict[str, MCPServerInfo]:
    """The status of every registered MCP server, by name (see `server_info`)."""
    running = set(runtime.names())
    names = sorted(name for name in statuses_for(registry) if f"mcp.{name}" in running)
    return {name: await server_info(runtime, registry, name) for name in names}
