"""The client's MCP methods: registering servers, their status, resources and prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..errors import ConfigurationError
from ..runtime import Runtime, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from ..actors.mcp import MCPServerHandle, MCPServerInfo, MCPServerLike
    from ..actors.mcp._auth import MCPAuth
    from ..actors.mcp._host import ElicitationCallback, MCPRoot, MCPSampling, ProgressCallback
    from ..config import Config
    from ..invocation import Invoker
    from ..types import Message

__all__ = ["MCPMethods"]

MCP: Final = "mcp"  # the supervisor of the MCP connections


class MCPMethods:
    """`Client`'s MCP methods (a mixin: the client provides the attributes below)."""

    _runtime: Runtime
    _config: Config
    _invoker: Invoker
    _released_mcp: set[str]
    """Configured MCP servers unregistered at run time: their names may be registered."""

    async def register_mcp_server(
        self,
        name: str,
        server: MCPServerLike,
        *,
        timeout: float | None = None,
        auth: MCPAuth | None = None,
        on_progress: ProgressCallback | None = None,
        sampling: MCPSampling | None = None,
        elicitation: ElicitationCallback | None = None,
        roots: Sequence[str | Path | MCPRoot] | None = None,
    ) -> list[str]:
        """Connect an MCP server and offer its tools (named ``<name>__<tool>``).

        ``server`` is anything `llm_invocation.mcp_server` reads: an `MCPServerConfig` or a
        mapping of its fields, a URL (a bare ``host:port`` is ``http://host:port/mcp``), a
        command list for stdio, or an ``mcp`` SDK server object, served in this process over
        in-memory streams (no subprocess). Every form is supervised alike: it reconnects with
        backoff when it drops, its tools follow the server's ``tools/list_changed``
        notifications and are offered exactly like those of configured servers.

        Args:
            timeout: seconds one request to the server may take (default: the
                configuration's, else 30).
            auth: for an HTTP server: an ``httpx2.Auth`` (such as the SDK's OAuth provider)
                or a function (plain or async) returning headers, called per connection.
            on_progress: hears the progress of every call of the server's tools
                (`MCPProgress`; see `MCPServerHandle.on_progress`).
            sampling: lets the server ask this client's models for completions, through
                the governed path, tagged ``mcp_server=<name>`` (`MCPSampling`); off when
                None (and when the configuration's ``sampling`` is unset).
            elicitation: answers the server's forms (`MCPServerHandle.on_elicitation`);
                without it they are declined.
            roots: the roots this server is told, instead of the client's
                (`set_mcp_roots`): paths or ``file://`` URIs.

        Returns:
            The local names of the server's tools.

        Raises:
            ConfigurationError: ``server`` is not an MCP server in any of these forms, the
                name is empty or contains ``/``, or a server of that name is registered or
                configured already (``details["reason"] == "duplicate_mcp_server"``), or a
                root is not a path or a ``file://`` URI.
            ToolExecutionFailed: the server could not be reached now.
        """
        from ..actors.mcp import ListServerTools, MCPConnection, mcp_child_spec, mcp_server

        spec = mcp_server(server, timeout=timeout)
        if not name or "/" in name:
            raise ConfigurationError(
                f"an MCP server's name must be non-empty and without '/', got {name!r}",
                details={"server": name, "reason": "invalid_mcp_server"},
            )
        configured = self._config.mcp.servers.get(name)
        if configured is not None and configured.enabled and name not in self._released_mcp:
            raise _duplicate_server(name)
        from ..actors.mcp._host import host_for, mcp_roots

        own_roots = mcp_roots(roots) if roots is not None else None
        try:
            self._runtime.ref(f"mcp.{name}", MCPConnection)
        except UsageError:
            host_for(self._invoker.tools).configure(
                name,
                sampling=sampling,
                elicitation=elicitation,
                roots=own_roots,
                on_progress=on_progress,
            )
        else:
            raise _duplicate_server(name)
        try:
            child = mcp_child_spec(name, spec, self._invoker.tools, auth=auth)
            await self._runtime.start_child(child, supervisor=MCP)
        except UsageError as exc:  # the runtime's only complaint here: the name is taken
            raise _duplicate_server(name) from exc
        ref = self._runtime.ref(f"mcp.{name}", MCPConnection)
        return await ref.call(ListServerTools())

    async def unregister_mcp_server(self, name: str) -> None:
        """Disconnect an MCP server and drop its tools.

        A stdio server's process is stopped; an in-process server's task ends.

        Raises:
            ConfigurationError: no server of that name is connected
                (``details["reason"] == "unknown_mcp_server"``).
        """
        try:
            await self._runtime.terminate_child(f"mcp.{name}", supervisor=MCP)
        except UsageError as exc:
            raise ConfigurationError(
                f"no MCP server named {name!r} is connected",
                details={"server": name, "reason": "unknown_mcp_server"},
            ) from exc
        self._released_mcp.add(name)

    def mcp(self, name: str) -> MCPServerHandle:
        """The MCP server ``name``'s resources, prompts and completions (see `MCPServerHandle`).

        Raises:
            ConfigurationError: no server of that name is connected
                (``details["reason"] == "unknown_mcp_server"``).
        """
        from ..actors.mcp import MIN_CONNECT_TIMEOUT, MCPConnection, MCPServerHandle
        from ..actors.mcp._handle import listeners_for
        from ..actors.mcp._host import host_for

        try:
            ref = self._runtime.ref(f"mcp.{name}", MCPConnection)
        except UsageError as exc:
            raise ConfigurationError(
                f"no MCP server named {name!r} is connected",
                details={"server": name, "reason": "unknown_mcp_server"},
            ) from exc
        configured = self._config.mcp.servers.get(name)
        timeout = max(configured.timeout if configured else 0.0, MIN_CONNECT_TIMEOUT)
        tools = self._invoker.tools
        return MCPServerHandle(
            name, ref, listeners_for(tools), timeout=timeout, host=host_for(tools)
        )

    async def set_mcp_roots(
        self, roots: Sequence[str | Path | MCPRoot], *, server: str | None = None
    ) -> None:
        """Tell MCP servers which directories they may work in (``roots/list``).

        ``roots`` are ``file://`` URIs, paths (made absolute) or `MCPRoot` (with a name).
        Without ``server`` they are the client's roots, told to every server that has none
        of its own; with it, that server's own. The servers concerned that are connected
        are sent ``notifications/roots/list_changed`` (one that cannot be told is logged; it
        reads them again when it reconnects).

        Raises:
            ConfigurationError: a root is not a path or a ``file://`` URI.
        """
        from ..actors.mcp._host import host_for, mcp_roots

        found = mcp_roots(roots)
        host = host_for(self._invoker.tools)
        if server is None:
            host.roots = found
            await host.roots_changed([s for s in host.connected() if s not in host.server_roots])
        else:
            host.server_roots[server] = found
            await host.roots_changed([server])

    async def mcp_resource_message(self, server: str, uri: str) -> Message:
        """The resource ``uri`` of MCP server ``server`` as a ``user`` message, for a request.

        Shorthand for ``await client.mcp(server).resource_message(uri)``.

        Raises:
            ConfigurationError: no such server is connected.
            ToolExecutionFailed: the resource could not be read, or is binary data that is
                not an image (``details["reason"] == "unsupported_content"``).
        """
        return await self.mcp(server).resource_message(uri)

    async def mcp_server_info(self, name: str) -> MCPServerInfo:
        """The status of MCP server ``name``: who it is, its state, errors and counters.

        ``state`` is ``connecting``, ``ready``, ``reconnecting`` or ``failed`` (see
        `MCPServerInfo`); a server that is not ready answers at once from what is known.

        Raises:
            ConfigurationError: no server of that name is registered
                (``details["reason"] == "unknown_mcp_server"``).
        """
        from ..actors.mcp._info import server_info

        return await server_info(self._runtime, self._invoker.tools, name)

    async def mcp_status(self) -> dict[str, MCPServerInfo]:
        """The status of every registered MCP server, by name (see `mcp_server_info`)."""
        from ..actors.mcp._info import servers_info

        return await servers_info(self._runtime, self._invoker.tools)


def _duplicate_server(name: str) -> ConfigurationError:
    return ConfigurationError(
        f"an MCP server named {name!r} is registered or configured already",
        details={"server": name, "reason": "duplicate_mcp_server"},
    )
