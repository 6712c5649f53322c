"""The second specification's MCP integration example, in Python: an MCP server
registered with the client, whose tools every request then offers to the model.

    ANTHROPIC_API_KEY=sk-ant-... python examples/spec/seed002_mcp.py

The server's address comes from ``MCP_SERVER_ADDRESS`` (default ``localhost:8080``, the
streamable HTTP server at ``http://localhost:8080/mcp``).
"""

from __future__ import annotations

import os

import trio

import llm_invocation as llm


async def main() -> None:
    async with llm.open_client() as client:
        # Connect to MCP server
        mcp_server = llm.mcp_server(os.environ.get("MCP_SERVER_ADDRESS", "localhost:8080"))
        await client.register_mcp_server("research", mcp_server)

        # Tools from MCP server are automatically available
        request = llm.Request(
            model="claude-3-opus",
            messages=[llm.user("Search for recent papers on quantum computing")],
            # MCP tools are automatically included
        )
        response = await client.invoke_sync(request)
        print(f"offered: {sorted(client.tools.names())}")
        for call in response.message.tool_calls or []:
            print(f"tool call: {call.name}({call.arguments})")
        print(f"answer: {response.text}")


if __name__ == "__main__":
    trio.run(main)
