"""MCP resources through the client: list, templates, read, subscribe, notifications, context.

The server is a low-level ``mcp`` SDK server served in this process; its tool ``touch``
sends ``notifications/resources/updated`` for a URI and ``grow`` adds a resource and sends
``notifications/resources/list_changed``, so every notification is caused by the test.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types
import pytest
import trio
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

import llm_invocation as llm
from llm_invocation.actors.mcp import MCPTool

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
ZIP = base64.b64encode(b"PK\x03\x04zip").decode()


def config() -> llm.Config:
    """A mock client's configuration with no limits (none of the defaults relied on)."""
    return llm.Config.unlimited(provider="mock", model="mock")


@asynccontextmanager
async def client() -> AsyncGenerator[llm.Client]:
    async with llm.open_client(config()) as opened:
        yield opened


class Files:
    """The state of one test's server: its files and who subscribed to what."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, str | None, str | None]] = {
            "file:///readme.md": ("text/markdown", "# Read me", None),
            "file:///logo.png": ("image/png", None, PNG),
            "file:///archive.zip": ("application/zip", None, ZIP),
        }
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []
        self.subscription = trio.Event()  # set (and replaced) on every subscription
        self.crash = trio.Event()  # set it to make the first run of the server fail
        self.runs = 0

    def server(self) -> Server[Any]:
        async def list_resources(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListResourcesResult:
            # Two pages: the client follows the cursor.
            uris = sorted(self.files)
            page = uris[:1] if params is None or params.cursor is None else uris[1:]
            cursor = "next" if params is None or params.cursor is None else None
            return mcp_types.ListResourcesResult(
                resources=[
                    mcp_types.Resource(
                        uri=uri,
                        name=uri.rsplit("/", 1)[-1],
                        mime_type=self.files[uri][0],
                        annotations=mcp_types.Annotations(priority=0.8),
                    )
                    for uri in page
                ],
                next_cursor=cursor,
            )

        async def list_templates(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListResourceTemplatesResult:
            return mcp_types.ListResourceTemplatesResult(
                resource_templates=[
                    mcp_types.ResourceTemplate(
                        uri_template="file:///{name}", name="file", mime_type="text/plain"
                    )
                ]
            )

        async def read_resource(
            ctx: ServerRequestContext[Any], params: mcp_types.ReadResourceRequestParams
        ) -> mcp_types.ReadResourceResult:
            found = self.files.get(params.uri)
            if found is None:
                raise MCPError(code=-32002, message=f"no resource {params.uri}")
            mime, text, blob = found
            contents: mcp_types.TextResourceContents | mcp_types.BlobResourceContents
            if text is not None:
                contents = mcp_types.TextResourceContents(uri=params.uri, mime_type=mime, text=text)
            else:
                assert blob is not None
                contents = mcp_types.BlobResourceContents(uri=params.uri, mime_type=mime, blob=blob)
            return mcp_types.ReadResourceResult(contents=[contents])

        async def subscribe(
            ctx: ServerRequestContext[Any], params: mcp_types.SubscribeRequestParams
        ) -> mcp_types.EmptyResult:
            self.subscribed.append(params.uri)
            self.subscription.set()
            self.subscription = trio.Event()
            return mcp_types.EmptyResult()

        async def unsubscribe(
            ctx: ServerRequestContext[Any], params: mcp_types.UnsubscribeRequestParams
        ) -> mcp_types.EmptyResult:
            self.unsubscribed.append(params.uri)
            return mcp_types.EmptyResult()

        async def list_tools(
            ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListToolsResult:
            schema: dict[str, Any] = {"type": "object", "properties": {"uri": {"type": "string"}}}
            return mcp_types.ListToolsResult(
                tools=[
                    mcp_types.Tool(name="touch", input_schema=schema),
                    mcp_types.Tool(name="grow", input_schema=schema),
                    mcp_types.Tool(name="link", input_schema=schema),
                ]
            )

        async def call_tool(
            ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
        ) -> mcp_types.CallToolResult:
            uri = str((params.arguments or {}).get("uri", "file:///readme.md"))
            match params.name:
                case "touch":
                    await ctx.session.send_resource_updated(uri)
                case "grow":
                    self.files[uri] = ("text/plain", "new", None)
                    await ctx.session.send_resource_list_changed()
                case _:
                    return mcp_types.CallToolResult(
                        content=[mcp_types.ResourceLink(uri=uri, name="the file")]
                    )
            return mcp_types.CallToolResult(content=[mcp_types.TextContent(text="ok")])

        @asynccontextmanager
        async def lifespan(_: Server[Any]) -> AsyncGenerator[dict[str, Any]]:
            async def fail_on_demand() -> None:
                await self.crash.wait()
                raise RuntimeError("the server's task failed")

            self.runs += 1
            async with anyio.create_task_group() as group:
                if self.runs == 1:
                    group.start_soon(fail_on_demand)
                yield {}
                group.cancel_scope.cancel()

        return Server(
            "files",
            lifespan=lifespan,
            on_list_resources=list_resources,
            on_list_resource_templates=list_templates,
            on_read_resource=read_resource,
            on_subscribe_resource=subscribe,
            on_unsubscribe_resource=unsubscribe,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
        )


async def touch(opened: llm.Client, tool: str, uri: str) -> llm.ToolResult:
    found = opened.tools.get(f"files__{tool}")
    assert isinstance(found, MCPTool)
    return await found.execute({"uri": uri})


# -- list and read ------------------------------------------------------------------------------


async def test_resources_are_listed_across_pages_with_their_metadata() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        resources = await opened.mcp("files").list_resources()
        assert [r.uri for r in resources] == [
            "file:///archive.zip",
            "file:///logo.png",
            "file:///readme.md",
        ]
        assert resources[2] == llm.MCPResource(
            uri="file:///readme.md",
            name="readme.md",
            media_type="text/markdown",
            annotations=llm.ContentAnnotations(priority=0.8),
        )


async def test_resource_templates_are_listed() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        templates = await opened.mcp("files").list_resource_templates()
        assert templates == [
            llm.MCPResourceTemplate(
                uri_template="file:///{name}", name="file", media_type="text/plain"
            )
        ]


async def test_a_text_resource_is_read_as_text() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        (part,) = await opened.mcp("files").read_resource("file:///readme.md")
        assert part == llm.ResourcePart(
            uri="file:///readme.md", media_type="text/markdown", text="# Read me"
        )


async def test_a_binary_resource_is_read_as_its_bytes() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        (part,) = await opened.mcp("files").read_resource("file:///archive.zip")
        assert (part.media_type, part.to_bytes()) == ("application/zip", b"PK\x03\x04zip")


async def test_an_unknown_resource_is_the_server_s_typed_error_and_the_connection_lives() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp("files").read_resource("file:///missing")
        details = caught.value.details
        assert (details["reason"], details["mcp_code"], details["method"]) == (
            "mcp_request_failed",
            -32002,
            "resources/read",
        )
        assert "no resource file:///missing" in caught.value.message
        assert len(await opened.mcp("files").read_resource("file:///readme.md")) == 1
        assert opened.runtime.statistics().restarts == 0


async def test_an_unknown_server_is_a_configuration_error() -> None:
    async with client() as opened:
        with pytest.raises(llm.ConfigurationError) as caught:
            opened.mcp("nowhere")
        assert caught.value.details["reason"] == "unknown_mcp_server"


async def test_a_server_without_resources_refuses_with_a_typed_error() -> None:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=[])

    async with client() as opened:
        await opened.register_mcp_server("bare", Server("bare", on_list_tools=list_tools))
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp("bare").list_resource_templates()
        assert caught.value.details["reason"] == "mcp_request_failed"


# -- resources as context -----------------------------------------------------------------------


async def test_a_text_resource_becomes_a_user_message_headed_by_its_uri() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        message = await opened.mcp_resource_message("files", "file:///readme.md")
        assert message == llm.Message(
            role="user", content=[llm.TextPart(text="[file:///readme.md]\n# Read me")]
        )


async def test_an_image_resource_becomes_an_image_in_the_message() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        message = await opened.mcp("files").resource_message("file:///logo.png")
        assert message.content == [llm.ImagePart(data=PNG, media_type="image/png")]


async def test_a_resource_message_goes_into_a_request() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        context = await opened.mcp_resource_message("files", "file:///readme.md")
        request = llm.Request(model="mock", messages=[context, llm.user("Summarise it.")])
        reply = await opened.invoke_sync(request)
        assert reply.choices[0].message.role == "assistant"


async def test_a_binary_resource_cannot_be_a_message_and_says_so() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp_resource_message("files", "file:///archive.zip")
        assert caught.value.details["reason"] == "unsupported_content"
        assert "application/zip" in caught.value.message


async def test_a_resource_link_from_a_tool_is_readable() -> None:
    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        result = await touch(opened, "link", "file:///readme.md")
        link = result.blocks[0].part
        assert isinstance(link, llm.ResourceLinkPart)
        (part,) = await opened.mcp("files").read_resource(link.uri)
        assert part.text == "# Read me"


# -- subscriptions and notifications ------------------------------------------------------------


async def test_a_subscribed_resource_s_updates_reach_the_callback() -> None:
    files = Files()
    heard: list[llm.MCPEvent] = []
    got = trio.Event()

    def on_event(event: llm.MCPEvent) -> None:
        heard.append(event)
        got.set()

    async with client() as opened:
        await opened.register_mcp_server("files", files.server())
        server = opened.mcp("files")
        server.on_event(on_event)
        await server.subscribe_resource("file:///readme.md")
        assert files.subscribed == ["file:///readme.md"]
        await touch(opened, "touch", "file:///readme.md")
        await got.wait()
        assert heard == [llm.ResourceUpdated(server="files", uri="file:///readme.md")]


async def test_unsubscribing_tells_the_server() -> None:
    files = Files()
    async with client() as opened:
        await opened.register_mcp_server("files", files.server())
        server = opened.mcp("files")
        await server.subscribe_resource("file:///readme.md")
        await server.unsubscribe_resource("file:///readme.md")
        assert files.unsubscribed == ["file:///readme.md"]


async def test_a_list_change_reaches_an_async_callback() -> None:
    got = trio.Event()
    heard: list[llm.MCPEvent] = []

    async def on_event(event: llm.MCPEvent) -> None:
        heard.append(event)
        got.set()

    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        opened.mcp("files").on_event(on_event)
        await touch(opened, "grow", "file:///new.txt")
        await got.wait()
        assert heard == [llm.ResourcesChanged(server="files")]
        uris = [r.uri for r in await opened.mcp("files").list_resources()]
        assert "file:///new.txt" in uris


async def test_a_removed_callback_hears_nothing_more_and_a_failing_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    removed: list[llm.MCPEvent] = []
    got = trio.Event()

    def failing(event: llm.MCPEvent) -> None:
        raise RuntimeError("callback bug")

    async with client() as opened:
        await opened.register_mcp_server("files", Files().server())
        server = opened.mcp("files")
        stop = server.on_event(removed.append)
        stop()
        server.on_event(failing)
        server.on_event(lambda event: got.set())
        await touch(opened, "grow", "file:///new.txt")
        await got.wait()
        assert removed == []
        assert opened.runtime.statistics().restarts == 0
    assert any("callback bug" in (r.exc_text or "") for r in caplog.records)


async def test_subscriptions_are_made_again_after_a_reconnection() -> None:
    files = Files()
    async with client() as opened:
        await opened.register_mcp_server("files", files.server())
        await opened.mcp("files").subscribe_resource("file:///readme.md")
        resubscribed = files.subscription
        files.crash.set()  # the connection breaks; the supervisor reconnects
        await resubscribed.wait()
        assert files.runs == 2
        assert files.subscribed == ["file:///readme.md", "file:///readme.md"]
