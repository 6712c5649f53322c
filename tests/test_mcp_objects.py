"""MCP servers registered as objects: SDK servers in this process, URLs and command lists.

An in-process server is an ``mcp`` SDK server object (``MCPServer`` or the low-level
``Server``) served over in-memory streams in the connection actor's task tree. These tests
show it behaves like a configured server: the same tools, calls, cancellation at the server,
``tools/list_changed``, supervision, containment and cleanup, and that no process starts.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from mcp.server import Server
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

import llm_invocation as llm
from llm_invocation.actors.mcp import (
    DEFAULT_MCP_PATH,
    MCPConnection,
    MCPTool,
    ServerInfo,
    server_url,
)
from llm_invocation.testing import Scenario, Scenarios, ScriptedToolCall

DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"


# -- helpers ------------------------------------------------------------------------------------


def config(**extra: Any) -> llm.Config:
    """A mock client's configuration with its limits stated (no defaults relied on)."""
    return llm.Config.unlimited(provider="mock", model="mock", **extra)


@asynccontextmanager
async def client(scenarios: Scenarios | None = None, **extra: Any) -> AsyncGenerator[llm.Client]:
    async with llm.open_client(config(**extra), scenarios=scenarios) as opened:
        yield opened


def calculator() -> MCPServer:
    """A small SDK server, made afresh for each test (it keeps its tools as state)."""
    server = MCPServer("calculator", version="0.1.0", log_level="WARNING")

    @server.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    @server.tool()
    def pid() -> int:
        """The process id of the server."""
        return os.getpid()

    @server.tool()
    def explode() -> str:
        """Raise."""
        raise RuntimeError("the tool broke")

    return server


Lifespan = Callable[[Server[Any]], AbstractAsyncContextManager[dict[str, Any]]]


def low_level(
    on_call: Callable[[], object] | None = None, *, lifespan: Lifespan | None = None
) -> Server[Any]:
    """A low-level SDK server with one tool, ``echo``; ``on_call`` may raise instead."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
        return mcp_types.ListToolsResult(
            tools=[mcp_types.Tool(name="echo", description="Echo the text.", input_schema=schema)]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        if on_call is not None:
            on_call()
        text = str((params.arguments or {}).get("text", ""))
        return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=text)])

    if lifespan is None:
        return Server("low", on_list_tools=list_tools, on_call_tool=call_tool)
    return Server("low", lifespan=lifespan, on_list_tools=list_tools, on_call_tool=call_tool)


async def until(registry: llm.ToolRegistry, predicate: Callable[[], bool]) -> None:
    """Wait for registry changes until ``predicate`` holds (the wall limit bounds it)."""
    while not predicate():
        changed = trio.Event()
        stop = registry.on_change(changed.set)
        try:
            if predicate():
                return
            await changed.wait()
        finally:
            stop()


def task_names() -> list[str]:
    """The names of every task of this trio run, sorted."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return sorted(names)


def shape(registry: llm.ToolRegistry) -> list[tuple[str, str, dict[str, Any]]]:
    return [(t.name, t.description, t.parameters) for t in registry.list()]


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail any attempt to start a process (and record it)."""
    attempts: list[object] = []

    def refuse(self: subprocess.Popen[Any], args: object, *_: Any, **__: Any) -> None:
        attempts.append(args)
        raise AssertionError(f"a process was started: {args!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    return attempts


# -- reading the forms of a server --------------------------------------------------------------


def test_a_bare_host_and_port_is_streamable_http_at_the_default_path() -> None:
    server = llm.mcp_server("localhost:8080")
    assert isinstance(server, llm.MCPServerConfig)
    assert (server.transport, server.url) == ("http", "http://localhost:8080/mcp")


@given(
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    port=st.integers(min_value=1, max_value=65535),
    path=st.one_of(
        st.none(), st.from_regex(r"[a-z0-9_-]{1,10}(/[a-z0-9_-]{1,10}){0,2}", fullmatch=True)
    ),
)
def test_a_bare_address_keeps_its_host_port_and_path(
    host: str, port: int, path: str | None
) -> None:
    address = f"{host}:{port}" + (f"/{path}" if path else "")
    url = server_url(address)
    assert url == f"http://{host}:{port}/{path if path else DEFAULT_MCP_PATH.lstrip('/')}"
    server = llm.mcp_server(address)
    assert isinstance(server, llm.MCPServerConfig)
    assert server.url == url


def test_a_url_with_a_scheme_is_kept_as_given() -> None:
    server = llm.mcp_server("https://tools.example.com/v1/mcp", timeout=5)
    assert isinstance(server, llm.MCPServerConfig)
    assert (server.transport, server.url, server.timeout) == (
        "http",
        "https://tools.example.com/v1/mcp",
        5.0,
    )


def test_a_command_list_is_a_stdio_server() -> None:
    server = llm.mcp_server(["uvx", "mcp-server-fetch", "--flag"])
    assert isinstance(server, llm.MCPServerConfig)
    assert (server.transport, server.command, server.args) == (
        "stdio",
        "uvx",
        ["mcp-server-fetch", "--flag"],
    )


def test_a_configuration_and_a_mapping_are_used_as_they_are() -> None:
    configured = llm.MCPServerConfig(transport="http", url="http://127.0.0.1:1/mcp")
    assert llm.mcp_server(configured) is configured
    from_mapping = llm.mcp_server({"transport": "sse", "url": "http://127.0.0.1:1/sse"})
    assert isinstance(from_mapping, llm.MCPServerConfig)
    assert from_mapping.transport == "sse"
    assert llm.mcp_server(configured, timeout=3) == llm.MCPServerConfig(
        transport="http", url="http://127.0.0.1:1/mcp", timeout=3
    )


def test_an_sdk_server_object_is_served_in_process() -> None:
    sdk = calculator()
    server = llm.mcp_server(sdk, timeout=7)
    assert isinstance(server, llm.InProcessMCPServer)
    assert (server.server, server.timeout, server.transport) == (sdk, 7.0, "memory")
    assert repr(server) == "<InProcessMCPServer 'calculator' timeout=7>"
    assert isinstance(llm.mcp_server(low_level()), llm.InProcessMCPServer)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        [],
        ["python", 3],
        b"localhost:8080",
        42,
        object(),
        "ftp://example.com/mcp",
        "local host:80",
        {"transport": "stdio"},
    ],
    ids=lambda value: type(value).__name__ if type(value) is object else repr(value),
)
def test_anything_else_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(llm.ConfigurationError):
        llm.mcp_server(value)


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True])
def test_an_in_process_server_needs_a_positive_timeout(timeout: Any) -> None:
    with pytest.raises(llm.ConfigurationError):
        llm.InProcessMCPServer(calculator(), timeout=timeout)


# -- registered by object, through the client ---------------------------------------------------


async def test_an_in_process_server_lists_the_same_tools_as_over_stdio() -> None:
    # The same server module, once as a subprocess over stdio (configured) and once as an
    # object in this process (registered).
    demo = importlib.import_module("tests.mcp_servers.demo_server")
    stdio = {"transport": "stdio", "command": sys.executable, "args": [str(DEMO)], "timeout": 10}
    async with client(mcp={"servers": {"demo": stdio}}) as configured:
        await until(configured.tools, lambda: "demo__add" in configured.tools)
        over_stdio = shape(configured.tools)
        specs_over_stdio = configured.tools.specs()
    async with client() as registered:
        names = await registered.register_mcp_server("demo", demo.server)
        assert shape(registered.tools) == over_stdio
        assert registered.tools.specs() == specs_over_stdio
        assert names == sorted(name for name, _, _ in over_stdio)
        assert all(isinstance(t, MCPTool) for t in registered.tools.list())


async def test_a_call_runs_in_this_process_and_no_process_is_started(
    no_subprocess: list[object],
) -> None:
    async with client() as opened:
        names = await opened.register_mcp_server("calc", calculator())
        assert names == ["calc__explode", "calc__multiply", "calc__pid"]
        product, pid = await opened.execute_tools(
            [
                llm.ToolCall(id="c1", name="calc__multiply", arguments='{"a": 6, "b": 7}'),
                llm.ToolCall(id="c2", name="calc__pid", arguments="{}"),
            ]
        )
        info = await opened.runtime.ref("mcp.calc", MCPConnection).call(ServerInfo())
    assert (product.content, product.is_error) == ("42", False)
    assert pid.content == str(os.getpid())
    assert (info.transport, info.name, info.version, info.calls) == (
        "memory",
        "calculator",
        "0.1.0",
        2,
    )
    assert no_subprocess == []


async def test_the_tool_loop_runs_tools_of_an_in_process_server() -> None:
    scenarios = Scenarios()
    scenarios.add(
        "mock",
        Scenario(tool_calls=[ScriptedToolCall(name="calc__multiply", arguments={"a": 6, "b": 7})]),
        Scenario(text="6 times 7 is 42."),
    )
    async with client(scenarios) as opened:
        await opened.register_mcp_server("calc", calculator())
        async with opened.invoke(
            messages=[llm.user("6*7?")], tools=["calc__multiply"], tool_mode="auto"
        ) as loop:
            items = [item async for item in loop]
        (results,) = [item for item in items if isinstance(item, llm.ToolResultsEvent)]
        assert results.results[0].content == "42"
        assert loop.response.text == "6 times 7 is 42."


async def test_cancelling_the_caller_cancels_the_call_at_the_server() -> None:
    started, cancelled_at_server, notified = trio.Event(), trio.Event(), trio.Event()
    server = calculator()

    @server.tool()
    async def wait() -> str:
        """Wait until cancelled."""
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled_at_server.set()
        return "never"

    async def observe(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "notifications/cancelled":
            notified.set()
        return await call_next(ctx)

    server.middleware.append(observe)
    async with client() as opened:
        await opened.register_mcp_server("calc", server)
        tool = opened.tools.get("calc__wait")
        no_arguments: dict[str, Any] = {}
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tool.execute, no_arguments)
                await started.wait()
                scope.cancel()
        assert scope.cancelled_caught
        await notified.wait()
        await cancelled_at_server.wait()
        # The connection is still the same one: the server was told, not disconnected.
        (result,) = await opened.execute_tools(
            [llm.ToolCall(id="c1", name="calc__multiply", arguments='{"a": 2, "b": 3}')]
        )
        assert result.content == "6"
        assert opened.runtime.statistics().restarts == 0


async def test_the_tools_follow_the_servers_list_changed_notifications() -> None:
    server = calculator()

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

    async with client() as opened:
        names = await opened.register_mcp_server("calc", server)
        assert "calc__extra" not in names
        await opened.tools.get("calc__enable_extra").execute({})
        await until(opened.tools, lambda: "calc__extra" in opened.tools)
        result = await opened.tools.get("calc__extra").execute({"value": "x"})
        assert result.content == "extra:x"
        await opened.tools.get("calc__disable_extra").execute({})
        await until(opened.tools, lambda: "calc__extra" not in opened.tools)
        assert opened.runtime.statistics().restarts == 0


async def test_a_tool_that_raises_is_an_error_result_and_the_connection_lives() -> None:
    async with client() as opened:
        await opened.register_mcp_server("calc", calculator())
        result = await opened.tools.get("calc__explode").execute({})
        assert (result.is_error, result.error_code) == (True, "tool_execution_failed")
        (again,) = await opened.execute_tools(
            [llm.ToolCall(id="c1", name="calc__multiply", arguments='{"a": 3, "b": 3}')]
        )
        assert again.content == "9"
        assert opened.runtime.statistics().restarts == 0


async def test_a_low_level_handler_that_raises_is_tool_execution_failed_for_that_call() -> None:
    failing = True

    def maybe_fail() -> None:
        if failing:
            raise RuntimeError("the handler broke")

    async with client() as opened:
        assert await opened.register_mcp_server("low", low_level(maybe_fail)) == ["low__echo"]
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.tools.get("low__echo").execute({"text": "hi"})
        assert caught.value.details["server"] == "low"
        assert "the handler broke" in caught.value.message
        (through_the_executor,) = await opened.execute_tools(
            [llm.ToolCall(id="c1", name="low__echo", arguments='{"text": "hi"}')]
        )
        assert (through_the_executor.is_error, through_the_executor.error_code) == (
            True,
            "tool_execution_failed",
        )
        failing = False
        result = await opened.tools.get("low__echo").execute({"text": "hi"})
        assert result.content == "hi"
        assert opened.runtime.statistics().restarts == 0


async def test_a_server_whose_task_fails_is_restarted_by_the_supervisor() -> None:
    crash = trio.Event()
    runs: list[str] = []

    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncGenerator[dict[str, Any]]:
        runs.append("start")
        first = len(runs) == 1

        async def fail_on_demand() -> None:
            await crash.wait()
            raise RuntimeError("the server's own task failed")

        async with anyio.create_task_group() as group:
            if first:  # only the first run fails; the restarted one serves
                group.start_soon(fail_on_demand)
            yield {}
            group.cancel_scope.cancel()

    server = low_level(lifespan=lifespan)
    async with client() as opened:
        await opened.register_mcp_server("low", server)
        crash.set()
        # The restarted run lists its tools again (after its lifespan has started).
        await until(opened.tools, lambda: len(runs) == 2 and "low__echo" in opened.tools)
        result = await opened.tools.get("low__echo").execute({"text": "back"})
        assert result.content == "back"
        assert runs == ["start", "start"]
        assert opened.runtime.statistics().restarts == 1


async def test_a_server_that_fails_to_start_is_a_typed_error_and_the_client_lives() -> None:
    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncGenerator[dict[str, Any]]:
        raise RuntimeError("cannot start")
        yield {}

    server = low_level(lifespan=lifespan)
    async with client() as opened:
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.register_mcp_server("low", server)
        assert caught.value.details["reason"] == "mcp_connection_failed"
        assert "low__echo" not in opened.tools
        assert await opened.register_mcp_server("low", low_level()) == ["low__echo"]


async def test_unregistering_ends_the_server_and_leaves_no_task() -> None:
    lifespans: list[str] = []

    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncGenerator[dict[str, Any]]:
        lifespans.append("entered")
        try:
            yield {}
        finally:
            lifespans.append("exited")

    server = low_level(lifespan=lifespan)
    async with client() as opened:
        before = task_names()
        await opened.register_mcp_server("low", server)
        assert task_names() != before
        await opened.unregister_mcp_server("low")
        assert "low__echo" not in opened.tools
        assert lifespans == ["entered", "exited"]
        assert task_names() == before
        # The name is free again.
        await opened.register_mcp_server("low", server)
    assert lifespans == ["entered", "exited", "entered", "exited"]


async def test_closing_the_client_ends_an_in_process_server() -> None:
    ended = trio.Event()

    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncGenerator[dict[str, Any]]:
        try:
            yield {}
        finally:
            ended.set()

    server = low_level(lifespan=lifespan)
    before = task_names()
    async with client() as opened:
        await opened.register_mcp_server("low", server)
    assert ended.is_set()
    assert task_names() == before


async def test_a_duplicate_name_is_a_configuration_error() -> None:
    async with client() as opened:
        await opened.register_mcp_server("calc", calculator())
        with pytest.raises(llm.ConfigurationError) as caught:
            await opened.register_mcp_server("calc", low_level())
        assert caught.value.details == {"server": "calc", "reason": "duplicate_mcp_server"}
        # The first server is untouched.
        result = await opened.tools.get("calc__multiply").execute({"a": 2, "b": 2})
        assert result.content == "4"


async def test_the_name_of_a_configured_server_is_taken() -> None:
    broken = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-c", "raise SystemExit(3)"],
    }
    async with client(mcp={"servers": {"files": broken}}) as opened:
        with pytest.raises(llm.ConfigurationError) as caught:
            await opened.register_mcp_server("files", calculator())
        assert caught.value.details["reason"] == "duplicate_mcp_server"


@pytest.mark.parametrize("name", ["", "a/b"])
async def test_an_invalid_name_is_a_configuration_error(name: str) -> None:
    async with client() as opened:
        with pytest.raises(llm.ConfigurationError):
            await opened.register_mcp_server(name, calculator())


async def test_unregistering_an_unknown_server_is_a_configuration_error() -> None:
    async with client() as opened:
        with pytest.raises(llm.ConfigurationError) as caught:
            await opened.unregister_mcp_server("nothing")
        assert caught.value.details == {"server": "nothing", "reason": "unknown_mcp_server"}
