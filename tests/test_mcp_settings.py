"""Per-call timeouts, and HTTP authentication beyond static headers (against real servers)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Generator
from pathlib import Path

import httpx2
import pytest
import trio

import llm_invocation as llm
from llm_invocation.errors import ConfigurationError

pytestmark = [
    # As in test_mcp.py: the SDK's streamable HTTP client leaves httpx2's async generators
    # to the garbage collector; trio's finalizer closes them and warns.
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"
SECRET = "Bearer s3cr3t-t0ken"


def demo_server() -> dict[str, object]:
    return {"transport": "stdio", "command": sys.executable, "args": [str(DEMO)], "timeout": 10}


async def call(client: llm.Client, tool: str, /, **arguments: object) -> llm.ToolResult:
    (result,) = await client.execute_tools(
        [llm.ToolCall(id="c1", name=tool, arguments=json.dumps(arguments))]
    )
    return result


def mcp_tool(client: llm.Client, name: str) -> llm.MCPTool:
    found = client.tools.get(name)
    assert isinstance(found, llm.MCPTool)
    return found


async def test_a_call_timeout_overrides_the_servers() -> None:
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("srv", demo_server())
        slow = mcp_tool(client, "srv__slow")
        result = await slow.execute({"seconds": 30}, timeout=0.3)
        assert (result.is_error, result.error_code) == (True, "timeout")
        assert "0.3s" in result.content
        assert (await mcp_tool(client, "srv__echo").execute({"text": "ok"})).content == "ok"


@pytest.fixture
def http_url(mcp_http_port: int) -> str:
    return f"http://127.0.0.1:{mcp_http_port}/mcp"


async def test_a_header_provider_is_called_per_connection(
    http_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def headers() -> dict[str, str]:
        calls.append(1)
        return {"Authorization": SECRET}

    caplog.set_level(logging.DEBUG)
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("web", http_url, auth=headers)
        result = await call(client, "web__header", name="authorization")
    assert result.content == SECRET
    assert calls == [1]
    # (The SDK logs the tool's result at DEBUG, which echoes the header by design here.)
    ours = [
        r for r in caplog.records if r.name.startswith(("llm_invocation", "httpx2", "httpcore2"))
    ]
    assert ours
    assert not [r for r in ours if SECRET in r.getMessage()]


async def test_an_async_header_provider_is_awaited(http_url: str) -> None:
    async def headers() -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        return {"X-Api-Key": "k-123"}

    async with llm.open_mock_client() as client:
        await client.register_mcp_server("web", http_url, auth=headers)
        assert (await call(client, "web__header", name="x-api-key")).content == "k-123"


class TokenAuth(httpx2.Auth):
    """An httpx2 auth flow, as the SDK's OAuth provider is one."""

    def __init__(self) -> None:
        self.requests = 0

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response]:
        self.requests += 1
        request.headers["Authorization"] = SECRET
        yield request


async def test_an_httpx_auth_signs_every_request(http_url: str) -> None:
    auth = TokenAuth()
    async with llm.open_mock_client() as client:
        await client.register_mcp_server("web", http_url, auth=auth)
        assert (await call(client, "web__header", name="authorization")).content == SECRET
    assert auth.requests >= 3  # initialize, initialized, tools/list, the call...


async def test_a_header_provider_that_returns_no_mapping_fails_the_connection(
    http_url: str,
) -> None:
    async with llm.open_mock_client() as client:
        with pytest.raises(ConfigurationError) as raised:
            await client.register_mcp_server("web", http_url, auth=lambda: ["nope"])  # pyright: ignore[reportArgumentType]
    assert raised.value.details["reason"] == "invalid_mcp_auth"


async def test_auth_is_refused_for_a_stdio_server() -> None:
    async with llm.open_mock_client() as client:
        with pytest.raises(ConfigurationError):
            await client.register_mcp_server("srv", demo_server(), auth=dict)
