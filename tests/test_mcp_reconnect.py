"""A streamable HTTP server that restarts is noticed at once, and calls are never run twice.

The servers are real SDK servers (tests/mcp_servers/http_server.py) on a fixed port of
127.0.0.1, killed and started again on the same port while the client is idle. The
keep-alive ping is set to an hour, so only the signs of a lost session can explain a
prompt reconnection.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from llm_invocation.actors.mcp import (
    MCPConnection,
    MCPServerInfo,
    MCPTool,
    ServerInfo,
    mcp_child_spec,
    mcp_supervisor_spec,
)
from llm_invocation.config import MCPServerConfig
from llm_invocation.errors import ToolExecutionFailed
from llm_invocation.runtime import Runtime, open_runtime
from llm_invocation.tools._core import ToolRegistry, ToolResult

pytestmark = [
    # As in test_mcp.py: the SDK's streamable HTTP client leaves httpx2's async generators
    # to the garbage collector; trio's finalizer closes them and warns.
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

SERVER = Path(__file__).parent / "mcp_servers" / "http_server.py"
AN_HOUR = 3600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(port: int, *options: str) -> trio.Process:
    """Start the HTTP server on ``port`` and wait until it accepts connections."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SERVER), str(port), *options], stdout=subprocess.DEVNULL
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
                    return process
    except BaseException:
        await stop_server(process)
        raise


async def stop_server(process: trio.Process) -> None:
    process.kill()
    with trio.move_on_after(5, shield=True):
        await process.wait()


@asynccontextmanager
async def connected(port: int, registry: ToolRegistry) -> AsyncGenerator[Runtime]:
    config = MCPServerConfig(
        transport="http",
        url=f"http://127.0.0.1:{port}/mcp",
        timeout=10,
        ping_interval=AN_HOUR,
    )
    async with open_runtime(mcp_supervisor_spec({"web": config}, registry)) as runtime:
        yield runtime


def tool(registry: ToolRegistry, name: str) -> MCPTool:
    found = registry.get(name)
    assert isinstance(found, MCPTool)
    return found


async def call(registry: ToolRegistry, name: str, /, **arguments: Any) -> ToolResult:
    return await tool(registry, name).execute(arguments)


async def until(registry: ToolRegistry, predicate: Callable[[], bool], timeout: float = 20) -> None:
    """Wait for registry changes until ``predicate`` holds."""
    with trio.fail_after(timeout):
        while not predicate():
            changed = trio.Event()
            stop = registry.on_change(changed.set)
            try:
                await changed.wait()
            finally:
                stop()


async def pid_of(tool: MCPTool) -> int:
    """The process id the server's ``pid`` tool answers."""
    return int((await tool.execute({})).content)


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "llm_invocation.mcp" and "connection lost" in record.getMessage()
    ]


@dataclass
class Served:
    """A server on ``port`` (started again with `restart`) and our client connected to it.

    ``pid`` is its ``pid`` tool, held across restarts as a tool loop holds the tools it
    offered (while the connection is made again the server's tools are out of the
    registry); ``first_pid`` is its answer before any restart.
    """

    port: int
    options: tuple[str, ...]
    registry: ToolRegistry
    server: trio.Process
    runtime: Runtime | None = None
    pid: MCPTool | None = None
    first_pid: int = 0

    async def restart(self) -> None:
        await stop_server(self.server)
        self.server = await start_server(self.port, *self.options)

    async def info(self) -> MCPServerInfo:
        assert self.runtime is not None
        return await self.runtime.ref("mcp.web", MCPConnection).call(ServerInfo())

    async def next_pid(self) -> int:
        assert self.pid is not None
        return await pid_of(self.pid)


@asynccontextmanager
async def served(*options: str) -> AsyncGenerator[Served]:
    port = free_port()
    web = Served(port, options, ToolRegistry(), await start_server(port, *options))
    try:
        async with connected(port, web.registry) as runtime:
            web.runtime = runtime
            web.pid = tool(web.registry, "web__pid")
            web.first_pid = await pid_of(web.pid)
            yield web
    finally:
        await stop_server(web.server)


async def test_a_restarted_server_is_noticed_and_the_next_call_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served() as web:
        await web.restart()
        # Far below the hour between pings: the lost session itself is the signal.
        with trio.fail_after(15):
            new_pid = await web.next_pid()
        info = await web.info()
    assert new_pid != web.first_pid
    assert info.reconnects == 1
    assert info.state == "ready"
    assert info.last_error is not None and "session" in info.last_error
    warnings = lost_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].exc_info is None
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def forgetful_server(port: int, *, task_status: trio.TaskStatus[None]) -> None:
    """A server on ``port`` that knows no session: it answers every request with 404."""

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await stream.receive_some()
                await stream.send_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            except trio.BrokenResourceError:
                pass

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, answer, listeners)
        task_status.started()


@pytest.mark.parametrize("call_while_closing", [True, False])
async def test_a_lost_connection_keeps_the_reason_it_was_lost_while_it_closes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, call_while_closing: bool
) -> None:
    # The server forgets our session (the standalone stream, opened again, is answered 404),
    # and the connection's task is held between its end and the incarnation's. Closing ends
    # the SDK's read stream too, and a call may arrive meanwhile (it is not sent: the session
    # is gone); the reason recorded is still the one the connection was lost for.
    from llm_invocation.actors.mcp import _session

    serve = _session.serve_connection
    closing, called, resume = trio.Event(), trio.Event(), trio.Event()

    async def held_open(*args: Any, **kwargs: Any) -> None:
        try:
            await serve(*args, **kwargs)
        except ToolExecutionFailed:
            closing.set()
            await resume.wait()
            raise

    original_call = MCPConnection._call  # pyright: ignore[reportPrivateUsage]

    async def noted_call(self: MCPConnection, *args: Any) -> ToolResult:
        try:
            return await original_call(self, *args)
        finally:
            if closing.is_set():
                called.set()

    monkeypatch.setattr(_session, "serve_connection", held_open)
    monkeypatch.setattr(MCPConnection, "_call", noted_call)
    async with served() as web:
        new_pid: list[int] = []

        async def call_pid() -> None:
            new_pid.append(await web.next_pid())

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as forgetting:
                    await stop_server(web.server)
                    await forgetting.start(forgetful_server, web.port)
                    await closing.wait()
                    if call_while_closing:
                        nursery.start_soon(call_pid)
                        await called.wait()  # refused, not sent: the session is gone
                    forgetting.cancel_scope.cancel()
                web.server = await start_server(web.port)
                resume.set()
            if not call_while_closing:
                await until(web.registry, lambda: "web__pid" in web.registry)
                await call_pid()
        info = await web.info()
    assert new_pid and new_pid[0] != web.first_pid
    assert (info.retries, info.reconnects) == (int(call_while_closing), 1)
    warnings = lost_warnings(caplog)
    assert len(warnings) == 1
    assert "the server no longer knows the session (HTTP 404)" in warnings[0].getMessage()


async def test_a_call_the_restarted_server_refused_is_sent_again_once() -> None:
    # Without the GET stream only the call itself can meet the unknown session.
    async with served("--no-get") as web:
        await web.restart()
        with trio.fail_after(15):
            new_pid = await web.next_pid()
        info = await web.info()
    assert new_pid != web.first_pid
    assert (info.retries, info.reconnects, info.calls) == (1, 1, 1)


async def wait_for_line(path: Path, line: str, timeout: float = 10) -> None:
    """Poll a file the server writes until it holds ``line``."""
    file = trio.Path(path)
    with trio.fail_after(timeout):
        while not (await file.exists() and line in (await file.read_text()).splitlines()):
            await trio.sleep(0.02)


async def test_a_call_that_may_have_been_delivered_fails_and_is_not_sent_again(
    tmp_path: Path,
) -> None:
    port = free_port()
    registry = ToolRegistry()
    record = tmp_path / "requests"
    server = await start_server(port, "--record", str(record))
    try:
        async with connected(port, registry) as runtime:
            async with trio.open_nursery() as nursery:
                failure: list[ToolExecutionFailed] = []

                async def slow_call() -> None:
                    with pytest.raises(ToolExecutionFailed) as raised:
                        await call(registry, "web__slow", seconds=30)
                    failure.append(raised.value)

                nursery.start_soon(slow_call)
                await wait_for_line(record, "CALL")  # the server has the call
                await stop_server(server)
            server = await start_server(port)
            await until(registry, lambda: "web__pid" in registry)
            await call(registry, "web__pid")
            info = await runtime.ref("mcp.web", MCPConnection).call(ServerInfo())
    finally:
        await stop_server(server)
    assert failure[0].details["reason"] == "mcp_connection_failed"
    assert failure[0].details.get("delivered") is not False
    assert info.retries == 0


async def test_a_header_provider_is_called_again_on_reconnection() -> None:
    port = free_port()
    registry = ToolRegistry()
    tokens: list[str] = []

    async def headers() -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        tokens.append(f"token-{len(tokens) + 1}")
        return {"Authorization": f"Bearer {tokens[-1]}"}

    config = MCPServerConfig(
        transport="http", url=f"http://127.0.0.1:{port}/mcp", timeout=10, ping_interval=AN_HOUR
    )
    server = await start_server(port)
    try:
        async with open_runtime(mcp_supervisor_spec({}, registry)) as runtime:
            spec = mcp_child_spec("web", config, registry, auth=headers)
            await runtime.start_child(spec, supervisor="mcp")
            header = tool(registry, "web__header")
            first = await header.execute({"name": "authorization"})
            await stop_server(server)
            server = await start_server(port)
            with trio.fail_after(15):
                second = await header.execute({"name": "authorization"})
    finally:
        await stop_server(server)
    assert (first.content, second.content) == ("Bearer token-1", "Bearer token-2")


@pytest.mark.parametrize(
    ("method", "session", "status", "heard"),
    [
        ("GET", "s-1", 200, True),  # the standalone stream is open
        ("GET", "s-1", 405, True),  # the server has none: nothing will come that way
        ("GET", None, 200, False),  # not a session's stream
        ("POST", "s-1", 200, False),  # a request, not the stream
    ],
)
async def test_the_standalone_stream_is_reported_once_the_server_answers_it(
    method: str, session: str | None, status: int, heard: bool
) -> None:
    import httpx2

    from llm_invocation.actors.mcp._http_session import (
        _SessionWatch,  # pyright: ignore[reportPrivateUsage]
    )

    listening: list[bool] = []
    inner = httpx2.MockTransport(lambda request: httpx2.Response(status))
    watch = _SessionWatch(inner, lambda reason: None, lambda: listening.append(True))
    headers = {"mcp-session-id": session} if session else {}
    request = httpx2.Request(method, "http://127.0.0.1:1/mcp", headers=headers)
    await watch.handle_async_request(request)
    assert listening == ([True] if heard else [])
