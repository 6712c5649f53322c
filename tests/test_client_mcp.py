"""MCP servers through the client: from the configuration, at run time, in the tool loop."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import trio

import llm_invocation as llm
from llm_invocation.testing import Scenario, Scenarios, ScriptedToolCall

pytestmark = [
    # The SDK's streamable HTTP client leaves httpx2's async generators to the garbage
    # collector (see tests/test_mcp.py).
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"


def demo_server() -> dict[str, object]:
    return {"transport": "stdio", "command": sys.executable, "args": [str(DEMO)], "timeout": 10}


async def wait_for_tool(client: llm.Client, name: str) -> None:
    with trio.fail_after(20):
        while name not in client.tools:
            changed = trio.Event()
            stop = client.tools.on_change(changed.set)
            try:
                if name in client.tools:
                    return
                await changed.wait()
            finally:
                stop()


async def test_configured_servers_connect_and_their_tools_run_in_the_loop() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "mock",
        Scenario(tool_calls=[ScriptedToolCall(name="demo__add", arguments={"a": 2, "b": 40})]),
        Scenario(text="The answer is 42."),
    )
    config = llm.Config.from_dict(
        {"provider": "mock", "model": "mock", "mcp": {"servers": {"demo": demo_server()}}}
    )
    async with llm.open_client(config, scenarios=scenarios) as client:
        await wait_for_tool(client, "demo__add")
        async with client.invoke(messages=[llm.user("2+40?")], tool_mode="auto") as loop:
            items = [item async for item in loop]
        (results,) = [i for i in items if isinstance(i, llm.ToolResultsEvent)]
        assert "42" in results.results[0].content
        assert not results.results[0].is_error
        assert loop.response.text == "The answer is 42."


async def test_register_mcp_server_at_run_time_and_no_process_left_after_close() -> None:
    async with llm.open_mock_client() as client:
        names = await client.register_mcp_server("srv", demo_server())
        assert "srv__add" in names
        (result,) = await client.execute_tools(
            [llm.ToolCall(id="c1", name="srv__pid", arguments="{}")]
        )
        pid = int(result.data["result"] if isinstance(result.data, dict) else result.content)
        os.kill(pid, 0)  # running now
        await client.unregister_mcp_server("srv")
        assert "srv__add" not in client.tools
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_configured_server_that_is_down_does_not_stop_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-c", "raise SystemExit(3)"],
    }
    config = llm.Config.from_dict(
        {"provider": "mock", "model": "mock", "mcp": {"servers": {"down": broken}}}
    )
    caplog.set_level(logging.DEBUG, logger="llm_invocation.client")
    async with llm.open_client(config) as client:
        reply = await client.chat([llm.user("still works")])
        assert reply.messages[-1].content

        def attempts() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "unreachable" in r.getMessage()]

        with trio.fail_after(20):
            while len(attempts()) < 2:  # the first attempt and a retry
                await trio.sleep(0.05)
        # One WARNING for the outage; the retries after it are routine.
        assert [r.levelno for r in attempts()][:2] == [logging.WARNING, logging.DEBUG]


async def test_a_bare_host_and_port_is_the_streamable_http_server_at_mcp(
    mcp_http_port: int,
) -> None:
    async with llm.open_mock_client() as client:
        names = await client.register_mcp_server("net", f"127.0.0.1:{mcp_http_port}")
        assert "net__add" in names
        (result,) = await client.execute_tools(
            [llm.ToolCall(id="c1", name="net__add", arguments='{"a": 1, "b": 2}')]
        )
        assert (result.content, result.is_error) == ("3", False)


async def test_a_command_list_is_a_stdio_server() -> None:
    async with llm.open_mock_client() as client:
        names = await client.register_mcp_server("srv", [sys.executable, str(DEMO)], timeout=10)
        assert "srv__echo" in names
        (result,) = await client.execute_tools(
            [llm.ToolCall(id="c1", name="srv__echo", arguments='{"text": "over stdio"}')]
        )
        assert result.content == "over stdio"
