"""MCP prompts through the client: list, get with arguments as our messages, list_changed,
and argument completion for prompts and resource templates.

The servers are ``mcp`` SDK servers served in this process: an ``MCPServer`` with
decorated prompts, and a low-level ``Server`` where the wire content must be exact.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types
import pytest
import trio
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

import llm_invocation as llm

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WAV = base64.b64encode(b"RIFF").decode()


def config() -> llm.Config:
    """A mock client's configuration with no limits (none of the defaults relied on)."""
    return llm.Config.unlimited(provider="mock", model="mock")


@asynccontextmanager
async def client() -> AsyncGenerator[llm.Client]:
    async with llm.open_client(config()) as opened:
        yield opened


def reviewer() -> MCPServer:
    server = MCPServer("reviewer", log_level="WARNING")

    @server.prompt(title="Review code")
    def review(code: str, language: str = "python") -> str:
        """Review a piece of code."""
        return f"Review this {language} code:\n{code}"

    @server.prompt()
    def dialogue(topic: str) -> list[dict[str, Any]]:
        """A short dialogue."""
        return [
            {"role": "user", "content": f"Tell me about {topic}."},
            {"role": "assistant", "content": "Gladly."},
        ]

    @server.resource("file:///{language}/style.md")
    def style(language: str) -> str:
        """The style guide of a language."""
        return f"{language} style"

    @server.completion()
    async def complete(
        ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
        argument: mcp_types.CompletionArgument,
        context: mcp_types.CompletionContext | None,
    ) -> mcp_types.Completion | None:
        if argument.name != "language":
            return None
        known = ["go", "haskell", "python", "pytorch"]
        found = [name for name in known if name.startswith(argument.value)]
        if isinstance(ref, mcp_types.ResourceTemplateReference):
            found = [f"{name}!" for name in found]
        return mcp_types.Completion(values=found, total=len(found), has_more=False)

    @server.tool()
    async def add_prompt(ctx: Context) -> str:
        """Add a prompt and tell the client."""

        @server.prompt()
        def later() -> str:
            """Added at run time."""
            return "later"

        await ctx.session.send_prompt_list_changed()
        return "added"

    return server


# -- list and get -------------------------------------------------------------------------------


async def test_prompts_are_listed_with_their_arguments() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        prompts = {p.name: p for p in await opened.mcp("rev").list_prompts()}
        assert sorted(prompts) == ["dialogue", "review"]
        review = prompts["review"]
        assert (review.title, review.description) == ("Review code", "Review a piece of code.")
        assert [(a.name, a.required) for a in review.arguments] == [
            ("code", True),
            ("language", False),
        ]


async def test_a_prompt_with_arguments_is_our_messages() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        result = await opened.mcp("rev").get_prompt("review", {"code": "x = 1"})
        assert result.messages == [
            llm.Message(role="user", content="Review this python code:\nx = 1")
        ]


async def test_a_prompt_s_messages_keep_their_roles_and_order() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        result = await opened.mcp("rev").get_prompt("dialogue", {"topic": "trio"})
        assert [(m.role, m.content) for m in result.messages] == [
            ("user", "Tell me about trio."),
            ("assistant", "Gladly."),
        ]


async def test_a_prompt_s_messages_go_into_a_request() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        result = await opened.mcp("rev").get_prompt("review", {"code": "x = 1"})
        reply = await opened.invoke_sync(llm.Request(model="mock", messages=result.messages))
        assert reply.choices[0].message.role == "assistant"


async def test_a_missing_argument_is_the_server_s_typed_error() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp("rev").get_prompt("review")
        assert caught.value.details["reason"] == "mcp_request_failed"
        assert caught.value.details["method"] == "prompts/get"
        assert opened.runtime.statistics().restarts == 0


async def test_an_argument_that_is_not_a_string_is_refused_before_sending() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        with pytest.raises(llm.InvalidRequest) as caught:
            await opened.mcp("rev").get_prompt("review", {"code": 1})  # type: ignore[dict-item]
        assert caught.value.details["names"] == ["code"]


# The embedded resources of the rich server's prompts, by prompt name.
EMBEDDED: dict[str, mcp_types.TextResourceContents | mcp_types.BlobResourceContents] = {
    "notes": mcp_types.TextResourceContents(uri="file:///a.txt", text="notes"),
    "text_blob": mcp_types.BlobResourceContents(
        uri="file:///c.txt",
        mime_type="text/plain; charset=utf-8",
        blob=base64.b64encode("café au lait".encode()).decode(),
    ),
    "json_blob": mcp_types.BlobResourceContents(
        uri="file:///d.json",
        mime_type="application/json",
        blob=base64.b64encode(b'{"a": 1}').decode(),
    ),
    "latin1_blob": mcp_types.BlobResourceContents(
        uri="file:///e.txt",
        mime_type="text/plain",
        blob=base64.b64encode("café".encode("latin-1")).decode(),
    ),
    "binary_blob": mcp_types.BlobResourceContents(
        uri="file:///f.bin",
        mime_type="application/octet-stream",
        blob=base64.b64encode(b"\x00\x01").decode(),
    ),
}


def rich_prompts() -> Server[Any]:
    """A low-level server whose prompts hold images, resources, links and audio; it serves
    each embedded resource (`EMBEDDED`) under its URI too."""

    async def list_prompts(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListPromptsResult:
        names = ["rich", "audio", *EMBEDDED]
        return mcp_types.ListPromptsResult(prompts=[mcp_types.Prompt(name=n) for n in names])

    async def get_prompt(
        ctx: ServerRequestContext[Any], params: mcp_types.GetPromptRequestParams
    ) -> mcp_types.GetPromptResult:
        content: list[mcp_types.ContentBlock]
        if params.name == "audio":
            content = [mcp_types.AudioContent(data=WAV, mime_type="audio/wav")]
        elif params.name in EMBEDDED:
            content = [mcp_types.EmbeddedResource(resource=EMBEDDED[params.name])]
        else:
            content = [
                mcp_types.ImageContent(data=PNG, mime_type="image/png"),
                mcp_types.EmbeddedResource(resource=EMBEDDED["notes"]),
                mcp_types.ResourceLink(uri="file:///b.pdf", name="b"),
            ]
        return mcp_types.GetPromptResult(
            description="rich content",
            messages=[mcp_types.PromptMessage(role="user", content=block) for block in content],
        )

    async def read_resource(
        ctx: ServerRequestContext[Any], params: mcp_types.ReadResourceRequestParams
    ) -> mcp_types.ReadResourceResult:
        (found,) = [c for c in EMBEDDED.values() if str(c.uri) == str(params.uri)]
        return mcp_types.ReadResourceResult(contents=[found])

    return Server(
        "rich",
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_read_resource=read_resource,
    )


async def test_images_resources_and_links_in_a_prompt_become_parts() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rich", rich_prompts())
        result = await opened.mcp("rich").get_prompt("rich")
        assert result.description == "rich content"
        assert [m.content for m in result.messages] == [
            [llm.ImagePart(data=PNG, media_type="image/png")],
            "[file:///a.txt]\nnotes",
            "[resource link b: file:///b.pdf]",
        ]


async def test_an_embedded_text_resource_is_headed_by_its_uri_as_in_resource_message() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rich", rich_prompts())
        (message,) = (await opened.mcp("rich").get_prompt("notes")).messages
        read = await opened.mcp("rich").resource_message("file:///a.txt")
    assert read.content == [llm.TextPart(text="[file:///a.txt]\nnotes")]
    assert message.content == "[file:///a.txt]\nnotes"


@pytest.mark.parametrize(
    ("name", "text"),
    [("text_blob", "[file:///c.txt]\ncafé au lait"), ("json_blob", '[file:///d.json]\n{"a": 1}')],
)
async def test_an_embedded_blob_of_a_textual_type_is_its_utf8_text(name: str, text: str) -> None:
    async with client() as opened:
        await opened.register_mcp_server("rich", rich_prompts())
        (message,) = (await opened.mcp("rich").get_prompt(name)).messages
        read = await opened.mcp("rich").resource_message(str(EMBEDDED[name].uri))
    assert message.content == text
    assert read.content == [llm.TextPart(text=text)]


@pytest.mark.parametrize("name", ["latin1_blob", "binary_blob"])
async def test_an_embedded_blob_that_is_not_utf8_text_is_unsupported_content(name: str) -> None:
    async with client() as opened:
        await opened.register_mcp_server("rich", rich_prompts())
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp("rich").get_prompt(name)
        with pytest.raises(llm.ToolExecutionFailed) as read:
            await opened.mcp("rich").resource_message(str(EMBEDDED[name].uri))
        after = await opened.mcp("rich").get_prompt("notes")  # the connection stays
    assert caught.value.details["reason"] == "unsupported_content"
    assert read.value.details["reason"] == "unsupported_content"
    assert after.messages == [llm.user("[file:///a.txt]\nnotes")]


async def test_audio_in_a_prompt_is_a_typed_error_not_dropped() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rich", rich_prompts())
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp("rich").get_prompt("audio")
        assert caught.value.details["reason"] == "unsupported_content"
        assert "audio/wav" in caught.value.message


# -- list_changed -------------------------------------------------------------------------------


async def test_a_prompts_list_change_reaches_the_callback() -> None:
    heard: list[llm.MCPEvent] = []
    got = trio.Event()

    def on_event(event: llm.MCPEvent) -> None:
        heard.append(event)
        got.set()

    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        opened.mcp("rev").on_event(on_event)
        await opened.tools.get("rev__add_prompt").execute({})
        await got.wait()
        assert heard == [llm.PromptsChanged(server="rev")]
        names = [p.name for p in await opened.mcp("rev").list_prompts()]
        assert "later" in names


# -- completion ---------------------------------------------------------------------------------


async def test_a_prompt_argument_is_completed() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        found = await opened.mcp("rev").complete_prompt_argument("review", "language", "py")
        assert found == llm.MCPCompletion(values=["python", "pytorch"], total=2)


async def test_a_resource_template_argument_is_completed() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        found = await opened.mcp("rev").complete_resource_argument(
            "file:///{language}/style.md", "language", "g"
        )
        assert found.values == ["go!"]


async def test_an_argument_without_suggestions_completes_to_nothing() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rev", reviewer())
        found = await opened.mcp("rev").complete_prompt_argument("review", "code", "x")
        assert found == llm.MCPCompletion(values=[])


async def test_a_server_without_completions_refuses_with_a_typed_error() -> None:
    async with client() as opened:
        await opened.register_mcp_server("rich", rich_prompts())
        with pytest.raises(llm.ToolExecutionFailed) as caught:
            await opened.mcp("rich").complete_prompt_argument("rich", "x")
        assert caught.value.details["method"] == "completion/complete"
        assert opened.runtime.statistics().restarts == 0


# -- over stdio and streamable HTTP -------------------------------------------------------------

LIBRARY = Path(__file__).parent / "mcp_servers" / "library_server.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Connect until the server listens (it reports nothing when it does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the library server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"the library server did not listen on port {port} within {timeout}s")


@pytest.fixture(params=["stdio", "http"])
def library(request: pytest.FixtureRequest) -> Iterator[llm.MCPServerConfig]:
    """The library server, as a configuration: a stdio command, or a running HTTP server."""
    if request.param == "stdio":
        yield llm.MCPServerConfig(
            transport="stdio", command=sys.executable, args=[str(LIBRARY)], timeout=10
        )
        return
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(LIBRARY), "--http", str(port)], stdout=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, process)
        yield llm.MCPServerConfig(transport="http", url=f"http://127.0.0.1:{port}/mcp", timeout=10)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning")
async def test_resources_prompts_and_completion_over_a_real_transport(
    library: llm.MCPServerConfig,
) -> None:
    async with client() as opened:
        await opened.register_mcp_server("lib", library)
        server = opened.mcp("lib")
        uris = [r.uri for r in await server.list_resources()]
        assert uris == ["library://readme", "library://logo"]
        templates = await server.list_resource_templates()
        assert [t.uri_template for t in templates] == ["library://books/{title}"]
        (book,) = await server.read_resource("library://books/Emma")
        assert book.text == "The text of Emma"
        (logo,) = await server.read_resource("library://logo")
        assert logo.to_bytes() == b"\x89PNG\r\n\x1a\nlibrary"
        message = await opened.mcp_resource_message("lib", "library://readme")
        assert message.content == [llm.TextPart(text="[library://readme]\n# The library")]
        prompt = await server.get_prompt("summarise", {"title": "Emma"})
        assert prompt.messages == [
            llm.Message(role="user", content="Give a short summary of Emma.")
        ]
        found = await server.complete_prompt_argument("summarise", "title", "Du")
        assert found.values == ["Dune", "Dubliners"]
        found = await server.complete_resource_argument("library://books/{title}", "title", "E")
        assert found.values == ["Emma"]


@pytest.mark.filterwarnings("ignore:Async generator 'httpx2\\.:ResourceWarning")
@pytest.mark.filterwarnings("ignore:Async generator 'httpcore2\\.:ResourceWarning")
async def test_list_changes_arrive_over_a_real_transport(library: llm.MCPServerConfig) -> None:
    heard: set[type[object]] = set()
    both = trio.Event()

    def on_event(event: llm.MCPEvent) -> None:
        heard.add(type(event))
        if heard == {llm.PromptsChanged, llm.ResourcesChanged}:
            both.set()

    async with client() as opened:
        await opened.register_mcp_server("lib", library)
        opened.mcp("lib").on_event(on_event)
        result = await opened.tools.get("lib__shelve").execute({"title": "Emma"})
        assert not result.is_error
        await both.wait()
        names = [p.name for p in await opened.mcp("lib").list_prompts()]
        assert "review_emma" in names
        uris = [r.uri for r in await opened.mcp("lib").list_resources()]
        assert "library://shelf/emma" in uris
