"""What an MCP server can be given as: a configuration, a URL, a command or an SDK object.

`mcp_server` reads each of these forms into what a connection actor serves: an
`MCPServerConfig` (stdio, streamable HTTP, legacy SSE) or an `InProcessMCPServer`, an
``mcp`` SDK server object that runs in this process, connected over in-memory streams::

    mcp_server("localhost:8080")                 # streamable HTTP: http://localhost:8080/mcp
    mcp_server("https://tools.example/mcp")      # streamable HTTP, the URL as given
    mcp_server(["uvx", "mcp-server-fetch"])      # stdio: the command and its arguments
    mcp_server(server)                           # an mcp.server.mcpserver.MCPServer (or Server)

Nothing here imports the ``mcp`` SDK: an object is recognised as an SDK server only when the
SDK's modules are loaded already (which they are, once such an object exists).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from math import inf
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias, cast, final

from ...config import MCPServerConfig
from ...errors import ConfigurationError

if TYPE_CHECKING:
    from mcp.server.lowlevel.server import Server
    from mcp.server.mcpserver import MCPServer

    SDKServer: TypeAlias = Server[Any] | MCPServer[Any]
else:  # the SDK is imported lazily; the alias only matters to type checkers
    SDKServer = object

__all__ = [
    "DEFAULT_MCP_PATH",
    "InProcessMCPServer",
    "MCPServerLike",
    "SDKServer",
    "ServerSpec",
    "mcp_server",
    "server_url",
]

# The path the SDK's streamable HTTP servers listen on unless told otherwise; a bare
# ``host:port`` is read as a streamable HTTP server there.
DEFAULT_MCP_PATH: Final = "/mcp"
# How long one request to an in-process server may take (seconds), as for configured ones.
_DEFAULT_TIMEOUT: Final = 30.0
# The SDK's server classes, by module: (module, class name).
_SDK_SERVERS: Final = (
    ("mcp.server.mcpserver.server", "MCPServer"),
    ("mcp.server.lowlevel.server", "Server"),
)


@final
class InProcessMCPServer:
    """An ``mcp`` SDK server object served in this process, over in-memory streams.

    The connection is supervised like any other (restarted with backoff when the server's
    task fails, tools refreshed on ``tools/list_changed``, calls cancelled at the server with
    ``notifications/cancelled``) but starts no process and opens no socket. The server runs
    in the connection actor's task tree: unregistering the server or closing the client ends
    it. Tools of an SDK ``MCPServer`` that are plain functions run in worker threads;
    ``async`` ones run on the event loop, so they must not block.

    Attributes:
        server: the SDK server: an ``mcp.server.mcpserver.MCPServer`` or a low-level
            ``mcp.server.Server``.
        timeout: seconds one request to the server may take (the handshake at least 30).
        transport: always ``"memory"``.
        enabled: always True (present to read like an `MCPServerConfig`).
    """

    __slots__ = ("server", "timeout")

    transport: ClassVar[Literal["memory"]] = "memory"
    enabled: ClassVar[bool] = True

    def __init__(self, server: SDKServer, *, timeout: float = _DEFAULT_TIMEOUT) -> None:
        """Wrap ``server``.

        Raises:
            ConfigurationError: ``server`` is not an SDK server object, or ``timeout`` is not
                a positive number of seconds.
        """
        if not _is_sdk_server(server):
            raise ConfigurationError(
                f"expected an mcp SDK server (MCPServer or Server), got {type(server).__name__}",
                details={"reason": "invalid_mcp_server"},
            )
        if not _positive_seconds(timeout):
            raise ConfigurationError(
                f"the timeout of an in-process MCP server must be a positive number of "
                f"seconds, got {timeout!r}",
                details={"reason": "invalid_mcp_server"},
            )
        self.server = server
        self.timeout = float(timeout)

    @property
    def name(self) -> str:
        """The name the SDK server was given."""
        name = getattr(self.server, "name", "")
        return name if isinstance(name, str) else ""

    def __repr__(self) -> str:
        return f"<InProcessMCPServer {self.name!r} timeout={self.timeout:g}>"


ServerSpec: TypeAlias = MCPServerConfig | InProcessMCPServer
"""What one MCP connection actor serves."""

MCPServerLike: TypeAlias = (
    MCPServerConfig | InProcessMCPServer | Mapping[str, Any] | str | Sequence[str] | SDKServer
)
"""Every form `mcp_server` reads (see there)."""


def _positive_seconds(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < inf


def _is_sdk_server(value: object) -> bool:
    for module_name, class_name in _SDK_SERVERS:
        module = sys.modules.get(module_name)
        cls: object = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(value, cls):
            return True
    return False


def server_url(address: str) -> str:
    """The streamable HTTP URL of ``address``.

    A URL with a scheme is kept as given. A bare ``host[:port][/path]`` (the form
    ``localhost:8080`` of the specification) is read as plain ``http://``, and without a
    path the SDK's default path is added: ``localhost:8080`` is
    ``http://localhost:8080/mcp``. Use an ``https://`` URL for a server elsewhere.

    Raises:
        ConfigurationError: ``address`` is empty or not an http(s) URL once read.
    """
    text = address.strip()
    if not text:
        raise ConfigurationError(
            "an MCP server address must not be empty", details={"reason": "invalid_mcp_server"}
        )
    if "://" in text:
        return text
    host, slash, path = text.partition("/")
    return f"http://{host}/{path}" if slash else f"http://{host}{DEFAULT_MCP_PATH}"


def mcp_server(server: MCPServerLike, *, timeout: float | None = None) -> ServerSpec:
    """Read ``server`` as an MCP server to register (the specification's ``NewMCPServer``).

    Args:
        server: one of
            - an `MCPServerConfig`, or a mapping of its fields (``{"transport": "stdio",
              "command": ...}``), used as it is;
            - a string: a streamable HTTP server's URL, or a bare ``host:port`` read as
              ``http://host:port/mcp`` (see `server_url`);
            - a sequence of strings: a command and its arguments, run over stdio;
            - an ``mcp`` SDK server object (``mcp.server.mcpserver.MCPServer`` or the
              low-level ``mcp.server.Server``): served in this process, over in-memory
              streams, with no subprocess (`InProcessMCPServer`);
            - an `InProcessMCPServer`, used as it is.
        timeout: seconds one request to the server may take (default 30); with a
            configuration or a mapping that sets its own, this one wins.

    Raises:
        ConfigurationError: ``server`` is none of these, or its values are invalid.
    """
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    match server:
        case MCPServerConfig():
            if not extra:
                return server
            return _config({**_fields(server), **extra})
        case InProcessMCPServer():
            if timeout is None:
                return server
            return InProcessMCPServer(server.server, timeout=timeout)
        case str():
            return _config({"transport": "http", "url": server_url(server), **extra})
        case Mapping():
            data: Mapping[Any, Any] = server
            return _config({**{str(key): value for key, value in data.items()}, **extra})
        case Sequence() if not isinstance(server, bytes | bytearray):
            parts: list[object] = list(server)
            command = [part for part in parts if isinstance(part, str)]
            if not command or len(command) != len(parts):
                raise ConfigurationError(
                    "a stdio MCP server is a non-empty list of strings: the command and "
                    "its arguments",
                    details={"reason": "invalid_mcp_server"},
                )
            return _config(
                {"transport": "stdio", "command": command[0], "args": command[1:], **extra}
            )
        case _ if _is_sdk_server(server):
            chosen = _DEFAULT_TIMEOUT if timeout is None else timeout
            return InProcessMCPServer(cast("SDKServer", server), timeout=chosen)
        case _:
            raise ConfigurationError(
                "an MCP server is an MCPServerConfig, a mapping of its fields, a URL, a "
                f"command list or an mcp SDK server object, not {type(server).__name__}",
                details={"reason": "invalid_mcp_server"},
            )


def _fields(config: MCPServerConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__struct_fields__}


def _config(data: Mapping[str, Any]) -> MCPServerConfig:
    """An `MCPServerConfig` from keywords (it validates itself: `ConfigurationError`)."""
    return MCPServerConfig(**data)
