"""An MCP server for the tests that uses its client as a host, over stdio or in process.

Run ``python host_server.py`` for stdio, or import `build` for an in-process server. Tools:

- ``work(steps)``: reports progress 1..steps of ``steps`` (message ``step <n>``), then
  answers ``done``.
- ``exit()``: ends the server process at once (over stdio only: in process it would end
  the tests).
- ``token()``: ``token`` when the call carries a progress token, else ``no token``.
- ``chatter()``: logs one message at each MCP level (logger ``chatter``, data
  ``{"level": <level>}``), then answers ``ok``.
- ``level()``: the log level the client set last (``unset`` before).
- ``roots()``: the client's roots, one ``<uri> <name>`` line each (``none`` without).
- ``roots_changed(count)``: waits (at most 10 s) until ``count`` roots/list_changed
  notifications arrived, then answers how many did.
- ``ask(question)``: asks the client's model (sampling) with a system prompt, a model hint,
  ``maxTokens`` 500, temperature 0.5 and a stop sequence; answers ``<model>|<stop
  reason>|<text>``, or ``error <code>: <message>``.
- ``form()``: asks the user for a name and an age (elicitation); answers
  ``<action> <content as JSON>``.

The server declares logging (it answers ``logging/setLevel``) and follows
``notifications/roots/list_changed``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import mcp_types
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from pydantic import BaseModel

T = TypeVar("T")


class Person(BaseModel):
    name: str
    age: int


def quiet(make: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """Make the SDK's coroutine without its deprecation warning (logging, roots, sampling
    are deprecated in a protocol revision the tests do not speak)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return make()


class State:
    """What the server saw of its client."""

    def __init__(self) -> None:
        self.level = "unset"
        self.roots_changes = 0
        self.changed = anyio.Event()

    def roots_changed(self) -> None:
        self.roots_changes += 1
        self.changed.set()
        self.changed = anyio.Event()


def build(name: str = "host") -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(name, version="1.0.0", log_level="WARNING")
    state = State()

    async def set_level(ctx: Any, params: mcp_types.SetLevelRequestParams) -> mcp_types.EmptyResult:
        state.level = params.level
        return mcp_types.EmptyResult()

    async def roots_changed(ctx: Any, params: mcp_types.NotificationParams) -> None:
        state.roots_changed()

    # The SDK offers no public hook for these on an MCPServer.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", mcp_types.SetLevelRequestParams, set_level)
    lowlevel.add_notification_handler(
        "notifications/roots/list_changed", mcp_types.NotificationParams, roots_changed
    )

    @server.tool()
    async def work(steps: int, ctx: Context) -> str:
        """Report progress, then finish."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return "done"

    @server.tool(name="exit")
    def exit_now() -> str:
        """End the server process at once."""
        os._exit(3)

    @server.tool()
    def token(ctx: Context) -> str:
        """Whether this call carries a progress token."""
        meta = ctx.request_context.meta or {}
        return "token" if meta.get("progress_token") is not None else "no token"

    @server.tool()
    async def chatter(ctx: Context) -> str:
        """Log at every level."""
        for level in ("debug", "info", "notice", "warning", "error", "critical", "alert"):
            await quiet(lambda level=level: ctx.log(level, {"level": level}, logger_name="chatter"))
        return "ok"

    @server.tool()
    def level() -> str:
        """The log level set by the client."""
        return state.level

    @server.tool()
    async def roots(ctx: Context) -> str:
        """The client's roots."""
        result = await quiet(lambda: ctx.session.list_roots())
        return "\n".join(f"{root.uri} {root.name}" for root in result.roots) or "none"

    @server.tool(name="roots_changed")
    async def roots_changed_tool(count: int) -> int:
        """Wait for ``count`` roots/list_changed notifications."""
        with anyio.move_on_after(10):
            while state.roots_changes < count:
                await state.changed.wait()
        return state.roots_changes

    @server.tool()
    async def ask(question: str, ctx: Context) -> str:
        """Ask the client's model."""
        message = mcp_types.SamplingMessage(
            role="user", content=mcp_types.TextContent(text=question)
        )
        prefs = mcp_types.ModelPreferences(
            hints=[mcp_types.ModelHint(name="small")], speed_priority=0.8
        )
        try:
            result = await quiet(
                lambda: ctx.session.create_message(
                    [message],
                    max_tokens=500,
                    system_prompt="Be brief.",
                    temperature=0.5,
                    stop_sequences=["END"],
                    model_preferences=prefs,
                )
            )
        except MCPError as exc:
            return f"error {exc.code}: {exc.message}"
        content = result.content
        text = content.text if isinstance(content, mcp_types.TextContent) else repr(content)
        return f"{result.model}|{result.stop_reason}|{text}"

    @server.tool()
    async def form(ctx: Context) -> str:
        """Ask the user who they are."""
        try:
            result = await ctx.elicit("Who are you?", Person)
        except MCPError as exc:
            return f"error {exc.code}: {exc.message}"
        data = result.data.model_dump() if result.action == "accept" else None
        return f"{result.action} {json.dumps(data)}"

    return server


if __name__ == "__main__":
    build().run("stdio")
