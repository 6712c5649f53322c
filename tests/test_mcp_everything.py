"""The MCP client against the protocol's reference server, ``server-everything`` (on node).

The other MCP tests use servers written with the Python ``mcp`` SDK; this one checks that
the client works with a server written with another SDK, over stdio, streamable HTTP and
legacy SSE: its tools (schemas, hints, structured and typed content, cancellation), its
resources and subscriptions, its prompts and completions, and its restart.

The server is installed by ``tests/mcp_servers/install_everything.sh`` into
``$LLM_MCP_EVERYTHING_DIR`` (by default ``~/.cache/llm-invocation/server-everything``).
Without node or without the server these tests skip, saying so; with
``LLM_REQUIRE_NODE=1`` (as in CI) they fail instead.

Which tools the server offers depends on the capabilities the client declares (it adds
tools for roots, sampling and elicitation), so the tests name the ones it always offers.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.actors.mcp import MCPTool
from llm_invocation.errors import ToolExecutionFailed

from .everything_server import (
    NodeServer,
    connected,
    entry_point,
    find_node,
    free_port,
    http,
    serving,
    stdio,
)

pytestmark = [
    # The SDK's streamable HTTP client leaves httpx2's async generators to the garbage
    # collector (see tests/test_mcp.py).
    pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning"),
]

TAP = Path(__file__).parent / "mcp_servers" / "stdio_tap.py"
AN_HOUR = 3600.0

# The tools the server offers to every client, whatever its capabilities.
ALWAYS_OFFERED = {
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
}
TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"
BLOB_TEMPLATE = "demo://resource/dynamic/blob/{resourceId}"


@pytest.fixture(scope="module")
def node() -> str:
    """node's path; skips (or fails under LLM_REQUIRE_NODE=1) without node or the server."""
    return find_node()


@pytest.fixture(scope="module")
def http_url(node: str) -> Iterator[str]:
    """A streamable HTTP server shared by the module (each client has its own session)."""
    with serving(node, "streamableHttp") as url:
        yield url


@pytest.fixture(scope="module")
def sse_url(node: str) -> Iterator[str]:
    with serving(node, "sse") as url:
        yield url


def tool(client: llm.Client, name: str) -> MCPTool:
    found = client.tools.get(f"every__{name}")
    assert isinstance(found, MCPTool)
    return found


async def run(client: llm.Client, name: str, /, **arguments: Any) -> llm.ToolResult:
    """Run ``every__<name>`` as a model's tool call is run."""
    call = llm.ToolCall(id="c1", name=f"every__{name}", arguments=json.dumps(arguments))
    (result,) = await client.execute_tools([call])
    return result


# -- the connection ----------------------------------------------------------------------------


@pytest.fixture(params=["stdio", "http", "sse"])
def any_transport(request: pytest.FixtureRequest, node: str) -> dict[str, Any]:
    match request.param:
        case "stdio":
            return stdio(node)
        case "http":
            return http(request.getfixturevalue("http_url"))
        case _:
            url: str = request.getfixturevalue("sse_url")
            return {"transport": "sse", "url": url, "timeout": 10}


async def test_tools_run_over_every_transport(any_transport: dict[str, Any]) -> None:
    async with connected(any_transport) as client:
        echoed = await run(client, "echo", message="over the wire")
        summed = await run(client, "get-sum", a=2, b=40)
    assert (echoed.content, echoed.is_error) == ("Echo: over the wire", False)
    assert (summed.content, summed.is_error) == ("The sum of 2 and 40 is 42.", False)


async def test_the_server_is_known_by_its_name_version_and_instructions(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        info = await client.mcp_server_info("every")
    assert (info.name, info.version, info.transport, info.state) == (
        "mcp-servers/everything",
        "2.0.0",
        "http",
        "ready",
    )
    assert info.instructions is not None
    assert "Everything Server" in info.instructions


async def test_a_restarted_http_server_is_noticed_and_the_next_call_succeeds(node: str) -> None:
    # The server answers a session it does not know with HTTP 400 (not the 404 the
    # specification asks for): the client still takes it for a restart.
    port = free_port()
    server = await trio.to_thread.run_sync(NodeServer, node, "streamableHttp", port)
    try:
        config = {**http(f"http://127.0.0.1:{port}/mcp"), "ping_interval": AN_HOUR}
        async with connected(config) as client:
            echo = tool(client, "echo")  # held across the restart, as a tool loop holds it
            assert (await echo.execute({"message": "before"})).content == "Echo: before"
            await trio.to_thread.run_sync(server.stop)
            server = await trio.to_thread.run_sync(NodeServer, node, "streamableHttp", port)
            with trio.fail_after(15):  # far below the hour between pings
                after = await echo.execute({"message": "after"})
            info = await client.mcp_server_info("every")
    finally:
        await trio.to_thread.run_sync(server.stop)
    assert (after.content, after.is_error) == ("Echo: after", False)
    assert (info.reconnects, info.state) == (1, "ready")


async def test_a_stdio_server_gets_the_configured_environment_and_not_ours(
    node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_TEST_HOST_SECRET", "host-secret-8d1c")
    async with connected(stdio(node, env={"GREETING": "configured-3f7a"})) as client:
        seen = json.loads((await run(client, "get-env")).content)
    assert seen["GREETING"] == "configured-3f7a"
    assert "LLM_TEST_HOST_SECRET" not in seen


# -- tools ----------------------------------------------------------------------------------


async def test_every_tool_is_offered_with_the_schema_the_server_lists(http_url: str) -> None:
    import mcp_types
    from mcp import Client

    # The SDK's client declares what ours declares (roots, forms, and sampling, on here),
    # so the server lists the same tools to both; the callbacks are never asked.
    async def no_roots(context: Any) -> mcp_types.ListRootsResult:
        return mcp_types.ListRootsResult(roots=[])

    async def decline(context: Any, params: Any) -> mcp_types.ElicitResult:
        return mcp_types.ElicitResult(action="decline")

    async def refuse(context: Any, params: Any) -> mcp_types.ErrorData:
        return mcp_types.ErrorData(code=-1, message="not while listing")

    async with Client(
        http_url,
        list_roots_callback=no_roots,
        elicitation_callback=decline,
        sampling_callback=refuse,
    ) as sdk:
        listed = (await sdk.list_tools()).tools
    runnable = {
        t.name: t.input_schema
        for t in listed
        if t.execution is None or t.execution.task_support != "required"
    }
    async with connected(http(http_url), sampling=llm.MCPSampling(model="mock")) as client:
        offered = {
            t.remote_name: t.parameters
            for t in map(client.tools.get, client.tools.names())
            if isinstance(t, MCPTool)
        }
    assert set(runnable) >= ALWAYS_OFFERED | {
        "get-roots-list",
        "trigger-elicitation-request",
        "trigger-url-elicitation",
        "trigger-sampling-request",
    }
    assert offered == runnable


async def test_a_tool_that_requires_tasks_is_not_offered(http_url: str) -> None:
    from mcp import Client

    async with Client(http_url) as sdk:
        listed = {t.name: t for t in (await sdk.list_tools()).tools}
    research = listed["simulate-research-query"].execution
    assert research is not None and research.task_support == "required"
    async with connected(http(http_url)) as client:
        names = set(client.tools.names())
    assert "every__echo" in names
    assert "every__simulate-research-query" not in names


async def test_a_tool_keeps_its_title_and_hints(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        echo, toggle = tool(client, "echo"), tool(client, "toggle-subscriber-updates")
    assert echo.title == "Echo Tool"
    assert echo.annotations == llm.MCPToolAnnotations(
        read_only=True, destructive=False, idempotent=True, open_world=False
    )
    assert toggle.annotations is not None and toggle.annotations.idempotent is False


async def test_a_structured_result_is_the_data_and_its_schema_is_kept(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await run(client, "get-structured-content", location="Chicago")
        schema = tool(client, "get-structured-content").output_schema
    weather = {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}
    assert (result.is_error, result.data) == (False, weather)
    assert schema is not None
    assert set(schema["properties"]) == set(weather)


async def test_an_image_reaches_the_model_with_the_text_around_it(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await run(client, "get-tiny-image")
    assert result.content.splitlines() == [
        "Here's the image you requested:",
        "The image above is the MCP logo.",
    ]
    (image,) = result.images
    assert image.media_type == "image/png"
    assert image.to_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_content_annotations_are_kept_per_block(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await run(client, "get-annotated-message", messageType="error", includeImage=True)
    text, image = result.blocks
    assert isinstance(text.part, llm.TextPart) and isinstance(image.part, llm.ImagePart)
    assert text.annotations == llm.ContentAnnotations(audience=["user", "assistant"], priority=1.0)
    assert image.annotations == llm.ContentAnnotations(audience=["user"], priority=0.5)


async def test_an_embedded_blob_resource_is_a_typed_part_with_its_bytes(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await run(client, "get-resource-reference", resourceType="Blob", resourceId=2)
    embedded = result.blocks[1].part
    assert isinstance(embedded, llm.ResourcePart)
    assert embedded.uri == "demo://resource/dynamic/blob/2"
    assert embedded.to_bytes().startswith(b"Resource 2: This is a base64 blob")
    assert f"[resource {embedded.uri} (text/plain, " in result.content


async def test_resource_links_are_typed_parts_that_can_be_read(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await run(client, "get-resource-links", count=2)
        links = [block.part for block in result.blocks[1:]]
        assert links == [
            llm.ResourceLinkPart(
                uri="demo://resource/dynamic/blob/1",
                name="Blob Resource 1",
                description="Resource 1: plaintext resource",
                media_type="text/plain",
            ),
            llm.ResourceLinkPart(
                uri="demo://resource/dynamic/text/2",
                name="Text Resource 2",
                description="Resource 2: plaintext resource",
                media_type="text/plain",
            ),
        ]
        text_link = links[1]
        assert isinstance(text_link, llm.ResourceLinkPart)
        (contents,) = await client.mcp("every").read_resource(text_link.uri)
    assert contents.text is not None and contents.text.startswith("Resource 2: This is a plain")


async def test_cancelling_the_caller_cancels_the_call_at_the_server(
    node: str, tmp_path: Path
) -> None:
    sent = tmp_path / "sent.jsonl"
    server = {
        **stdio(node),
        "command": sys.executable,
        "args": [str(TAP), str(sent), node, str(entry_point()), "stdio"],
    }
    async with connected(server) as client:
        long_running = tool(client, "trigger-long-running-operation")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_running.execute, {"duration": 60, "steps": 1})
                # Every task waits: the request is on its way to the server.
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        # The tap passed this call on after the lines sent before it.
        after = await run(client, "echo", message="still connected")
        info = await client.mcp_server_info("every")
    assert scope.cancelled_caught
    assert after.content == "Echo: still connected"
    assert info.reconnects == 0
    lines = [json.loads(line) for line in sent.read_text().splitlines()]
    (call,) = [
        line
        for line in lines
        if line.get("method") == "tools/call"
        and line["params"]["name"] == "trigger-long-running-operation"
    ]
    cancelled = [line for line in lines if line.get("method") == "notifications/cancelled"]
    assert [line["params"]["requestId"] for line in cancelled] == [call["id"]]


async def test_a_call_past_its_timeout_is_a_timeout_result_and_the_server_stays(
    http_url: str,
) -> None:
    async with connected(http(http_url)) as client:
        long_running = tool(client, "trigger-long-running-operation")
        result = await long_running.execute({"duration": 60, "steps": 1}, timeout=0.5)
        after = await run(client, "echo", message="still here")
        info = await client.mcp_server_info("every")
    assert (result.is_error, result.error_code) == (True, "timeout")
    assert 0.5 <= result.duration < 10
    assert after.content == "Echo: still here"
    assert (info.timeouts, info.reconnects) == (1, 0)


async def test_a_tool_error_is_an_error_result_and_the_connection_stays(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        failed = await run(client, "get-resource-reference", resourceType="Text", resourceId=0)
        after = await run(client, "get-sum", a=1, b=1)
    assert (failed.is_error, failed.error_code) == (True, "tool_execution_failed")
    assert "Invalid resourceId" in failed.content
    assert after.content == "The sum of 1 and 1 is 2."


# -- resources --------------------------------------------------------------------------------


async def test_resources_are_listed_with_their_media_types(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        resources = await client.mcp("every").list_resources()
    by_uri = {resource.uri: resource for resource in resources}
    features = by_uri["demo://resource/static/document/features.md"]
    assert (features.name, features.media_type) == ("features.md", "text/markdown")


async def test_resource_templates_are_listed(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        templates = await client.mcp("every").list_resource_templates()
    assert {(t.uri_template, t.media_type) for t in templates} == {
        (TEXT_TEMPLATE, "text/plain"),
        (BLOB_TEMPLATE, "application/octet-stream"),
    }


async def test_a_text_resource_reads_as_text(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        (contents,) = await client.mcp("every").read_resource("demo://resource/dynamic/text/3")
    assert (contents.uri, contents.media_type, contents.blob) == (
        "demo://resource/dynamic/text/3",
        "text/plain",
        None,
    )
    assert contents.text is not None
    assert contents.text.startswith("Resource 3: This is a plaintext resource")


async def test_a_blob_resource_reads_as_its_bytes(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        (contents,) = await client.mcp("every").read_resource("demo://resource/dynamic/blob/3")
    assert contents.text is None and contents.blob is not None
    assert base64.b64decode(contents.blob) == contents.to_bytes()
    assert contents.to_bytes().startswith(b"Resource 3: This is a base64 blob")


async def test_an_unknown_resource_is_the_servers_error_typed(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        with pytest.raises(ToolExecutionFailed) as raised:
            await client.mcp("every").read_resource("demo://resource/dynamic/text/0")
        (still,) = await client.mcp("every").read_resource("demo://resource/dynamic/text/1")
    assert raised.value.details["reason"] == "mcp_request_failed"
    assert "mcp_code" in raised.value.details
    assert still.text is not None


async def test_a_subscribed_resource_s_update_reaches_the_callback(http_url: str) -> None:
    uri = "demo://resource/dynamic/text/5"
    heard: list[llm.MCPEvent] = []
    updated = trio.Event()

    def on_event(event: llm.MCPEvent) -> None:
        heard.append(event)
        if isinstance(event, llm.ResourceUpdated):
            updated.set()

    async with connected(http(http_url)) as client:
        handle = client.mcp("every")
        handle.on_event(on_event)
        await handle.subscribe_resource(uri)
        # On the session's own event stream (GET), open since the handshake: the server
        # sends one update at once, then one every 5 s.
        await run(client, "toggle-subscriber-updates")
        with trio.fail_after(10):
            await updated.wait()
    assert llm.ResourceUpdated(server="every", uri=uri) in heard


async def test_a_resource_a_tool_creates_is_announced_listed_and_read_back(node: str) -> None:
    # Over stdio: the announcement is sent once, and a stdio server has no stream to open.
    original = b"compress me, then read me back"
    data = "data:text/plain;base64," + base64.b64encode(original).decode()
    changed = trio.Event()

    def on_event(event: llm.MCPEvent) -> None:
        if isinstance(event, llm.ResourcesChanged):
            changed.set()

    async with connected(stdio(node)) as client:
        handle = client.mcp("every")
        handle.on_event(on_event)
        result = await run(client, "gzip-file-as-resource", name="note.txt.gz", data=data)
        (link,) = [block.part for block in result.blocks]
        assert isinstance(link, llm.ResourceLinkPart)
        with trio.fail_after(10):
            await changed.wait()
        listed = {resource.uri for resource in await handle.list_resources()}
        (contents,) = await handle.read_resource(link.uri)
    assert link.uri == "demo://resource/session/note.txt.gz"
    assert link.uri in listed
    assert contents.media_type == "application/gzip"
    assert gzip.decompress(contents.to_bytes()) == original


# -- prompts and completion -----------------------------------------------------------------


async def test_prompts_are_listed_with_their_arguments(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        prompts = {prompt.name: prompt for prompt in await client.mcp("every").list_prompts()}
    assert {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"} <= set(prompts)
    arguments = [(a.name, a.required) for a in prompts["args-prompt"].arguments]
    assert arguments == [("city", True), ("state", False)]


async def test_a_prompt_is_filled_in_with_its_arguments(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await client.mcp("every").get_prompt(
            "args-prompt", {"city": "Lyon", "state": "Rhone"}
        )
    assert result.messages == [llm.user("What's weather in Lyon, Rhone?")]


async def test_a_missing_prompt_argument_is_the_servers_error_typed(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        with pytest.raises(ToolExecutionFailed) as raised:
            await client.mcp("every").get_prompt("args-prompt", {"state": "Rhone"})
    assert raised.value.details["reason"] == "mcp_request_failed"


async def test_a_prompt_embedding_a_text_resource_carries_its_text(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        result = await client.mcp("every").get_prompt(
            "resource-prompt", {"resourceType": "Text", "resourceId": "4"}
        )
    intro, resource = result.messages
    assert "Text resource with id: 4" in str(intro.content)
    assert str(resource.content).startswith(
        "[demo://resource/dynamic/text/4]\nResource 4: This is a plaintext resource"
    )


async def test_a_prompt_embedding_a_text_blob_carries_its_decoded_text(http_url: str) -> None:
    # The server sends the blob as text/plain: its bytes are UTF-8 text.
    async with connected(http(http_url)) as client:
        result = await client.mcp("every").get_prompt(
            "resource-prompt", {"resourceType": "Blob", "resourceId": "4"}
        )
    _, resource = result.messages
    assert str(resource.content).startswith(
        "[demo://resource/dynamic/blob/4]\nResource 4: This is a base64 blob"
    )


async def test_a_prompt_argument_is_completed_from_what_was_typed(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        completion = await client.mcp("every").complete_prompt_argument(
            "completable-prompt", "department", "S"
        )
    assert completion.values == ["Sales", "Support"]


async def test_a_prompt_argument_is_completed_in_the_context_of_the_others(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        completion = await client.mcp("every").complete_prompt_argument(
            "completable-prompt", "name", "", context={"department": "Sales"}
        )
    assert completion.values == ["David", "Eve", "Frank"]


async def test_a_resource_template_argument_is_completed(http_url: str) -> None:
    async with connected(http(http_url)) as client:
        handle = client.mcp("every")
        good = await handle.complete_resource_argument(TEXT_TEMPLATE, "resourceId", "7")
        bad = await handle.complete_resource_argument(TEXT_TEMPLATE, "resourceId", "x")
    assert (good.values, bad.values) == (["7"], [])
