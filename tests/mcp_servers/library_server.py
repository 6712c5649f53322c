"""An MCP server with resources, prompts and completions, over stdio or streamable HTTP.

Run ``python library_server.py`` for stdio, or ``python library_server.py --http PORT`` to
listen on 127.0.0.1. It has:

- resources ``library://readme`` (text) and ``library://logo`` (a PNG), and the template
  ``library://books/{title}``;
- the prompt ``summarise(title, style="short")``, with completion of ``title``;
- the tool ``shelve(title)``: adds a prompt and a resource, then sends
  ``notifications/prompts/list_changed`` and ``notifications/resources/list_changed``.
"""

from __future__ import annotations

import argparse

import mcp_types
from mcp.server.mcpserver import Context, MCPServer

TITLES = ["Dune", "Dubliners", "Emma"]
PNG = b"\x89PNG\r\n\x1a\nlibrary"

server = MCPServer("library", version="1.0.0", log_level="WARNING")


@server.resource("library://readme", mime_type="text/markdown")
def readme() -> str:
    """How to use the library."""
    return "# The library"


@server.resource("library://logo", mime_type="image/png")
def logo() -> bytes:
    """The library's logo."""
    return PNG


@server.resource("library://books/{title}", mime_type="text/plain")
def book(title: str) -> str:
    """One book."""
    return f"The text of {title}"


@server.prompt()
def summarise(title: str, style: str = "short") -> str:
    """Summarise a book."""
    return f"Give a {style} summary of {title}."


@server.completion()
async def complete(
    ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
    argument: mcp_types.CompletionArgument,
    context: mcp_types.CompletionContext | None,
) -> mcp_types.Completion | None:
    if argument.name != "title":
        return None
    return mcp_types.Completion(values=[t for t in TITLES if t.startswith(argument.value)])


@server.tool()
async def shelve(title: str, ctx: Context) -> str:
    """Add a prompt and a resource for a book, and tell the client."""

    @server.prompt(name=f"review_{title.lower()}")
    def review() -> str:
        return f"Review {title}."

    @server.resource(f"library://shelf/{title.lower()}")
    def shelf() -> str:
        return title

    await ctx.session.send_prompt_list_changed()
    await ctx.session.send_resource_list_changed()
    return "shelved"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    options = parser.parse_args()
    if options.http is not None:
        server.run("streamable-http", host="127.0.0.1", port=options.http)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
