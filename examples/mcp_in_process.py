"""MCP integration: register an MCP server, and its tools are available to requests.

    python examples/mcp_in_process.py

The second specification's example, in Go::

    mcpServer := llm.NewMCPServer("localhost:8080")
    client.RegisterMCPServer(mcpServer)
    // Tools from MCP server are automatically available

In Python, `llm.mcp_server` reads a server in any of its forms: a URL (a bare
``"localhost:8080"`` is the streamable HTTP server at ``http://localhost:8080/mcp``), a
command list run over stdio, or an ``mcp`` SDK server object. This example passes an SDK
server object, so it runs offline: the server is served in this process, over in-memory
streams, with no subprocess and no socket. Its tools are named ``<server>__<tool>``.

Offline, the mock provider is scripted to call the server's tool once and then answer.
"""

from __future__ import annotations

import trio
from mcp.server.mcpserver import MCPServer

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedToolCall

PAPERS = {
    "quantum computing": [
        "Logical qubits below the surface-code threshold (2024)",
        "Quantum advantage in learning from experiments (2022)",
    ],
}

# An MCP server written with the mcp SDK; it could as well be served over HTTP or stdio.
server = MCPServer("papers", log_level="WARNING")


@server.tool()
def search(topic: str) -> list[str]:
    """Search for recent papers on a topic."""
    return PAPERS.get(topic.lower(), [])


async def main() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "claude-3-opus",
        Scenario(
            tool_calls=[
                ScriptedToolCall(name="papers__search", arguments={"topic": "quantum computing"})
            ]
        ),
        Scenario(text="Two recent papers: one on logical qubits, one on quantum advantage."),
    )
    async with llm.open_mock_client(scenarios) as client:
        # Connect to the MCP server (llm.NewMCPServer + client.RegisterMCPServer).
        names = await client.register_mcp_server("papers", llm.mcp_server(server))
        # Tools from the MCP server are available, like any registered tool.
        print(f"tools from the MCP server: {names}")
        request = llm.Request(
            model="mock:claude-3-opus",
            messages=[llm.user("Search for recent papers on quantum computing")],
        )
        # With tool_mode="auto" the client runs the tools the model calls.
        async with client.invoke(request, tool_mode="auto") as loop:
            async for item in loop:
                match item:
                    case llm.ToolCallsEvent(calls=calls):
                        print(f"-> calling {[call.name for call in calls]}")
                    case llm.ToolResultsEvent(results=results):
                        print(f"<- {[result.content for result in results]}")
                    case llm.StreamChunk(text=text):
                        print(text, end="", flush=True)
        print()
    # Leaving the client ended the server's connection (and the server's task).


if __name__ == "__main__":
    trio.run(main)
