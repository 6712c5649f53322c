"""The status of each MCP server through the client: who it is, its state, its errors."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import llm_invocation as llm
from llm_invocation.errors import ConfigurationError, ToolExecutionFailed

pytestmark = [
    # As in test_mcp.py: the SDK's streamable HTTP client leaves httpx2's async generators
    # to the garbage collector; trio's finalizer closes them and warns.
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"
HTTP_SERVER = Path(__file__).parent / "mcp_servers" / "http_server.py"


def demo_server() -> dict[str, object]:
    return {"transport": "stdio", "command": sys.executable, "args": [str(DEMO)], "timeout": 10}


async def until(client: llm.Client, predicate: object, timeout: float = 20) -> None:
    """Wait for tool registry changes until ``predicate()`` holds."""
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():
            changed = trio.Event()
            stop = client.tools.on_change(changed.set)
            try:
                if predicate():
                    return
                await changed.wait()
            finally:
                stop()


async def run(client: llm.Client, name: str) -> llm.ToolResult:
    (result,) = await client.execute_tools([llm.ToolCall(id="c1", name=name, arguments="{}")])
    return result


async def test_a_connected_server_reports_its_handshake_and_ready_state() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("srv", demo_server())
        info = await client.mcp_server_info("srv")
        status = await client.mcp_status()
    assert (info.server, info.transport, info.name, info.version) == (
        "srv",
        "stdio",
        "demo",
        "1.2.3",
    )
    assert info.protocol_version
    assert info.state == "ready"
    assert (info.reconnects, info.retries, info.last_error) == (0, 0, None)
    assert "tools" in info.capabilities
    assert list(status) == ["srv"]
    assert status["srv"].name == "demo"


async def test_an_unknown_server_has_no_status() -> None:
    async with llm.open_mock_client() as client:
        with pytest.raises(ConfigurationError) as raised:
            await client.mcp_server_info("nobody")
        assert await client.mcp_status() == {}
    assert raised.value.details["reason"] == "unknown_mcp_server"


async def test_an_unregistered_server_leaves_the_status() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("srv", demo_server())
        await client.unregister_mcp_server("srv")
        assert await client.mcp_status() == {}


async def test_a_crashed_server_is_reconnected_with_one_warning_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("srv", demo_server())
        old_pid = (await run(client, "srv__pid")).content
        old_tool = client.tools.get("srv__pid")
        (crashed,) = await client.execute_tools(
            [llm.ToolCall(id="c2", name="srv__crash", arguments="{}")]
        )
        assert crashed.is_error
        await until(
            client,
            lambda: "srv__pid" in client.tools and client.tools.get("srv__pid") is not old_tool,
        )
        assert (await run(client, "srv__pid")).content != old_pid
        info = await client.mcp_server_info("srv")
    assert info.state == "ready"
    assert info.reconnects == 1
    assert info.last_error is not None
    assert info.last_error_at is not None
    lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in lost] == [(logging.WARNING, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_server_that_is_away_reports_that_it_is_reconnecting() -> None:
    port = free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HTTP_SERVER), str(port)], stdout=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)  # polling another process's socket
                else:
                    await stream.aclose()
                    break
        config = {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp", "timeout": 5}
        async with llm.open_mock_client() as client:
            await client.register_mcp_server("web", {**config, "ping_interval": 0.2})
            process.kill()
            await process.wait()
            await until(client, lambda: "web__pid" not in client.tools)
            info = await client.mcp_server_info("web")
            assert info.state in ("reconnecting", "failed")
            with trio.fail_after(10):
                while info.last_error is None:  # the reason follows the tools' removal
                    await trio.sleep(0.02)
                    info = await client.mcp_server_info("web")
            assert info.state in ("reconnecting", "failed")
            assert info.name == "demo"  # from the last handshake
            with pytest.raises(ToolExecutionFailed):
                client.tools.get("web__pid")
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5, shield=True):
                await process.wait()
