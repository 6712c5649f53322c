"""Requests beyond tool calls (resources, prompts, completion) and the checks on tool output.

Each request goes through `request`, the boundary for everything but the connection: the
server's JSON-RPC error, a result the SDK rejects, content we cannot convert, or no answer
within the server's timeout each become `ToolExecutionFailed` for that request
(``details["reason"]``: ``"mcp_request_failed"``, ``"unsupported_content"`` or
``"timeout"``). Nothing a server answers ends the connection here.

SDK behaviour relied on (mcp 2.3): ``ClientSession.call_tool`` validates the structured
result of a tool that declares an ``outputSchema`` and raises ``RuntimeError`` with one of
the messages in `_OUTPUT_SCHEMA_FAILURES`; `checked_call_tool` turns that into an error
result for the call. ``resources/subscribe`` is marked deprecated by the SDK (it is gone in
protocol 2026-07-28; the handshake this client makes negotiates 2025-11-25 at most).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar, cast, final

import mcp_types
import msgspec
import trio
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from ...errors import InvalidRequest, ToolExecutionFailed
from ...tools._core import ToolResult
from ...types import ResourcePart
from . import _convert
from ._models import (
    MCPCompletion,
    MCPEvent,
    MCPPrompt,
    MCPPromptResult,
    MCPResource,
    MCPResourceTemplate,
    PromptsChanged,
    ResourcesChanged,
    ResourceUpdated,
)

__all__ = [
    "NOTIFICATIONS",
    "InvalidOutput",
    "ToolOutput",
    "checked_call_tool",
    "complete",
    "event",
    "get_prompt",
    "list_prompts",
    "list_resource_templates",
    "list_resources",
    "read_resource",
    "request",
    "subscribe",
    "tool_result",
    "unsubscribe",
]

T = TypeVar("T")

# Pages of a list followed at most (a server whose cursor never ends cannot hang us).
MAX_PAGES: Final = 100

NOTIFICATIONS: Final = (
    mcp_types.ResourceUpdatedNotification,
    mcp_types.ResourceListChangedNotification,
    mcp_types.PromptListChangedNotification,
)
"""The notifications `event` turns into our events."""

_OUTPUT_SCHEMA_FAILURES: Final = (
    "Tool {name} has an output schema but did not return structured content",
    "Invalid structured content returned by tool {name}",
    "Invalid schema for tool {name}",
)


@final
class InvalidOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A tool's result that does not match its ``outputSchema``: why, in the SDK's words."""

    reason: str


ToolOutput: TypeAlias = mcp_types.CallToolResult | InvalidOutput


async def checked_call_tool(
    client: ClientSession,
    name: str,
    arguments: dict[str, Any],
    *,
    meta: dict[str, Any] | None = None,
) -> ToolOutput:
    """Call ``name`` (with ``meta`` as its ``_meta``, if any); a result that fails its
    output schema is an `InvalidOutput`.

    Raises:
        Exception: whatever the SDK raised otherwise (the caller translates it).
    """
    try:
        if meta is not None:
            return await client.call_tool(name, arguments, meta=cast("Any", meta))
        return await client.call_tool(name, arguments)
    except RuntimeError as exc:
        text = str(exc)
        if type(exc) is RuntimeError and any(
            text.startswith(prefix.format(name=name)) for prefix in _OUTPUT_SCHEMA_FAILURES
        ):
            return InvalidOutput(reason=text)
        raise


def tool_result(
    raw: ToolOutput, remote_name: str, *, name: str, call_id: str, duration: float
) -> ToolResult:
    """The `ToolResult` of a call: the converted result, or an error result saying why not."""
    if isinstance(raw, InvalidOutput):
        reason = f"the result of {remote_name!r} does not match its output schema: {raw.reason}"
    else:
        try:
            return _convert.call_result(raw, name=name, call_id=call_id, duration=duration)
        except InvalidRequest as exc:
            reason = f"the result of {remote_name!r} is not usable: {exc.message}"
    return ToolResult(
        call_id=call_id,
        name=name,
        content=reason,
        is_error=True,
        error_code="tool_execution_failed",
        duration=duration,
    )


def event(server: str, message: mcp_types.ServerNotification) -> MCPEvent | None:
    """Our event for a resource or prompt notification (None for any other)."""
    match message:
        case mcp_types.ResourceUpdatedNotification():
            return ResourceUpdated(server=server, uri=message.params.uri)
        case mcp_types.ResourceListChangedNotification():
            return ResourcesChanged(server=server)
        case mcp_types.PromptListChangedNotification():
            return PromptsChanged(server=server)
        case _:
            return None


async def request(
    server: str, method: str, send: Callable[[], Awaitable[T]], *, timeout: float
) -> T:
    """Send one request with ``send``, within ``timeout``, translating every failure.

    Raises:
        ToolExecutionFailed: the server answered with an error, did not answer in time, or
            answered what cannot be read or converted (``details["reason"]`` says which;
            ``details["mcp_code"]`` is the server's JSON-RPC error code).
    """
    details: dict[str, Any] = {"server": server, "method": method}
    try:
        with trio.move_on_after(timeout):
            return await send()
    except MCPError as exc:
        text, details["mcp_code"], reason = exc.message, exc.code, "mcp_request_failed"
        cause: Exception = exc
    except InvalidRequest as exc:  # content our types cannot carry
        text, reason, cause = exc.message, str(exc.details.get("reason", "")), exc
        reason = reason or "unsupported_content"
    except Exception as exc:  # noqa: BLE001 - the request boundary: anyio, httpx2, pydantic, the SDK
        text, reason, cause = f"{type(exc).__name__}: {exc}", "mcp_request_failed", exc
    else:
        details["reason"] = "timeout"
        raise ToolExecutionFailed(
            f"MCP server {server!r} did not answer {method} within {timeout:g}s",
            details=details,
            retryable=True,
        )
    details["reason"] = reason
    raise ToolExecutionFailed(
        f"{method} on MCP server {server!r} failed: {text}", details=details
    ) from cause


async def _pages(
    fetch: Callable[
        [mcp_types.PaginatedRequestParams | None], Awaitable[tuple[list[T], str | None]]
    ],
) -> list[T]:
    items, cursor = await fetch(None)
    pages = 1
    while cursor is not None and pages < MAX_PAGES:
        more, cursor = await fetch(mcp_types.PaginatedRequestParams(cursor=cursor))
        items.extend(more)
        pages += 1
    return items


async def list_resources(client: ClientSession) -> list[MCPResource]:
    async def fetch(
        params: mcp_types.PaginatedRequestParams | None,
    ) -> tuple[list[MCPResource], str | None]:
        result = await client.list_resources(params=params)
        return [_convert.resource(item) for item in result.resources], result.next_cursor

    return await _pages(fetch)


async def list_resource_templates(client: ClientSession) -> list[MCPResourceTemplate]:
    async def fetch(
        params: mcp_types.PaginatedRequestParams | None,
    ) -> tuple[list[MCPResourceTemplate], str | None]:
        result = await client.list_resource_templates(params=params)
        items = [_convert.resource_template(item) for item in result.resource_templates]
        return items, result.next_cursor

    return await _pages(fetch)


async def read_resource(client: ClientSession, uri: str) -> list[ResourcePart]:
    result = await client.read_resource(uri)
    return [_convert.resource_contents(item) for item in result.contents]


async def subscribe(client: ClientSession, uri: str) -> None:
    with warnings.catch_warnings():  # only the coroutine is made here: no checkpoint
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        pending = client.subscribe_resource(uri)  # pyright: ignore[reportDeprecated] - see the module
    await pending


async def unsubscribe(client: ClientSession, uri: str) -> None:
    with warnings.catch_warnings():  # only the coroutine is made here: no checkpoint
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        pending = client.unsubscribe_resource(uri)  # pyright: ignore[reportDeprecated] - see the module
    await pending


async def list_prompts(client: ClientSession) -> list[MCPPrompt]:
    async def fetch(
        params: mcp_types.PaginatedRequestParams | None,
    ) -> tuple[list[MCPPrompt], str | None]:
        result = await client.list_prompts(params=params)
        return [_convert.prompt(item) for item in result.prompts], result.next_cursor

    return await _pages(fetch)


async def get_prompt(
    client: ClientSession, name: str, arguments: dict[str, str] | None
) -> MCPPromptResult:
    result = await client.get_prompt(name, arguments)
    return _convert.prompt_result(result, name=name)


async def complete(
    client: ClientSession,
    ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
    argument: str,
    value: str,
    context: dict[str, str] | None,
) -> MCPCompletion:
    result = await client.complete(ref, {"name": argument, "value": value}, context)
    found = result.completion
    return MCPCompletion(values=found.values, total=found.total, has_more=bool(found.has_more))
