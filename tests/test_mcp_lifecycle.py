"""The lifecycle of MCP sessions and server processes: closed at the server, never orphaned.

- A streamable HTTP session is closed at the server (``DELETE`` with its id) when the server
  is unregistered and when the client closes (tests/mcp_servers/http_server.py records the
  ``DELETE`` requests it receives).
- On Linux a stdio server dies with its host even when the host is SIGKILLed in the middle
  of a call the server cannot cancel (tests/mcp_servers/busy_server.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import llm_invocation as llm

pytestmark = [
    # As in test_mcp.py: the SDK's streamable HTTP client leaves httpx2's async generators
    # to the garbage collector; trio's finalizer closes them and warns.
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

HTTP_SERVER = Path(__file__).parent / "mcp_servers" / "http_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def recording_server(record: Path) -> AsyncGenerator[str]:
    """The HTTP demo server, recording DELETEs in ``record``; yields its URL."""
    port = free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HTTP_SERVER), str(port), "--record", str(record)],
        stdout=subprocess.DEVNULL,
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
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        with trio.move_on_after(5, shield=True):
            await process.wait()


async def session_id(client: llm.Client, tool: str) -> str:
    (result,) = await client.execute_tools(
        [llm.ToolCall(id="c1", name=tool, arguments='{"name": "mcp-session-id"}')]
    )
    assert not result.is_error
    assert result.content
    return result.content


def deletes(record: Path) -> list[str]:
    if not record.exists():
        return []
    return [line for line in record.read_text().splitlines() if line.startswith("DELETE")]


async def test_unregistering_an_http_server_closes_its_session(tmp_path: Path) -> None:
    record = tmp_path / "requests"
    async with recording_server(record) as url, llm.open_mock_client() as client:
        await client.register_mcp_server("web", url)
        session = await session_id(client, "web__header")
        assert deletes(record) == []
        await client.unregister_mcp_server("web")
        assert deletes(record) == [f"DELETE {session}"]


async def test_closing_the_client_closes_the_http_sessions(tmp_path: Path) -> None:
    record = tmp_path / "requests"
    async with recording_server(record) as url:
        async with llm.open_mock_client() as client:
            await client.register_mcp_server("web", url)
            session = await session_id(client, "web__header")
        assert deletes(record) == [f"DELETE {session}"]


# -- a stdio server dies with its host ------------------------------------------------------------

BUSY_SERVER = Path(__file__).parent / "mcp_servers" / "busy_server.py"

# Runs a runtime with the busy server over stdio and calls its tool; argv: server, marker.
HOST = """
import sys
import trio
from llm_invocation.actors.mcp import MCPTool, mcp_supervisor_spec
from llm_invocation.config import MCPServerConfig
from llm_invocation.runtime import open_runtime
from llm_invocation.tools._core import ToolRegistry

async def main() -> None:
    registry = ToolRegistry()
    config = MCPServerConfig(
        transport="stdio", command=sys.executable, args=[sys.argv[1]], timeout=120
    )
    async with open_runtime(mcp_supervisor_spec({"busy": config}, registry)):
        tool = registry.get("busy__busy")
        assert isinstance(tool, MCPTool)
        await tool.execute({"path": sys.argv[2], "seconds": 60})

trio.run(main)
"""


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
async def test_a_stdio_server_dies_with_a_killed_host(tmp_path: Path) -> None:
    host_script = tmp_path / "host.py"
    host_script.write_text(HOST)
    marker = tmp_path / "server-pid"
    host = await trio.lowlevel.open_process(
        [sys.executable, str(host_script), str(BUSY_SERVER), str(marker)]
    )
    server_pid = 0
    try:
        with trio.fail_after(30):
            while not marker.exists() or not marker.read_text():
                await trio.sleep(0.02)  # polling a file another process writes
        server_pid = int(marker.read_text())
        assert not process_gone(server_pid)  # busy in its tool
        host.kill()  # SIGKILL: the host can clean nothing up
        await host.wait()
        with trio.fail_after(10):
            while not process_gone(server_pid):
                await trio.sleep(0.02)  # polling another process's end
    finally:
        if host.returncode is None:
            host.kill()
            with trio.move_on_after(5, shield=True):
                await host.wait()
        if server_pid and not process_gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)
