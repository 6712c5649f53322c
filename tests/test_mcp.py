"""MCP servers as supervised actors, against real servers (tests/mcp_servers/demo_server.py).

stdio servers are subprocesses started by the connection actor; the streamable HTTP and
legacy SSE servers are started once per module on a free port of 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types
import msgspec
import pytest
import trio

from llm_invocation.actors.mcp import (
    MCP_BACKOFF,
    CallTool,
    ListServerTools,
    MCPConnection,
    MCPServerInfo,
    MCPTool,
    ServerInfo,
    local_tool_name,
    mcp_child_spec,
    mcp_supervisor_spec,
)
from llm_invocation.actors.mcp._convert import call_result
from llm_invocation.config import MCPServerConfig
from llm_invocation.errors import ToolExecutionFailed
from llm_invocation.runtime import Runtime, open_runtime
from llm_invocation.tools._core import Tool, ToolRegistry, ToolResult

pytestmark = [
    # The SDK's streamable HTTP client returns from inside `async for` over the SSE body of
    # each answered POST, leaving httpx2's async generators to the garbage collector; trio's
    # finalizer closes them and warns (as for httpx and httpcore in pyproject.toml).
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"
DEMO_TOOLS = {
    "add",
    "crash",
    "data_only",
    "disable_extra",
    "echo",
    "enable_extra",
    "environment",
    "fail",
    "header",
    "image",
    "pid",
    "resource",
    "slow",
    "structured",
}
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


# -- helpers ------------------------------------------------------------------------------------


def stdio_config(
    *, marker: Path | None = None, timeout: float = 10.0, env: dict[str, str] | None = None
) -> MCPServerConfig:
    variables = dict(env or {})
    if marker is not None:
        variables["MCP_DEMO_MARKER"] = str(marker)
    return MCPServerConfig(
        transport="stdio",
        command=sys.executable,
        args=[str(DEMO)],
        env=variables,  # plain strings become Secrets
        timeout=timeout,
    )


@asynccontextmanager
async def serving(registry: ToolRegistry, **servers: MCPServerConfig) -> AsyncGenerator[Runtime]:
    async with open_runtime(mcp_supervisor_spec(servers, registry)) as runtime:
        yield runtime


async def until(registry: ToolRegistry, predicate: Callable[[], bool], timeout: float = 15) -> None:
    """Wait for registry changes until ``predicate`` holds."""
    with trio.fail_after(timeout):
        while not predicate():
            changed = trio.Event()
            stop = registry.on_change(changed.set)
            try:
                await changed.wait()
            finally:
                stop()


async def wait_for_file(path: Path, timeout: float = 10) -> str:
    """Poll for a file another process writes."""
    file = trio.Path(path)
    with trio.fail_after(timeout):
        while not await file.exists():
            await trio.sleep(0.02)
    return await file.read_text()


def tool(registry: ToolRegistry, name: str) -> MCPTool:
    found = registry.get(name)
    assert isinstance(found, MCPTool)
    return found


async def call(registry: ToolRegistry, name: str, /, **arguments: Any) -> ToolResult:
    return await tool(registry, name).execute(arguments)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class LocalTool:
    """A local tool that happens to take an MCP tool's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.description = "local"
        self.parameters: dict[str, Any] = {"type": "object"}

    async def execute(self, arguments: dict[str, Any]) -> str:
        await trio.lowlevel.checkpoint()
        return "local"


# -- network servers (one process per module and transport) --------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"the demo server did not listen on port {port} within {timeout}s")


class NetworkServer:
    def __init__(self, transport: str, url: str, marker: Path) -> None:
        self.transport = transport
        self.url = url
        self.marker = marker

    def config(self, **options: Any) -> MCPServerConfig:
        return MCPServerConfig(transport=self.transport, url=self.url, **options)


@pytest.fixture(scope="module", params=["http", "sse"])
def network_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetworkServer]:
    transport: str = request.param
    port = free_port()
    marker = tmp_path_factory.mktemp(transport) / "cancelled"
    flag = "--http" if transport == "http" else "--sse"
    process = subprocess.Popen(
        [sys.executable, str(DEMO), flag, str(port), "--marker", str(marker)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        path = "/mcp" if transport == "http" else "/sse"
        yield NetworkServer(transport, f"http://127.0.0.1:{port}{path}", marker)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- names and specs (no server) ----------------------------------------------------------------


def test_local_names_are_namespaced_and_sanitised() -> None:
    assert local_tool_name("files", "read") == "files__read"
    assert local_tool_name("my server.v2", "a/b:c") == "my_server_v2__a_b_c"
    long = local_tool_name("s" * 40, "t" * 40)
    assert len(long) == 64
    assert long.startswith("s" * 40 + "__")


def test_supervisor_spec_skips_disabled_servers_and_backs_off() -> None:
    registry = ToolRegistry()
    spec = mcp_supervisor_spec(
        {"on": stdio_config(), "off": msgspec.structs.replace(stdio_config(), enabled=False)},
        registry,
        name="tools-mcp",
    )
    assert spec.name == "tools-mcp"
    assert spec.strategy == "one_for_one"
    assert [child.name for child in spec.children] == ["mcp.on"]
    assert spec.children[0].restart == "permanent"
    assert spec.backoff == MCP_BACKOFF
    assert spec.backoff is not None
    assert spec.backoff.initial == 0.2
    assert spec.backoff.maximum == 10
    assert spec.max_restarts >= 60


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = "import sys, llm_invocation.actors.mcp; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- stdio --------------------------------------------------------------------------------------


async def test_stdio_tools_are_registered_under_the_server_name() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()) as runtime:
        assert set(registry.names()) == {f"demo__{name}" for name in DEMO_TOOLS}
        add = tool(registry, "demo__add")
        assert isinstance(add, Tool)
        assert (add.server, add.remote_name) == ("demo", "add")
        assert add.description == "Add two integers."
        assert add.parameters["properties"].keys() == {"a", "b"}
        assert add.parameters["required"] == ["a", "b"]
        ref = runtime.ref("mcp.demo", MCPConnection)
        names = await ref.call(ListServerTools())
        assert names == sorted(registry.names())


async def test_text_result_carries_content_and_structured_data() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()):
        result = await tool(registry, "demo__add").execute({"a": 2, "b": 40}, call_id="c1")
    assert result.call_id == "c1"
    assert result.name == "demo__add"
    assert result.content == "42"
    assert result.data == {"result": 42}
    assert not result.is_error


async def test_image_result_becomes_an_image_part() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()):
        result = await call(registry, "demo__image")
    assert not result.is_error
    assert [(image.data, image.media_type) for image in result.images] == [(PNG_B64, "image/png")]


async def test_structured_result_and_embedded_resource() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()):
        structured = await call(registry, "demo__structured")
        resource = await call(registry, "demo__resource")
    assert structured.data == {"x": 1, "y": 2, "label": "origin-ish"}
    assert '"label": "origin-ish"' in structured.content
    assert resource.content == "a note"


async def test_structured_result_without_text_is_sent_as_json() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()):
        result = await call(registry, "demo__data_only")
    assert result.data == {"rows": 2}
    assert result.content == '{"rows":2}'


def test_result_conversion_of_every_content_block() -> None:
    raw = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="first"),
            mcp_types.EmbeddedResource(
                resource=mcp_types.BlobResourceContents(
                    uri="file:///pic.png", blob=PNG_B64, mime_type="image/png"
                )
            ),
            mcp_types.EmbeddedResource(
                resource=mcp_types.BlobResourceContents(uri="file:///data.bin", blob="AAAA")
            ),
            mcp_types.ResourceLink(uri="file:///notes.md", name="notes"),
            mcp_types.AudioContent(data="AAAA", mime_type="audio/wav"),
        ],
        is_error=True,
    )
    result = call_result(raw, name="t", call_id="c", duration=0.5)
    assert result.content.splitlines() == [
        "first",
        "[resource file:///data.bin (binary data, 3 bytes)]",
        "[resource link notes: file:///notes.md]",
        "[audio (audio/wav, 3 bytes)]",
    ]
    assert [type(block.part).__name__ for block in result.blocks] == [
        "TextPart",
        "ResourcePart",
        "ResourcePart",
        "ResourceLinkPart",
        "AudioPart",
    ]
    assert [(image.data, image.media_type) for image in result.images] == [(PNG_B64, "image/png")]
    assert (result.is_error, result.error_code, result.call_id) == (
        True,
        "tool_execution_failed",
        "c",
    )


async def test_tool_error_is_an_error_result() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()) as runtime:
        result = await call(registry, "demo__fail", message="no can do")
        info = await runtime.ref("mcp.demo", MCPConnection).call(ServerInfo())
    assert result.is_error
    assert result.error_code == "tool_execution_failed"
    assert "no can do" in result.content
    assert (info.calls, info.errors, info.timeouts) == (1, 1, 0)


async def test_configured_environment_reaches_the_server() -> None:
    registry = ToolRegistry()
    config = stdio_config(env={"DEMO_SETTING": "from-config"})
    async with serving(registry, demo=config):
        result = await call(registry, "demo__environment", name="DEMO_SETTING")
    assert result.content == "from-config"


async def test_server_info_reports_the_handshake() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()) as runtime:
        info = await runtime.ref("mcp.demo", MCPConnection).call(ServerInfo())
    assert isinstance(info, MCPServerInfo)
    assert (info.server, info.transport, info.name, info.version) == (
        "demo",
        "stdio",
        "demo",
        "1.2.3",
    )
    assert info.tools == len(DEMO_TOOLS)
    assert info.protocol_version
    assert abs(info.connected_since - time.time()) < 60


async def test_list_changed_adds_and_removes_tools() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()):
        await call(registry, "demo__enable_extra")
        await until(registry, lambda: "demo__extra" in registry)
        result = await call(registry, "demo__extra", value="v")
        assert result.content == "extra:v"
        await call(registry, "demo__disable_extra")
        await until(registry, lambda: "demo__extra" not in registry)
        assert len(registry) == len(DEMO_TOOLS)


async def test_name_taken_by_a_local_tool_gets_a_suffix_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = LocalTool("demo__add")
    registry = ToolRegistry([local])
    async with serving(registry, demo=stdio_config()):
        assert registry.get("demo__add") is local
        renamed = tool(registry, "demo__add_2")
        assert renamed.remote_name == "add"
        result = await renamed.execute({"a": 1, "b": 1})
        assert result.content == "2"
        # A reconnection registers the same name again, without logging it again.
        with pytest.raises(ToolExecutionFailed):
            await call(registry, "demo__crash")
        await until(
            registry,
            lambda: "demo__add_2" in registry and registry.get("demo__add_2") is not renamed,
        )
    assert registry.names() == ["demo__add"]  # only the local tool is left
    renames = [r for r in caplog.records if "is registered as 'demo__add_2'" in r.getMessage()]
    assert len(renames) == 1


async def test_name_taken_by_another_server_gets_a_suffix() -> None:
    registry = ToolRegistry()
    # Two servers whose names sanitise alike: "demo.x" and "demo_x".
    async with serving(registry, **{"demo.x": stdio_config(), "demo_x": stdio_config()}):
        first, second = tool(registry, "demo_x__pid"), tool(registry, "demo_x__pid_2")
        assert {first.server, second.server} == {"demo.x", "demo_x"}
        pids = {(await first.execute({})).content, (await second.execute({})).content}
        assert len(pids) == 2
    assert len(registry) == 0


async def test_crashed_server_is_restarted_and_its_tools_come_back() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()) as runtime:
        old_pid = int((await call(registry, "demo__pid")).content)
        old_tool = tool(registry, "demo__pid")
        with pytest.raises(ToolExecutionFailed) as raised:
            await call(registry, "demo__crash")
        assert raised.value.details["server"] == "demo"
        await until(
            registry, lambda: "demo__pid" in registry and registry.get("demo__pid") is not old_tool
        )
        new_pid = int((await call(registry, "demo__pid")).content)
        assert new_pid != old_pid
        assert not process_exists(old_pid)
        assert runtime.ref("mcp.demo").statistics().restarts == 1
        assert len(registry) == len(DEMO_TOOLS)


async def test_cancelled_call_is_cancelled_at_the_server(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config(marker=marker)):
        with trio.move_on_after(0.5) as scope:
            await call(registry, "demo__slow", seconds=30)
        assert scope.cancelled_caught
        assert await wait_for_file(marker) == "cancelled"
        # The connection is still good.
        assert (await call(registry, "demo__echo", text="still here")).content == "still here"


async def test_call_timeout_is_an_error_result_and_cancels_at_the_server(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config(marker=marker, timeout=0.5)) as runtime:
        result = await call(registry, "demo__slow", seconds=30)
        assert result.is_error
        assert result.error_code == "timeout"
        assert 0.5 <= result.duration < 5
        assert await wait_for_file(marker) == "cancelled"
        info = await runtime.ref("mcp.demo", MCPConnection).call(ServerInfo())
        assert info.timeouts == 1


async def test_no_server_process_outlives_the_runtime() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()):
        pid = int((await call(registry, "demo__pid")).content)
        assert process_exists(pid)
    assert not process_exists(pid)
    assert len(registry) == 0


async def test_no_server_process_outlives_a_cancelled_runtime() -> None:
    registry = ToolRegistry()
    pid = 0
    with trio.CancelScope() as scope:
        async with serving(registry, demo=stdio_config()):
            pid = int((await call(registry, "demo__pid")).content)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert pid > 0
    assert not process_exists(pid)
    assert len(registry) == 0


async def test_server_added_and_removed_at_run_time() -> None:
    registry = ToolRegistry()
    async with serving(registry) as runtime:
        ref = await runtime.start_child(
            mcp_child_spec("late", stdio_config(), registry), supervisor="mcp"
        )
        assert ref is not None
        pid = int((await call(registry, "late__pid")).content)
        echoed = await ref.call(CallTool(name="late__echo", arguments={"text": "hi"}))
        assert (echoed.name, echoed.content, echoed.data) == ("late__echo", "hi", {"result": "hi"})
        late_echo = tool(registry, "late__echo")
        await runtime.terminate_child("mcp.late", supervisor="mcp")
        assert len(registry) == 0
        assert not process_exists(pid)
        with pytest.raises(ToolExecutionFailed, match="not running"):
            await late_echo.execute({"text": "anyone?"})


async def test_server_that_cannot_start_fails_the_start() -> None:
    registry = ToolRegistry()
    missing = MCPServerConfig(transport="stdio", command="/nonexistent/mcp-server")
    async with serving(registry) as runtime:
        with pytest.raises(ToolExecutionFailed) as raised:
            await runtime.start_child(mcp_child_spec("ghost", missing, registry), supervisor="mcp")
    assert raised.value.details == {"server": "ghost", "reason": "mcp_connection_failed"}
    assert "could not start" in str(raised.value)


async def test_unknown_local_name_is_a_tool_not_found_result() -> None:
    registry = ToolRegistry()
    async with serving(registry, demo=stdio_config()) as runtime:
        ref = runtime.ref("mcp.demo", MCPConnection)
        result = await ref.call(CallTool(name="demo__nothing", arguments={}, call_id="x"))
    assert (result.is_error, result.error_code, result.call_id) == (True, "tool_not_found", "x")


# -- streamable HTTP and legacy SSE ---------------------------------------------------------------


async def test_network_server_tools_are_discovered_and_called(
    network_server: NetworkServer,
) -> None:
    registry = ToolRegistry()
    config = network_server.config(headers={"X-Demo-Token": "token-1234567"})
    async with serving(registry, web=config) as runtime:
        assert set(registry.names()) == {f"web__{name}" for name in DEMO_TOOLS}
        assert (await call(registry, "web__add", a=20, b=22)).content == "42"
        image = await call(registry, "web__image")
        assert [part.media_type for part in image.images] == ["image/png"]
        header = await call(registry, "web__header", name="X-Demo-Token")
        assert header.content == "token-1234567"
        info = await runtime.ref("mcp.web", MCPConnection).call(ServerInfo())
        assert (info.transport, info.name) == (network_server.transport, "demo")
    assert len(registry) == 0


async def test_network_server_list_changed_refreshes_the_registry(
    network_server: NetworkServer,
) -> None:
    registry = ToolRegistry()
    async with serving(registry, web=network_server.config()):
        await call(registry, "web__enable_extra")
        await until(registry, lambda: "web__extra" in registry)
        await call(registry, "web__disable_extra")
        await until(registry, lambda: "web__extra" not in registry)


async def test_network_call_cancelled_is_cancelled_at_the_server(
    network_server: NetworkServer,
) -> None:
    network_server.marker.unlink(missing_ok=True)
    registry = ToolRegistry()
    async with serving(registry, web=network_server.config()):
        with trio.move_on_after(0.5):
            await call(registry, "web__slow", seconds=30)
        assert await wait_for_file(network_server.marker) == "cancelled"
        assert (await call(registry, "web__echo", text="ok")).content == "ok"


async def test_unreachable_network_server_fails_the_start() -> None:
    registry = ToolRegistry()
    config = MCPServerConfig(transport="http", url=f"http://127.0.0.1:{free_port()}/mcp", timeout=5)
    async with serving(registry) as runtime:
        with pytest.raises(ToolExecutionFailed) as raised:
            await runtime.start_child(mcp_child_spec("down", config, registry), supervisor="mcp")
    assert raised.value.details["reason"] == "mcp_connection_failed"


async def start_http_server(port: int) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(DEMO), "--http", str(port)], stdout=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.02)
                else:
                    await stream.aclose()
                    return process
    except BaseException:
        await stop(process)
        raise


async def stop(process: trio.Process) -> None:
    process.kill()
    with trio.move_on_after(5, shield=True):
        await process.wait()


async def test_http_server_that_goes_away_is_reconnected_when_it_is_back() -> None:
    port = free_port()
    registry = ToolRegistry()
    config = MCPServerConfig(transport="http", url=f"http://127.0.0.1:{port}/mcp", timeout=5)
    spec = mcp_supervisor_spec({"web": config}, registry, ping_interval=0.2)
    server = await start_http_server(port)
    try:
        async with open_runtime(spec) as runtime:
            old_pid = int((await call(registry, "web__pid")).content)
            await stop(server)
            # The next ping fails: the tools leave the registry while the server is away.
            await until(registry, lambda: len(registry) == 0)
            server = await start_http_server(port)
            await until(registry, lambda: "web__pid" in registry)
            assert int((await call(registry, "web__pid")).content) != old_pid
            assert runtime.ref("mcp.web").statistics().restarts >= 1
    finally:
        await stop(server)
