"""One MCP server's resources, prompts, completions, log level and direct tool calls.

`MCPServerHandle` (``client.mcp(name)``) sends requests to the server's connection actor,
which answers them over its current session; `MCPListeners` holds the callbacks that hear
the server's notifications, and the resources subscribed to (subscribed again after a
reconnect). The listeners of one client are found by its tool registry (`listeners_for`),
so neither the supervision tree nor the connection's specification carries them.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

import trio

from ...errors import InvalidRequest, ToolExecutionFailed
from ...runtime import ActorCrashed, ActorDead, ActorRef, Call
from ...tools._core import ToolRegistry, ToolResult
from ...types import Message, Part, ResourcePart
from ._content import resource_message_part
from ._host import (
    LOG_LEVELS,
    ElicitationCallback,
    MCPHost,
    MCPLogLevel,
    ProgressCallback,
    SamplingPolicy,
)
from ._models import (
    MCPCompletion,
    MCPEvent,
    MCPPrompt,
    MCPPromptResult,
    MCPResource,
    MCPResourceTemplate,
)

if TYPE_CHECKING:
    import mcp_types

    from ._messages import CallTool
    from ._session import Session

__all__ = [
    "Complete",
    "FeatureMsg",
    "GetPrompt",
    "ListPrompts",
    "ListResourceTemplates",
    "ListResources",
    "MCPListener",
    "MCPListeners",
    "MCPServerHandle",
    "ReadResource",
    "SetLogLevel",
    "SubscribeResource",
    "UnsubscribeResource",
    "answer",
    "listeners_for",
    "notify",
    "resubscribe",
]

log = logging.getLogger("llm_invocation.mcp")

MCPListener: TypeAlias = Callable[[MCPEvent], Awaitable[None] | None]
"""A notification callback: a function, or an async function (run in its own task)."""


# -- messages (answered by the connection actor) ------------------------------------------------


class ListResources(Call[list[MCPResource]], frozen=True, kw_only=True):
    """The server's resources (``resources/list``, every page)."""


class ListResourceTemplates(Call[list[MCPResourceTemplate]], frozen=True, kw_only=True):
    """The server's resource templates (``resources/templates/list``, every page)."""


class ReadResource(Call[list[ResourcePart]], frozen=True, kw_only=True):
    """The contents of ``uri`` (``resources/read``)."""

    uri: str


class SubscribeResource(Call[None], frozen=True, kw_only=True):
    """Hear ``notifications/resources/updated`` for ``uri`` (kept across reconnects)."""

    uri: str


class UnsubscribeResource(Call[None], frozen=True, kw_only=True):
    """Stop hearing about ``uri``."""

    uri: str


class ListPrompts(Call[list[MCPPrompt]], frozen=True, kw_only=True):
    """The server's prompts (``prompts/list``, every page)."""


class GetPrompt(Call[MCPPromptResult], frozen=True, kw_only=True):
    """The prompt ``name`` filled in with ``arguments`` (``prompts/get``)."""

    name: str
    arguments: dict[str, str] | None = None


class Complete(Call[MCPCompletion], frozen=True, kw_only=True):
    """Suggestions for an argument of a prompt or a resource template (``completion/complete``).

    Attributes:
        kind: ``"prompt"`` (``ref`` is the prompt's name) or ``"resource"`` (``ref`` is a URI
            template).
        argument: the argument's name; ``value``: what was typed so far.
        context: the values of arguments already chosen.
    """

    kind: Literal["prompt", "resource"]
    ref: str
    argument: str
    value: str = ""
    context: dict[str, str] | None = None


class SetLogLevel(Call[None], frozen=True, kw_only=True):
    """Receive the server's log messages from ``level`` up (``logging/setLevel``)."""

    level: str


FeatureMsg = (
    SetLogLevel
    | ListResources
    | ListResourceTemplates
    | ReadResource
    | SubscribeResource
    | UnsubscribeResource
    | ListPrompts
    | GetPrompt
    | Complete
)


# -- listeners ----------------------------------------------------------------------------------


@final
class MCPListeners:
    """The notification callbacks and resource subscriptions of one client's MCP servers."""

    __slots__ = ("__weakref__", "_callbacks", "_subscriptions")

    def __init__(self) -> None:
        self._callbacks: list[tuple[str | None, MCPListener]] = []
        self._subscriptions: dict[str, set[str]] = {}

    def add(self, server: str | None, callback: MCPListener) -> Callable[[], None]:
        """Call ``callback`` for ``server``'s notifications (None: every server's).

        Returns:
            A function that removes the callback.
        """
        entry = (server, callback)
        self._callbacks.append(entry)

        def remove() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return remove

    def subscriptions(self, server: str) -> list[str]:
        return sorted(self._subscriptions.get(server, ()))

    def subscribed(self, server: str, uri: str, *, on: bool) -> None:
        uris = self._subscriptions.setdefault(server, set())
        if on:
            uris.add(uri)
        else:
            uris.discard(uri)

    def deliver(self, event: MCPEvent, nursery: trio.Nursery) -> None:
        """Call every callback for ``event``: functions now, async ones in ``nursery``.

        A callback that raises is logged (with its traceback) and does not stop the others.
        """
        for server, callback in list(self._callbacks):
            if server is not None and server != event.server:
                continue
            try:
                pending = callback(event)
            except Exception:
                log.exception("a notification callback of MCP server %r failed", event.server)
                continue
            if inspect.isawaitable(pending):
                nursery.start_soon(_await, pending, event.server)


async def _await(pending: Awaitable[None], server: str) -> None:
    try:
        await pending
    except Exception:
        log.exception("a notification callback of MCP server %r failed", server)


_HUBS: weakref.WeakKeyDictionary[ToolRegistry, MCPListeners] = weakref.WeakKeyDictionary()


def listeners_for(registry: ToolRegistry) -> MCPListeners:
    """The listeners of the client whose tool registry is ``registry`` (made on first use)."""
    hub = _HUBS.get(registry)
    if hub is None:
        hub = _HUBS[registry] = MCPListeners()
    return hub


# -- the actor's side ---------------------------------------------------------------------------


async def answer(
    msg: FeatureMsg,
    session: Session | None,
    listeners: MCPListeners,
    *,
    server: str,
    timeout: float,
) -> Any:
    """Answer ``msg`` over ``session`` (see `llm_invocation.actors.mcp._features.request`).

    Raises:
        ToolExecutionFailed: there is no session now, or the request failed.
    """
    import mcp_types

    from . import _features as f

    if session is None:
        raise ToolExecutionFailed(
            f"MCP server {server!r} is not connected",
            details={"server": server, "reason": "mcp_connection_failed"},
        )
    client = session.sdk

    def send(method: str, make: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        return f.request(server, method, make, timeout=timeout)

    match msg:
        case ListResources():
            return await send("resources/list", lambda: f.list_resources(client))
        case ListResourceTemplates():
            return await send("resources/templates/list", lambda: f.list_resource_templates(client))
        case ReadResource(uri=uri):
            return await send("resources/read", lambda: f.read_resource(client, uri))
        case SubscribeResource(uri=uri):
            await send("resources/subscribe", lambda: f.subscribe(client, uri))
            listeners.subscribed(server, uri, on=True)
            return None
        case UnsubscribeResource(uri=uri):
            listeners.subscribed(server, uri, on=False)
            await send("resources/unsubscribe", lambda: f.unsubscribe(client, uri))
            return None
        case ListPrompts():
            return await send("prompts/list", lambda: f.list_prompts(client))
        case GetPrompt(name=name, arguments=arguments):
            return await send("prompts/get", lambda: f.get_prompt(client, name, arguments))
        case SetLogLevel(level=level):
            if "logging" not in session.capabilities:
                raise ToolExecutionFailed(
                    f"MCP server {server!r} does not support logging",
                    details={"server": server, "reason": "not_supported"},
                )
            from ._bridge import set_log_level

            return await send("logging/setLevel", lambda: set_log_level(client, level))
        case Complete():
            ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference
            if msg.kind == "prompt":
                ref = mcp_types.PromptReference(name=msg.ref)
            else:
                ref = mcp_types.ResourceTemplateReference(uri=msg.ref)
            return await send(
                "completion/complete",
                lambda: f.complete(client, ref, msg.argument, msg.value, msg.context),
            )


def notify(
    server: str,
    message: mcp_types.ServerNotification,
    listeners: MCPListeners,
    nursery: trio.Nursery,
) -> None:
    """Deliver a resource or prompt notification to the callbacks (others are ignored)."""
    from ._features import event

    found = event(server, message)
    if found is not None:
        listeners.deliver(found, nursery)


def resubscribe(
    session: Session, listeners: MCPListeners, nursery: trio.Nursery, *, timeout: float
) -> None:
    """On a new connection, subscribe again (in ``nursery``) to what was subscribed to."""
    uris = listeners.subscriptions(session.server)
    if uris:
        nursery.start_soon(_resubscribe, session, uris, timeout)


async def _resubscribe(session: Session, uris: list[str], timeout: float) -> None:
    from . import _features as f

    for uri in uris:
        try:
            await f.request(
                session.server,
                "resources/subscribe",
                lambda uri=uri: f.subscribe(session.sdk, uri),
                timeout=timeout,
            )
        except ToolExecutionFailed as exc:
            log.warning(
                "MCP server %r: could not subscribe again to %s: %s",
                session.server,
                uri,
                exc.message,
            )


# -- the public handle --------------------------------------------------------------------------


@final
class MCPServerHandle:
    """One connected MCP server's resources, prompts and argument completion, direct tool
    calls, and what it may ask of its host: progress, logs, forms and sampling (see
    ``_host``).

    Get it with ``client.mcp(name)``. Every method sends one request through the server's
    connection actor (waiting for a reconnection in progress, up to the server's timeout)::

        server = client.mcp("docs")
        for resource in await server.list_resources():
            print(resource.uri, resource.name)
        message = await server.resource_message("docs://guide.md")
        reply = await client.chat([message, llm.user("Summarise the guide.")])

    Every method raises `ToolExecutionFailed` when the server is not running, the connection
    broke, or the server answered with an error or did not answer within its timeout
    (``details["reason"]``: ``"mcp_connection_failed"``, ``"mcp_request_failed"`` with the
    server's ``details["mcp_code"]``, ``"timeout"``, or ``"unsupported_content"`` for
    content a message cannot carry).

    Attributes:
        server: the server's configured name.
    """

    __slots__ = ("_host", "_listeners", "_ref", "_timeout", "server")

    def __init__(
        self,
        server: str,
        ref: ActorRef[Any],
        listeners: MCPListeners,
        *,
        timeout: float,
        host: MCPHost | None = None,
    ) -> None:
        self.server = server
        self._ref = ref
        self._listeners = listeners
        self._timeout = timeout
        self._host = host if host is not None else MCPHost()

    def __repr__(self) -> str:
        return f"<MCPServerHandle {self.server!r}>"

    async def _call(self, msg: FeatureMsg | CallTool, timeout: float | None = None) -> Any:
        """Ask the connection actor; a server that is not connected, or that does not answer
        within ``timeout`` (the server's) plus a second, is `ToolExecutionFailed`."""
        limit = (self._timeout if timeout is None else timeout) + 1.0
        try:
            # The actor times the request out; this bound only catches a reconnection.
            with trio.move_on_after(limit):
                return await self._ref.call(msg)
        except (ActorCrashed, ActorDead) as exc:
            raise ToolExecutionFailed(
                f"MCP server {self.server!r} is not connected",
                details={"server": self.server, "reason": "mcp_connection_failed"},
                retryable=True,
            ) from exc
        raise ToolExecutionFailed(
            f"MCP server {self.server!r} did not answer within {limit:g}s",
            details={"server": self.server, "reason": "timeout"},
            retryable=True,
        )

    # -- resources

    async def list_resources(self) -> list[MCPResource]:
        """The server's resources (every page).

        Raises:
            ToolExecutionFailed: see the class.
        """
        return await self._call(ListResources())

    async def list_resource_templates(self) -> list[MCPResourceTemplate]:
        """The server's resource templates (every page).

        Raises:
            ToolExecutionFailed: see the class.
        """
        return await self._call(ListResourceTemplates())

    async def read_resource(self, uri: str) -> list[ResourcePart]:
        """The contents of ``uri``: text or base64 blobs, one part per (sub-)resource.

        A `ResourceLinkPart` in a tool's result is read this way (its ``uri``).

        Raises:
            ToolExecutionFailed: see the class (an unknown URI is the server's error).
        """
        return await self._call(ReadResource(uri=uri))

    async def resource_message(self, uri: str, *, role: Literal["user"] = "user") -> Message:
        """``uri``'s contents as a message, ready for a `Request` (the context it gives).

        Text becomes text parts (each headed by its URI), as do blobs of a textual MIME
        type (``text/*``, JSON, XML: decoded as UTF-8); ``image/*`` blobs become images.
        A prompt's embedded resources are carried the same way.

        Raises:
            ToolExecutionFailed: see the class; ``details["reason"] ==
                "unsupported_content"`` when the resource holds binary data that is not an
                image or UTF-8 text (read it with `read_resource` instead).
        """
        parts: list[Part] = []
        for content in await self.read_resource(uri):
            carried = resource_message_part(content)
            if carried is not None:
                parts.append(carried)
            else:
                raise ToolExecutionFailed(
                    f"resource {content.uri} of MCP server {self.server!r} is binary data "
                    f"({content.media_type or 'unknown type'}), which a message cannot carry",
                    details={
                        "server": self.server,
                        "uri": content.uri,
                        "reason": "unsupported_content",
                    },
                )
        return Message(role=role, content=parts)

    async def subscribe_resource(self, uri: str) -> None:
        """Hear when ``uri`` changes: a `ResourceUpdated` goes to the callbacks (`on_event`).

        The subscription is made again after every reconnection, until
        `unsubscribe_resource` (it belongs to the server's name: a server unregistered and
        registered again under that name is subscribed again too).

        Raises:
            ToolExecutionFailed: see the class (a server without subscriptions refuses).
        """
        await self._call(SubscribeResource(uri=uri))

    async def unsubscribe_resource(self, uri: str) -> None:
        """Stop hearing about ``uri``.

        Raises:
            ToolExecutionFailed: see the class.
        """
        await self._call(UnsubscribeResource(uri=uri))

    def on_event(self, callback: MCPListener) -> Callable[[], None]:
        """Call ``callback`` with this server's notifications.

        It receives a `ResourceUpdated` (a subscribed resource changed), a
        `ResourcesChanged` or a `PromptsChanged` (a list changed). A plain function is called
        in the connection's task (it must not block); an async function runs in a task of
        its own. A callback that raises is logged and the others still run.

        Returns:
            A function that removes the callback.
        """
        return self._listeners.add(self.server, callback)

    # -- prompts

    async def list_prompts(self) -> list[MCPPrompt]:
        """The server's prompts (every page).

        Raises:
            ToolExecutionFailed: see the class.
        """
        return await self._call(ListPrompts())

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None
    ) -> MCPPromptResult:
        """The prompt ``name`` filled in with ``arguments``; its messages suit a `Request`.

        Raises:
            InvalidRequest: an argument's value is not a string.
            ToolExecutionFailed: see the class (an unknown prompt or a missing argument is
                the server's error; audio in a prompt is ``"unsupported_content"``).
        """
        if arguments is not None:
            given: dict[str, object] = dict(arguments)  # callers may not check types
            bad = sorted(key for key, value in given.items() if not isinstance(value, str))
            if bad:
                raise InvalidRequest(
                    f"prompt arguments are strings; not: {', '.join(bad)}",
                    details={"field": "arguments", "names": bad},
                )
        return await self._call(GetPrompt(name=name, arguments=arguments))

    async def complete_prompt_argument(
        self, prompt: str, argument: str, value: str = "", *, context: dict[str, str] | None = None
    ) -> MCPCompletion:
        """Suggested values for ``argument`` of ``prompt``, given what was typed (``value``).

        Raises:
            ToolExecutionFailed: see the class (a server without completions refuses).
        """
        msg = Complete(kind="prompt", ref=prompt, argument=argument, value=value, context=context)
        return await self._call(msg)

    async def complete_resource_argument(
        self,
        uri_template: str,
        argument: str,
        value: str = "",
        *,
        context: dict[str, str] | None = None,
    ) -> MCPCompletion:
        """Suggested values for ``argument`` of a resource template, given ``value``.

        Raises:
            ToolExecutionFailed: see the class.
        """
        msg = Complete(
            kind="resource", ref=uri_template, argument=argument, value=value, context=context
        )
        return await self._call(msg)

    # -- tools, progress, logging, forms, sampling (see ``_host``)

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> ToolResult:
        """Call the server's tool ``tool`` (its name on the server) directly.

        ``on_progress`` hears this call's progress (`MCPProgress`, in order), beside the
        server's callbacks (`on_progress`); every event is delivered before the result is
        returned (a callback still busy a second after the call ended is stopped). A
        callback that raises is logged once and not called again for this call; the call
        goes on.

        Returns:
            The result; an error result when the tool reported an error or did not answer
            within ``timeout`` seconds (default: the server's).

        Raises:
            ToolExecutionFailed: see the class.
        """
        from ._messages import CallTool

        msg = CallTool(
            name=tool,
            arguments=dict(arguments or {}),
            remote_name=tool,
            timeout=timeout,
            on_progress=on_progress,
        )
        return await self._call(msg, timeout)

    def on_progress(self, callback: ProgressCallback) -> Callable[[], None]:
        """Call ``callback`` with the progress of every call of this server's tools.

        Tool calls carry a progress token while a callback listens. Events of one call
        arrive in order; a plain function runs in the connection's task (it must not
        block), an async one is awaited before the next event. A callback that raises is
        logged once per call and never breaks the call.

        Returns:
            A function that removes the callback.
        """
        return self._host.add_progress(self.server, callback)

    async def set_log_level(self, level: MCPLogLevel) -> None:
        """Receive the server's log messages from ``level`` up (``logging/setLevel``).

        They go to the Python logger ``llm_invocation.mcp.<server>`` (see `MCPHost`). The
        level is set again after every reconnection.

        Raises:
            InvalidRequest: ``level`` is not an MCP log level.
            ToolExecutionFailed: see the class; ``details["reason"] == "not_supported"``
                when the server does not declare the logging capability.
        """
        if level not in LOG_LEVELS:
            raise InvalidRequest(
                f"an MCP log level is one of {', '.join(LOG_LEVELS)}, not {level!r}",
                details={"field": "level"},
            )
        await self._call(SetLogLevel(level=level))
        self._host.log_levels[self.server] = level

    def on_elicitation(self, callback: ElicitationCallback | None) -> None:
        """Answer the server's forms (``elicitation/create``) with ``callback``.

        It receives an `MCPElicitation` and returns an `MCPElicitationAnswer` (plain or
        async). Without a callback (None), forms are declined. An accepted answer that does
        not match the requested schema is sent as a decline, and logged.
        """
        self._host.elicitation.pop(self.server, None)
        if callback is not None:
            self._host.elicitation[self.server] = callback

    def set_sampling_policy(self, policy: SamplingPolicy | None) -> None:
        """Use ``policy`` for the server's sampling requests (None: the registered one's).

        Sampling itself is turned on when the server is registered or configured
        (`MCPSampling`, ``sampling`` in its configuration).
        """
        self._host.policies.pop(self.server, None)
        if policy is not None:
            self._host.policies[self.server] = policy
