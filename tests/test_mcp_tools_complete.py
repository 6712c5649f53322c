"""MCP tools, complete: their metadata, checked structured results, and every kind of content.

The servers are ``mcp`` SDK servers served in this process (`InProcessMCPServer`): a
low-level ``Server`` where the test must say exactly what goes on the wire, an
``MCPServer`` where its decorators are enough, and the stdio demo server once, where the
transport matters.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types
import pytest
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer

import llm_invocation as llm
from llm_invocation.actors.mcp import MCPTool

DEMO = Path(__file__).parent / "mcp_servers" / "demo_server.py"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WAV = base64.b64encode(b"RIFF....WAVEfmt ").decode()
NUMBER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"value": {"type": "integer"}},
    "required": ["value"],
}


def config() -> llm.Config:
    """A mock client's configuration with no limits (none of the defaults relied on)."""
    return llm.Config.unlimited(provider="mock", model="mock")


@asynccontextmanager
async def client() -> AsyncGenerator[llm.Client]:
    async with llm.open_client(config()) as opened:
        yield opened


def _tools() -> list[mcp_types.Tool]:
    obj: dict[str, Any] = {"type": "object", "properties": {}}
    return [
        mcp_types.Tool(
            name="delete",
            title="Delete a file",
            description="Delete it.",
            input_schema=obj,
            annotations=mcp_types.ToolAnnotations(
                read_only_hint=False,
                destructive_hint=True,
                idempotent_hint=True,
                open_world_hint=False,
            ),
            _meta={"vendor/cost": 3},
        ),
        mcp_types.Tool(
            name="number",
            description="A number, structured.",
            input_schema={"type": "object", "properties": {"good": {"type": "boolean"}}},
            output_schema=NUMBER_SCHEMA,
        ),
        mcp_types.Tool(name="content", description="Every kind of content.", input_schema=obj),
        mcp_types.Tool(
            name="long_job",
            description="Runs as a task only.",
            input_schema=obj,
            execution=mcp_types.ToolExecution(task_support="required"),
        ),
        mcp_types.Tool(
            name="maybe_task",
            description="May run as a task.",
            input_schema=obj,
            execution=mcp_types.ToolExecution(task_support="optional"),
        ),
    ]


def _content() -> list[mcp_types.ContentBlock]:
    audience = mcp_types.Annotations(audience=["user"], priority=0.5)
    return [
        mcp_types.TextContent(text="hello", annotations=audience),
        mcp_types.ImageContent(data=PNG, mime_type="image/png"),
        mcp_types.AudioContent(data=WAV, mime_type="audio/wav"),
        mcp_types.EmbeddedResource(
            resource=mcp_types.BlobResourceContents(
                uri="file:///data.bin", mime_type="application/octet-stream", blob=WAV
            ),
            _meta={"vendor/origin": "disk"},
        ),
        mcp_types.EmbeddedResource(
            resource=mcp_types.BlobResourceContents(
                uri="file:///chart.png", mime_type="image/png", blob=PNG
            )
        ),
        mcp_types.EmbeddedResource(
            resource=mcp_types.TextResourceContents(uri="file:///notes.txt", text="the notes")
        ),
        mcp_types.ResourceLink(
            uri="file:///report.pdf", name="report", mime_type="application/pdf", size=1234
        ),
    ]


def server() -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=_tools())

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        arguments = params.arguments or {}
        match params.name:
            case "number":
                value: Any = 7 if arguments.get("good") else "seven"
                return mcp_types.CallToolResult(
                    content=[mcp_types.TextContent(text=str(value))],
                    structured_content={"value": value},
                )
            case "content":
                return mcp_types.CallToolResult(content=_content())
            case _:
                return mcp_types.CallToolResult(content=[mcp_types.TextContent(text="done")])

    return Server("complete", on_list_tools=list_tools, on_call_tool=call_tool)


def mcp_tool(opened: llm.Client, name: str) -> MCPTool:
    found = opened.tools.get(name)
    assert isinstance(found, MCPTool)
    return found


# -- metadata -----------------------------------------------------------------------------------


async def test_a_tool_keeps_its_title_annotations_and_meta() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        tool = mcp_tool(opened, "srv__delete")
        assert tool.title == "Delete a file"
        assert tool.annotations == llm.MCPToolAnnotations(
            read_only=False, destructive=True, idempotent=True, open_world=False
        )
        assert tool.meta == {"vendor/cost": 3}
        assert tool.output_schema is None


async def test_a_tool_keeps_its_output_schema() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        assert mcp_tool(opened, "srv__number").output_schema == NUMBER_SCHEMA


async def test_an_sdk_server_tool_has_its_title_and_hints() -> None:
    sdk = MCPServer("deco", log_level="WARNING")

    @sdk.tool(
        title="Look up",
        annotations=mcp_types.ToolAnnotations(read_only_hint=True, open_world_hint=True),
    )
    def look_up(key: str) -> str:
        """Look a key up."""
        return key

    async with client() as opened:
        await opened.register_mcp_server("deco", sdk)
        tool = mcp_tool(opened, "deco__look_up")
        assert tool.title == "Look up"
        assert tool.annotations is not None
        assert (tool.annotations.read_only, tool.annotations.open_world) == (True, True)


async def test_a_tool_that_requires_tasks_is_not_offered_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client() as opened:
        names = await opened.register_mcp_server("srv", server())
        assert "srv__long_job" not in names
        assert "srv__maybe_task" in names
        assert mcp_tool(opened, "srv__maybe_task").task_support == "optional"
        assert "srv__long_job" not in opened.tools.names()
    said = [r for r in caplog.records if "'long_job'" in r.getMessage()]
    assert len(said) == 1
    assert "requires tasks" in said[0].getMessage()


# -- structured results -------------------------------------------------------------------------


async def test_a_structured_result_that_matches_the_schema_is_its_data() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        result = await mcp_tool(opened, "srv__number").execute({"good": True})
        assert not result.is_error
        assert result.data == {"value": 7}


async def test_a_structured_result_that_breaks_the_schema_is_an_error_result_saying_why() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        result = await mcp_tool(opened, "srv__number").execute({"good": False}, call_id="c9")
        assert (result.is_error, result.error_code, result.call_id) == (
            True,
            "tool_execution_failed",
            "c9",
        )
        assert "does not match its output schema" in result.content
        assert "'seven' is not of type 'integer'" in result.content
        again = await mcp_tool(opened, "srv__number").execute({"good": True})
        assert again.data == {"value": 7}  # the connection lives on
        assert opened.runtime.statistics().restarts == 0


# -- content ------------------------------------------------------------------------------------


async def test_every_content_block_is_kept_typed_in_order() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        result = await mcp_tool(opened, "srv__content").execute({})
        kinds = [type(block.part).__name__ for block in result.blocks]
        assert kinds == [
            "TextPart",
            "ImagePart",
            "AudioPart",
            "ResourcePart",
            "ResourcePart",
            "ResourcePart",
            "ResourceLinkPart",
        ]


async def test_content_annotations_and_meta_are_kept() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        blocks = (await mcp_tool(opened, "srv__content").execute({})).blocks
        assert blocks[0].annotations == llm.ContentAnnotations(audience=["user"], priority=0.5)
        assert blocks[3].meta == {"vendor/origin": "disk"}
        assert blocks[1].annotations is None


async def test_audio_and_binary_resources_are_typed_parts_with_their_bytes() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        blocks = (await mcp_tool(opened, "srv__content").execute({})).blocks
        audio, blob = blocks[2].part, blocks[3].part
        assert isinstance(audio, llm.AudioPart)
        assert (audio.media_type, audio.to_bytes()) == ("audio/wav", b"RIFF....WAVEfmt ")
        assert isinstance(blob, llm.ResourcePart)
        assert (blob.uri, blob.media_type) == ("file:///data.bin", "application/octet-stream")
        assert blob.to_bytes() == b"RIFF....WAVEfmt "


async def test_the_model_reads_text_and_sees_images_of_every_kind() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        result = await mcp_tool(opened, "srv__content").execute({})
        assert result.content.splitlines() == [
            "hello",
            "[audio (audio/wav, 16 bytes)]",
            "[resource file:///data.bin (application/octet-stream, 16 bytes)]",
            "the notes",
            "[resource link report: file:///report.pdf]",
        ]
        assert [image.media_type for image in result.images] == ["image/png", "image/png"]
        assert "omitted" not in result.content


async def test_a_resource_link_is_a_typed_part_with_its_uri() -> None:
    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        link = (await mcp_tool(opened, "srv__content").execute({})).blocks[-1].part
        assert link == llm.ResourceLinkPart(
            uri="file:///report.pdf", name="report", media_type="application/pdf", size=1234
        )


async def test_content_the_sdk_rejects_is_an_error_for_that_call_only() -> None:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        schema: dict[str, Any] = {"type": "object"}
        return mcp_types.ListToolsResult(
            tools=[mcp_types.Tool(name="bad_image", input_schema=schema)]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        return mcp_types.CallToolResult(content=[mcp_types.ImageContent(data=PNG, mime_type="")])

    bad = Server("bad", on_list_tools=list_tools, on_call_tool=call_tool)
    async with client() as opened:
        await opened.register_mcp_server("bad", bad)
        result = await mcp_tool(opened, "bad__bad_image").execute({})
        assert (result.is_error, result.error_code) == (True, "tool_execution_failed")
        assert "not usable" in result.content
        assert opened.runtime.statistics().restarts == 0


# -- one result type ----------------------------------------------------------------------------


async def test_a_local_tool_and_an_mcp_tool_return_the_same_type() -> None:
    @llm.tool
    def double(value: int) -> dict[str, int]:
        """Double a value."""
        return {"value": value * 2}

    async with client() as opened:
        await opened.register_mcp_server("srv", server())
        local = await double.execute({"value": 3})
        remote = await mcp_tool(opened, "srv__number").execute({"good": True})
        assert type(local) is type(remote) is llm.ToolResult
        assert (local.data, remote.data) == ({"value": 6}, {"value": 7})
        assert (local.name, remote.name) == ("double", "srv__number")


async def test_a_stdio_server_s_tools_carry_their_metadata() -> None:
    async with client() as opened:
        names = await opened.register_mcp_server("demo", [sys.executable, str(DEMO)])
        tools = [mcp_tool(opened, name) for name in names]
        assert all(isinstance(tool.annotations, llm.MCPToolAnnotations | None) for tool in tools)
        assert any(tool.output_schema is not None for tool in tools)
