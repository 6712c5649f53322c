"""What this client offers MCP servers as their host: progress, logs, roots, sampling, forms.

The public types here carry no ``mcp`` import: `MCPProgress` (a tool call's progress),
`MCPRoot` (a directory a server may work in), `MCPSampling` and `MCPSamplingRequest`
(servers asking this client's models for a completion), `MCPElicitation` and
`MCPElicitationAnswer` (servers asking the user to fill in a form).

`MCPHost` holds what one client's connections consult when a server asks something: the
roots, the progress callbacks, the sampling settings and the form callbacks, by server name.
It is found by the client's tool registry (`host_for`), as `MCPListeners` are, so neither the
supervision tree nor a connection's specification carries callables. The SDK-facing side
(turning these into the session's callbacks) is ``_bridge``.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final
from urllib.parse import unquote, urlsplit

import msgspec
import trio

from ...errors import ConfigurationError
from ...tools._core import ToolRegistry
from ...types import Request, Response

if TYPE_CHECKING:
    from ...config import MCPRootConfig
    from ._session import Session

__all__ = [
    "LOG_LEVELS",
    "ElicitationCallback",
    "MCPElicitation",
    "MCPElicitationAnswer",
    "MCPHost",
    "MCPLogLevel",
    "MCPProgress",
    "MCPRoot",
    "MCPSampling",
    "MCPSamplingRefused",
    "MCPSamplingRequest",
    "ProgressCallback",
    "Sampler",
    "SamplingPolicy",
    "call_maybe_async",
    "host_for",
    "mcp_root",
    "mcp_roots",
    "roots_from_config",
]

log = logging.getLogger("llm_invocation.mcp")

MCPLogLevel: TypeAlias = Literal[
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"
]
"""The severity of a server's log message (syslog's, as MCP names them)."""

LOG_LEVELS: Final[tuple[MCPLogLevel, ...]] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)

# How long roots/list_changed may take to be sent to one server (seconds).
_NOTIFY_TIMEOUT: Final = 5.0


# -- progress -----------------------------------------------------------------------------------


@final
class MCPProgress(msgspec.Struct, frozen=True, kw_only=True):
    """One ``notifications/progress`` of a tool call.

    Attributes:
        server: the server's configured name.
        tool: the tool's name on the server.
        progress: how far the call is (it grows with every event of a call).
        total: the total it counts up to, when the server knows it.
        message: what the server says it is doing, if anything.
    """

    server: str
    tool: str
    progress: float
    total: float | None = None
    message: str | None = None


ProgressCallback: TypeAlias = Callable[[MCPProgress], Awaitable[None] | None]
"""Hears the progress of tool calls: a function or an async function, called in order."""


# -- roots --------------------------------------------------------------------------------------


@final
class MCPRoot(msgspec.Struct, frozen=True, kw_only=True):
    """A directory (or file) a server may work in, as a ``file://`` URI.

    Attributes:
        uri: the ``file://`` URI.
        name: a human-readable name, if any.
    """

    uri: str
    name: str | None = None


def mcp_root(root: str | Path | MCPRoot, *, name: str | None = None) -> MCPRoot:
    """Read ``root``: a ``file://`` URI, a path (made absolute, then a URI) or an `MCPRoot`.

    Raises:
        ConfigurationError: ``root`` is empty, or a URI of another scheme (an `MCPRoot`'s
            URI is checked too).
    """
    if isinstance(root, MCPRoot):
        return mcp_root(root.uri, name=root.name if name is None else name)
    text = str(root).strip()
    if not text:
        raise ConfigurationError(
            "an MCP root must not be empty", details={"reason": "invalid_root"}
        )
    if "://" in text:
        if urlsplit(text).scheme != "file" or not unquote(urlsplit(text).path):
            raise ConfigurationError(
                f"an MCP root is a file:// URI or a path, not {text!r}",
                details={"reason": "invalid_root"},
            )
        return MCPRoot(uri=text, name=name)
    return MCPRoot(uri=Path(text).expanduser().absolute().as_uri(), name=name)


def mcp_roots(roots: Sequence[str | Path | MCPRoot]) -> list[MCPRoot]:
    """`mcp_root` of each of ``roots``, in order.

    Raises:
        ConfigurationError: one of them is not a root (see `mcp_root`).
    """
    if isinstance(roots, str):  # a single path is not a list of its characters
        raise ConfigurationError(
            "MCP roots are a list of paths or file:// URIs, not one string",
            details={"reason": "invalid_root"},
        )
    return [mcp_root(root) for root in roots]


def roots_from_config(entries: Sequence[MCPRootConfig]) -> list[MCPRoot]:
    """The roots of a configuration's ``roots`` (``{uri, name}`` tables).

    Raises:
        ConfigurationError: an entry is not a root.
    """
    return [mcp_root(entry.uri, name=entry.name) for entry in entries]


# -- sampling -----------------------------------------------------------------------------------


class MCPSamplingRefused(Exception):
    """Raised by a sampling policy to refuse a server's request; its message goes to the
    server as the reason."""


@final
class MCPSamplingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A server's ``sampling/createMessage``, as the sampling policy sees it.

    Attributes:
        server: the server's configured name.
        request: the `Request` to be sent (converted; ``max_tokens`` already capped,
            ``metadata`` tagged ``{"mcp_server": server}``).
        max_tokens: the tokens the server asked for (before the cap).
        model_hints: the server's model name hints, in its order of preference.
        cost_priority, speed_priority, intelligence_priority: the server's priorities
            (0 to 1), when it gave them.
        include_context: the context the server asked to include (not included by this
            client).
    """

    server: str
    request: Request
    max_tokens: int
    model_hints: list[str] = []
    cost_priority: float | None = None
    speed_priority: float | None = None
    intelligence_priority: float | None = None
    include_context: str | None = None


SamplingPolicy: TypeAlias = Callable[
    [MCPSamplingRequest], Request | Awaitable[Request | None] | None
]
"""Approves a sampling request (returns the `Request`, possibly edited) or refuses it
(returns None, or raises `MCPSamplingRefused`); a function or an async function."""

Sampler: TypeAlias = Callable[[Request], Awaitable[Response]]
"""Answers an approved sampling request: the client's governed invocation path."""


@final
class MCPSampling(msgspec.Struct, frozen=True, kw_only=True):
    """Lets a server ask this client's models for completions (``sampling/createMessage``).

    Every request goes through the client's governed path (rate limits, budgets, the
    ledger), tagged ``metadata={"mcp_server": <name>}``: a budget of scope
    ``tag:mcp_server=<name>`` limits what one server may spend.

    Attributes:
        model: the model that answers (default: the client's default model); the server's
            model hints are only advice, shown to the policy.
        provider: its provider (default: as the model resolves).
        max_tokens: the most tokens one answer may have: the server's ``maxTokens`` is
            capped to it.
        policy: sees every request and approves it (returning the `Request`, possibly
            edited) or refuses it (None, or `MCPSamplingRefused`); none: every request is
            approved.
    """

    model: str | None = None
    provider: str | None = None
    max_tokens: int = 1024
    policy: SamplingPolicy | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ConfigurationError(
                f"MCPSampling.max_tokens must be at least 1, got {self.max_tokens!r}",
                details={"reason": "invalid_mcp_sampling"},
            )


# -- elicitation --------------------------------------------------------------------------------


@final
class MCPElicitation(msgspec.Struct, frozen=True, kw_only=True):
    """A server's request for information from the user (``elicitation/create``, form mode).

    Attributes:
        server: the server's configured name.
        message: what the server asks, for the user.
        schema: the JSON schema of the answer: an object of flat properties (strings,
            numbers, integers, booleans, enums and lists of enum strings).
    """

    server: str
    message: str
    schema: dict[str, Any]


@final
class MCPElicitationAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The user's answer to an `MCPElicitation`.

    Attributes:
        action: ``"accept"`` (with ``content``), ``"decline"`` (the user said no) or
            ``"cancel"`` (the user dismissed it).
        content: the answer, matching the requested schema (accept only). An answer that
            does not match is sent as a decline (and logged).
    """

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None

    @classmethod
    def accept(cls, content: dict[str, Any]) -> MCPElicitationAnswer:
        return cls(action="accept", content=content)

    @classmethod
    def decline(cls) -> MCPElicitationAnswer:
        return cls(action="decline")

    @classmethod
    def cancel(cls) -> MCPElicitationAnswer:
        return cls(action="cancel")


ElicitationCallback: TypeAlias = Callable[
    [MCPElicitation], MCPElicitationAnswer | Awaitable[MCPElicitationAnswer]
]
"""Answers a server's form: a function or an async function."""


# -- the per-client host ------------------------------------------------------------------------


@final
class MCPHost:
    """What one client's MCP connections consult when a server asks: see the module."""

    __slots__ = (
        "__weakref__",
        "_progress",
        "_sessions",
        "default_model",
        "elicitation",
        "log_levels",
        "policies",
        "roots",
        "sampler",
        "sampling",
        "server_roots",
    )

    def __init__(self) -> None:
        self.roots: list[MCPRoot] = []
        self.server_roots: dict[str, list[MCPRoot]] = {}
        self.sampler: Sampler | None = None
        self.default_model: str | None = None
        self.policies: dict[str, SamplingPolicy] = {}
        self.sampling: dict[str, MCPSampling] = {}
        self.elicitation: dict[str, ElicitationCallback] = {}
        self.log_levels: dict[str, MCPLogLevel] = {}
        self._progress: list[tuple[str, ProgressCallback]] = []
        self._sessions: dict[str, Session] = {}

    def configure(
        self,
        server: str,
        *,
        sampling: MCPSampling | None,
        elicitation: ElicitationCallback | None,
        roots: list[MCPRoot] | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        """Set ``server``'s options as registered (replacing those of an earlier one)."""
        self._set(self.sampling, server, sampling)
        self._set(self.elicitation, server, elicitation)
        self._set(self.server_roots, server, roots)
        self.log_levels.pop(server, None)
        self.policies.pop(server, None)
        self._progress = [entry for entry in self._progress if entry[0] != server]
        if on_progress is not None:
            self.add_progress(server, on_progress)

    @staticmethod
    def _set(table: dict[str, Any], server: str, value: object) -> None:
        if value is None:
            table.pop(server, None)
        else:
            table[server] = value

    def roots_of(self, server: str, configured: list[MCPRoot] | None = None) -> list[MCPRoot]:
        """The roots ``server`` is told: its own (set, else ``configured``), else the client's."""
        own = self.server_roots.get(server, configured)
        return list(own if own is not None else self.roots)

    # -- progress

    def add_progress(self, server: str, callback: ProgressCallback) -> Callable[[], None]:
        """Call ``callback`` with the progress of ``server``'s tool calls.

        Returns:
            A function that removes it.
        """
        entry = (server, callback)
        self._progress.append(entry)

        def remove() -> None:
            if entry in self._progress:
                self._progress.remove(entry)

        return remove

    def progress_callbacks(
        self, server: str, extra: ProgressCallback | None
    ) -> list[ProgressCallback]:
        found = [callback for name, callback in self._progress if name == server]
        return [*found, extra] if extra is not None else found

    # -- connected sessions (told when the roots change)

    def attach(self, session: Session) -> None:
        self._sessions[session.server] = session

    def connected(self) -> list[str]:
        """The servers connected now."""
        return sorted(self._sessions)

    def detach(self, session: Session) -> None:
        if self._sessions.get(session.server) is session:
            del self._sessions[session.server]

    async def roots_changed(self, servers: Sequence[str] | None = None) -> None:
        """Send ``notifications/roots/list_changed`` to the connected ``servers`` (all).

        A server that cannot be told is logged; it reads the roots again when it reconnects.
        """
        targets = [
            session
            for name, session in list(self._sessions.items())
            if servers is None or name in servers
        ]
        if not targets:
            return
        from ._bridge import send_roots_changed

        async with trio.open_nursery() as nursery:
            for session in targets:
                nursery.start_soon(send_roots_changed, session, _NOTIFY_TIMEOUT)


_HOSTS: weakref.WeakKeyDictionary[ToolRegistry, MCPHost] = weakref.WeakKeyDictionary()


def host_for(registry: ToolRegistry) -> MCPHost:
    """The host of the client whose tool registry is ``registry`` (made on first use)."""
    host = _HOSTS.get(registry)
    if host is None:
        host = _HOSTS[registry] = MCPHost()
    return host


async def call_maybe_async(callback: Callable[[Any], Any], argument: object) -> Any:
    """``callback(argument)``, awaited when it returns an awaitable; exceptions propagate."""
    result = callback(argument)
    if inspect.isawaitable(result):
        result = await result
    return result
