"""MCP: tools served by an MCP server (a tiny one, started over stdio) in the tool loop.

python examples/mcp_tools.py
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path

import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedToolCall

SERVER = textwrap.dedent(
    '''
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("calculator")

    @server.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    server.run()
    '''
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "calculator.py"
        script.write_text(SERVER)
        scenarios = Scenarios()
        scenarios.add(
            "mock",
            Scenario(
                tool_calls=[ScriptedToolCall(name="calc__multiply", arguments={"a": 6, "b": 7})]
            ),
            Scenario(text="6 times 7 is 42."),
        )
        async with llm.open_mock_client(scenarios) as client:
            names = await client.register_mcp_server(
                "calc", {"transport": "stdio", "command": sys.executable, "args": [str(script)]}
            )
            print(f"tools from the MCP server: {names}")
            response = await client.invoke_sync(
                messages=[llm.user("What is 6 times 7?")], tool_mode="auto"
            )
            print(response.text)
    # Leaving the client ended the server's process.


if __name__ == "__main__":
    trio.run(main)
