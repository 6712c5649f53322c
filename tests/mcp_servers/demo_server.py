"""A small MCP server for the tests, over stdio or streamable HTTP.

Run ``python demo_server.py`` for stdio, or ``python demo_server.py --http PORT`` (or
``--sse PORT``) to listen on 127.0.0.1. Tools:

- ``add(a, b)``, ``echo(text)``: plain text results.
- ``image()``: a 1x1 PNG.
- ``structured()``: structured content (and its JSON as text); ``data_only()``: without text.
- ``resource()``: an embedded text resource.
- ``fail(message)``: an ``isError`` result.
- ``slow(seconds)``: sleeps; when cancelled it writes ``cancelled`` to the file named by the
  ``MCP_DEMO_MARKER`` environment variable (or ``--marker``) before re-raising.
- ``crash()``: kills the server process at once (``os._exit``).
- ``pid()``: the server's process id.
- ``header(name)``, ``environment(name)``: an HTTP request header, an environment variable.
- ``enable_extra()`` / ``disable_extra()``: add or remove the ``extra`` tool at run time and
  send ``notifications/tools/list_changed``.
"""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path
from typing import TypedDict

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import CallToolResult, EmbeddedResource, TextResourceContents

# A valid 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)

server = MCPServer("demo", version="1.2.3", log_level="WARNING")
marker: Path | None = None


class Point(TypedDict):
    x: int
    y: int
    label: str


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def image() -> Image:
    """A tiny PNG image."""
    return Image(data=PNG, format="png")


@server.tool()
def structured() -> Point:
    """A structured result."""
    return {"x": 1, "y": 2, "label": "origin-ish"}


@server.tool()
def data_only() -> CallToolResult:
    """Structured content without any text."""
    return CallToolResult(content=[], structured_content={"rows": 2})


@server.tool()
def resource() -> EmbeddedResource:
    """An embedded text resource."""
    return EmbeddedResource(
        type="resource",
        resource=TextResourceContents(uri="memo://note", text="a note", mime_type="text/plain"),
    )


@server.tool()
def fail(message: str) -> str:
    """Fail with the given message."""
    raise ToolError(message)


def _record_cancellation() -> None:
    if marker is not None:
        marker.write_text("cancelled")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, recording a cancellation in the marker file."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _record_cancellation()
        raise
    return f"slept {seconds}"


@server.tool()
def crash() -> str:
    """Kill the server process."""
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of an HTTP request header ('' when absent or not over HTTP)."""
    headers = ctx.headers or {}
    return headers.get(name.lower(), "")


@server.tool()
def environment(name: str) -> str:
    """The value of an environment variable of the server ('' when unset)."""
    return os.environ.get(name, "")


def extra(value: str) -> str:
    """A tool added at run time."""
    return f"extra:{value}"


@server.tool()
async def enable_extra(ctx: Context) -> str:
    """Add the ``extra`` tool and tell the client."""
    server.add_tool(extra)
    await ctx.session.send_tool_list_changed()
    return "enabled"


@server.tool()
async def disable_extra(ctx: Context) -> str:
    """Remove the ``extra`` tool and tell the client."""
    server.remove_tool("extra")
    await ctx.session.send_tool_list_changed()
    return "disabled"


def main() -> None:
    global marker
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    group.add_argument("--sse", type=int, metavar="PORT", help="serve legacy SSE")
    parser.add_argument("--marker", help="file to write when slow() is cancelled")
    options = parser.parse_args()
    path = options.marker or os.environ.get("MCP_DEMO_MARKER")
    marker = Path(path) if path else None
    if options.http is not None:
        server.run("streamable-http", host="127.0.0.1", port=options.http)
    elif options.sse is not None:
        server.run("sse", host="127.0.0.1", port=options.sse)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
